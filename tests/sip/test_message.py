"""SIP message codec: parse, serialize, validate (RFC 3261 §7, §18.3, §20)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.sip.headers import NameAddr
from natkit.sip.message import (
    Headers,
    SipLimits,
    SipRequest,
    SipResponse,
    canonical_name,
    make_response,
    parse_message,
    reason_phrase,
    serialize_message,
    stream_message_length,
    validate_request,
    validate_response,
)
from natkit.sip.uri import SipUri, TelUri

TORTURE = Path(__file__).parent.parent / "data" / "sip_torture"

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@example.com>\r\n"
    b"From: Bob <sip:bob@example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b"Contact: <sip:bob@192.0.2.1:5060;transport=udp>;expires=7200\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def test_register_parses_into_typed_views() -> None:
    msg = parse_message(REGISTER)
    assert isinstance(msg, SipRequest)
    assert msg.method == "REGISTER"
    assert msg.uri == SipUri("sip", "example.com")
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    assert msg.top_via.has_rport and msg.top_via.rport is None
    assert msg.cseq.seq == 1826 and msg.cseq.method == "REGISTER"
    assert msg.from_.tag == "456248"
    assert msg.to.display_name == "Bob"
    contacts = msg.contacts
    assert contacts != "*"
    assert contacts[0].param("expires") == "7200"
    assert msg.max_forwards == 70
    assert validate_request(msg) is None


def test_serialize_round_trips() -> None:
    msg = parse_message(REGISTER)
    again = parse_message(serialize_message(msg))
    assert list(again.headers) == list(msg.headers)


def test_make_response_copies_the_dialog_headers() -> None:
    msg = parse_message(REGISTER)
    assert isinstance(msg, SipRequest)
    response = make_response(msg, 200, to_tag="abc")
    assert isinstance(response, SipResponse)
    assert response.reason == "OK"
    assert response.to.tag == "abc"
    assert response.headers.get_all("Via") == msg.headers.get_all("Via")
    assert parse_message(serialize_message(response)).cseq.seq == 1826


def test_malformed_response_is_dropped() -> None:
    with pytest.raises(MalformedMessageError) as info:
        parse_message(b"SIP/2.0 9999 Nope\r\n\r\n")
    assert info.value.error_code is None


# --- Headers ----------------------------------------------------------------------


def test_headers_are_case_insensitive_and_expand_compact_forms() -> None:
    headers = Headers(
        [("v", "SIP/2.0/UDP a"), ("call-id", "x"), ("X-Odd", "1"), ("VIA", "SIP/2.0/UDP b")]
    )
    assert list(headers) == [
        ("Via", "SIP/2.0/UDP a"),
        ("Call-ID", "x"),
        ("X-Odd", "1"),
        ("Via", "SIP/2.0/UDP b"),
    ]
    assert headers.get("i") == "x" and headers.get("CALL-ID") == "x"
    assert headers.get("x-odd") == "1" and "X-ODD" in headers
    assert headers.get_all("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b"]
    assert canonical_name("cseq") == "CSeq"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("k") == "Supported"
    assert canonical_name("X-Unknown-lower") == "X-Unknown-lower"


def test_headers_editing() -> None:
    headers = Headers(
        [("Via", "SIP/2.0/UDP a, SIP/2.0/UDP b"), ("Route", "<sip:r1>"), ("Via", "SIP/2.0/UDP c")]
    )
    assert headers.values("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    headers.prepend("Via", "SIP/2.0/TCP p")
    assert headers.get("Via") == "SIP/2.0/TCP p"
    assert headers.remove_first("Via") == "SIP/2.0/TCP p"
    assert headers.remove_first("Via") == "SIP/2.0/UDP a"
    assert headers.get_all("Via") == ["SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    headers.set("Route", "<sip:r2>")
    headers.add("Route", "<sip:r3>")
    assert headers.get_all("Route") == ["<sip:r2>", "<sip:r3>"]
    assert headers.remove("route") == 2 and "Route" not in headers
    assert headers.remove_first("Route") is None
    headers.prepend("Record-Route", "<sip:p;lr>")
    assert next(iter(headers)) == ("Record-Route", "<sip:p;lr>")
    copy = headers.copy()
    copy.add("X", "1")
    assert "X" not in headers and copy != headers
    date = Headers([("Date", "Sat, 13 Nov 2010 23:29:00 GMT")])
    assert date.values("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]  # not a list header


def test_typed_views_follow_header_edits() -> None:
    msg = parse_message(REGISTER)
    assert msg.top_via.host == "192.0.2.1"
    msg.headers.prepend("Via", "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp")
    assert msg.top_via.host == "proxy.example.com"
    assert len(msg.vias) == 2
    msg.headers.set("CSeq", "1827 REGISTER")
    assert msg.cseq.seq == 1827
    clone = msg.copy()
    clone.headers.remove_first("Via")
    assert clone.top_via.host == "192.0.2.1" and msg.top_via.host == "proxy.example.com"


def test_views_on_absent_and_bad_headers() -> None:
    msg = SipRequest("OPTIONS", SipUri("sip", "h"), Headers([("Max-Forwards", "x")]))
    assert msg.vias == [] and msg.contacts == [] and msg.expires is None
    assert msg.content_type is None
    for view in ("top_via", "cseq", "call_id", "from_", "to", "max_forwards"):
        with pytest.raises(MalformedMessageError):
            getattr(msg, view)
    assert validate_request(msg) == 400


# --- parsing ----------------------------------------------------------------------


def test_folding_compact_names_and_whitespace() -> None:
    data = (
        b"\r\n\r\nOPTIONS sip:bob@biloxi.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP h\r\n  ;branch=z9hG4bK1\r\n"
        b"Subject:   a\r\n\tb  \r\n"
        b"f: <sip:a@b>;tag=1\r\nt: sip:bob@biloxi.com\r\ni: c1\r\n"
        b"CSeq : 1 OPTIONS\r\nMax-Forwards: 70\r\nL: 0\r\n\r\n"
    )
    msg = parse_message(data)
    assert msg.top_via.branch == "z9hG4bK1"
    assert msg.headers.get("Subject") == "a b"
    assert msg.call_id == "c1"
    assert [name for name, _ in msg.headers][:2] == ["Via", "Subject"]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(b"", 400, id="empty"),
        pytest.param(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n", 400, id="no-empty-line"),
        pytest.param(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID x\r\n\r\n", 400, id="no-colon"),
        pytest.param(b"OPTIONS sip:a@b SIP/2.0\r\n Call-ID: x\r\n\r\n", 400, id="fold-first"),
        pytest.param(b"OPTIONS sip:a@b SIP/2.0\r\nCall ID: x\r\n\r\n", 400, id="bad-name"),
        pytest.param(b"OPTIONS sip:a@b SIP/2.0\r\nX: a\nb\r\n\r\n", 400, id="bare-lf"),
        pytest.param(b"OPTIONS sip:a@b SIP/2.0\r\nX: a\rb\r\n\r\n", 400, id="bare-cr"),
        pytest.param(b"OPTIONS sip:a@b SIP/3.0\r\n\r\n", 505, id="version-505"),
        pytest.param(b"OPTIONS sip:a@b HTTP/1.1\r\n\r\n", 400, id="not-sip"),
        pytest.param(b"OPTIONS sip:a@b\r\n\r\n", 400, id="two-parts"),
        pytest.param(b"OPT(IONS sip:a@b SIP/2.0\r\n\r\n", 400, id="method-token"),
        pytest.param(b"OPTIONS sip:a@b SIP/2.0\r\nl: 5\r\n\r\nabc", 400, id="short-body"),
        pytest.param(b"OPTIONS sip:a@b SIP/2.0\r\nl: five\r\n\r\n", 400, id="cl-text"),
        pytest.param(b"OPTIONS sip:a@b SIP/2.0\r\nl: 99999999999999\r\n\r\n", 400, id="cl-huge"),
        pytest.param(b"OPTIONS sip:a@b SIP/2.0\r\nl: 1\r\nl: 2\r\n\r\nab", 400, id="cl-twice"),
        pytest.param(b"OPTIONS sip:a@b SIP/2.0\r\nTo: <sip:a@b\r\n\r\n", 400, id="bad-to"),
        pytest.param(
            b"OPTIONS sip:a@b SIP/2.0\r\nContact: *, <sip:a@b>\r\n\r\n", 400, id="star-mixed"
        ),
        pytest.param(b"OPTIONS sip:a@b SIP/2.0\r\nMax-Forwards: -1\r\n\r\n", 400, id="mf-negative"),
        pytest.param(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: a b\r\n\r\n", 400, id="callid-space"),
        pytest.param(b"SIP/2.0 200\xff OK\r\n\r\n", None, id="response-bad-code"),
        pytest.param(b"SIP/2.0 099 Low\r\n\r\n", None, id="response-below-100"),
        pytest.param(b"SIP/2.0 700 High\r\n\r\n", None, id="response-above-699"),
        pytest.param(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", None, id="response-bad-via"),
        pytest.param(b"SIP/3.0 200 OK\r\n\r\n", None, id="response-version"),
        pytest.param(b"SIP/2.0 200 OK\r\nl: 10\r\n\r\n", None, id="response-short-body"),
    ],
)
def test_malformed_messages(data: bytes, code: int | None) -> None:
    with pytest.raises(MalformedMessageError) as info:
        parse_message(data)
    assert info.value.error_code == code


def test_body_framing_datagram_and_stream() -> None:
    base = b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
    with_length = base + b"Content-Length: 5\r\n\r\nhello, trailing noise"
    assert parse_message(with_length).body == b"hello"
    assert parse_message(with_length, stream=True).body == b"hello"
    without = base + b"\r\nrest of datagram"
    assert parse_message(without).body == b"rest of datagram"
    with pytest.raises(MalformedMessageError):
        parse_message(without, stream=True)
    assert parse_message(base + b"l: 0005\r\n\r\nhello").body == b"hello"
    assert parse_message(base + b"l: 2\r\nContent-Length: 2\r\n\r\nhi").body == b"hi"


def test_limits() -> None:
    msg = REGISTER
    with pytest.raises(MalformedMessageError):
        parse_message(msg, limits=SipLimits(max_message_size=100))
    with pytest.raises(MalformedMessageError):
        parse_message(msg, limits=SipLimits(max_headers=5))
    with pytest.raises(MalformedMessageError):
        parse_message(msg, limits=SipLimits(max_line_length=40))
    body = msg.replace(b"Content-Length: 0", b"Content-Length: 10") + b"0123456789"
    assert len(parse_message(body).body) == 10
    with pytest.raises(MalformedMessageError):
        parse_message(body, limits=SipLimits(max_body_size=9))
    no_length = msg.replace(b"Content-Length: 0\r\n", b"") + b"0123456789"
    with pytest.raises(MalformedMessageError):
        parse_message(no_length, limits=SipLimits(max_body_size=9))


def test_response_line_variants() -> None:
    ok = parse_message(b"SIP/2.0 180 Ringing softly\r\n\r\n")
    assert isinstance(ok, SipResponse) and ok.status == 180 and ok.reason == "Ringing softly"
    bare = parse_message(b"SIP/2.0 100\r\n\r\n")  # tolerated: no SP before the empty phrase
    assert isinstance(bare, SipResponse) and bare.reason == ""
    lower = parse_message(b"sip/2.0 200 OK\r\n\r\n")
    assert lower.version == "SIP/2.0"
    assert not validate_response(ok)  # no Via/From/To/CSeq/Call-ID


def test_request_uri_variants() -> None:
    tel = parse_message(b"INVITE tel:+1-201-555-0123 SIP/2.0\r\n\r\n")
    assert isinstance(tel, SipRequest) and isinstance(tel.uri, TelUri)
    with pytest.raises(MalformedMessageError):
        parse_message(b"INVITE sip:a@b?Route=%3Csip:x%3E SIP/2.0\r\n\r\n")


# --- serialization ------------------------------------------------------------------


def test_serialize_sets_content_length_in_place() -> None:
    msg = parse_message(REGISTER)
    msg.body = b"xyz"
    wire = serialize_message(msg)
    assert b"Content-Length: 3\r\n" in wire and wire.endswith(b"\r\n\r\nxyz")
    assert wire.count(b"Content-Length") == 1
    built = SipRequest("OPTIONS", SipUri("sip", "h"), Headers([("Via", "SIP/2.0/UDP x")]))
    assert serialize_message(built).endswith(b"Via: SIP/2.0/UDP x\r\nContent-Length: 0\r\n\r\n")


def test_serialize_refuses_header_injection() -> None:
    msg = parse_message(REGISTER)
    msg.headers.add("Subject", "hi\r\nVia: SIP/2.0/UDP evil")
    with pytest.raises(LocalProtocolError):
        serialize_message(msg)
    named = SipResponse(200, "OK", Headers([("X\r\nVia", "v")]))
    with pytest.raises(LocalProtocolError):
        serialize_message(named)
    response = SipResponse(200, "OK\r\nVia: SIP/2.0/UDP evil", Headers())
    with pytest.raises(LocalProtocolError):
        serialize_message(response)


def test_make_response_details() -> None:
    msg = parse_message(
        REGISTER.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nTimestamp: 54\r\n")
    )
    assert isinstance(msg, SipRequest)
    trying = make_response(msg, 100)
    assert trying.reason == "Trying" and trying.headers.get("Timestamp") == "54"
    assert trying.to.tag is None
    tagged = parse_message(serialize_message(make_response(msg, 200, to_tag="t1")))
    assert tagged.to.tag == "t1"
    bye = parse_message(serialize_message(tagged).replace(b"SIP/2.0 200 OK", b"BYE sip:a SIP/2.0"))
    assert isinstance(bye, SipRequest)
    again = make_response(bye, 200, to_tag="t2")
    assert again.to.tag == "t1"  # an existing tag is kept
    record_route = b"Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\nCSeq:"
    routed = parse_message(REGISTER.replace(b"CSeq:", record_route))
    assert isinstance(routed, SipRequest)
    assert "Record-Route" not in make_response(routed, 200).headers
    dialog = make_response(routed, 200, to_tag="d", copy_record_route=True)
    assert [str(r.uri) for r in dialog.name_addrs("Record-Route")] == ["sip:p1;lr", "sip:p2;lr"]
    extra = make_response(msg, 423, headers=[("Min-Expires", "3600")])
    assert extra.reason == "Interval Too Brief" and extra.headers.get("Min-Expires") == "3600"
    assert reason_phrase(430) == "Flow Failed" and reason_phrase(499) == "Request Failure"


# --- validation ---------------------------------------------------------------------


def _request(
    *extra: bytes, method: bytes = b"OPTIONS", uri: bytes = b"sip:bob@biloxi.com"
) -> SipRequest:
    lines = [
        method + b" " + uri + b" SIP/2.0",
        b"Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds",
        b"To: <sip:bob@biloxi.com>",
        b"From: <sip:alice@atlanta.com>;tag=1928301774",
        b"Call-ID: a84b4c76e66710",
        b"CSeq: 63104 " + method,
        *extra,
    ]
    msg = parse_message(b"\r\n".join(lines) + b"\r\n\r\n")
    assert isinstance(msg, SipRequest)
    return msg


def test_validate_request_decisions() -> None:
    assert validate_request(_request()) is None
    assert validate_request(_request(b"Max-Forwards: 256")) == 400
    assert validate_request(_request(b"Max-Forwards: 255")) is None
    assert validate_request(_request(b"Max-Forwards: 0")) is None
    assert validate_request(_request(b"Max-Forwards: 0"), proxy=True) == 483
    assert validate_request(_request(b"Call-ID: other")) == 400
    assert validate_request(_request(b"CSeq: 1 OPTIONS")) == 400
    assert validate_request(_request(uri=b"http://example.com/")) == 416
    assert validate_request(_request(uri=b"tel:+123")) is None
    assert validate_request(_request(b"Require: foo"), supported=["FOO"]) is None
    assert validate_request(_request(b"Require: foo, bar"), supported=["foo"]) == 420
    assert validate_request(_request(b"Require: foo"), supported=[], proxy=True) is None
    assert validate_request(_request(b'Proxy-Require: "open'), supported=[], proxy=True) == 400
    ack = _request(b"Require: foo", method=b"ACK")
    assert validate_request(ack, supported=[]) is None  # §8.2.2.3: not for ACK
    mismatch = parse_message(
        serialize_message(_request()).replace(b"CSeq: 63104 OPTIONS", b"CSeq: 1 INVITE")
    )
    assert isinstance(mismatch, SipRequest) and validate_request(mismatch) == 400
    missing = SipRequest("OPTIONS", SipUri("sip", "h"), Headers(list(_request().headers)[1:]))
    assert validate_request(missing) == 400  # no Via


# --- hypothesis ---------------------------------------------------------------------

_token = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"),
    min_size=1,
    max_size=10,
)
_value = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=30
).map(lambda s: s.strip(" \t"))
_host = st.from_regex(r"[a-z][a-z0-9-]{0,8}(\.[a-z][a-z0-9]{0,5}){0,2}", fullmatch=True)
_vias = st.builds(
    lambda t, h, b: f"SIP/2.0/{t} {h};branch=z9hG4bK{b}",
    st.sampled_from(["UDP", "TCP", "TLS", "WS"]),
    _host,
    _token,
)
_name_addrs = st.builds(
    lambda u, h, d, tag: str(NameAddr(SipUri("sip", h, u), d, (("tag", tag),))),
    st.one_of(st.none(), _value.filter(bool)),
    _host,
    st.one_of(st.none(), _value),
    _token,
)
_extension = st.tuples(_token.map(lambda n: "X-" + n), _value)


@st.composite
def _messages(draw: st.DrawFn) -> bytes:
    method = draw(st.one_of(st.sampled_from(["INVITE", "REGISTER", "OPTIONS"]), _token))
    headers = [("Via", v) for v in draw(st.lists(_vias, min_size=1, max_size=3))]
    headers += [("From", draw(_name_addrs)), ("To", draw(_name_addrs))]
    headers += [("Call-ID", draw(_token)), ("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")]
    headers += draw(st.lists(_extension, max_size=4))
    headers = draw(st.permutations(headers))
    body = draw(st.binary(max_size=60))
    if draw(st.booleans()):
        status = draw(st.integers(100, 699))
        response = SipResponse(status, draw(_value), Headers(headers), body)
        return serialize_message(response)
    uri = SipUri("sip", draw(_host), draw(st.one_of(st.none(), _value.filter(bool))))
    return serialize_message(SipRequest(method, uri, Headers(headers), body))


@settings(max_examples=300, deadline=None)
@given(_messages())
def test_messages_round_trip(wire: bytes) -> None:
    """serialize(parse(x)) re-parses equal, and the wire form is a fixed point."""
    msg = parse_message(wire)
    again = parse_message(serialize_message(msg))
    assert list(again.headers) == list(msg.headers)
    assert again.body == msg.body
    assert serialize_message(again) == wire
    if isinstance(msg, SipRequest):
        assert isinstance(again, SipRequest)
        assert (again.method, str(again.uri)) == (msg.method, str(msg.uri))
        assert again.uri == msg.uri
        assert validate_request(again) is None
    assert again.vias == msg.vias and again.from_ == msg.from_ and again.cseq == msg.cseq


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedMessageError):
        parse_message(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_headers_after_a_good_start_line(tail: bytes) -> None:
    data = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n" + tail + b"\r\n\r\n"
    try:
        msg = parse_message(data)
    except MalformedMessageError as exc:
        assert exc.error_code == 400
        return
    assert isinstance(msg, SipRequest)
    validate_request(msg, supported=(), proxy=True)


# --- bounded: hostile long inputs finish fast ---------------------------------------

_START = b"INVITE sip:a@b SIP/2.0\r\n"
_BIG = 60_000


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_START + b"Via: SIP/2.0/UDP h" + b";" * _BIG + b"\r\n\r\n", id="semicolons"),
        pytest.param(_START + b"Via: SIP/2.0/UDP h;a=" + b'"' * _BIG + b"\r\n\r\n", id="quotes"),
        pytest.param(
            _START + b"Contact: " + b"<sip:a@b>," * (_BIG // 10) + b"\r\n\r\n", id="contacts"
        ),
        pytest.param(_START + b"Contact: " + b"<" * _BIG + b"\r\n\r\n", id="angles"),
        pytest.param(_START + b"To: " + b'"\\' * (_BIG // 2) + b"\r\n\r\n", id="escapes"),
        pytest.param(_START + b"X: a\r\n" + b" b\r\n" * (_BIG // 5) + b"\r\n", id="folds"),
        pytest.param(_START + b"To: <sip:" + b"%41" * (_BIG // 3) + b"@h>\r\n\r\n", id="percent"),
        pytest.param(_START + b"CSeq: " + b"9" * _BIG + b" INVITE\r\n\r\n", id="digits"),
        pytest.param(_START + b"l: " + b"9" * _BIG + b"\r\n\r\n", id="length-digits"),
        pytest.param(_START + b"Retry-After: 1 " + b"(" * _BIG + b"\r\n\r\n", id="comments"),
        pytest.param(_START + b"Via: SIP/2.0/UDP h, " * (_BIG // 20) + b"\r\n\r\n", id="vias"),
        pytest.param(b"\r\n" * (_BIG // 2), id="crlfs"),
        pytest.param(
            _START + b"Via: SIP/2.0/UDP h;a" + b" " * _BIG + b"x\r\n\r\n", id="param-spaces"
        ),
        pytest.param(_START + b"Via: SIP" + b" " * _BIG + b"/\r\n\r\n", id="via-spaces"),
        pytest.param(_START + b"Via: SIP/2.0/UDP " + b"a" * _BIG + b"!\r\n\r\n", id="via-host"),
        pytest.param(
            _START + b"Via: SIP/2.0/UDP h" + b";a=b  " * (_BIG // 6) + b"\r\n\r\n", id="many-params"
        ),
    ],
)
def test_hostile_long_inputs_are_bounded(data: bytes) -> None:
    limits = SipLimits(max_message_size=1 << 20, max_headers=1 << 16, max_line_length=1 << 20)
    for each in (limits, SipLimits()):
        try:
            msg = parse_message(data, limits=each)
        except MalformedMessageError:
            continue
        assert isinstance(msg, SipRequest)
        validate_request(msg)
        for header in ("Contact", "Retry-After", "X"):
            try:
                msg.headers.values(header)
                msg.name_addrs(header)
            except MalformedMessageError:
                pass


# --- stream framing helper ------------------------------------------------------------


def test_stream_message_length_frames_by_content_length() -> None:
    two = REGISTER + REGISTER.replace(b"CSeq: 1826", b"CSeq: 1827")
    first = stream_message_length(two)
    assert first == len(REGISTER)
    assert parse_message(two[:first], stream=True).cseq.seq == 1826
    assert parse_message(two[first:], stream=True).cseq.seq == 1827
    body = REGISTER.replace(b"Content-Length: 0", b"l :\r\n  4") + b"abcdXYZ"
    assert stream_message_length(body) == len(body) - 3
    assert stream_message_length(REGISTER[:-1]) is None
    assert stream_message_length(body[:-4]) is None


def test_stream_message_length_byte_at_a_time() -> None:
    data = REGISTER.replace(b"Content-Length: 0", b"Content-Length: 3") + b"xyz"
    header_end = -1
    for size in range(1, len(data) + 1):
        buffer = data[:size]
        if header_end < 0:
            header_end = buffer.find(b"\r\n\r\n", max(0, size - 4))
            if header_end < 0:
                continue
        length = stream_message_length(buffer, header_end=header_end)
        if length is not None:
            break
    assert length == len(data) and size == len(data)
    assert stream_message_length(data) == len(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(REGISTER.replace(b"Content-Length: 0\r\n", b""), id="no-length"),
        pytest.param(
            REGISTER.replace(b"Content-Length: 0", b"Content-Length: -999"), id="negative"
        ),
        pytest.param(REGISTER.replace(b"Content-Length: 0", b"l: 1\r\nl: 2"), id="two-values"),
        pytest.param(REGISTER.replace(b"Content-Length: 0", b"l: 99999999"), id="oversized"),
        pytest.param(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 20000, id="endless-headers"),
    ],
)
def test_stream_message_length_loses_framing(data: bytes) -> None:
    with pytest.raises(MalformedMessageError) as info:
        stream_message_length(data)
    assert info.value.error_code == 400


def test_views_of_repeated_headers_use_the_first_line() -> None:
    data = (TORTURE / "multi01.dat").read_bytes()
    msg = parse_message(data)
    assert str(msg.to.uri) == "sip:user@example.com"
    assert msg.from_.tag == "3413415"
    assert msg.cseq.seq == 5 and msg.call_id == "multi01.98asdh@192.0.2.1"
    assert msg.max_forwards == 70
    contacts = msg.contacts
    assert contacts != "*" and len(contacts) == 2
    fresh = SipRequest("INVITE", SipUri("sip", "x"), Headers(list(msg.headers)))
    assert fresh.to == msg.to and fresh.cseq == msg.cseq and fresh.vias == msg.vias


_KNOWN_NAMES = [
    "Via",
    "v",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "m",
    "Max-Forwards",
    "Expires",
    "Route",
    "Record-Route",
    "Require",
    "Proxy-Require",
    "Content-Type",
    "Content-Length",
    "Supported",
    "Path",
    "Retry-After",
]
_VALUE_ALPHABET = st.sampled_from([*list('ab0<>";,=:@/ \t\\*?%[]'), "sip:", "SIP/2.0/UDP "])


@settings(max_examples=400, deadline=None)
@given(
    extra=st.lists(
        st.tuples(
            st.sampled_from(_KNOWN_NAMES), st.lists(_VALUE_ALPHABET, max_size=12).map("".join)
        ),
        max_size=4,
    )
)
def test_known_headers_with_random_values_never_break_an_element(
    extra: list[tuple[str, str]],
) -> None:
    from natkit.cli.sip import message_to_json

    data = REGISTER.replace(
        b"Content-Length: 0\r\n",
        b"".join(f"{name}: {value}\r\n".encode() for name, value in extra),
    )
    try:
        msg = parse_message(data)
    except MalformedMessageError as exc:
        assert exc.error_code in (400, None)
        return
    assert isinstance(msg, SipRequest)
    for proxy in (False, True):
        validate_request(msg, supported=(), proxy=proxy)
    message_to_json(msg)
    for name in _KNOWN_NAMES:
        try:
            msg.headers.values(name)
            msg.name_addrs(name)
        except MalformedMessageError:
            pass
    with contextlib.suppress(MalformedMessageError):
        _ = msg.expires
    serialize_message(make_response(msg, 200, to_tag="x"))
