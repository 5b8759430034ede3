"""One HTTP/1.1 request and its response over a fresh connection, sans-IO,
on h11 (the UPnP IGD's description and SOAP control, UDA 1.1 §2-3).

Theory of operation
-------------------
:class:`HttpExchange` turns an :class:`HttpRequest` into bytes
(:meth:`data_to_send`) and bytes from the connection into an
:class:`HttpResponse` (:meth:`receive_data`, ``b""`` at end of stream), with
``Connection: close`` since every exchange gets its own TCP connection (as
UPnP control points do; IGDs often close anyway). h11 does the framing
(Content-Length, chunked, or read-until-close); this module bounds the head
(16 KiB) and the body (``max_body``), and turns every protocol violation
into :class:`~natkit.errors.MalformedMessageError`.

URLs are plain ``http://IP[:port]/path``: :func:`split_http_url` refuses
anything else, since the stack has no name resolution for UPnP and IGD
descriptions name their hosts by address.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

import h11

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError

__all__ = ["HttpExchange", "HttpRequest", "HttpResponse", "split_http_url"]

_MAX_HEAD = 16384


def split_http_url(url: str) -> tuple[Endpoint, str]:
    """The server endpoint and request target of an ``http://IP[:port]/path`` URL.

    Raises :class:`MalformedMessageError` (``error_code=None``) for another
    scheme, a host name, or a bad port.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or 80
        host = parts.hostname
        if parts.scheme != "http" or not host:
            raise ValueError("not an http URL")
        server = Endpoint.of(host, port)
    except ValueError as exc:
        raise MalformedMessageError(f"unusable URL {url[:80]!r}: {exc}", error_code=None) from exc
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return server, target


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRequest:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpResponse:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k == lname), None)


class HttpExchange:
    """One request/response on a connection of its own."""

    def __init__(self, request: HttpRequest, *, max_body: int = 65536) -> None:
        self.request = request
        self.server, target = split_http_url(request.url)
        self.max_body = max_body
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        headers = [("Host", str(self.server)), ("Connection", "close")]
        headers.extend(request.headers)
        if request.body or request.method not in ("GET", "HEAD"):
            headers.append(("Content-Length", str(len(request.body))))
        try:
            out = self._conn.send(
                h11.Request(method=request.method, target=target, headers=headers)
            )
            if request.body:
                out = (out or b"") + (self._conn.send(h11.Data(data=request.body)) or b"")
            out = (out or b"") + (self._conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError as exc:
            raise MalformedMessageError(f"cannot send request: {exc}", error_code=None) from exc
        self._pending = out
        self._head: h11.Response | None = None
        self._body = bytearray()
        self.response: HttpResponse | None = None

    def data_to_send(self) -> bytes:
        out, self._pending = self._pending, b""
        return out

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the connection (``b""``: it closed). Sets
        :attr:`response` once complete; raises :class:`MalformedMessageError`
        for a protocol violation, an oversized response, or a connection
        closed early."""
        if self.response is not None:
            return
        try:
            self._conn.receive_data(data)
            while True:
                event = self._conn.next_event()
                if event is h11.NEED_DATA:
                    # After b"" (end of stream) h11 raises instead: a response
                    # cut short is a RemoteProtocolError.
                    return
                if isinstance(event, h11.Response):
                    self._head = event
                elif isinstance(event, h11.Data):
                    self._body += event.data
                    if len(self._body) > self.max_body:
                        raise MalformedMessageError("HTTP response body too large", error_code=None)
                elif isinstance(event, h11.EndOfMessage):
                    self._finish()
                    return
                # InformationalResponse (1xx): keep reading. (ConnectionClosed
                # cannot come before EndOfMessage: h11 raises first.)
        except h11.RemoteProtocolError as exc:
            raise MalformedMessageError(f"bad HTTP response: {exc}", error_code=None) from exc

    def _finish(self) -> None:
        head = self._head
        assert head is not None  # h11 yields Response before EndOfMessage
        self.response = HttpResponse(
            status=head.status_code,
            reason=head.reason.decode("latin-1"),
            headers=tuple(
                (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in head.headers
            ),
            body=bytes(self._body),
        )
