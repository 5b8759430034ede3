"""Via processing at the transport layer: symmetric response (RFC 3581), sans-IO.

Theory of operation
-------------------
A server that receives a request stamps the top Via with where it really
came from (RFC 3261 §18.2.1): ``received=`` when the sent-by host is not the
source IP, and, when the client asked for it with a valueless ``rport``
(RFC 3581 §4), ``rport=`` with the source port. :func:`response_target` then
reads the stamped Via of a response and picks where it goes (§18.2.2, RFC
3581 §4): back over the request's connection on reliable transports; on UDP
to ``received``:``rport`` when rport is set, so the response passes the
NAT binding the request opened; else to ``maddr``, ``received`` or the
sent-by host, at the sent-by port or 5060 (5061 for TLS).

On the client side :func:`client_via` builds the Via of an outgoing request
with ``;rport`` and a fresh RFC 3261 branch (magic cookie ``z9hG4bK``, §8.1.1.7)
drawn from an injected rng.
"""

from __future__ import annotations

import string

from natkit.addr import Endpoint, canonical_ip
from natkit.rng import Rng
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.headers import Via
from natkit.sip.message import SipRequest, SipResponse

__all__ = [
    "BRANCH_MAGIC_COOKIE",
    "client_via",
    "default_port",
    "new_branch",
    "response_target",
    "stamp_received",
]

BRANCH_MAGIC_COOKIE = "z9hG4bK"
_BRANCH_ALPHABET = string.ascii_letters + string.digits
_BRANCH_RANDOM_LENGTH = 22  # ~131 bits


def default_port(transport: SipTransport) -> int:
    """5060, or 5061 for TLS (RFC 3261 §18.2.2, §19.1.2); WS/WSS have no SIP default."""
    if transport is SipTransport.TLS or transport is SipTransport.WSS:
        return 5061
    return 5060


def new_branch(rng: Rng) -> str:
    """A branch unique in space and time, starting with the cookie (§8.1.1.7)."""
    tail = "".join(rng.choice(_BRANCH_ALPHABET) for _ in range(_BRANCH_RANDOM_LENGTH))
    return BRANCH_MAGIC_COOKIE + tail


def client_via(
    transport: SipTransport, sent_by: Endpoint | str, rng: Rng, *, port: int | None = None
) -> Via:
    """The Via for an outgoing request: our sent-by, ``;branch`` and ``;rport``
    (RFC 3581 §3: a client asks for the source port of what it sends).

    ``sent_by`` is an endpoint (its port is used) or a host name with
    ``port``. Send from the socket that listens on it, so that the
    response finds its way back through the NAT (RFC 3581 §3).
    """
    via_port: int | None
    if isinstance(sent_by, Endpoint):
        host, via_port = sent_by.host, sent_by.port
    else:
        host, via_port = sent_by, port
    return Via(
        transport=transport.via_token,
        host=host,
        port=via_port,
        params=(("branch", new_branch(rng)), ("rport", None)),
    )


def _same_host(via_host: str, ip: str) -> bool:
    try:
        return canonical_ip(via_host) == ip
    except ValueError:
        return False  # a host name: never the source IP (§18.2.1)


def stamp_received(request: SipRequest, source: Source) -> None:
    """Add ``received`` (RFC 3261 §18.2.1) and fill ``rport`` (RFC 3581 §4)
    on the top Via of a request just received from ``source``.

    ``received`` is added when the sent-by host differs from the source IP,
    and always when rport is filled (RFC 3581 §4). Raises
    MalformedMessageError (400) when the request has no valid Via.
    """
    via = request.top_via
    changes: dict[str, str | None] = {}
    source_ip = source.remote.host
    if via.has_rport and via.rport is None:
        changes["rport"] = str(source.remote.port)
        changes["received"] = source_ip
    elif not _same_host(via.host, source_ip):
        changes["received"] = source_ip
    if not changes:
        return
    stamped = via.with_params(**changes)
    request.headers.remove_first("Via")
    request.headers.prepend("Via", str(stamped))


def response_target(response: SipResponse, source: Source | None = None) -> Target | None:
    """Where a response goes (RFC 3261 §18.2.2, RFC 3581 §4), from its top Via.

    ``source`` is where the request came from: on reliable transports the
    response goes back over that flow (the transport layer opens a new
    connection to the same target if it is gone). Over UDP: ``received``
    and ``rport`` when rport is set; else ``maddr``; else ``received``;
    else the sent-by host; at the sent-by port or the default port.
    Returns None for a Via whose transport natkit does not speak, or whose
    host is a name (resolving it per RFC 3263 §5 is the caller's job).
    """
    if source is not None and source.transport.reliable:
        return Target(source.transport, source.remote, source.flow)
    via = response.top_via
    transport = SipTransport.from_via(via.transport)
    if transport is None:
        return None
    received = via.received
    port = via.port if via.port is not None else default_port(transport)
    if not transport.reliable and via.rport is not None and received is not None:
        host = received
        port = via.rport
    elif via.maddr is not None:
        host = via.maddr
    elif received is not None:
        host = received
    else:
        host = via.host
    try:
        endpoint = Endpoint.of(host, port)
    except ValueError:
        return None
    if source is not None and not transport.reliable and endpoint == source.remote:
        return Target(transport, endpoint, source.flow)
    return Target(transport, endpoint)
