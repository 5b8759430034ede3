"""Proxy forwarding steps (RFC 3261 §16.4, §16.6, §16.7, §16.11)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from natkit.sip.forwarding import (
    forward_request,
    is_looped,
    loop_branch,
    loop_key,
    next_hop,
    pop_own_via,
    preprocess_routes,
    stateless_branch,
)
from natkit.sip.headers import NameAddr, Via, parse_name_addr
from natkit.sip.message import SipRequest, SipResponse, parse_message
from natkit.sip.uri import SipUri, parse_uri

PROXY = "192.0.2.1"


def own(uri: SipUri) -> bool:
    return uri.host == PROXY and uri.lr


def request(extra: str = "", uri: str = "sip:bob@example.org") -> SipRequest:
    text = (
        f"INVITE {uri} SIP/2.0\n"
        "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKabc\n"
        f"{extra}"
        "From: <sip:alice@example.org>;tag=1\n"
        "To: <sip:bob@example.org>\n"
        "Call-ID: f1\nCSeq: 1 INVITE\nContent-Length: 0\n\n"
    )
    parsed = parse_message(text.replace("\n", "\r\n").encode())
    assert isinstance(parsed, SipRequest)
    return parsed


def test_own_top_route_is_popped_and_returned() -> None:
    original = request(f"Route: <sip:{PROXY};lr>, <sip:198.51.100.9;lr>\n")
    out, popped = preprocess_routes(original, own)
    assert popped is not None and str(popped.uri) == f"sip:{PROXY};lr"
    assert [str(r.uri) for r in out.name_addrs("Route")] == ["sip:198.51.100.9;lr"]
    assert len(original.name_addrs("Route")) == 2  # the input is left alone


def test_foreign_top_route_stays() -> None:
    out, popped = preprocess_routes(request("Route: <sip:198.51.100.9;lr>\n"), own)
    assert popped is None and len(out.name_addrs("Route")) == 1


def test_strict_router_rewrite_is_undone() -> None:
    original = request(
        "Route: <sip:198.51.100.9;lr>, <sip:bob@example.org>\n", uri=f"sip:{PROXY};lr"
    )
    out, popped = preprocess_routes(original, own)
    assert str(out.uri) == "sip:bob@example.org"
    assert popped is None
    assert [str(r.uri) for r in out.name_addrs("Route")] == ["sip:198.51.100.9;lr"]


def test_forward_request_applies_section_16_6() -> None:
    via = Via("UDP", PROXY, 5060, (("branch", "z9hG4bKout"),))
    path = parse_name_addr("<sip:tok@192.0.2.50;lr>")
    out = forward_request(
        request("Max-Forwards: 10\n"),
        via=via,
        uri=parse_uri("sip:bob@203.0.113.4:5062"),
        record_route=NameAddr(parse_uri(f"sip:{PROXY};lr")),
        push_routes=[path],
    )
    assert str(out.uri) == "sip:bob@203.0.113.4:5062"
    assert out.max_forwards == 9
    assert out.headers.get("Record-Route") == f"<sip:{PROXY};lr>"
    assert next_hop(out) == path.uri
    assert out.top_via.branch == "z9hG4bKout" and len(out.vias) == 2


def test_missing_max_forwards_becomes_70() -> None:
    out = forward_request(request(), via=Via("UDP", PROXY, None, (("branch", "z9hG4bKx"),)))
    assert out.max_forwards == 70
    assert next_hop(out) == out.uri


def test_stateless_branch_for_rfc2543_requests_is_stable() -> None:
    legacy = request()
    legacy.headers.set("Via", "SIP/2.0/UDP 198.51.100.7:5060")
    assert stateless_branch(legacy) == stateless_branch(legacy.copy())
    assert stateless_branch(legacy).startswith("z9hG4bK")
    assert stateless_branch(legacy, salt="a") != stateless_branch(legacy, salt="b")


def response(*vias: str) -> SipResponse:
    text = (
        "SIP/2.0 180 Ringing\n"
        + "".join(f"Via: {v}\n" for v in vias)
        + "From: <sip:alice@example.org>;tag=1\nTo: <sip:bob@example.org>;tag=2\n"
        "Call-ID: f1\nCSeq: 1 INVITE\nContent-Length: 0\n\n"
    )
    parsed = parse_message(text.replace("\n", "\r\n").encode())
    assert isinstance(parsed, SipResponse)
    return parsed


def is_own_via(via: Via) -> bool:
    return via.host == PROXY


def test_pop_own_via() -> None:
    popped = pop_own_via(
        response(f"SIP/2.0/UDP {PROXY};branch=z9hG4bKp", "SIP/2.0/UDP 198.51.100.7"), is_own_via
    )
    assert popped is not None
    out, via = popped
    assert via.host == PROXY and [v.host for v in out.vias] == ["198.51.100.7"]


def test_pop_own_via_refuses_foreign_or_last_via() -> None:
    assert pop_own_via(response("SIP/2.0/UDP 198.51.100.7"), is_own_via) is None
    assert pop_own_via(response(f"SIP/2.0/UDP {PROXY};branch=z9hG4bKp"), is_own_via) is None


# -- loop detection (§16.3 step 4, §16.6 step 8) -------------------------------------

OWN_VIA = Via("UDP", PROXY, 5060)


def forwarded_back(received: SipRequest, *, via: Via = OWN_VIA) -> SipRequest:
    """``received`` forwarded by us with a loop branch, then by another proxy
    back to us (its Via on top, Max-Forwards down again)."""
    ours = forward_request(
        received, via=via.with_params(branch=loop_branch(received, "z9hG4bK1234"))
    )
    return forward_request(
        ours, via=Via("UDP", "198.51.100.50", 5060, params=(("branch", "z9hG4bKother"),))
    )


def test_a_request_that_comes_back_unchanged_has_looped() -> None:
    assert is_looped(forwarded_back(request()), is_own_via)


def test_the_first_pass_is_no_loop() -> None:
    assert not is_looped(request(), is_own_via)


def test_a_loop_branch_keeps_its_unique_part() -> None:
    first = loop_branch(request(), "z9hG4bKaaaa")
    second = loop_branch(request(), "z9hG4bKbbbb")
    assert first != second and first.startswith("z9hG4bK") and first.endswith("aaaa")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda r: setattr(r, "uri", parse_uri("sip:bob@192.0.2.99")), id="uri"),
        pytest.param(
            lambda r: r.headers.prepend("Route", "<sip:198.51.100.9;lr>"), id="route-added"
        ),
        pytest.param(lambda r: r.headers.set("CSeq", "2 INVITE"), id="cseq"),
        pytest.param(lambda r: r.headers.set("CSeq", "1 OPTIONS"), id="method"),
    ],
)
def test_a_spiral_with_changed_request_uri_or_route_is_not_a_loop(
    change: Callable[[SipRequest], None],
) -> None:
    back = forwarded_back(request())
    change(back)
    assert not is_looped(back, is_own_via)


def test_another_proxys_via_or_a_plain_branch_is_no_loop() -> None:
    received = request()
    foreign = Via("UDP", "198.51.100.60", 5060)
    assert not is_looped(forwarded_back(received, via=foreign), is_own_via)
    plain = forward_request(received, via=OWN_VIA.with_params(branch="z9hG4bKplain"))
    back = forward_request(plain, via=Via("UDP", "198.51.100.50", 5060))
    assert not is_looped(back, is_own_via)


def test_loop_detection_ignores_max_forwards() -> None:
    back = forwarded_back(request("Max-Forwards: 12\n"))
    back.headers.set("Max-Forwards", "3")
    assert is_looped(back, is_own_via)


def test_a_cancel_hashes_like_its_invite() -> None:
    cancel = request()
    cancel.headers.set("CSeq", "1 CANCEL")
    assert loop_key(cancel) == loop_key(request())


def test_the_loop_key_hashes_parsed_route_values_not_raw_lines() -> None:
    one_line = request("Route: <sip:198.51.100.9;lr>,<sip:198.51.100.10;lr>\n")
    two_lines = request("Route: <sip:198.51.100.9;lr>\nRoute:  <sip:198.51.100.10;lr>\n")
    assert loop_key(one_line) == loop_key(two_lines)
