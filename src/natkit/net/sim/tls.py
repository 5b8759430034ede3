"""TLS on the simulated internet: real TLS records over the simulated TCP.

A :class:`SimTlsConnection` runs Python's TLS engine (:class:`ssl.SSLObject`
on two memory BIOs) over a :class:`~natkit.net.sim.stack.SimStreamConnection`,
so the bytes on simulated links are the TLS records a real client and server
would exchange: a firewall that passes only TCP port 443 sees exactly what it
would see in the field, and certificate checks happen as on the OS stack
(the same :class:`ssl.SSLContext` objects work on both). Handshakes take
simulated round trips, not wall time.

The client side completes :meth:`SimTlsConnection.handshake` before
``connect_stream`` returns; the server side hands the connection to the
listener's handler once its handshake is done, as asyncio's TLS servers do.
A handshake failure aborts the TCP connection (the client's
``connect_stream`` raises :class:`~natkit.errors.TransportError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import TYPE_CHECKING

from natkit.addr import Endpoint, Transport
from natkit.errors import TransportError
from natkit.net.stack import ConnectionHandler, DataHandler

if TYPE_CHECKING:
    from natkit.net.sim.stack import SimStreamConnection

__all__ = ["SimTlsConnection"]

_READ_CHUNK = 65536


class SimTlsConnection:
    """A TLS session over one simulated TCP connection (client or server end)."""

    def __init__(
        self,
        raw: SimStreamConnection,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        on_established: ConnectionHandler | None = None,
    ) -> None:
        self._raw = raw
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._handler: DataHandler | None = None
        self._pending: list[bytes] = []
        self._on_established = on_established
        self._eof = False
        self.handshake_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        raw.set_handler(self._on_raw)

    # -- StreamConnection ------------------------------------------------------------

    @property
    def local_endpoint(self) -> Endpoint:
        return self._raw.local_endpoint

    @property
    def remote_endpoint(self) -> Endpoint:
        return self._raw.remote_endpoint

    @property
    def transport(self) -> Transport:
        return Transport.TLS

    def set_handler(self, on_data: DataHandler) -> None:
        self._handler = on_data
        pending, self._pending = self._pending, []
        for chunk in pending:
            on_data(chunk)

    def write(self, data: bytes) -> None:
        if self._raw.closed or not self.handshake_done.done():
            return
        try:
            self._tls.write(data)
        except ssl.SSLError:
            self.abort()
            return
        self._flush()

    async def drain(self) -> None:
        await self._raw.drain()

    @property
    def write_buffer_size(self) -> int:
        """TLS records written and not yet acknowledged (the TCP connection's)."""
        return self._raw.write_buffer_size

    def pause_reading(self) -> None:
        """Hold the TCP connection's bytes (records are decrypted once resumed)."""
        self._raw.pause_reading()

    def resume_reading(self) -> None:
        self._raw.resume_reading()

    def close(self) -> None:
        if self._raw.closed:
            return
        if self.handshake_done.done() and not self.handshake_done.exception():
            # Queue close_notify; the peer's answer may never come.
            with contextlib.suppress(ssl.SSLError):
                self._tls.unwrap()
            self._flush()
        self._raw.close()

    def abort(self) -> None:
        self._raw.abort()

    async def wait_closed(self) -> None:
        await self._raw.wait_closed()

    @property
    def closed(self) -> bool:
        return self._raw.closed

    # -- the TLS engine ----------------------------------------------------------------

    def start(self) -> None:
        """Begin the handshake (the client sends its ClientHello)."""
        self._advance()

    async def handshake(self) -> None:
        self.start()
        await self.handshake_done

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._raw.write(data)

    def _on_raw(self, data: bytes) -> None:
        if not data:
            self._incoming.write_eof()
            if not self.handshake_done.done():
                self._fail(TransportError("connection closed during the TLS handshake"))
            else:
                self._read_application_data()
            return
        self._incoming.write(data)
        if self.handshake_done.done():
            self._read_application_data()
        else:
            self._advance()

    def _advance(self) -> None:
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ssl.CertificateError) as exc:
            self._flush()  # the alert, so the peer learns why
            self._fail(TransportError(f"TLS handshake failed: {exc}"))
            return
        self._flush()
        self.handshake_done.set_result(None)
        if self._on_established is not None:
            self._on_established(self)
        self._read_application_data()  # data that came with the last handshake flight

    def _read_application_data(self) -> None:
        while not self._eof:
            try:
                chunk = self._tls.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                chunk = b""
            except ssl.SSLError:
                self.abort()
                chunk = b""
            if not chunk:
                self._eof = True
                self._deliver(b"")
                break
            self._deliver(chunk)
        self._flush()  # key updates, close_notify answers

    def _deliver(self, data: bytes) -> None:
        if self._handler is None:
            self._pending.append(data)
        else:
            self._handler(data)

    def _fail(self, exc: TransportError) -> None:
        if not self.handshake_done.done():
            self.handshake_done.set_exception(exc)
            if self._on_established is not None:
                self.handshake_done.exception()  # a server side has no one awaiting it
        self._raw.abort()
