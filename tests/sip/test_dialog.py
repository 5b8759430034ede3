"""SIP dialogs (RFC 3261 §12-§15): creation on both sides, in-dialog requests,
route sets, CSeq rules, ACK for 2xx, forking, target refresh, BYE, and a
round trip through two transaction layers."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.addr import Endpoint
from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.sip.dialog import (
    Dialog,
    DialogId,
    DialogSet,
    DialogState,
    DialogTable,
    creates_dialog,
)
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.headers import Via, parse_via
from natkit.sip.message import (
    Headers,
    SipMessage,
    SipRequest,
    SipResponse,
    make_response,
    parse_message,
    serialize_message,
)
from natkit.sip.transaction import TransactionLayer
from natkit.sip.transaction_events import (
    AckReceived,
    RequestReceived,
    ResponseReceived,
    TransactionEvent,
)
from natkit.sip.uri import parse_uri

ALICE_VIA = parse_via("SIP/2.0/UDP 192.0.2.10:5060")
BOB_VIA = parse_via("SIP/2.0/UDP 192.0.2.20:5060")
ALICE_CONTACT = "<sip:alice@192.0.2.10:5060>"
BOB_CONTACT = "<sip:bob@192.0.2.20:5060>"
P1 = "<sip:p1.example.com;lr>"
P2 = "<sip:p2.example.net;lr>"
STRICT = "<sip:strict.example.org;maddr=10.0.0.1>"


def invite(
    *,
    method: str = "INVITE",
    uri: str = "sip:bob@example.org",
    record_route: tuple[str, ...] = (),
    contact: str | None = ALICE_CONTACT,
    seq: int = 1,
    extra: tuple[tuple[str, str], ...] = (),
) -> SipRequest:
    items = [
        ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKinv1"),
        ("Max-Forwards", "70"),
        *(("Record-Route", rr) for rr in record_route),
        ("From", '"Alice" <sip:alice@example.org>;tag=a1'),
        ("To", "<sip:bob@example.org>"),
        ("Call-ID", "c1@192.0.2.10"),
        ("CSeq", f"{seq} {method}"),
        *extra,
    ]
    if contact is not None:
        items.append(("Contact", contact))
    return SipRequest(method=method, uri=parse_uri(uri), headers=Headers(items))


def answer(
    req: SipRequest, status: int, *, tag: str | None = "b1", contact: str | None = BOB_CONTACT
) -> SipResponse:
    headers = [("Contact", contact)] if contact is not None else []
    return make_response(req, status, to_tag=tag, headers=headers, copy_record_route=True)


def uac_dialog(record_route: tuple[str, ...] = (), status: int = 200) -> tuple[Dialog, SipRequest]:
    req = invite(record_route=record_route)
    return Dialog.from_uac(req, answer(req, status)), req


def uas_dialog(
    record_route: tuple[str, ...] = (), status: int = 200, seq: int = 1
) -> tuple[Dialog, SipRequest]:
    req = invite(record_route=record_route, seq=seq)
    return Dialog.from_uas(req, answer(req, status)), req


def in_dialog(
    method: str, seq: int, *, to_tag: str = "b1", from_tag: str = "a1", contact: str | None = None
) -> SipRequest:
    """A request Alice (the UAC) sends into Bob's (the UAS's) dialog."""
    items = [
        ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx" + method + str(seq)),
        ("From", f"<sip:alice@example.org>;tag={from_tag}"),
        ("To", f"<sip:bob@example.org>;tag={to_tag}"),
        ("Call-ID", "c1@192.0.2.10"),
        ("CSeq", f"{seq} {method}"),
    ]
    if contact is not None:
        items.append(("Contact", contact))
    return SipRequest(method=method, uri=parse_uri("sip:bob@192.0.2.20"), headers=Headers(items))


def routes_of(req: SipRequest) -> list[str]:
    return [str(r.uri) for r in req.name_addrs("Route")]


# ---------------------------------------------------------------- creation


@pytest.mark.parametrize(
    ("method", "status", "to_tag", "expected"),
    [
        pytest.param("INVITE", 100, None, False, id="100-none"),
        pytest.param("INVITE", 180, None, False, id="180-without-tag"),
        pytest.param("INVITE", 180, "b1", True, id="180-with-tag-early"),
        pytest.param("INVITE", 200, "b1", True, id="200"),
        pytest.param("INVITE", 200, None, True, id="200-rfc2543-no-tag"),
        pytest.param("INVITE", 486, "b1", False, id="486"),
        pytest.param("SUBSCRIBE", 200, "b1", True, id="subscribe-200"),
        pytest.param("REFER", 202, "b1", True, id="refer-202"),
        pytest.param("OPTIONS", 200, "b1", False, id="options-200"),
        pytest.param("MESSAGE", 200, "b1", False, id="message-200"),
    ],
)
def test_creates_dialog_table(method: str, status: int, to_tag: str | None, expected: bool) -> None:
    req = invite(method=method)
    assert creates_dialog(req, answer(req, status, tag=to_tag)) is expected


def test_request_inside_dialog_creates_none() -> None:
    req = in_dialog("INVITE", 2)
    assert not creates_dialog(req, answer(req, 200))


@pytest.mark.parametrize(
    ("record_route", "status", "state", "route_set"),
    [
        pytest.param((), 200, DialogState.CONFIRMED, [], id="no-record-route"),
        pytest.param((P1,), 200, DialogState.CONFIRMED, [P1], id="one-proxy"),
        pytest.param((P1, P2), 200, DialogState.CONFIRMED, [P2, P1], id="two-lines-reversed"),
        pytest.param(
            (f"{P1}, {P2}",), 200, DialogState.CONFIRMED, [P2, P1], id="comma-list-reversed"
        ),
        pytest.param((P1, P2), 180, DialogState.EARLY, [P2, P1], id="early-180"),
    ],
)
def test_uac_creation(
    record_route: tuple[str, ...], status: int, state: DialogState, route_set: list[str]
) -> None:
    dialog, _ = uac_dialog(record_route, status)
    assert dialog.id == DialogId("c1@192.0.2.10", "a1", "b1")
    assert dialog.state is state
    assert [str(r) for r in dialog.route_set] == route_set
    assert str(dialog.remote_target) == "sip:bob@192.0.2.20:5060"
    assert str(dialog.local_uri) == "sip:alice@example.org"
    assert str(dialog.remote_uri) == "sip:bob@example.org"
    assert dialog.local_seq == 1
    assert dialog.remote_seq is None
    assert dialog.is_uac
    assert not dialog.secure


@pytest.mark.parametrize(
    ("record_route", "status", "state", "route_set"),
    [
        pytest.param((), 200, DialogState.CONFIRMED, [], id="no-record-route"),
        pytest.param((P1, P2), 200, DialogState.CONFIRMED, [P1, P2], id="two-lines-in-order"),
        pytest.param((f"{P1}, {P2}",), 200, DialogState.CONFIRMED, [P1, P2], id="comma-list"),
        pytest.param((P1,), 183, DialogState.EARLY, [P1], id="early-183"),
    ],
)
def test_uas_creation(
    record_route: tuple[str, ...], status: int, state: DialogState, route_set: list[str]
) -> None:
    dialog, _ = uas_dialog(record_route, status, seq=7)
    assert dialog.id == DialogId("c1@192.0.2.10", "b1", "a1")
    assert dialog.state is state
    assert [str(r) for r in dialog.route_set] == route_set
    assert str(dialog.remote_target) == "sip:alice@192.0.2.10:5060"
    assert str(dialog.local_uri) == "sip:bob@example.org"
    assert dialog.remote_party.display_name == "Alice"
    assert dialog.remote_seq == 7
    assert dialog.local_seq is None
    assert not dialog.is_uac


def test_both_sides_route_the_same_way() -> None:
    """The UAC's reversed route set and the UAS's in-order one point each
    side's first hop at the proxy nearest to it."""
    uac, _ = uac_dialog((P1, P2))
    uas, _ = uas_dialog((P1, P2))
    assert str(uac.next_hop) == "sip:p2.example.net;lr"
    assert str(uas.next_hop) == "sip:p1.example.com;lr"


@pytest.mark.parametrize(
    ("uri", "secure_transport", "secure"),
    [
        pytest.param("sips:bob@example.org", True, True, id="sips-over-tls"),
        pytest.param("sips:bob@example.org", False, False, id="sips-not-over-tls"),
        pytest.param("sip:bob@example.org", True, False, id="sip"),
    ],
)
def test_secure_flag(uri: str, secure_transport: bool, secure: bool) -> None:
    req = invite(uri=uri)
    resp = answer(req, 200)
    assert Dialog.from_uac(req, resp, secure_transport=secure_transport).secure is secure
    assert Dialog.from_uas(req, resp, secure_transport=secure_transport).secure is secure


@pytest.mark.parametrize(
    ("status", "tag", "contact", "error"),
    [
        pytest.param(100, None, BOB_CONTACT, LocalProtocolError, id="100"),
        pytest.param(180, None, BOB_CONTACT, LocalProtocolError, id="180-no-tag"),
        pytest.param(486, "b1", BOB_CONTACT, LocalProtocolError, id="486"),
        pytest.param(200, "b1", None, MalformedMessageError, id="200-no-contact"),
        pytest.param(200, "b1", "*", MalformedMessageError, id="200-contact-star"),
    ],
)
def test_uac_creation_refused(
    status: int, tag: str | None, contact: str | None, error: type[Exception]
) -> None:
    req = invite()
    with pytest.raises(error):
        Dialog.from_uac(req, answer(req, status, tag=tag, contact=contact))


def test_uac_early_dialog_without_contact_targets_request_uri() -> None:
    req = invite()
    dialog = Dialog.from_uac(req, answer(req, 180, contact=None))
    assert str(dialog.remote_target) == "sip:bob@example.org"


def test_uac_refuses_response_of_other_request() -> None:
    req = invite()
    other = invite(seq=5)
    with pytest.raises(LocalProtocolError):
        Dialog.from_uac(req, answer(other, 200))


def test_uas_refuses_response_without_record_route_copy() -> None:
    req = invite(record_route=(P1,))
    resp = make_response(req, 200, to_tag="b1", headers=[("Contact", BOB_CONTACT)])
    with pytest.raises(LocalProtocolError, match="Record-Route"):
        Dialog.from_uas(req, resp)


def test_uas_refuses_response_without_to_tag() -> None:
    req = invite()
    with pytest.raises(LocalProtocolError):
        Dialog.from_uas(req, answer(req, 200, tag=None))


def test_uas_request_without_contact_is_400() -> None:
    req = invite(contact=None)
    with pytest.raises(MalformedMessageError) as info:
        Dialog.from_uas(req, answer(req, 200))
    assert info.value.error_code == 400


def test_uas_without_from_tag_has_empty_remote_tag() -> None:
    req = invite()
    req.headers.set("From", "<sip:alice@example.org>")
    assert Dialog.from_uas(req, answer(req, 200)).id.remote_tag == ""


# ---------------------------------------------------------------- requests within


@pytest.mark.parametrize(
    ("route_set", "request_uri", "routes"),
    [
        pytest.param((), "sip:bob@192.0.2.20:5060", [], id="no-routes"),
        pytest.param(
            (P1, P2),
            "sip:bob@192.0.2.20:5060",
            ["sip:p1.example.com;lr", "sip:p2.example.net;lr"],
            id="loose",
        ),
        pytest.param(
            (STRICT, P2),
            "sip:strict.example.org;maddr=10.0.0.1",
            ["sip:p2.example.net;lr", "sip:bob@192.0.2.20:5060"],
            id="strict-first",
        ),
        pytest.param(
            ("<sip:strict.example.org;method=INVITE?x=y>",),
            "sip:strict.example.org",
            ["sip:bob@192.0.2.20:5060"],
            id="strict-stripped-of-method-and-headers",
        ),
        pytest.param(
            (P1, STRICT),
            "sip:bob@192.0.2.20:5060",
            ["sip:p1.example.com;lr", "sip:strict.example.org;maddr=10.0.0.1"],
            id="strict-not-first-is-loose",
        ),
    ],
)
def test_request_uri_and_route(
    route_set: tuple[str, ...], request_uri: str, routes: list[str]
) -> None:
    # the UAS side keeps Record-Route order, so the route set is route_set
    dialog, _ = uas_dialog(route_set)
    dialog.remote_target = parse_uri("sip:bob@192.0.2.20:5060")
    req = dialog.create_request("INFO", via=BOB_VIA)
    assert str(req.uri) == request_uri
    assert routes_of(req) == routes
    assert dialog.strict_routing is (bool(route_set) and "lr" not in route_set[0])
    first_hop = route_set[0].strip("<>") if route_set else "sip:bob@192.0.2.20:5060"
    assert str(dialog.next_hop) == first_hop


def test_request_headers() -> None:
    dialog, _ = uac_dialog()
    req = dialog.create_request("BYE", via=ALICE_VIA.with_params(branch="z9hG4bKold"))
    assert req.method == "BYE"
    assert req.from_.tag == "a1" and req.to.tag == "b1"
    assert str(req.from_.uri) == "sip:alice@example.org"
    assert req.from_.display_name == "Alice"
    assert req.call_id == "c1@192.0.2.10"
    assert (req.cseq.seq, req.cseq.method) == (2, "BYE")
    assert req.max_forwards == 70
    assert req.top_via.branch is None
    assert req.contacts == []  # BYE is no target refresh
    reinvite = Dialog.from_uac(*_fresh_uac()).create_request("INVITE", via=ALICE_VIA)
    contacts = reinvite.contacts
    assert contacts != "*"
    assert [str(c.uri) for c in contacts] == ["sip:alice@192.0.2.10:5060"]


def _fresh_uac() -> tuple[SipRequest, SipResponse]:
    req = invite()
    return req, answer(req, 200)


def test_local_cseq_increments() -> None:
    dialog, _ = uac_dialog()
    seqs = [dialog.create_request(m, via=ALICE_VIA).cseq.seq for m in ("INFO", "UPDATE", "INFO")]
    assert seqs == [2, 3, 4]
    assert dialog.local_seq == 4


@pytest.mark.parametrize(
    ("rng", "first"),
    [
        pytest.param(None, 1, id="no-rng-starts-at-1"),
        pytest.param(random.Random(5), random.Random(5).randrange(1, 2**30), id="from-rng"),
    ],
)
def test_uas_local_cseq_starts(rng: random.Random | None, first: int) -> None:
    req = invite()
    dialog = Dialog.from_uas(req, answer(req, 200), rng=rng)
    assert dialog.create_request("INFO", via=BOB_VIA).cseq.seq == first
    assert dialog.create_request("INFO", via=BOB_VIA).cseq.seq == first + 1


def test_cseq_exhaustion_raises() -> None:
    dialog, _ = uac_dialog()
    dialog.local_seq = 2**31 - 1
    with pytest.raises(LocalProtocolError):
        dialog.create_request("INFO", via=ALICE_VIA)


@pytest.mark.parametrize(
    "method", [pytest.param("ACK", id="ack"), pytest.param("CANCEL", id="cancel")]
)
def test_ack_and_cancel_not_through_create_request(method: str) -> None:
    dialog, _ = uac_dialog()
    with pytest.raises(LocalProtocolError):
        dialog.create_request(method, via=ALICE_VIA)


def test_bye_terminates_and_no_more_requests() -> None:
    dialog, _ = uac_dialog()
    dialog.create_request("BYE", via=ALICE_VIA)
    assert dialog.state is DialogState.TERMINATED
    with pytest.raises(LocalProtocolError):
        dialog.create_request("INFO", via=ALICE_VIA)


# ---------------------------------------------------------------- ACK for 2xx


def test_ack_for_2xx() -> None:
    req = invite(
        record_route=(P1, P2),
        seq=9,
        extra=(("Proxy-Authorization", 'Digest username="alice"'), ("Authorization", "Digest x")),
    )
    dialog = Dialog.from_uac(req, answer(req, 200))
    ack = dialog.create_ack(req, via=ALICE_VIA, body=b"v=0\r\n")
    assert ack.method == "ACK"
    assert (ack.cseq.seq, ack.cseq.method) == (9, "ACK")
    assert str(ack.uri) == "sip:bob@192.0.2.20:5060"
    assert routes_of(ack) == ["sip:p2.example.net;lr", "sip:p1.example.com;lr"]
    assert ack.to.tag == "b1"
    assert ack.headers.get("Proxy-Authorization") == 'Digest username="alice"'
    assert ack.headers.get("Authorization") == "Digest x"
    assert ack.body == b"v=0\r\n"
    assert dialog.local_seq == 9  # unchanged


def test_ack_needs_invite() -> None:
    dialog, _ = uac_dialog()
    with pytest.raises(LocalProtocolError):
        dialog.create_ack(in_dialog("INFO", 2), via=ALICE_VIA)


# ---------------------------------------------------------------- forking


def test_forked_invite_makes_two_dialogs() -> None:
    req = invite(record_route=(P1,))
    dialogs = DialogSet(req)
    assert dialogs.receive_response(answer(req, 100, tag=None)) is None
    early_a = dialogs.receive_response(answer(req, 180, tag="fa"))
    early_b = dialogs.receive_response(answer(req, 180, tag="fb", contact="<sip:bob@192.0.2.30>"))
    assert early_a is not None and early_b is not None and early_a is not early_b
    assert len(dialogs) == 2
    confirmed = dialogs.receive_response(answer(req, 200, tag="fb", contact="<sip:bob@192.0.2.31>"))
    assert confirmed is early_b
    assert early_b.state is DialogState.CONFIRMED
    assert str(early_b.remote_target) == "sip:bob@192.0.2.31"
    assert early_a.state is DialogState.EARLY
    late = dialogs.receive_response(answer(req, 200, tag="fc"))  # a third fork answers too
    assert late is not None and late.state is DialogState.CONFIRMED and len(dialogs) == 3
    table = DialogTable()
    for dialog in dialogs:
        table.add(dialog)
    assert table.match_response(answer(req, 200, tag="fa")) is early_a
    assert table.get(DialogId("c1@192.0.2.10", "a1", "fc")) is late


def test_final_error_terminates_early_dialogs() -> None:
    req = invite()
    dialogs = DialogSet(req)
    early = dialogs.receive_response(answer(req, 183, tag="fa"))
    assert dialogs.receive_response(answer(req, 486, tag="fz")) is None
    assert early is not None and early.state is DialogState.TERMINATED


def test_2xx_recomputes_route_set_of_early_dialog() -> None:
    req = invite(record_route=(P1,))
    dialog = Dialog.from_uac(req, answer(req, 180))
    final = answer(req, 200)
    final.headers.set("Record-Route", P2)
    final.headers.add("Record-Route", P1)
    dialog.receive_response(req, final)
    assert dialog.state is DialogState.CONFIRMED
    assert [str(r) for r in dialog.route_set] == [P1, P2]


def test_1xx_of_other_fork_leaves_dialog_alone() -> None:
    req = invite()
    dialog = Dialog.from_uac(req, answer(req, 180))
    dialog.receive_response(req, answer(req, 200, tag="other", contact="<sip:x@192.0.2.99>"))
    assert dialog.state is DialogState.EARLY
    assert str(dialog.remote_target) == "sip:bob@192.0.2.20:5060"


# ---------------------------------------------------------------- target refresh


def test_uac_target_refresh_on_2xx_to_reinvite() -> None:
    dialog, _ = uac_dialog()
    reinvite = dialog.create_request("INVITE", via=ALICE_VIA)
    dialog.receive_response(reinvite, answer(reinvite, 200, contact="<sip:bob@198.51.100.9>"))
    assert str(dialog.remote_target) == "sip:bob@198.51.100.9"
    info = dialog.create_request("INFO", via=ALICE_VIA)
    dialog.receive_response(info, answer(info, 200, contact="<sip:bob@203.0.113.1>"))
    assert str(dialog.remote_target) == "sip:bob@198.51.100.9"  # INFO refreshes nothing


@pytest.mark.parametrize("status", [pytest.param(481, id="481"), pytest.param(408, id="408")])
def test_uac_481_or_408_terminates(status: int) -> None:
    dialog, _ = uac_dialog()
    info = dialog.create_request("INFO", via=ALICE_VIA)
    dialog.receive_response(info, answer(info, status))
    assert dialog.terminated


@pytest.mark.parametrize(
    ("method", "refreshes"),
    [
        pytest.param("INVITE", True, id="reinvite"),
        pytest.param("UPDATE", True, id="update"),
        pytest.param("INFO", False, id="info"),
    ],
)
def test_uas_target_refresh_on_request(method: str, refreshes: bool) -> None:
    dialog, _ = uas_dialog()
    assert dialog.receive_request(in_dialog(method, 2, contact="<sip:alice@203.0.113.5>")) is None
    expected = "sip:alice@203.0.113.5" if refreshes else "sip:alice@192.0.2.10:5060"
    assert str(dialog.remote_target) == expected


# ---------------------------------------------------------------- receiving


@pytest.mark.parametrize(
    ("method", "seq", "to_tag", "verdict", "remote_seq"),
    [
        pytest.param("INFO", 6, "b1", None, 6, id="higher-accepted"),
        pytest.param("INFO", 5, "b1", None, 5, id="equal-accepted"),
        pytest.param("INFO", 4, "b1", 500, 5, id="lower-500"),
        pytest.param("ACK", 5, "b1", None, 5, id="ack-same-seq"),
        pytest.param("CANCEL", 3, "b1", None, 5, id="cancel-unchecked"),
        pytest.param("INFO", 9, "zz", 481, 5, id="other-dialog-481"),
    ],
)
def test_uas_cseq_rules(
    method: str, seq: int, to_tag: str, verdict: int | None, remote_seq: int
) -> None:
    dialog, _ = uas_dialog(seq=5)
    assert dialog.receive_request(in_dialog(method, seq, to_tag=to_tag)) == verdict
    assert dialog.remote_seq == remote_seq


def test_uac_first_remote_request_sets_remote_seq() -> None:
    dialog, _ = uac_dialog()
    bye = in_dialog("BYE", 1234, to_tag="a1", from_tag="b1")
    assert dialog.receive_request(bye) is None
    assert dialog.remote_seq == 1234
    assert dialog.terminated


def test_bye_received_terminates_then_481() -> None:
    dialog, _ = uas_dialog()
    assert dialog.receive_request(in_dialog("BYE", 2)) is None
    assert dialog.terminated
    assert dialog.receive_request(in_dialog("INFO", 3)) == 481


def test_uas_response_sent_transitions() -> None:
    req = invite()
    dialog = Dialog.from_uas(req, answer(req, 180))
    dialog.response_sent(req, answer(req, 200))
    assert dialog.state is DialogState.CONFIRMED
    other = Dialog.from_uas(req, answer(req, 180))
    other.response_sent(req, answer(req, 603))
    assert other.terminated


def test_table_matches_requests_and_drops_terminated() -> None:
    dialog, _ = uas_dialog()
    table = DialogTable()
    table.add(dialog)
    assert table.match_request(in_dialog("INFO", 2)) is dialog
    assert table.match_request(in_dialog("INFO", 2, to_tag="nope")) is None
    assert table.match_request(invite()) is None  # no To tag: no dialog
    dialog.receive_request(in_dialog("BYE", 3))
    assert table.remove_terminated() == 1
    assert len(table) == 0


# ---------------------------------------------------------------- round trip


ALICE = Endpoint("192.0.2.10", 5060)
BOB = Endpoint("192.0.2.20", 5060)


def _deliver(
    sender: TransactionLayer, receiver: TransactionLayer, frm: Endpoint, to: Endpoint, now: float
) -> list[SipMessage]:
    """Move everything ``sender`` queued to ``receiver`` through the codec."""
    moved = []
    for message, _target in sender.messages_to_send():
        wire = parse_message(serialize_message(message))
        moved.append(wire)
        receiver.receive_message(wire, Source(SipTransport.UDP, frm, to, "udp:1"), now=now)
    return moved


def _events(layer: TransactionLayer) -> list[TransactionEvent]:
    out = []
    while (event := layer.next_event()) is not None:
        out.append(event)
    return out


def test_invite_200_ack_bye_through_two_transaction_layers() -> None:
    alice = TransactionLayer(rng=random.Random(1))
    bob = TransactionLayer(rng=random.Random(2))
    to_bob = Target(SipTransport.UDP, BOB)
    to_alice = Target(SipTransport.UDP, ALICE)
    now = 0.0

    inv = invite(record_route=())
    inv.headers.remove("Via")
    inv.headers.prepend("Via", str(ALICE_VIA))
    alice.send_request(inv, to_bob, now=now)
    _deliver(alice, bob, ALICE, BOB, now)
    [received] = [e for e in _events(bob) if isinstance(e, RequestReceived)]
    ok = make_response(
        received.request,
        200,
        to_tag="b1",
        headers=[("Contact", BOB_CONTACT)],
        copy_record_route=True,
    )
    bob_dialog = Dialog.from_uas(received.request, ok, rng=random.Random(3))
    bob.send_response(ok, now=now)
    _deliver(bob, alice, BOB, ALICE, now)
    [got] = [e for e in _events(alice) if isinstance(e, ResponseReceived)]
    assert got.response.status == 200
    calls = DialogSet(inv)
    alice_dialog = calls.receive_response(got.response)
    assert alice_dialog is not None and alice_dialog.state is DialogState.CONFIRMED
    assert alice_dialog.id.local_tag == bob_dialog.id.remote_tag

    now = 0.1
    ack = alice_dialog.create_ack(inv, via=ALICE_VIA)
    alice.send_request(ack, Target(SipTransport.UDP, BOB), now=now)
    _deliver(alice, bob, ALICE, BOB, now)
    [acked] = [e for e in _events(bob) if isinstance(e, AckReceived)]
    assert bob_dialog.receive_request(acked.request) is None
    assert acked.request.cseq.seq == inv.cseq.seq

    now = 5.0
    bye = bob_dialog.create_request("BYE", via=BOB_VIA)
    assert str(bye.uri) == "sip:alice@192.0.2.10:5060"
    bob.send_request(bye, to_alice, now=now)
    _deliver(bob, alice, BOB, ALICE, now)
    [bye_in] = [e for e in _events(alice) if isinstance(e, RequestReceived)]
    assert bye_in.request.method == "BYE"
    table = DialogTable()
    table.add(alice_dialog)
    assert table.match_request(bye_in.request) is alice_dialog
    assert alice_dialog.receive_request(bye_in.request) is None
    assert alice_dialog.terminated
    alice.send_response(make_response(bye_in.request, 200), now=now)
    _deliver(alice, bob, ALICE, BOB, now)
    [bye_ok] = [e for e in _events(bob) if isinstance(e, ResponseReceived)]
    assert bye_ok.response.status == 200
    bob_dialog.receive_response(bye, bye_ok.response)
    assert bob_dialog.terminated


# ---------------------------------------------------------------- robustness

_HEADER_TEXT = st.one_of(
    st.text(alphabet=st.sampled_from('abz09@:;<>"=,.-_ \\/*?%[]tagsip'), max_size=40),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(
    header=st.sampled_from(["From", "To", "Call-ID", "CSeq", "Contact", "Record-Route", "Via"]),
    value=_HEADER_TEXT,
    status=st.sampled_from([100, 180, 183, 200, 202, 486]),
    on_response=st.booleans(),
)
def test_random_header_content_raises_only_protocol_errors(
    header: str, value: str, status: int, on_response: bool
) -> None:
    req = invite(record_route=(P1,))
    resp = answer(req, status)
    (resp if on_response else req).headers.set(header, value)
    for uac in (True, False):
        try:
            dialog = Dialog.from_uac(req, resp) if uac else Dialog.from_uas(req, resp)
        except (MalformedMessageError, LocalProtocolError):
            continue
        try:
            dialog.create_request("INFO", via=ALICE_VIA)
            dialog.receive_request(in_dialog("INFO", 3))
        except (MalformedMessageError, LocalProtocolError):
            pass


def test_via_param_keeps_host() -> None:
    dialog, _ = uac_dialog()
    via = Via("TCP", "alice.example.org", 5070, (("rport", None),))
    assert (
        str(dialog.create_request("INFO", via=via).top_via)
        == "SIP/2.0/TCP alice.example.org:5070;rport"
    )


# ---------------------------------------------------------------- §14 re-INVITE, §15 BYE rules


def test_reinvite_glare_is_491() -> None:
    dialog, _ = uas_dialog()
    dialog.create_request("INVITE", via=BOB_VIA)  # Bob's own re-INVITE in progress
    assert dialog.invite_out_pending
    assert dialog.receive_request(in_dialog("INVITE", 2, contact=ALICE_CONTACT)) == 491


def test_second_reinvite_before_final_is_500() -> None:
    dialog, _ = uas_dialog()
    first = in_dialog("INVITE", 2, contact=ALICE_CONTACT)
    assert dialog.receive_request(first) is None
    assert dialog.receive_request(in_dialog("INVITE", 3, contact=ALICE_CONTACT)) == 500
    dialog.response_sent(first, answer(first, 200))
    assert not dialog.invite_in_pending
    assert dialog.receive_request(in_dialog("INVITE", 4, contact=ALICE_CONTACT)) is None


def test_no_reinvite_while_invite_in_progress() -> None:
    req = invite()
    dialog = Dialog.from_uac(req, answer(req, 180))
    with pytest.raises(LocalProtocolError, match=r"§14\.1"):
        dialog.create_request("INVITE", via=ALICE_VIA)
    dialog.receive_response(req, answer(req, 200))
    reinvite = dialog.create_request("INVITE", via=ALICE_VIA)
    with pytest.raises(LocalProtocolError):
        dialog.create_request("INVITE", via=ALICE_VIA)
    dialog.receive_response(reinvite, answer(reinvite, 491))
    assert not dialog.terminated  # a failed re-INVITE leaves the dialog (§14.1)
    dialog.create_request("INVITE", via=ALICE_VIA)


def test_callee_cannot_bye_early_dialog_but_caller_can() -> None:
    req = invite()
    callee = Dialog.from_uas(req, answer(req, 180))
    with pytest.raises(LocalProtocolError, match="early"):
        callee.create_request("BYE", via=BOB_VIA)
    caller = Dialog.from_uac(req, answer(req, 180))
    assert caller.create_request("BYE", via=ALICE_VIA).method == "BYE"


@settings(max_examples=300, deadline=None)
@given(
    header=st.sampled_from(["From", "To", "Call-ID", "CSeq", "Contact", "Record-Route"]),
    value=_HEADER_TEXT,
    method=st.sampled_from(["INVITE", "UPDATE", "INFO", "BYE", "ACK", "CANCEL"]),
    status=st.sampled_from([180, 200, 408, 481, 491]),
)
def test_random_in_dialog_content_raises_only_protocol_errors(
    header: str, value: str, method: str, status: int
) -> None:
    dialog, _ = uas_dialog()
    incoming = in_dialog(method, 2, contact=ALICE_CONTACT)
    incoming.headers.set(header, value)
    try:
        verdict = dialog.receive_request(incoming)
    except MalformedMessageError:
        verdict = 400
    assert verdict in (None, 400, 481, 500, 491)
    caller, _ = uac_dialog()
    sent = caller.create_request("UPDATE", via=ALICE_VIA)
    reply = answer(sent, status)
    reply.headers.set(header, value)
    with contextlib.suppress(MalformedMessageError):
        caller.receive_response(sent, reply)
