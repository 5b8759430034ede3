"""RFC 4475 torture messages: every one of the 49 gets the outcome INDEX.md asks for.

Each message is fed to :func:`parse_message` as received on UDP. The outcome
is one of: parses (and for requests :func:`validate_request` finds nothing),
rejected by the parser with a status, parsed but answered with a status by
:func:`validate_request`, or a response dropped (``error_code=None``). Valid
messages also get assertions of the specific meaning the RFC names.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natkit.errors import MalformedMessageError
from natkit.sip.message import (
    SipMessage,
    SipRequest,
    SipResponse,
    parse_message,
    serialize_message,
    stream_message_length,
    unsupported_options,
    validate_request,
    validate_response,
)
from natkit.sip.uri import AbsoluteUri, SipUri

TORTURE = Path(__file__).parent.parent / "data" / "sip_torture"


def _load(name: str) -> bytes:
    return (TORTURE / f"{name}.dat").read_bytes()


def _req(msg: SipMessage) -> SipRequest:
    assert isinstance(msg, SipRequest)
    return msg


def _sip(uri: object) -> SipUri:
    assert isinstance(uri, SipUri)
    return uri


# --- specific meanings of valid messages ------------------------------------------


def _wsinv(msg: SipMessage) -> None:
    req = _req(msg)
    assert req.method == "INVITE"
    assert _sip(req.uri).has_param("unknownparam")
    assert req.to.tag == "1918181833n"
    assert req.from_.display_name == 'J Rosenberg \\"'
    assert req.from_.tag == "98asjd8"
    assert req.max_forwards == 68
    assert req.cseq.seq == 9 and req.cseq.method == "INVITE"
    assert [(v.transport, v.host) for v in req.vias] == [
        ("UDP", "192.0.2.2"),
        ("TCP", "spindle.example.com"),
        ("UDP", "192.168.255.111"),
    ]
    assert req.vias[1].branch == "z9hG4bK9ikj8"
    assert req.vias[2].branch == "z9hG4bK30239"
    assert req.headers.get("Subject") == ""
    assert req.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert req.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    route = req.name_addrs("Route")[0]
    assert _sip(route.uri).lr and _sip(route.uri).param("unknownwith") == "value"
    contacts = req.contacts
    assert contacts != "*"
    assert contacts[0].display_name == 'Quoted string ""'
    assert contacts[0].param("newparam") == "newvalue"
    assert contacts[0].has_param("secondparam") and contacts[0].param("q") == "0.33"
    assert len(req.body) == 150


def _intmeth(msg: SipMessage) -> None:
    req = _req(msg)
    assert req.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert req.cseq.method == req.method
    uri = _sip(req.uri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com" and uri.params == ()
    assert req.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert req.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert req.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert (
        req.from_.param("fromparam''~+*_!.-%")
        == "\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"
    )
    assert req.from_.tag == "_token~1'+`*%!-."
    assert req.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert req.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert validate_request(req) is None


def _esc01(msg: SipMessage) -> None:
    req = _req(msg)
    assert _sip(req.uri).user == "sips:user@example.com"
    assert _sip(req.uri).host == "example.net"
    to = _sip(req.to.uri)
    assert to.user == "user"
    assert to.equivalent(SipUri("sip", "example.com", "user"))
    assert _sip(req.from_.uri).user == "I have spaces"
    contacts = req.contacts
    assert contacts != "*"
    contact = _sip(contacts[0].uri)
    assert contact.user == "caller" and contact.lr
    assert contact.param("name") == "value%41"  # decoded once, never twice
    assert str(contact) == "sip:caller@host5.example.net;lr;name=value%2541"


def _escnull(msg: SipMessage) -> None:
    req = _req(msg)
    assert _sip(req.to.uri).user == "null-\x00-null"
    assert _sip(req.to.uri).aor == "sip:null-%00-null@example.com"
    contacts = req.contacts
    assert contacts != "*"
    users = [_sip(c.uri).user for c in contacts]
    assert users == ["\x00", "\x00\x00"]
    assert len({_sip(c.uri).aor for c in contacts}) == 2
    assert not _sip(contacts[0].uri).equivalent(contacts[1].uri)


def _esc02(msg: SipMessage) -> None:
    req = _req(msg)
    assert req.method == "RE%47IST%45R"
    assert req.method != "REGISTER"
    assert req.to.display_name == "%Z%45"
    assert req.top_via.branch == "z9hG4bK209%fzsnel234"
    contacts = req.contacts
    assert contacts != "*"
    assert [_sip(c.uri).host for c in contacts] == ["host1.example.com", "host3.example.com"]
    assert req.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert ("C%6Fntact", "<sip:alias2@host2.example.com>") in list(req.headers)
    assert validate_request(req) is None  # a UAS answers 501 for the unknown method


def _lwsdisp(msg: SipMessage) -> None:
    req = _req(msg)
    assert req.from_.display_name == "caller"
    assert _sip(req.from_.uri).user == "caller"
    assert req.from_.tag == "323"


def _longreq(msg: SipMessage) -> None:
    req = _req(msg)
    vias = req.vias
    assert len(vias) == 34
    assert [v.host for v in vias[:33]] == [f"sip{n}.example.com" for n in range(33, 0, -1)]
    assert vias[33].host == "host.example.com" and vias[33].received == "192.0.2.5"
    assert len(vias[33].branch or "") > 200
    assert req.to.display_name is not None and len(req.to.display_name) > 90
    assert _sip(req.to.uri).port == 6000
    assert _sip(req.to.uri).has_param(
        "verylonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglong"
        "longlonglonglonglonglongparameternamewithnovalue"
    )
    assert len(req.from_.tag or "") > 150
    assert len(req.call_id) > 140
    assert len(_load("longreq")) == 3515


def _dblreq(msg: SipMessage) -> None:
    req = _req(msg)
    assert req.method == "REGISTER"
    assert req.body == b""
    assert b"INVITE" not in serialize_message(req)


def _semiuri(msg: SipMessage) -> None:
    uri = _sip(_req(msg).uri)
    assert uri.user == "user;par=u@example.net"
    assert uri.host == "example.com"
    assert uri.params == ()
    accept = msg.headers.values("Accept")
    assert accept[0] == "application/sdp" and accept[-1] == "message/sipfrag"
    assert len(accept) == 6


def _transports(msg: SipMessage) -> None:
    vias = msg.vias
    assert [v.transport for v in vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert msg.top_via.host == "t1.example.com"


def _mpart01(msg: SipMessage) -> None:
    assert len(msg.body) == 553
    assert b"\x00" in msg.body
    assert (msg.content_type or "").startswith("multipart/mixed")
    # the parser keeps multipart bodies intact; serializing gives the same body
    assert parse_message(serialize_message(msg)).body == msg.body


def _unreason(msg: SipMessage) -> None:
    assert isinstance(msg, SipResponse)
    assert msg.status == 200
    assert msg.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert validate_response(msg)


def _noreason(msg: SipMessage) -> None:
    assert isinstance(msg, SipResponse)
    assert msg.status == 100 and msg.reason == ""
    assert serialize_message(msg).startswith(b"SIP/2.0 100 \r\n")


def _unksm2(msg: SipMessage) -> None:
    req = _req(msg)
    assert isinstance(req.to.uri, AbsoluteUri) and str(req.to.uri) == "isbn:2983792873"
    assert isinstance(req.from_.uri, AbsoluteUri)
    contacts = req.contacts
    assert contacts != "*" and str(contacts[0].uri) == "name:John_Smith"


def _bext01(msg: SipMessage) -> None:
    req = _req(msg)
    assert validate_request(req, supported=()) == 420
    assert unsupported_options(req, ()) == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert unsupported_options(req, (), proxy=True) == [
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    ]
    assert validate_request(req) is None  # without a supported set nothing is judged


def _invut(msg: SipMessage) -> None:
    assert msg.content_type == "application/unknownformat"


def _regaut01(msg: SipMessage) -> None:
    assert msg.headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"


def _bcast(msg: SipMessage) -> None:
    assert isinstance(msg, SipResponse)
    assert msg.vias[1].host == "255.255.255.255"


def _zeromf(msg: SipMessage) -> None:
    req = _req(msg)
    assert req.max_forwards == 0
    assert validate_request(req, proxy=True) == 483


def _cparam01(msg: SipMessage) -> None:
    contacts = msg.contacts
    assert contacts != "*"
    assert contacts[0].has_param("unknownparam")
    assert _sip(contacts[0].uri).params == ()


def _cparam02(msg: SipMessage) -> None:
    contacts = msg.contacts
    assert contacts != "*"
    assert contacts[0].params == ()
    assert _sip(contacts[0].uri).has_param("unknownparam")
    assert "unknownparam" in str(contacts[0])


def _regescrt(msg: SipMessage) -> None:
    contacts = msg.contacts
    assert contacts != "*"
    uri = _sip(contacts[0].uri)
    assert uri.headers == (("Route", "<sip:sip.example.com>"),)
    assert str(uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"


def _inv2543(msg: SipMessage) -> None:
    req = _req(msg)
    assert len(req.body) == 105  # no Content-Length on UDP: the rest of the datagram
    assert req.top_via.branch is None
    assert req.max_forwards is None
    assert req.from_.tag is None


def _baddate(msg: SipMessage) -> None:
    assert (msg.headers.get("Date") or "").endswith("EST")


def _sdp01(msg: SipMessage) -> None:
    assert msg.headers.get("Accept") == "text/nobodyKnowsThis"
    assert msg.content_type == "application/sdp"


def _without_length(msg: SipMessage) -> list[tuple[str, str]]:
    return [(k, v) for k, v in msg.headers if k != "Content-Length"]


# --- the table ---------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """parse: the parser's error_code (None: dropped), or "ok"; validate: the
    status validate_request answers (requests that parsed)."""

    parse: int | str | None = "ok"
    validate: int | None = None
    meaning: Callable[[SipMessage], None] | None = None


OK = "ok"


def _p(name: str, section: str, outcome: Outcome) -> object:
    return pytest.param(name, outcome, id=f"{name}-{section}")


TABLE = [
    _p("wsinv", "3.1.1.1", Outcome(meaning=_wsinv)),
    _p("intmeth", "3.1.1.2", Outcome(meaning=_intmeth)),
    _p("esc01", "3.1.1.3", Outcome(meaning=_esc01)),
    _p("escnull", "3.1.1.4", Outcome(meaning=_escnull)),
    _p("esc02", "3.1.1.5", Outcome(meaning=_esc02)),
    _p("lwsdisp", "3.1.1.6", Outcome(meaning=_lwsdisp)),
    _p("longreq", "3.1.1.7", Outcome(meaning=_longreq)),
    _p("dblreq", "3.1.1.8", Outcome(meaning=_dblreq)),
    _p("semiuri", "3.1.1.9", Outcome(meaning=_semiuri)),
    _p("transports", "3.1.1.10", Outcome(meaning=_transports)),
    _p("mpart01", "3.1.1.11", Outcome(meaning=_mpart01)),
    _p("unreason", "3.1.1.12", Outcome(meaning=_unreason)),
    _p("noreason", "3.1.1.13", Outcome(meaning=_noreason)),
    _p("badinv01", "3.1.2.1", Outcome(parse=400)),
    _p("clerr", "3.1.2.2", Outcome(parse=400)),
    _p("ncl", "3.1.2.3", Outcome(parse=400)),
    _p("scalar02", "3.1.2.4", Outcome(parse=400)),
    _p("scalarlg", "3.1.2.5", Outcome(parse=None)),
    _p("quotbal", "3.1.2.6", Outcome(parse=400)),
    _p("ltgtruri", "3.1.2.7", Outcome(parse=400)),
    _p("lwsruri", "3.1.2.8", Outcome(parse=400)),
    _p("lwsstart", "3.1.2.9", Outcome(parse=400)),
    _p("trws", "3.1.2.10", Outcome(parse=400)),
    _p("escruri", "3.1.2.11", Outcome(parse=400)),
    _p("baddate", "3.1.2.12", Outcome(meaning=_baddate)),  # accepted: Date is not used
    _p("regbadct", "3.1.2.13", Outcome(parse=400)),
    _p("badaspec", "3.1.2.14", Outcome(parse=400)),
    _p("baddn", "3.1.2.15", Outcome(parse=400)),
    _p("badvers", "3.1.2.16", Outcome(parse=505)),
    _p("mismatch01", "3.1.2.17", Outcome(validate=400)),
    _p("mismatch02", "3.1.2.18", Outcome(validate=501)),
    _p("bigcode", "3.1.2.19", Outcome(parse=None)),
    _p("badbranch", "3.2.1", Outcome(validate=400)),
    _p("insuf", "3.3.1", Outcome(validate=400)),
    _p("unkscm", "3.3.2", Outcome(validate=416)),
    _p("novelsc", "3.3.3", Outcome(validate=416)),
    _p("unksm2", "3.3.4", Outcome(meaning=_unksm2)),
    _p("bext01", "3.3.5", Outcome(meaning=_bext01)),
    _p("invut", "3.3.6", Outcome(meaning=_invut)),
    _p("regaut01", "3.3.7", Outcome(meaning=_regaut01)),
    _p("multi01", "3.3.8", Outcome(validate=400)),
    _p("mcl01", "3.3.9", Outcome(parse=400)),
    _p("bcast", "3.3.10", Outcome(meaning=_bcast)),
    _p("zeromf", "3.3.11", Outcome(meaning=_zeromf)),
    _p("cparam01", "3.3.12", Outcome(meaning=_cparam01)),
    _p("cparam02", "3.3.13", Outcome(meaning=_cparam02)),
    _p("regescrt", "3.3.14", Outcome(meaning=_regescrt)),
    _p("sdp01", "3.3.15", Outcome(meaning=_sdp01)),
    _p("inv2543", "3.4.1", Outcome(meaning=_inv2543)),
]

ALL_NAMES = sorted(p.stem for p in TORTURE.glob("*.dat"))


def test_table_covers_all_49_messages() -> None:
    names = [param.values[0] for param in TABLE]  # type: ignore[attr-defined]
    assert len(ALL_NAMES) == 49
    assert sorted(names) == ALL_NAMES


def test_files_are_byte_exact() -> None:
    """SHA256SUMS (from the RFC's archive) still matches: git kept the CRLFs."""
    lines = (TORTURE / "SHA256SUMS").read_text().splitlines()
    assert len(lines) == 49
    for line in lines:
        digest, name = line.split()
        assert hashlib.sha256((TORTURE / name).read_bytes()).hexdigest() == digest, name
    assert b"\r\n" in _load("wsinv")
    assert (TORTURE / ".gitattributes").read_text().find("*.dat -text -diff") >= 0


@pytest.mark.parametrize(("name", "outcome"), TABLE)
def test_torture_message(name: str, outcome: Outcome) -> None:
    data = _load(name)
    if outcome.parse != OK:
        with pytest.raises(MalformedMessageError) as info:
            parse_message(data)
        assert info.value.error_code == outcome.parse
        return
    msg = parse_message(data)
    if isinstance(msg, SipRequest):
        assert validate_request(msg) == outcome.validate
    else:
        assert validate_response(msg)
    if outcome.meaning is not None:
        outcome.meaning(msg)


@pytest.mark.parametrize(("name", "outcome"), [p for p in TABLE if p.values[1].parse == OK])  # type: ignore[attr-defined]
def test_valid_torture_messages_round_trip(name: str, outcome: Outcome) -> None:
    """serialize(parse(x)) parses to the same message, and serializing that
    again gives the same bytes (the canonical form is a fixed point)."""
    msg = parse_message(_load(name))
    wire = serialize_message(msg)
    again = parse_message(wire)
    assert _without_length(again) == _without_length(msg)
    assert again.body == msg.body
    assert serialize_message(again) == wire
    if outcome.meaning is not None:
        outcome.meaning(again)


def test_stream_parse_needs_content_length() -> None:
    with pytest.raises(MalformedMessageError) as info:
        parse_message(_load("inv2543"), stream=True)
    assert info.value.error_code == 400


def test_baddn_variant_with_final_crlf_is_still_400() -> None:
    with pytest.raises(MalformedMessageError) as info:
        parse_message((TORTURE / "variants" / "baddn.terminated.dat").read_bytes())
    assert info.value.error_code == 400


def test_archive_extra_line_without_colon_is_400() -> None:
    with pytest.raises(MalformedMessageError) as info:
        parse_message((TORTURE / "archive-extra" / "test.dat").read_bytes())
    assert info.value.error_code == 400


def test_extra_files_are_byte_exact() -> None:
    digests = {
        "variants/baddn.terminated.dat": (
            "4768517cb1c40f60f215ac45f4fc5653ee53b0bf2df37e06c6543e874be4a7f9"
        ),
        "archive-extra/test.dat": (
            "fe1cb604956316c0831e28bdc2ebda829a999e187ee801b08251bdb6e74014c7"
        ),
    }
    for name, digest in digests.items():
        assert hashlib.sha256((TORTURE / name).read_bytes()).hexdigest() == digest


# --- robustness: mutations of the corpus -------------------------------------------

_CORPUS = [_load(name) for name in ALL_NAMES]


def _parse_cleanly(data: bytes) -> None:
    """Only MalformedMessageError may come out, and every view of a parsed
    message either works or raises MalformedMessageError."""
    try:
        msg = parse_message(data)
    except MalformedMessageError:
        return
    for view in ("vias", "call_id", "cseq", "from_", "to", "contacts", "max_forwards"):
        with contextlib.suppress(MalformedMessageError):
            getattr(msg, view)
    if isinstance(msg, SipRequest):
        validate_request(msg, supported=(), proxy=True)
    else:
        validate_response(msg)
    serialize_message(msg)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_truncation_is_clean(name: str) -> None:
    data = _load(name)
    for cut in range(len(data)):
        _parse_cleanly(data[:cut])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(0, len(_CORPUS) - 1),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
)
def test_mutated_torture_messages_never_crash(index: int, edits: list[tuple[int, int]]) -> None:
    data = bytearray(_CORPUS[index])
    for position, value in edits:
        data[position % len(data)] = value
    _parse_cleanly(bytes(data))


@settings(max_examples=300, deadline=None)
@given(
    index=st.integers(0, len(_CORPUS) - 1),
    cut=st.integers(0, 10_000),
    insert=st.binary(max_size=40),
)
def test_spliced_torture_messages_never_crash(index: int, cut: int, insert: bytes) -> None:
    data = _CORPUS[index]
    cut %= len(data)
    _parse_cleanly(data[:cut] + insert + data[cut:])


@pytest.mark.parametrize("name", ALL_NAMES)
def test_stream_framing_agrees_with_the_parser(name: str) -> None:
    """On a stream, a message with one good Content-Length frames to exactly
    its header block plus body; the others lose framing (400) or wait."""
    data = _load(name)
    try:
        length = stream_message_length(data)
    except MalformedMessageError as exc:
        assert exc.error_code == 400
        with pytest.raises(MalformedMessageError):
            parse_message(data, stream=True)
        return
    if length is None:  # clerr (body shorter than Content-Length) or baddn (no empty line)
        assert name in ("clerr", "baddn")
        return
    try:
        msg = parse_message(data[:length], stream=True)
    except MalformedMessageError:
        return
    assert serialize_message(msg).endswith(msg.body)
    assert parse_message(data).body == msg.body
