"""Typed header values: Via, name-addr, CSeq, params, lists (RFC 3261 §20, §25.1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.errors import MalformedMessageError
from natkit.sip.headers import (
    CSeq,
    NameAddr,
    RetryAfter,
    Via,
    parse_contacts,
    parse_cseq,
    parse_delta_seconds,
    parse_name_addr,
    parse_name_addr_list,
    parse_params,
    parse_qvalue,
    parse_retry_after,
    parse_via,
    parse_via_list,
    quote_string,
    split_header_values,
    unquote_string,
)
from natkit.sip.uri import AbsoluteUri, SipUri, TelUri


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds",
            Via("UDP", "pc33.atlanta.com", None, (("branch", "z9hG4bK776asdhds"),)),
            id="plain",
        ),
        pytest.param(
            "SIP  /   2.0 /UDP   192.0.2.2 :  5060 ;  BRANCH  =  z9 ; rport",
            Via("UDP", "192.0.2.2", 5060, (("branch", "z9"), ("rport", None))),
            id="sws-everywhere",
        ),
        pytest.param(
            "sip/2.0/tcp [2001:db8::9]:5061;received=2001:db8::1;rport=5062",
            Via("TCP", "2001:db8::9", 5061, (("received", "2001:db8::1"), ("rport", "5062"))),
            id="ipv6-lowercase-protocol",
        ),
        pytest.param(
            'SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKx;x="a;b"',
            Via("WSS", "df7jal23ls0d.invalid", None, (("branch", "z9hG4bKx"), ("x", '"a;b"'))),
            id="quoted-param-kept-raw",
        ),
    ],
)
def test_parse_via(text: str, expected: Via) -> None:
    assert parse_via(text) == expected


def test_via_accessors() -> None:
    via = parse_via("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;rport=4000;received=1.2.3.4")
    assert via.branch == "z9hG4bKa"
    assert via.rport == 4000 and via.has_rport
    assert via.received == "1.2.3.4"
    assert via.sent_by == "10.0.0.1:5060"
    assert str(via) == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;rport=4000;received=1.2.3.4"
    filled = parse_via("SIP/2.0/UDP h;rport").with_params(rport="5070", received="192.0.2.9")
    assert str(filled) == "SIP/2.0/UDP h;rport=5070;received=192.0.2.9"
    assert str(Via("TCP", "::1", 5060)) == "SIP/2.0/TCP [::1]:5060"
    assert via.without_params("rport").has_rport is False


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("SIP/2.0/UDP", id="no-sent-by"),
        pytest.param("SIP/2.0 UDP host", id="missing-slash"),
        pytest.param("SIP/2.0/UDPhost", id="no-space"),
        pytest.param("SIP/2.0/UDP host:99999", id="port"),
        pytest.param("SIP/2.0/UDP 192.0.2.15;;", id="empty-param-badinv01"),
        pytest.param("SIP/2.0/UDP host;branch=", id="empty-value"),
        pytest.param("SIP/2.0/UDP [::1", id="unterminated-ipv6"),
        pytest.param("SIP/2.0/UDP host junk", id="junk"),
        pytest.param('SIP/2.0/UDP host;x="open', id="unterminated-quote"),
    ],
)
def test_malformed_via_is_400(text: str) -> None:
    with pytest.raises(MalformedMessageError) as info:
        parse_via(text)
    assert info.value.error_code == 400


def test_via_list_splits_and_rejects_empty_elements() -> None:
    vias = parse_via_list("SIP/2.0/UDP a;branch=1 , SIP/2.0/TCP b;branch=2")
    assert [v.host for v in vias] == ["a", "b"]
    with pytest.raises(MalformedMessageError):
        parse_via_list("SIP/2.0/UDP 192.0.2.15;;,;,,")
    with pytest.raises(MalformedMessageError):
        parse_via_list("SIP/2.0/UDP a,,SIP/2.0/UDP b")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '"Bob" <sip:bob@biloxi.com>;tag=a6c85cf',
            NameAddr(SipUri("sip", "biloxi.com", "bob"), "Bob", (("tag", "a6c85cf"),)),
            id="quoted",
        ),
        pytest.param(
            "caller<sip:caller@example.com>;tag=323",
            NameAddr(SipUri("sip", "example.com", "caller"), "caller", (("tag", "323"),)),
            id="token-display-no-space-lwsdisp",
        ),
        pytest.param(
            "Alice   Liddell <sip:a@w.org>",
            NameAddr(SipUri("sip", "w.org", "a"), "Alice Liddell"),
            id="multi-token-display",
        ),
        pytest.param(
            "sip:+19725552222@gw1.example.net;unknownparam",
            NameAddr(
                SipUri("sip", "gw1.example.net", "+19725552222"), None, (("unknownparam", None),)
            ),
            id="addr-spec-params-are-header-params",
        ),
        pytest.param(
            "<sip:+19725552222@gw1.example.net;unknownparam>",
            NameAddr(
                SipUri("sip", "gw1.example.net", "+19725552222", params=(("unknownparam", None),))
            ),
            id="angle-params-are-uri-params",
        ),
        pytest.param(
            r'"J Rosenberg \\\"" <sip:jdrosen@example.com> ; tag = 98asjd8',
            NameAddr(
                SipUri("sip", "example.com", "jdrosen"), 'J Rosenberg \\"', (("tag", "98asjd8"),)
            ),
            id="escaped-quotes",
        ),
        pytest.param(
            '<sip:a@b>;+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>";reg-id=1',
            NameAddr(
                SipUri("sip", "b", "a"),
                None,
                (
                    ("+sip.instance", '"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"'),
                    ("reg-id", "1"),
                ),
            ),
            id="instance-id",
        ),
        pytest.param(
            "Jöran Müller<sip:j@m.de>",
            NameAddr(SipUri("sip", "m.de", "j"), "Jöran Müller"),
            id="unquoted-utf8-display-liberal",
        ),
        pytest.param("tel:+1234;tag=x", NameAddr(TelUri("+1234"), None, (("tag", "x"),)), id="tel"),
        pytest.param(
            "<isbn:2983792873>", NameAddr(AbsoluteUri("isbn", "2983792873")), id="absolute"
        ),
    ],
)
def test_parse_name_addr(text: str, expected: NameAddr) -> None:
    assert parse_name_addr(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('"Mr. J. User <sip:j.user@example.com>', id="quotbal"),
        pytest.param('"Watson, Thomas" < sip:t.watson@example.org >', id="badaspec"),
        pytest.param("Bell, Alexander <sip:a.g.bell@example.com>", id="baddn"),
        pytest.param("sip:user@example.com?Route=%3Csip:sip.example.com%3E", id="regbadct"),
        pytest.param('"Joe" <sip:joe@example.org>;;;;', id="badinv01-contact"),
        pytest.param("<sip:a@b", id="no-close"),
        pytest.param('"x" sip:a@b', id="quoted-without-angle"),
        pytest.param("", id="empty"),
        pytest.param("<sip:a@b> junk", id="junk-after"),
    ],
)
def test_malformed_name_addr_is_400(text: str) -> None:
    with pytest.raises(MalformedMessageError) as info:
        parse_name_addr(text)
    assert info.value.error_code == 400


def test_name_addr_params_and_serialization() -> None:
    contact = parse_name_addr('<sip:a@b>;+sip.instance="<urn:x>";expires=60;q=0.5')
    assert contact.param("+sip.instance") == "<urn:x>"  # unquoted by param()
    assert contact.params[0] == ("+sip.instance", '"<urn:x>"')  # raw in params
    assert contact.param("EXPIRES") == "60"
    assert str(contact) == '<sip:a@b>;+sip.instance="<urn:x>";expires=60;q=0.5'
    to = parse_name_addr("sip:bob@biloxi.com")
    assert str(to.with_param("tag", "x9")) == "<sip:bob@biloxi.com>;tag=x9"
    assert to.with_params(tag="1").tag == "1"
    named = NameAddr(SipUri("sip", "h"), 'say "hi" \\ \x00\r\n')
    assert str(named) == '"say \\"hi\\" \\\\ \\\x00  " <sip:h>'
    assert parse_name_addr(str(named)).display_name == 'say "hi" \\ \x00  '
    assert "\r" not in str(named)


def test_contacts_wildcard_and_lists() -> None:
    assert parse_contacts(["*"]) == "*"
    assert parse_contacts([]) == []
    contacts = parse_contacts(['"A, B" <sip:a@x>, <sip:b@y;lr>;q=1', "sip:c@z"])
    assert contacts != "*"
    assert [c.display_name for c in contacts] == ["A, B", None, None]
    with pytest.raises(MalformedMessageError):
        parse_contacts(["*", "<sip:a@b>"])
    with pytest.raises(MalformedMessageError):
        parse_name_addr_list("<sip:a@b>,,<sip:c@d>")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("4711 INVITE", CSeq(4711, "INVITE"), id="plain"),
        pytest.param("0009\t INVITE", CSeq(9, "INVITE"), id="leading-zeros"),
        pytest.param("2147483647 ACK", CSeq(2**31 - 1, "ACK"), id="max"),
        pytest.param("0 NEWMETHOD", CSeq(0, "NEWMETHOD"), id="zero"),
    ],
)
def test_parse_cseq(text: str, expected: CSeq) -> None:
    assert parse_cseq(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2147483648 INVITE", id="above-2**31-1"),
        pytest.param("36893488147419103232 INVITE", id="scalar02"),
        pytest.param("1" * 5000 + " INVITE", id="huge"),
        pytest.param("INVITE", id="no-number"),
        pytest.param("12INVITE", id="no-space"),
        pytest.param("12 IN VITE", id="two-methods"),
        pytest.param("-1 INVITE", id="negative"),
    ],
)
def test_malformed_cseq_is_400(text: str) -> None:
    with pytest.raises(MalformedMessageError) as info:
        parse_cseq(text)
    assert info.value.error_code == 400


def test_delta_seconds() -> None:
    assert parse_delta_seconds("0068") == 68
    assert parse_delta_seconds(str(2**32 - 1)) == 2**32 - 1
    assert parse_delta_seconds(str(2**32)) is None  # overlarge: treated as absent
    assert parse_delta_seconds("1" + "0" * 100) is None  # scalar02's Expires
    with pytest.raises(MalformedMessageError):
        parse_delta_seconds("five")
    with pytest.raises(MalformedMessageError):
        parse_delta_seconds("-999")


def test_params_split_quote_helpers() -> None:
    assert parse_params(";a=b;c") == (("a", "b"), ("c", None))
    assert parse_params(' ; A = "x;y" ;maddr=[::1]') == (("a", '"x;y"'), ("maddr", "[::1]"))
    assert parse_params("") == ()
    with pytest.raises(MalformedMessageError):
        parse_params(";")
    assert split_header_values('a, "b,c" , <sip:d,e@f>,, g') == ["a", '"b,c"', "<sip:d,e@f>", "g"]
    assert split_header_values(";;,,;;,;") == [";;", ";;", ";"]
    assert unquote_string(r'"a\"b\\c"') == 'a"b\\c'
    assert quote_string('a"b') == r'"a\"b"'


def test_retry_after_with_comment() -> None:
    assert parse_retry_after("18000;duration=3600") == RetryAfter(
        18000, None, (("duration", "3600"),)
    )
    value = parse_retry_after("120 (I'm in a (nested) meeting) ;duration=60")
    assert value.comment == "I'm in a (nested) meeting" and value.duration == 60
    assert str(value) == "120 (I'm in a (nested) meeting);duration=60"
    with pytest.raises(MalformedMessageError):
        parse_retry_after("120 (unbalanced")
    with pytest.raises(MalformedMessageError):
        parse_retry_after("99999999999999999999")  # scalarlg


# --- hypothesis round trips --------------------------------------------------------

_token = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~"), min_size=1, max_size=10
)
_display_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=15
)
_param_value = st.one_of(st.none(), _token, _display_text.map(quote_string))
_params = st.lists(st.tuples(_token, _param_value), max_size=4).map(tuple)
_host = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,8}(\.[a-z][a-z0-9]{0,5}){0,3}", fullmatch=True),
    st.ip_addresses().map(str),
)
_uri = st.builds(
    SipUri,
    scheme=st.sampled_from(["sip", "sips"]),
    host=_host,
    user=st.one_of(st.none(), _display_text.filter(bool)),
    port=st.one_of(st.none(), st.integers(0, 65535)),
    params=st.lists(
        st.tuples(_token, st.one_of(st.none(), _display_text.filter(bool))), max_size=3
    ).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(
    transport=st.sampled_from(["UDP", "TCP", "TLS", "WS", "WSS", "SCTP", "X-FOO"]),
    host=_host,
    port=st.one_of(st.none(), st.integers(0, 65535)),
    params=_params,
)
def test_via_round_trips(
    transport: str, host: str, port: int | None, params: tuple[tuple[str, str | None], ...]
) -> None:
    via = Via(transport.upper(), host, port, params)
    assert parse_via(str(via)) == via
    assert parse_via_list(f"{via}, {via}") == [via, via]


@settings(max_examples=300, deadline=None)
@given(uri=_uri, display=st.one_of(st.none(), _display_text), params=_params)
def test_name_addr_round_trips(
    uri: SipUri, display: str | None, params: tuple[tuple[str, str | None], ...]
) -> None:
    value = NameAddr(uri, display, params)
    assert parse_name_addr(str(value)) == value
    assert parse_name_addr_list(f"{value},{value}") == [value, value]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_header_parsers_raise_only_malformed(text: str) -> None:
    for parse in (
        parse_via_list,
        parse_name_addr_list,
        parse_cseq,
        parse_params,
        parse_retry_after,
    ):
        try:
            parse(text)
        except MalformedMessageError as exc:
            assert exc.error_code == 400


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0.0), ("0.7", 0.7), ("0.333", 0.333), ("1", 1.0), ("1.000", 1.0), (" 0. ", 0.0)],
)
def test_parse_qvalue(text: str, expected: float) -> None:
    assert parse_qvalue(text) == expected


@pytest.mark.parametrize("text", ["1.5", "2", "0.1234", "-0", ".5", "", "1.001", "0,5"])
def test_bad_qvalue_is_400(text: str) -> None:
    with pytest.raises(MalformedMessageError):
        parse_qvalue(text)
