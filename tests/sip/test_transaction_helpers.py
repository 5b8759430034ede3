"""Builders shared by the transaction tests (no tests here)."""

from __future__ import annotations

from natkit.addr import Endpoint
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.message import Headers, SipMessage, SipRequest, SipResponse, make_response
from natkit.sip.transaction import TransactionLayer
from natkit.sip.transaction_events import TransactionEvent
from natkit.sip.uri import parse_uri

UDP = SipTransport.UDP
TCP = SipTransport.TCP
UA = Endpoint("192.0.2.10", 5060)
UA_NATTED = Endpoint("203.0.113.7", 40123)
SERVER = Endpoint("198.51.100.1", 5060)
LOCAL = Endpoint("198.51.100.1", 5060)
BRANCH = "z9hG4bKtest1"


def source(transport: SipTransport = UDP, remote: Endpoint = UA) -> Source:
    return Source(transport, remote, LOCAL, f"{transport}:{remote.host}:{remote.port}")


def target(transport: SipTransport = UDP) -> Target:
    return Target(transport, SERVER)


def request(
    method: str = "INVITE",
    *,
    branch: str | None = BRANCH,
    transport: SipTransport = UDP,
    via_host: str = "192.0.2.10",
    via_port: int | None = 5060,
    rport: bool = False,
    uri: str = "sip:bob@example.org",
    to_tag: str | None = None,
    from_tag: str = "ft1",
    call_id: str = "call-1@192.0.2.10",
    seq: int = 1,
    cseq_method: str | None = None,
    routes: tuple[str, ...] = (),
    extra: tuple[tuple[str, str], ...] = (),
) -> SipRequest:
    sent_by = via_host if via_port is None else f"{via_host}:{via_port}"
    via = f"SIP/2.0/{transport.via_token} {sent_by}"
    if branch is not None:
        via += f";branch={branch}"
    if rport:
        via += ";rport"
    to = "<sip:bob@example.org>" + (f";tag={to_tag}" if to_tag else "")
    items = [("Via", via), ("Max-Forwards", "70")]
    items += [("Route", route) for route in routes]
    items += [
        ("From", f"<sip:alice@example.org>;tag={from_tag}"),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", f"{seq} {cseq_method or method}"),
        *extra,
    ]
    return SipRequest(method=method, uri=parse_uri(uri), headers=Headers(items))


def response(req: SipRequest, status: int, *, to_tag: str | None = "tt1") -> SipResponse:
    return make_response(req, status, to_tag=None if status == 100 else to_tag)


def drain(layer: TransactionLayer) -> list[TransactionEvent]:
    events = []
    while (event := layer.next_event()) is not None:
        events.append(event)
    return events


def sent(layer: TransactionLayer) -> list[SipMessage]:
    return [msg for msg, _ in layer.messages_to_send()]


def run_timers(layer: TransactionLayer, until: float) -> list[tuple[float, list[SipMessage]]]:
    """Fire timers in order up to ``until``; what each firing sent, with its time."""
    log = []
    while (deadline := layer.get_timer()) is not None and deadline <= until:
        layer.handle_timer(now=deadline)
        log.append((deadline, sent(layer)))
    return log
