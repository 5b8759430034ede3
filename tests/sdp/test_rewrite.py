"""rewrite_connection: a media relay anchoring one stream on itself."""

from __future__ import annotations

import pytest

from natkit.addr import Endpoint
from natkit.errors import LocalProtocolError
from natkit.rng import seeded_rng
from natkit.sdp import (
    Attribute,
    Connection,
    LocalCapabilities,
    MediaCapabilities,
    Rtcp,
    answer,
    negotiated_media,
    parse_sdp,
    rewrite_connection,
    serialize_sdp,
)
from tests.sdp import bodies

RELAY = "203.0.113.50"


def test_rewrite_replaces_connection_port_and_rtcp() -> None:
    desc = parse_sdp(bodies.BARESIP)
    out = rewrite_connection(desc, 0, RELAY, 30000, 30001)
    assert out.connection_of(0) == Connection(address=RELAY)
    assert out.media[0].port == 30000
    assert out.media[0].rtcp == Rtcp(port=30001, nettype="IN", addrtype="IP4", address=RELAY)
    assert out.connection == desc.connection  # session level untouched
    assert out.origin == desc.origin
    assert parse_sdp(serialize_sdp(out)) == out


def test_rewrite_puts_rtcp_where_the_old_one_was() -> None:
    desc = parse_sdp(bodies.CHROME)
    out = rewrite_connection(desc, 0, RELAY, 30000, 30001, keep_ice=True)
    assert out.media[0].attributes[0] == Attribute("rtcp", f"30001 IN IP4 {RELAY}")
    assert len(out.media[0].attributes) == len(desc.media[0].attributes)


def test_rewrite_without_rtcp_port_removes_a_rtcp() -> None:
    out = rewrite_connection(parse_sdp(bodies.CHROME), 1, RELAY, 30002)
    assert out.media[1].rtcp is None
    assert out.media[1].rtcp_mux  # kept: the relay speaks mux on its port


def test_rewrite_strips_ice_by_default() -> None:
    desc = parse_sdp(bodies.BARESIP_SRTP_ICE)
    out = rewrite_connection(desc, 0, RELAY, 30000)
    names = {a.name for a in out.media[0].attributes} | {a.name for a in out.attributes}
    assert not names & {"candidate", "ice-ufrag", "ice-pwd", "ice-lite"}
    assert out.media[0].crypto() == desc.media[0].crypto()  # SRTP passes end to end
    assert out.get("tool") == desc.get("tool")


def test_rewrite_can_keep_ice() -> None:
    desc = parse_sdp(bodies.BARESIP_SRTP_ICE)
    out = rewrite_connection(desc, 0, RELAY, 30000, keep_ice=True)
    assert len(out.media[0].get_all("candidate")) == 2
    assert out.has("ice-lite")


def test_rewrite_bridges_to_ipv6() -> None:
    out = rewrite_connection(parse_sdp(bodies.ASTERISK), 0, "2001:db8::50", 30000, 30001)
    assert out.connection_of(0) == Connection(addrtype="IP6", address="2001:db8::50")
    assert out.media[0].get("rtcp") == Attribute("rtcp", "30001 IN IP6 2001:db8::50")


def test_rewrite_only_touches_the_given_stream() -> None:
    desc = parse_sdp(bodies.LINPHONE)
    out = rewrite_connection(desc, 1, RELAY, 30000)
    assert out.media[0] == desc.media[0]
    assert out.media[1].port == 30000


def test_rewritten_rejected_stream_stays_rejected() -> None:
    desc = parse_sdp(bodies.RFC8866_EXAMPLE.replace(b"m=audio 49180", b"m=audio 0"))
    assert rewrite_connection(desc, 1, RELAY, 30000).media[1].port == 0


def test_answerer_sends_to_relay_after_rewrite() -> None:
    offer = rewrite_connection(parse_sdp(bodies.CISCO), 0, RELAY, 30000, 30001)
    caps = LocalCapabilities(
        address="192.0.2.5", media=(MediaCapabilities(port=4000),), rng=seeded_rng(1)
    )
    (stream,) = negotiated_media(offer, answer(offer, caps), local_is_offerer=False)
    assert (stream.remote_rtp, stream.remote_rtcp) == (
        Endpoint(RELAY, 30000),
        Endpoint(RELAY, 30001),
    )


@pytest.mark.parametrize(
    ("index", "address", "rtp", "rtcp"),
    [
        pytest.param(1, RELAY, 30000, None, id="no-such-stream"),
        pytest.param(-1, RELAY, 30000, None, id="negative-index"),
        pytest.param(0, "relay.example.com", 30000, None, id="host-name"),
        pytest.param(0, RELAY, 0, None, id="port-zero"),
        pytest.param(0, RELAY, 30000, 70000, id="rtcp-port-too-big"),
    ],
)
def test_rewrite_refuses_impossible_targets(
    index: int, address: str, rtp: int, rtcp: int | None
) -> None:
    with pytest.raises(LocalProtocolError):
        rewrite_connection(parse_sdp(bodies.SIPP_UAC), index, address, rtp, rtcp)
