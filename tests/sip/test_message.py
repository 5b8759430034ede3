"""SIP message codec: parse, serialize, validate (RFC 3261 §7, §18.3, §20)."""

from __future__ import annotations

import pytest

from natkit.errors import MalformedMessageError
from natkit.sip.message import (
    SipRequest,
    SipResponse,
    make_response,
    parse_message,
    serialize_message,
    validate_request,
)
from natkit.sip.uri import SipUri

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
