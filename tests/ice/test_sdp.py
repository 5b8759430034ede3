"""RFC 8839 §5 ICE SDP grammar: real peers' lines, strict ranges, round trips."""

from __future__ import annotations

import contextlib

import aioice
import pytest
from hypothesis import given
from hypothesis import strategies as st

from natkit.addr import Endpoint, Transport
from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.ice.candidate import Candidate, CandidateType
from natkit.ice.sdp import (
    CandidateLine,
    IceDescription,
    RemoteCandidate,
    TcpType,
    parse_candidate,
    parse_ice_description,
    parse_ice_options,
    parse_remote_candidates,
    serialize_candidate,
    serialize_ice_description,
    validate_pwd,
    validate_ufrag,
)

HOST, SRFLX, RELAY = CandidateType.HOST, CandidateType.SERVER_REFLEXIVE, CandidateType.RELAYED

# Lines as the peers write them (Chrome's RTCIceCandidate.candidate, Firefox's
# SDP, pjnath/baresip offers, RFC 8839's own examples).
REAL_LINES = [
    pytest.param(
        "candidate:3098175849 1 udp 2122260223 192.168.1.10 54321 typ host generation 0 "
        "network-id 1 network-cost 10",
        ("192.168.1.10", 54321, HOST, Transport.UDP, None),
        id="chrome-host",
    ),
    pytest.param(
        "candidate:4233069003 1 udp 2122262783 2001:db8::7 55555 typ host generation 0 "
        "network-id 2 network-cost 10",
        ("2001:db8::7", 55555, HOST, Transport.UDP, None),
        id="chrome-host-ipv6",
    ),
    pytest.param(
        "candidate:1467250027 1 udp 2122260223 d4e5f6a7-1234-4bcd-9ef0-123456789abc.local "
        "54321 typ host generation 0 network-id 1",
        ("d4e5f6a7-1234-4bcd-9ef0-123456789abc.local", 54321, HOST, Transport.UDP, None),
        id="chrome-mdns",
    ),
    pytest.param(
        "candidate:842163049 1 udp 1677729535 203.0.113.5 54400 typ srflx raddr 0.0.0.0 "
        "rport 0 generation 0 ufrag sTjX network-cost 999",
        ("203.0.113.5", 54400, SRFLX, Transport.UDP, ("0.0.0.0", 0)),
        id="chrome-srflx-hidden-related",
    ),
    pytest.param(
        "candidate:1853887674 1 tcp 1518280447 192.168.1.10 9 typ host tcptype active "
        "generation 0 network-id 1 network-cost 10",
        ("192.168.1.10", 9, HOST, Transport.TCP, None),
        id="chrome-tcp-active",
    ),
    pytest.param(
        "candidate:3745020224 1 udp 41819903 203.0.113.10 61234 typ relay raddr "
        "198.51.100.1 rport 54400 generation 0 ufrag sTjX network-cost 999",
        ("203.0.113.10", 61234, RELAY, Transport.UDP, ("198.51.100.1", 54400)),
        id="chrome-relay",
    ),
    pytest.param(
        "a=candidate:0 1 UDP 2122252543 192.168.1.10 50601 typ host",
        ("192.168.1.10", 50601, HOST, Transport.UDP, None),
        id="firefox-host",
    ),
    pytest.param(
        "a=candidate:1 1 TCP 2105524479 192.168.1.10 9 typ host tcptype active",
        ("192.168.1.10", 9, HOST, Transport.TCP, None),
        id="firefox-tcp",
    ),
    pytest.param(
        "a=candidate:2 1 UDP 1686052863 203.0.113.5 50601 typ srflx raddr 192.168.1.10 "
        "rport 50601\r\n",
        ("203.0.113.5", 50601, SRFLX, Transport.UDP, ("192.168.1.10", 50601)),
        id="firefox-srflx-crlf",
    ),
    pytest.param(
        "a=candidate:3 2 UDP 92217342 203.0.113.10 64132 typ relay raddr 203.0.113.10 rport 64132",
        ("203.0.113.10", 64132, RELAY, Transport.UDP, ("203.0.113.10", 64132)),
        id="firefox-relay-rtcp",
    ),
    pytest.param(
        "a=candidate:Hc0a80a0a 1 UDP 2130706431 192.168.10.10 49170 typ host",
        ("192.168.10.10", 49170, HOST, Transport.UDP, None),
        id="pjnath-host",
    ),
    pytest.param(
        "a=candidate:Sc0a80a0a 1 UDP 1862270975 203.0.113.5 49170 typ srflx raddr "
        "192.168.10.10 rport 49170",
        ("203.0.113.5", 49170, SRFLX, Transport.UDP, ("192.168.10.10", 49170)),
        id="pjnath-srflx",
    ),
    pytest.param(
        "a=candidate:Rc0a80a0a 1 UDP 16777215 203.0.113.10 50000 typ relay raddr "
        "203.0.113.5 rport 49170",
        ("203.0.113.10", 50000, RELAY, Transport.UDP, ("203.0.113.5", 49170)),
        id="pjnath-relay",
    ),
    pytest.param(
        "a=candidate:e0a80a0a 1 UDP 2113932031 10.0.0.2 10000 typ host   ",
        ("10.0.0.2", 10000, HOST, Transport.UDP, None),
        id="baresip-host-trailing-space",
    ),
    pytest.param(
        "a=candidate:2 1 UDP 1694498815 192.0.2.3 45664 typ srflx raddr 203.0.113.141 rport 8998",
        ("192.0.2.3", 45664, SRFLX, Transport.UDP, ("203.0.113.141", 8998)),
        id="rfc8839-example",
    ),
]


@pytest.mark.parametrize(("line", "expected"), REAL_LINES)
def test_real_peer_lines_parse(
    line: str, expected: tuple[str, int, CandidateType, Transport, tuple[str, int] | None]
) -> None:
    address, port, ctype, transport, related = expected
    cand = parse_candidate(line)
    assert (cand.address, cand.port, cand.type, cand.transport) == (
        address,
        port,
        ctype,
        transport,
    )
    got_related = (
        None if cand.related_address is None else (cand.related_address, cand.related_port)
    )
    assert got_related == related
    assert parse_candidate(serialize_candidate(cand)) == cand


@pytest.mark.parametrize(("line", "expected"), REAL_LINES)
def test_real_peer_lines_round_trip_through_aioice(
    line: str, expected: tuple[str, int, CandidateType, Transport, tuple[str, int] | None]
) -> None:
    del expected
    ours = parse_candidate(line)
    theirs = aioice.Candidate.from_sdp(serialize_candidate(ours, prefix=False)[10:])
    assert (theirs.host, theirs.port, theirs.type, theirs.priority) == (
        ours.address,
        ours.port,
        ours.type.value,
        ours.priority,
    )
    assert parse_candidate(theirs.to_sdp()).priority == ours.priority


def test_aioice_to_sdp_without_candidate_prefix_parses() -> None:
    theirs = aioice.Candidate(
        foundation=aioice.candidate.candidate_foundation("host", "udp", "192.0.2.10"),
        component=1,
        transport="udp",
        priority=aioice.candidate.candidate_priority(1, "host"),
        host="192.0.2.10",
        port=5000,
        type="host",
    )
    ours = parse_candidate(theirs.to_sdp())
    assert ours.foundation == theirs.foundation
    assert ours.to_candidate().address == Endpoint("192.0.2.10", 5000)


def test_chrome_extensions_are_kept_in_order() -> None:
    cand = parse_candidate(
        "candidate:842163049 1 udp 1677729535 203.0.113.5 54400 typ srflx raddr 0.0.0.0 "
        "rport 0 generation 0 ufrag sTjX network-cost 999"
    )
    assert cand.extensions == (("generation", "0"), ("ufrag", "sTjX"), ("network-cost", "999"))
    assert cand.extension("ufrag") == "sTjX"
    assert cand.extension("network-id") is None


def test_tcptype_before_raddr_and_mixed_case_keywords() -> None:
    cand = parse_candidate(
        "candidate:1 1 TCP 1 203.0.113.5 9 TYP SRFLX tcptype passive RADDR 10.0.0.1 RPORT 9"
    )
    assert cand.tcp_type is TcpType.PASSIVE
    assert (cand.related_address, cand.related_port) == ("10.0.0.1", 9)
    assert serialize_candidate(cand) == (
        "a=candidate:1 1 TCP 1 203.0.113.5 9 typ srflx raddr 10.0.0.1 rport 9 tcptype passive"
    )


def test_ipv6_is_canonicalised_and_brackets_tolerated() -> None:
    cand = parse_candidate("candidate:1 1 udp 1 [2001:DB8:0::1] 5 typ host")
    assert cand.address == "2001:db8::1"


def test_mdns_name_is_kept_and_must_be_resolved() -> None:
    cand = parse_candidate(
        "candidate:1 1 udp 2122260223 0a1b2c3d-0000-4000-8000-0000.local 5 typ host"
    )
    assert cand.is_mdns and cand.is_fqdn
    with pytest.raises(LocalProtocolError):
        cand.to_candidate()
    resolved = cand.to_candidate(resolved_address="192.168.1.10")
    assert resolved.address == Endpoint("192.168.1.10", 5)
    assert resolved.priority == 2122260223


def test_plain_fqdn_is_not_mdns() -> None:
    cand = parse_candidate("candidate:1 1 udp 1 turn.example.com 5 typ relay")
    assert cand.is_fqdn and not cand.is_mdns


def test_hidden_related_address_is_dropped_from_the_candidate_only_if_named() -> None:
    cand = parse_candidate("candidate:1 1 udp 1 203.0.113.5 5 typ srflx raddr x.local rport 0")
    assert cand.to_candidate().related is None
    cand = parse_candidate("candidate:1 1 udp 1 203.0.113.5 5 typ srflx raddr 0.0.0.0 rport 0")
    assert cand.to_candidate().related == Endpoint("0.0.0.0", 0)


def test_from_candidate_publishes_mdns_and_hides_related() -> None:
    base = Endpoint("192.168.1.10", 5000)
    host = Candidate.local(HOST, base, base=base)
    line = CandidateLine.from_candidate(host, mdns_name="1f2e.local")
    assert line.address == "1f2e.local" and line.is_mdns
    srflx = Candidate.local(
        SRFLX, Endpoint("203.0.113.5", 6000), base=base, related=base, server=base
    )
    hidden = CandidateLine.from_candidate(srflx, hide_related=True)
    assert (hidden.related_address, hidden.related_port) == ("0.0.0.0", 0)


def test_candidate_to_line_and_back() -> None:
    base = Endpoint("2001:db8::5", 5000)
    cand = Candidate.local(
        RELAY,
        Endpoint("2001:db8::77", 60000),
        base=Endpoint("2001:db8::77", 60000),
        related=base,
        component=2,
        local_preference=1000,
    )
    back = parse_candidate(serialize_candidate(cand)).to_candidate()
    assert back == Candidate(
        foundation=cand.foundation,
        component=2,
        transport=Transport.UDP,
        priority=cand.priority,
        address=cand.address,
        type=RELAY,
        related=base,
    )


BAD_LINES = [
    pytest.param("candidate:1 0 udp 1 192.0.2.1 5 typ host", id="component-0"),
    pytest.param("candidate:1 257 udp 1 192.0.2.1 5 typ host", id="component-257"),
    pytest.param("candidate:1 1 udp 0 192.0.2.1 5 typ host", id="priority-0"),
    pytest.param("candidate:1 1 udp 2147483648 192.0.2.1 5 typ host", id="priority-2^31"),
    pytest.param("candidate:1 1 udp 1 192.0.2.1 65536 typ host", id="port-65536"),
    pytest.param("candidate:1 1 udp 1 192.0.2.1 -1 typ host", id="port-negative"),
    pytest.param("candidate:1 1 udp 1 192.0.2.1 5 typ host raddr 1.2.3.4 rport 70000", id="rport"),
    pytest.param("candidate:1 1 sctp 1 192.0.2.1 5 typ host", id="transport"),
    pytest.param("candidate:1 1 udp 1 192.0.2.1 5 typ magic", id="type"),
    pytest.param("candidate:1 1 udp 1 192.0.2.1 5 type host", id="typ-keyword"),
    pytest.param("candidate:1 1 udp 1 192.0.2.1 5 typ", id="truncated"),
    pytest.param("candidate:1 1 udp 1 192.0.2.1 5 typ host generation", id="dangling"),
    pytest.param("candidate:" + "a" * 33 + " 1 udp 1 192.0.2.1 5 typ host", id="foundation-33"),
    pytest.param("candidate:a-b 1 udp 1 192.0.2.1 5 typ host", id="foundation-chars"),
    pytest.param("candidate:1 1 udp 1 bad_name! 5 typ host", id="address"),
    pytest.param("candidate:1 1 udp 1 192.0.2.300 5 typ host", id="numeric-tld"),
    pytest.param("candidate:1 1 udp 1 fe80::1%eth0 5 typ host", id="zone"),
    pytest.param("candidate:1 1 tcp 1 192.0.2.1 5 typ host tcptype sideways", id="tcptype"),
    pytest.param("candidate:1 1 udp 1 192.0.2.1 5 typ host raddr 1.1.1.1 raddr 2.2.2.2", id="dup"),
    pytest.param("candidate:1 1 udp 00000000001 192.0.2.1 5 typ host", id="priority-11-digits"),
    pytest.param("a=ice-ufrag:abcd", id="not-a-candidate"),
]


@pytest.mark.parametrize("line", BAD_LINES)
def test_bad_lines_are_malformed(line: str) -> None:
    with pytest.raises(MalformedMessageError) as info:
        parse_candidate(line)
    assert info.value.error_code is None


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        pytest.param("abcd", True, id="4"),
        pytest.param("abc", False, id="3"),
        pytest.param("a" * 256, True, id="256"),
        pytest.param("a" * 257, False, id="257"),
        pytest.param("ab+/", True, id="ice-chars"),
        pytest.param("ab-c", False, id="dash"),
    ],
)
def test_ufrag_limits(value: str, ok: bool) -> None:
    if ok:
        assert validate_ufrag(value) == value
    else:
        with pytest.raises(MalformedMessageError):
            validate_ufrag(value)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        pytest.param("a" * 22, True, id="22"),
        pytest.param("a" * 21, False, id="21"),
        pytest.param("a" * 256, True, id="256"),
        pytest.param("a" * 257, False, id="257"),
        pytest.param("a" * 21 + " ", False, id="space"),
    ],
)
def test_pwd_limits(value: str, ok: bool) -> None:
    if ok:
        assert validate_pwd(value) == value
    else:
        with pytest.raises(MalformedMessageError):
            validate_pwd(value)


def test_ice_options_and_remote_candidates() -> None:
    assert parse_ice_options("trickle ice2") == ("trickle", "ice2")
    assert parse_ice_options("google-ice") == ("google-ice",)
    with pytest.raises(MalformedMessageError):
        parse_ice_options("")
    assert parse_remote_candidates("1 192.0.2.3 45664 2 192.0.2.3 45665") == (
        RemoteCandidate(component=1, address="192.0.2.3", port=45664),
        RemoteCandidate(component=2, address="192.0.2.3", port=45665),
    )
    with pytest.raises(MalformedMessageError):
        parse_remote_candidates("1 192.0.2.3")


CHROME_MEDIA = """\
m=audio 54400 UDP/TLS/RTP/SAVPF 111
c=IN IP4 203.0.113.5
a=candidate:3098175849 1 udp 2122260223 192.168.1.10 54321 typ host generation 0 network-id 1
a=candidate:842163049 1 udp 1677729535 203.0.113.5 54400 typ srflx raddr 192.168.1.10 rport 54321
a=candidate:9 1 udp 1 192.0.2.1 5 typ weird
a=ice-ufrag:sTjX
a=ice-pwd:Fp5aCfhLZ/2ZSjbaVgqRp8j3
a=ice-options:trickle renomination
a=end-of-candidates
a=rtpmap:111 opus/48000/2
"""


def test_description_of_a_chrome_media_section() -> None:
    desc = parse_ice_description(CHROME_MEDIA.splitlines())
    assert desc.ufrag == "sTjX" and desc.pwd == "Fp5aCfhLZ/2ZSjbaVgqRp8j3"
    assert desc.options == ("trickle", "renomination") and desc.trickle
    assert desc.end_of_candidates and not desc.lite
    assert [c.type for c in desc.candidates] == [HOST, SRFLX]
    assert desc.rejected == ("a=candidate:9 1 udp 1 192.0.2.1 5 typ weird",)


def test_description_inherits_session_level_values() -> None:
    session = parse_ice_description(
        ["a=ice-lite", "a=ice-ufrag:8hhY", "a=ice-pwd:asd88fgpdd777uzjYhagZg", "a=ice-pacing:50"]
    )
    media = parse_ice_description(["a=ice-ufrag:XXXX", "a=ice-mismatch"], session=session)
    assert media.ufrag == "XXXX" and media.pwd == "asd88fgpdd777uzjYhagZg"
    assert media.lite and media.mismatch and media.pacing == 50


def test_description_refuses_second_ufrag_and_bad_pwd() -> None:
    desc = parse_ice_description(["a=ice-ufrag:abcd", "a=ice-ufrag:efgh", "a=ice-pwd:short"])
    assert desc.ufrag == "abcd" and desc.pwd is None
    assert desc.rejected == ("a=ice-ufrag:efgh", "a=ice-pwd:short")


def test_description_round_trip() -> None:
    desc = IceDescription(
        ufrag="8hhY",
        pwd="asd88fgpdd777uzjYhagZg",
        options=("trickle", "ice2"),
        lite=True,
        mismatch=True,
        end_of_candidates=True,
        pacing=50,
        candidates=(parse_candidate("candidate:1 1 UDP 2130706431 203.0.113.141 8998 typ host"),),
        remote_candidates=(RemoteCandidate(component=1, address="192.0.2.3", port=45664),),
    )
    lines = serialize_ice_description(desc)
    assert lines[0] == "a=ice-lite"
    assert "a=remote-candidates:1 192.0.2.3 45664" in lines
    assert parse_ice_description(lines) == desc


# -- properties ---------------------------------------------------------------------

_ICE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
_ips = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.uuids().map(lambda u: f"{u}.local"),
)
_lines = st.builds(
    CandidateLine,
    foundation=st.text(_ICE, min_size=1, max_size=32),
    component=st.integers(1, 256),
    transport=st.sampled_from([Transport.UDP, Transport.TCP]),
    priority=st.integers(1, 2**31 - 1),
    address=_ips,
    port=st.integers(0, 65535),
    type=st.sampled_from(list(CandidateType)),
    related_address=st.none() | _ips,
    related_port=st.none() | st.integers(0, 65535),
    tcp_type=st.none() | st.sampled_from(list(TcpType)),
    extensions=st.lists(
        st.tuples(
            st.sampled_from(["generation", "network-id", "network-cost", "ufrag", "x-y"]),
            st.text("abcXYZ019+/-_.", min_size=1, max_size=10),
        ),
        max_size=4,
    ).map(tuple),
)


@given(_lines, st.booleans())
def test_generated_candidates_round_trip(line: CandidateLine, prefix: bool) -> None:
    assert parse_candidate(serialize_candidate(line, prefix=prefix)) == line


@given(st.text(max_size=300))
def test_random_text_raises_only_malformed(text: str) -> None:
    with contextlib.suppress(MalformedMessageError):
        parse_candidate("candidate:" + text)
    with contextlib.suppress(MalformedMessageError):
        parse_candidate(text)


@given(_lines, st.data())
def test_truncated_lines_raise_only_malformed(line: CandidateLine, data: st.DataObject) -> None:
    text = serialize_candidate(line)
    cut = data.draw(st.integers(0, len(text)))
    with contextlib.suppress(MalformedMessageError):
        parse_candidate(text[:cut])


@given(st.lists(st.text(max_size=80), max_size=10))
def test_random_description_lines_never_raise(lines: list[str]) -> None:
    parse_ice_description(["a=" + line for line in lines] + lines)
