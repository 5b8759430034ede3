"""URIs: sip/sips (RFC 3261 §19.1, §25.1), tel (RFC 3966), other schemes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.errors import MalformedMessageError
from natkit.sip.uri import AbsoluteUri, SipUri, TelUri, parse_uri


def _sip(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("sip:example.com", SipUri("sip", "example.com"), id="host-only"),
        pytest.param(
            "SIP:Alice@Atlanta.COM:5060",
            SipUri("sip", "atlanta.com", "Alice", port=5060),
            id="scheme-host-lowercased-user-kept",
        ),
        pytest.param(
            "sips:bob:secret@[2001:DB8::1]:5061;transport=tls",
            SipUri("sips", "2001:db8::1", "bob", "secret", 5061, (("transport", "tls"),)),
            id="ipv6-password-param",
        ),
        pytest.param(
            "sip:proxy.example.com;LR;Maddr=10.0.0.1",
            SipUri("sip", "proxy.example.com", params=(("lr", None), ("maddr", "10.0.0.1"))),
            id="param-names-lowercased",
        ),
        pytest.param(
            "sip:%75se%72@example.com;%6C%72;n%61me=v%61lue%25%34%31",
            SipUri("sip", "example.com", "user", params=(("lr", None), ("name", "value%41"))),
            id="escapes-decoded-once",
        ),
        pytest.param(
            "sip:user;par=u%40example.net@example.com",
            SipUri("sip", "example.com", "user;par=u@example.net"),
            id="semicolon-in-user",
        ),
        pytest.param(
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E&Subject=hi%20there",
            SipUri(
                "sip",
                "example.com",
                "user",
                headers=(("Route", "<sip:sip.example.com>"), ("Subject", "hi there")),
            ),
            id="uri-headers",
        ),
        pytest.param(
            "sip:%00@host5.example.com", SipUri("sip", "host5.example.com", "\x00"), id="nul"
        ),
        pytest.param(
            "sip:alice@192.0.2.4:0", SipUri("sip", "192.0.2.4", "alice", port=0), id="ipv4"
        ),
        pytest.param("sip:a@host_1.example.com", SipUri("sip", "host_1.example.com", "a"), id="_"),
    ],
)
def test_parse_sip_uri(text: str, expected: SipUri) -> None:
    assert parse_uri(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("example.com", id="no-scheme"),
        pytest.param("<sip:a@b>", id="angle-brackets"),
        pytest.param("sip:", id="no-host"),
        pytest.param("sip:@example.com", id="empty-user"),
        pytest.param("sip:a@b@example.com", id="two-at"),
        pytest.param("sip:user@example.com; lr", id="space"),
        pytest.param("sip:user@example.com;;lr", id="empty-param"),
        pytest.param("sip:user@example.com;lr=", id="empty-param-value"),
        pytest.param("sip:user@example.com:65536", id="port-range"),
        pytest.param("sip:user@example.com:5o60", id="port-digits"),
        pytest.param("sip:user@[2001:db8::1", id="unterminated-ipv6"),
        pytest.param("sip:user@[not:ipv6]", id="bad-ipv6"),
        pytest.param("sip:user@[fe80::1%25eth0]", id="ipv6-zone"),
        pytest.param("sip:us%zzer@example.com", id="bad-escape"),
        pytest.param("sip:user@exa%41mple.com", id="escape-in-host"),
        pytest.param("sip:user@example.com?x", id="header-without-equals"),
        pytest.param("sip:user@.example.com", id="leading-dot"),
        pytest.param("sip:us er@example.com", id="space-in-user"),
        pytest.param("1sip:user@example.com", id="scheme-digit"),
        pytest.param("tel:", id="tel-empty"),
        pytest.param("http://exa mple.com", id="absolute-space"),
        pytest.param('mailto:"x"@example.com', id="absolute-quote"),
    ],
)
def test_malformed_uris_are_400(text: str) -> None:
    with pytest.raises(MalformedMessageError) as info:
        parse_uri(text)
    assert info.value.error_code == 400


def test_tel_and_absolute_uris() -> None:
    assert parse_uri("tel:+1-201-555-0123;ext=12") == TelUri("+1-201-555-0123", (("ext", "12"),))
    assert str(parse_uri("tel:7042;phone-context=example.com")) == (
        "tel:7042;phone-context=example.com"
    )
    assert parse_uri("TEL:+1234").equivalent(TelUri("+1234"))  # type: ignore[union-attr]
    assert parse_uri("tel:+1-234").equivalent(TelUri("+1234"))  # type: ignore[union-attr]
    novel = parse_uri("soap.beep://192.0.2.103:3002")
    assert novel == AbsoluteUri("soap.beep", "//192.0.2.103:3002")
    assert str(novel) == "soap.beep://192.0.2.103:3002"
    weird = parse_uri("nobodyKnowsThisScheme:totallyopaquecontent")
    assert str(weird) == "nobodyKnowsThisScheme:totallyopaquecontent"  # kept verbatim
    assert weird.equivalent(AbsoluteUri("nobodyknowsthisscheme", "totallyopaquecontent"))


def test_serialization_reescapes_canonically() -> None:
    assert str(_sip("sip:%75se%72@example.com")) == "sip:user@example.com"
    assert str(_sip("sip:sips%3Auser%40example.com@example.net")) == (
        "sip:sips%3Auser%40example.com@example.net"
    )
    assert str(_sip("sip:I%20have%20spaces@example.net")) == "sip:I%20have%20spaces@example.net"
    assert str(_sip("sip:a@[2001:db8::1]:5060;lr")) == "sip:a@[2001:db8::1]:5060;lr"
    assert str(_sip("sip:c@h;n%61me=v%61lue%25%34%31")) == "sip:c@h;name=value%2541"
    assert str(SipUri("sip", "h", "é")) == "sip:%C3%A9@h"


def test_accessors_and_edits() -> None:
    uri = _sip("sip:alice@example.com;transport=TCP;lr;maddr=239.255.255.1")
    assert uri.transport == "tcp"
    assert uri.lr
    assert uri.maddr == "239.255.255.1"
    assert uri.param("lr") is None and uri.has_param("lr")
    assert uri.param("absent") is None and not uri.has_param("absent")
    assert uri.aor == "sip:alice@example.com"
    assert str(uri.with_params(transport="udp", ob=None)) == (
        "sip:alice@example.com;transport=udp;lr;maddr=239.255.255.1;ob"
    )
    assert str(uri.without_params("lr", "MADDR")) == "sip:alice@example.com;transport=TCP"
    assert uri.with_param("+sip.x", "1").param("+sip.x") == "1"
    assert uri.replace(port=5070).port == 5070
    assert SipUri("sip", "::1", "u", port=5060).aor == "sip:u@[::1]:5060"


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        # RFC 3261 §19.1.4 examples
        pytest.param(
            "sip:%61lice@atlanta.com;transport=TCP",
            "sip:alice@AtLanTa.CoM;Transport=tcp",
            True,
            id="ex1",
        ),
        pytest.param("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5", True, id="ex2"),
        pytest.param("sip:carol@chicago.com", "sip:carol@chicago.com;security=on", True, id="ex3"),
        pytest.param(
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            True,
            id="ex4",
        ),
        pytest.param(
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            True,
            id="ex5",
        ),
        pytest.param(
            "SIP:ALICE@AtLanTa.CoM;Transport=udp",
            "sip:alice@AtLanTa.CoM;Transport=UDP",
            False,
            id="user-case",
        ),
        pytest.param("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060", False, id="default-port"),
        pytest.param(
            "sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp", False, id="transport"
        ),
        pytest.param(
            "sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp", False, id="port"
        ),
        pytest.param(
            "sip:carol@chicago.com",
            "sip:carol@chicago.com?Subject=next%20meeting",
            False,
            id="header",
        ),
        pytest.param("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4", False, id="host"),
        pytest.param(
            "sip:carol@chicago.com;security=on",
            "sip:carol@chicago.com;security=off",
            False,
            id="param",
        ),
        pytest.param("sip:a@[2001:db8::1]", "sip:a@[2001:0db8:0:0::1]", True, id="ipv6"),
        pytest.param("sip:a@example.com", "sips:a@example.com", False, id="scheme"),
    ],
)
def test_uri_comparison(a: str, b: str, equal: bool) -> None:
    assert _sip(a).equivalent(_sip(b)) is equal
    assert _sip(b).equivalent(_sip(a)) is equal


# --- hypothesis ------------------------------------------------------------------

_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_hostname = st.lists(_label, min_size=1, max_size=4).map(".".join)
_ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
_ipv6 = st.ip_addresses(v=6).map(str)
_host = st.one_of(_hostname, _ipv4, _ipv6)
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_name = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()%&+$[]/:"), min_size=1, max_size=8
)
_param_value = st.one_of(
    st.none(), st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
)

_sip_uris = st.builds(
    SipUri,
    scheme=st.sampled_from(["sip", "sips"]),
    host=_host,
    user=st.one_of(st.none(), _text.filter(bool)),
    password=st.one_of(st.none(), _text),
    port=st.one_of(st.none(), st.integers(0, 65535)),
    params=st.lists(st.tuples(_name, _param_value), max_size=4).map(tuple),
    headers=st.lists(st.tuples(_text.filter(bool), _text), max_size=3).map(tuple),
).filter(lambda u: u.user is not None or u.password is None)


@settings(max_examples=300, deadline=None)
@given(_sip_uris)
def test_sip_uri_round_trips(uri: SipUri) -> None:
    """Any decoded value survives str -> parse: escaping is exact, decoding once."""
    again = parse_uri(str(uri))
    assert again == uri
    assert again.equivalent(uri)
    assert str(again) == str(uri)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_parse_uri_never_raises_anything_else(text: str) -> None:
    try:
        uri = parse_uri(text)
    except MalformedMessageError as exc:
        assert exc.error_code == 400
        return
    str(uri)


@settings(max_examples=200, deadline=None)
@given(st.text(st.sampled_from("sip:@[]%;?=&/.a0:-"), max_size=40))
def test_parse_uri_on_delimiter_soup(text: str) -> None:
    try:
        uri = parse_uri("sip:" + text)
    except MalformedMessageError:
        return
    assert parse_uri(str(uri)) == uri
