"""A tiny HTTP/1.1 admin endpoint for natkit's servers, on the stack interface
and h11 (no web framework).

Theory of operation
-------------------
:class:`AdminServer` listens on one TCP endpoint (127.0.0.1:9641 by
default: loopback only, unless an operator configures another address) and
answers one request per connection (``Connection: close``), asking an
:class:`AdminApp` for the content:

=======================  ==================================================
``GET /healthz``         ``ok`` (200) or ``unhealthy`` (503)
``GET /metrics``         Prometheus text exposition
``GET /sessions``        JSON list of live sessions (TURN allocations)
``POST /sessions/N/kick``  drop session N: 200, or 404 when there is none
=======================  ==================================================

Defences, since the endpoint can end sessions and lists client addresses:

* ``token``: when set, every path but ``/healthz`` needs ``Authorization:
  Bearer <token>`` (401 otherwise), compared in constant time.
* DNS rebinding: a ``Host`` header that is not an IP literal or
  ``localhost`` is refused (421), so a web page that rebinds its own name
  to 127.0.0.1 cannot read ``/sessions``.
* Cross-site requests: a ``POST`` carrying an ``Origin`` header (every
  browser sends one; curl and natkit's CLI do not) is refused (403), so a
  web page cannot kick sessions with a form.
* Bounds: request head 16 KiB, body 64 KiB, ``max_connections`` at once,
  each aborted after ``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
from http import HTTPStatus
from typing import Any, Protocol

import h11

from natkit.addr import Endpoint
from natkit.net.driver import StartedAndClosedOnExit
from natkit.net.stack import Stack, StreamConnection, StreamListener

__all__ = ["AdminApp", "AdminServer"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

_MAX_HEAD = 16384
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_MAX_BODY = 65536


class AdminApp(Protocol):
    """What the admin endpoint serves (a TURN server runner implements it)."""

    def metrics(self) -> tuple[bytes, str]:
        """The metrics text and its content type."""

    def sessions(self) -> list[dict[str, Any]]:
        """JSON-ready descriptions of the live sessions."""

    def kick(self, session_id: int) -> bool:
        """End session ``session_id``; False if there is none."""

    def healthy(self) -> bool: ...


def _host_ok(host: str) -> bool:
    name = host.strip()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class _Exchange:
    """One connection: parse one request with h11, answer it, close."""

    def __init__(self, server: AdminServer, conn: StreamConnection) -> None:
        self.server = server
        self.conn = conn
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        self.request: h11.Request | None = None
        self.body = bytearray()
        self.done = False
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(server.timeout, self.finish, True)
        conn.set_handler(self.on_data)

    def on_data(self, data: bytes) -> None:
        if self.done:
            return
        if not data:
            self.finish(abort=False)
            return
        try:
            self.h11.receive_data(data)
            while not self.done:
                event = self.h11.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return
                if isinstance(event, h11.Request):
                    self.request = event
                elif isinstance(event, h11.Data):
                    self.body += event.data
                    if len(self.body) > _MAX_BODY:
                        self.respond(413, b"request body too large\n")
                elif isinstance(event, h11.EndOfMessage):
                    self.dispatch()
                elif isinstance(event, h11.ConnectionClosed):
                    self.finish(abort=False)
        except h11.RemoteProtocolError as exc:
            self.respond(exc.error_status_hint, f"bad request: {exc}\n".encode())

    def dispatch(self) -> None:
        req = self.request
        assert req is not None  # h11 yields Request before EndOfMessage
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in req.headers}
        method = req.method.decode("ascii", "replace")
        path = req.target.decode("ascii", "replace").partition("?")[0]
        status, body, ctype, extra = self.server.route(method, path, headers)
        self.respond(status, body, ctype, extra, head=method == "HEAD")

    def respond(
        self,
        status: int,
        body: bytes,
        ctype: str = "text/plain; charset=utf-8",
        extra: tuple[tuple[str, str], ...] = (),
        *,
        head: bool = False,
    ) -> None:
        if self.done:
            return
        headers = [
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            ("Cache-Control", "no-store"),
            *extra,
        ]
        try:
            reason = _REASONS.get(status, "")
            out = self.h11.send(h11.Response(status_code=status, headers=headers, reason=reason))
            if body and not head:
                out = (out or b"") + (self.h11.send(h11.Data(data=body)) or b"")
            out = (out or b"") + (self.h11.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            # The request was too broken for h11 to answer in its state: just close.
            self.finish(abort=True)
            return
        self.conn.write(out)
        self.finish(abort=False)

    def finish(self, abort: bool) -> None:
        if self.done:
            return
        self.done = True
        self.timer.cancel()
        self.server._exchanges.discard(self)
        if abort:
            self.conn.abort()
        else:
            self.conn.close()


class AdminServer(StartedAndClosedOnExit):
    """The admin endpoint: ``start()``, ``close()``, ``wait_closed()``, or ``async with``."""

    def __init__(
        self,
        stack: Stack,
        local: Endpoint,
        app: AdminApp,
        *,
        token: str | None = None,
        max_connections: int = 32,
        timeout: float = 10.0,
    ) -> None:
        self.stack = stack
        self.local = local
        self.app = app
        self.token = token
        self.max_connections = max_connections
        self.timeout = timeout
        self.listener: StreamListener | None = None
        self._exchanges: set[_Exchange] = set()

    @property
    def local_endpoint(self) -> Endpoint:
        """Where it listens (port resolved when 0 was asked for)."""
        return self.listener.local_endpoint if self.listener is not None else self.local

    async def start(self) -> None:
        self.listener = await self.stack.listen_stream(self.local, self._on_connection)

    def _on_connection(self, conn: StreamConnection) -> None:
        if len(self._exchanges) >= self.max_connections:
            conn.abort()
            return
        self._exchanges.add(_Exchange(self, conn))

    def route(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, bytes, str, tuple[tuple[str, str], ...]]:
        """``(status, body, content type, extra headers)`` for one request."""
        text = "text/plain; charset=utf-8"
        if not _host_ok(headers.get("host", "")):
            return 421, b"Host must be an IP address or localhost\n", text, ()
        if path == "/healthz":
            if method not in ("GET", "HEAD"):
                return 405, b"method not allowed\n", text, (("Allow", "GET, HEAD"),)
            ok = self.app.healthy()
            return (200, b"ok\n", text, ()) if ok else (503, b"unhealthy\n", text, ())
        if self.token is not None:
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return 401, b"token required\n", text, (("WWW-Authenticate", "Bearer"),)
        if path == "/metrics":
            if method not in ("GET", "HEAD"):
                return 405, b"method not allowed\n", text, (("Allow", "GET, HEAD"),)
            body, ctype = self.app.metrics()
            return 200, body, ctype, ()
        if path == "/sessions":
            if method not in ("GET", "HEAD"):
                return 405, b"method not allowed\n", text, (("Allow", "GET, HEAD"),)
            return 200, _json(self.app.sessions()), "application/json", ()
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "sessions" and parts[2] == "kick":
            if method != "POST":
                return 405, b"method not allowed\n", text, (("Allow", "POST"),)
            if "origin" in headers:
                return 403, b"cross-site requests are refused\n", text, ()
            if not parts[1].isdigit() or len(parts[1]) > 20:
                return 404, _json({"error": "no such session"}), "application/json", ()
            session = int(parts[1])
            if not self.app.kick(session):
                return 404, _json({"error": "no such session"}), "application/json", ()
            log.info("admin: kicked session %d", session)
            return 200, _json({"kicked": session}), "application/json", ()
        return 404, b"not found\n", text, ()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        for exchange in list(self._exchanges):
            exchange.finish(abort=True)

    async def wait_closed(self) -> None:
        if self.listener is not None:
            await self.listener.wait_closed()


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=1) + "\n").encode()
