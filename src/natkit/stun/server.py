"""The STUN server core: Binding over UDP, TCP and TLS (RFC 8489 §6.3, §7;
RFC 5780 §6; RFC 3489 §8-9), sans-IO.

Theory of operation
-------------------
The server owns one to four local transport addresses. With only a primary
address it is a plain RFC 8489 server: it answers Binding requests with
XOR-MAPPED-ADDRESS, answers comprehension-required attributes it does not
know (including CHANGE-REQUEST) with 420, and malformed requests with 400.
Given an alternate address (a second IP and port) and ``rfc5780=True`` it
listens on all four combinations (primary/alternate IP x primary/alternate
port) and becomes a full NAT behaviour discovery server: OTHER-ADDRESS,
RESPONSE-ORIGIN, CHANGE-REQUEST answered from the changed address,
RESPONSE-PORT, PADDING; and an RFC 3489 server for cookie-less requests
(MAPPED-ADDRESS, SOURCE-ADDRESS, CHANGED-ADDRESS).

Safety: a response only ever goes to the request's source, except that
RESPONSE-PORT may change the port on the same IP (and only when RFC 5780
is enabled). RFC 3489's RESPONSE-ADDRESS is recognised and ignored, never
honoured: honouring it makes a reflector. Error responses (400, 401, 420)
are rate-limited per source IP; past the limit requests are dropped.

Outputs are :class:`~natkit.addr.Datagram` values naming the local address
to send from, which is how CHANGE-REQUEST is carried out.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from natkit.addr import Datagram, Endpoint, Transport, ip_of
from natkit.errors import MalformedMessageError
from natkit.ratelimit import RateLimiter
from natkit.stun import attributes as at
from natkit.stun.attributes import ChangeRequest
from natkit.stun.auth import Authenticated, LongTermAuthenticator, Rejected, ShortTermAuthenticator
from natkit.stun.constants import (
    FINGERPRINT_XOR,
    HEADER_LENGTH,
    MAGIC_COOKIE,
    MAGIC_COOKIE_BYTES,
    AttributeType,
    ErrorCode,
    MessageClass,
    Method,
)
from natkit.stun.message import (
    Integrity,
    StunMessage,
    parse_message,
    serialize_message,
    split_message_type,
)

__all__ = ["ServerStats", "StunServer", "StunServerConfig"]

_BASE_UNDERSTOOD = frozenset(
    {
        AttributeType.MAPPED_ADDRESS,
        AttributeType.XOR_MAPPED_ADDRESS,
        AttributeType.USERNAME,
        AttributeType.USERHASH,
        AttributeType.MESSAGE_INTEGRITY,
        AttributeType.MESSAGE_INTEGRITY_SHA256,
        AttributeType.ERROR_CODE,
        AttributeType.UNKNOWN_ATTRIBUTES,
        AttributeType.REALM,
        AttributeType.NONCE,
        AttributeType.PASSWORD_ALGORITHM,
        AttributeType.RESPONSE_ADDRESS,  # recognised, deliberately never honoured
        AttributeType.SOURCE_ADDRESS,
        AttributeType.CHANGED_ADDRESS,
        AttributeType.REFLECTED_FROM,
    }
)
_RFC5780_UNDERSTOOD = _BASE_UNDERSTOOD | {
    AttributeType.CHANGE_REQUEST,
    AttributeType.RESPONSE_PORT,
    AttributeType.PADDING,
}
MAX_PADDING = 1400

_ATTR_HEAD = struct.Struct("!HH")
_PLAIN_HEAD = b"\x00\x01\x00\x00" + MAGIC_COOKIE_BYTES  # Binding request, no attributes
_FP_REQUEST_HEAD = b"\x00\x01\x00\x08" + MAGIC_COOKIE_BYTES  # ... with FINGERPRINT only
_XOR_CACHE_SIZE = 65536
_FP_HEAD = b"\x80\x28\x00\x04"
_HEADER_SUCCESS = b"\x01\x01"  # Binding success response
_XOR_V4 = struct.Struct("!HHBBHI")  # XOR-MAPPED-ADDRESS, IPv4, whole attribute
_XOR_V6_HEAD = struct.Struct("!HHBBH")


@dataclass(frozen=True, slots=True)
class StunServerConfig:
    """``primary`` and ``alternate`` are (IP, port) pairs; the four sockets of
    an RFC 5780 server are their IP x port combinations. ``advertised`` maps a
    local IP to the public one to put in OTHER-ADDRESS etc. when the server
    sits behind a 1:1 NAT."""

    primary: Endpoint
    alternate: Endpoint | None = None
    rfc5780: bool = False
    classic: bool = True
    software: str | None = "natkit"
    authenticator: LongTermAuthenticator | ShortTermAuthenticator | None = None
    error_rate: float = 20.0
    error_burst: float = 40.0
    advertised: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rfc5780 and self.alternate is None:
            raise ValueError("RFC 5780 needs an alternate address")
        if self.alternate is not None and (
            self.alternate.host == self.primary.host or self.alternate.port == self.primary.port
        ):
            raise ValueError("the alternate address needs a different IP and a different port")
        if self.rfc5780:
            for ep in (self.primary, self.alternate):
                assert ep is not None
                if ep.port == 0 or ep.ip.is_unspecified:
                    raise ValueError("RFC 5780 needs explicit IPs and ports, not wildcards")

    @property
    def local_endpoints(self) -> list[Endpoint]:
        """Every local transport address the server listens on."""
        p, a = self.primary, self.alternate
        if a is None or not self.rfc5780:
            return [p]
        return [p, Endpoint(p.host, a.port), Endpoint(a.host, p.port), a]


@dataclass(slots=True)
class ServerStats:
    requests: int = 0
    responses: int = 0
    error_responses: int = 0
    dropped: int = 0
    rate_limited: int = 0


class StunServer:
    """Answers Binding requests; see the module docstring."""

    def __init__(self, config: StunServerConfig) -> None:
        self.config = config
        self.stats = ServerStats()
        self._out: list[Datagram] = []
        self._limiter = RateLimiter(config.error_rate, config.error_burst)
        self._understood = _RFC5780_UNDERSTOOD if config.rfc5780 else _BASE_UNDERSTOOD
        self._software = config.software
        # The common case - a bare Binding request, maybe with FINGERPRINT, to a
        # server without RFC 5780 or authentication - is answered by
        # _fast_binding without building message objects. It produces the same
        # bytes as the general path (a test holds it to that).
        self._fast = not config.rfc5780 and config.authenticator is None
        self._software_attr = b""
        if config.software is not None:
            sw = config.software.encode("utf-8")
            self._software_attr = (
                _ATTR_HEAD.pack(AttributeType.SOFTWARE, len(sw)) + sw + bytes(-len(sw) % 4)
            )
        # Response header prefixes (type and length) for each address family,
        # with and without FINGERPRINT; the XOR'd IPv4 address per source.
        sw_len = len(self._software_attr)
        self._head_v4 = _HEADER_SUCCESS + (12 + sw_len).to_bytes(2, "big")
        self._head_v4_fp = _HEADER_SUCCESS + (20 + sw_len).to_bytes(2, "big")
        self._head_v6 = _HEADER_SUCCESS + (24 + sw_len).to_bytes(2, "big")
        self._head_v6_fp = _HEADER_SUCCESS + (32 + sw_len).to_bytes(2, "big")
        self._xor_cache: dict[Endpoint, bytes] = {}

    # -- sans-IO surface -----------------------------------------------------------

    def receive_datagram(
        self,
        data: bytes,
        addr: Endpoint,
        *,
        local: Endpoint,
        now: float,
        transport: Transport = Transport.UDP,
    ) -> None:
        """Handle one datagram (or one framed message of a stream) that
        arrived at ``local`` from ``addr``; any answer is queued."""
        fast = self.answer_binding(data, addr)
        if fast is not None:
            self._out.append(Datagram(fast, addr, local))
            return
        self.stats.requests += 1
        try:
            msg = parse_message(data, allow_classic=self.config.classic)
        except MalformedMessageError as exc:
            if exc.error_code is not None:
                self._error_from_header(data, addr, local, exc.error_code, now)
            else:
                self.stats.dropped += 1
            return
        if msg.message_class != MessageClass.REQUEST:
            self.stats.dropped += 1  # indications (keepalives) and stray responses
            return
        try:
            self._handle_request(msg, addr, local, transport, now)
        except MalformedMessageError:
            self._send_error(msg, ErrorCode.BAD_REQUEST, addr, local, now)

    def answer_binding(self, data: bytes, addr: Endpoint) -> bytes | None:
        """Answer a bare Binding request inline, or return ``None``.

        The one place where a core returns output instead of queueing it:
        drivers whose transport can reply synchronously (the OS stack's UDP
        *responder* lane) call this before anything else, which saves most of
        the per-datagram Python work on the hottest path a STUN server has.
        ``None`` means "not the common case": pass the datagram to
        :meth:`receive_datagram` as usual.
        """
        if not self._fast or len(data) > 28:
            return None
        answer = self._fast_binding(data, addr)
        if answer is not None:
            stats = self.stats
            stats.requests += 1
            stats.responses += 1
        return answer

    def _fast_binding(self, data: bytes, addr: Endpoint) -> bytes | None:
        """Answer a bare Binding request (RFC 8489 §7.3), or ``None`` to take
        the general path. Only the 20-byte form and the 28-byte form with a
        valid FINGERPRINT qualify."""
        head = data[0:8]
        if head == _PLAIN_HEAD and len(data) == 20:
            with_fp = False
        elif (
            head == _FP_REQUEST_HEAD
            and len(data) == 28
            and data[20:24] == _FP_HEAD
            and int.from_bytes(data[24:28], "big")
            == (zlib.crc32(data[:20]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
        ):
            with_fp = True
        else:
            return None
        xaddr = self._xor_cache.get(addr)
        if xaddr is None:
            xaddr = self._xor_v4(addr) if ":" not in addr.host else None
        if xaddr is not None:
            header = self._head_v4_fp if with_fp else self._head_v4
            body = xaddr
        else:
            packed = ip_of(addr.host).packed
            mask = int.from_bytes(MAGIC_COOKIE_BYTES + data[8:20], "big")
            body = _XOR_V6_HEAD.pack(0x0020, 20, 0, 2, addr.port ^ 0x2112) + (
                int.from_bytes(packed, "big") ^ mask
            ).to_bytes(16, "big")
            header = self._head_v6_fp if with_fp else self._head_v6
        out = header + data[4:20] + body + self._software_attr
        if not with_fp:
            return out
        return (
            out + _FP_HEAD + ((zlib.crc32(out) ^ FINGERPRINT_XOR) & 0xFFFFFFFF).to_bytes(4, "big")
        )

    def _xor_v4(self, addr: Endpoint) -> bytes:
        cache = self._xor_cache
        if len(cache) >= _XOR_CACHE_SIZE:
            cache.clear()
        packed = ip_of(addr.host).packed
        xaddr = _XOR_V4.pack(
            0x0020, 8, 0, 1, addr.port ^ 0x2112, int.from_bytes(packed, "big") ^ MAGIC_COOKIE
        )
        cache[addr] = xaddr
        return xaddr

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        del now
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, *, now: float) -> None:
        del now

    # -- request handling ------------------------------------------------------------

    def _handle_request(
        self, msg: StunMessage, addr: Endpoint, local: Endpoint, transport: Transport, now: float
    ) -> None:
        if msg.method != Method.BINDING:
            self._send_error(msg, ErrorCode.BAD_REQUEST, addr, local, now)
            return
        key = None
        integrity = None
        auth = self.config.authenticator
        if auth is not None:
            verdict = auth.check(msg, addr, now=now)
            if isinstance(verdict, Rejected):
                self._reject(msg, verdict.response, addr, local, now)
                return
            assert isinstance(verdict, Authenticated)
            key, integrity = verdict.key, verdict.integrity
        # RFC 8489 §6.3.1: unknown comprehension-required attributes are
        # checked after authentication, and the 420 is signed like any
        # response to an authenticated request.
        unknown = msg.unknown_required(self._understood)
        if unknown:
            resp = msg.error_response(ErrorCode.UNKNOWN_ATTRIBUTE)
            resp.add(at.UNKNOWN_ATTRIBUTES, unknown)
            self._reject(msg, resp, addr, local, now, key=key, integrity=integrity)
            return

        dest = addr
        source = local
        resp = msg.success()
        if self.config.rfc5780:
            change = msg.get(at.CHANGE_REQUEST) or ChangeRequest()
            port = msg.get(at.RESPONSE_PORT)
            if transport.is_stream and (change.change_ip or change.change_port or port is not None):
                self._send_error(msg, ErrorCode.BAD_REQUEST, addr, local, now)
                return
            source = self._changed(local, change)
            if port is not None:
                dest = Endpoint(addr.host, port)
        if msg.classic:
            resp.add(at.MAPPED_ADDRESS, addr)
            resp.add(at.SOURCE_ADDRESS, self._public(source))
            if self.config.rfc5780:
                resp.add(at.CHANGED_ADDRESS, self._public(self._other(local)))
        else:
            resp.add(at.XOR_MAPPED_ADDRESS, addr)
            if self.config.rfc5780:
                resp.add(at.RESPONSE_ORIGIN, self._public(source))
                resp.add(at.OTHER_ADDRESS, self._public(self._other(local)))
                padding = msg.get(at.PADDING)
                if padding is not None:
                    # RFC 5780 §7.6: pad to the request's size to probe fragmentation.
                    resp.add(at.PADDING, bytes(min(len(padding), MAX_PADDING)))
        if self._software is not None:
            resp.add(at.SOFTWARE, self._software)
        data = serialize_message(
            resp,
            key=key,
            integrity=integrity or Integrity.SHA1,
            fingerprint=msg.has_fingerprint,
        )
        self.stats.responses += 1
        self._out.append(Datagram(data, dest, source))

    def _changed(self, local: Endpoint, change: ChangeRequest) -> Endpoint:
        alt = self.config.alternate
        p = self.config.primary
        assert alt is not None  # only called in RFC 5780 mode, which requires it
        host, port = local.host, local.port
        if change.change_ip:
            host = alt.host if host == p.host else p.host
        if change.change_port:
            port = alt.port if port == p.port else p.port
        return Endpoint(host, port)

    def _other(self, local: Endpoint) -> Endpoint:
        return self._changed(local, ChangeRequest(change_ip=True, change_port=True))

    def _public(self, ep: Endpoint) -> Endpoint:
        public = self.config.advertised.get(ep.host)
        return ep if public is None else Endpoint(public, ep.port)

    # -- errors ----------------------------------------------------------------------

    def _allowed_error(self, addr: Endpoint, now: float) -> bool:
        if self._limiter.allow(addr.host, now=now):
            return True
        self.stats.rate_limited += 1
        return False

    def _send_error(
        self, msg: StunMessage, code: int, addr: Endpoint, local: Endpoint, now: float
    ) -> None:
        self._reject(msg, msg.error_response(code), addr, local, now)

    def _reject(
        self,
        msg: StunMessage,
        resp: StunMessage,
        addr: Endpoint,
        local: Endpoint,
        now: float,
        *,
        key: bytes | None = None,
        integrity: Integrity | None = None,
    ) -> None:
        """Send an error response (signed when ``key`` is given), within the per-source rate limit.
        FINGERPRINT is echoed as on success responses, so that agents which
        demultiplex by it (ICE) recognise the answer."""
        if not self._allowed_error(addr, now):
            return
        if self._software is not None:
            resp.add(at.SOFTWARE, self._software)
        self.stats.error_responses += 1
        data = serialize_message(
            resp,
            key=key,
            integrity=integrity or Integrity.SHA1,
            fingerprint=msg.has_fingerprint and not msg.classic,
        )
        self._out.append(Datagram(data, addr, local))

    def _error_from_header(
        self, data: bytes, addr: Endpoint, local: Endpoint, code: int, now: float
    ) -> None:
        """Answer a request whose header parsed but whose body did not."""
        msg_type = int.from_bytes(data[0:2], "big")
        method, cls = split_message_type(msg_type)
        if cls != MessageClass.REQUEST or len(data) < HEADER_LENGTH:
            self.stats.dropped += 1
            return
        cookie_ok = data[4:8] == MAGIC_COOKIE_BYTES
        tid = data[8:20] if cookie_ok else data[4:20]
        self._send_error(StunMessage(method, cls, tid), code, addr, local, now)
