"""The media handler of natkit serve (natkit.serve.media): NAT and ICE
detection, and the relay glue on the simulated internet: the offer and the
answer are rewritten towards the relay and two phones behind symmetric NATs
exchange RTP through it both ways; ICE offers and public callers are left
alone; a full relay lets the SDP through; calls end on request and on the
relay's idle timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from natkit.addr import Endpoint, Family
from natkit.lab.sip_phone import DOMAIN
from natkit.mediarelay.aio.server import MediaRelayServer
from natkit.mediarelay.config import MediaRelayConfig
from natkit.nat.box import NatBox
from natkit.nat.presets import SYMMETRIC
from natkit.net.sim import Internet, Link, SimHost, run_virtual
from natkit.rng import seeded_rng
from natkit.sdp import parse_sdp
from natkit.serve.media import MediaPath, RelayMediaHandler, has_ice, is_nated
from natkit.sip.flow import SipTransport, Source
from natkit.sip.message import SipMessage, SipRequest, SipResponse, parse_message
from tests.serve.sdp_phone import RTP_PORT, sdp_body

RELAY_IP = "203.0.113.10"


def _source(remote: Endpoint) -> Source:
    return Source(SipTransport.UDP, remote=remote, local=Endpoint(RELAY_IP, 5060), flow="f")


def _invite(ip: str, sdp: bytes, *, via: str | None = None, call_id: str = "c1") -> SipRequest:
    text = (
        f"INVITE sip:bob@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via or ip}:5060;branch=z9hG4bK1;rport\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=a\r\nTo: <sip:bob@{DOMAIN}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{ip}:5060>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
    ).encode()
    message = parse_message(text + sdp)
    assert isinstance(message, SipRequest)
    return message


def _ok(ip: str, sdp: bytes, *, call_id: str = "c1") -> SipResponse:
    text = (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP {RELAY_IP}:5060;branch=z9hG4bK2\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=a\r\nTo: <sip:bob@{DOMAIN}>;tag=b\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{ip}:5060>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
    ).encode()
    message = parse_message(text + sdp)
    assert isinstance(message, SipResponse)
    return message


@pytest.mark.parametrize(
    ("contact_ip", "via", "sdp_ip", "source", "nated"),
    [
        pytest.param("198.51.100.5", None, "198.51.100.5", "198.51.100.5", False, id="public"),
        pytest.param("192.168.1.2", None, "192.168.1.2", "203.0.113.50", True, id="private"),
        pytest.param("198.51.100.5", "198.51.100.6", "198.51.100.5", "198.51.100.5", True,
                     id="via-not-source"),
        pytest.param("198.51.100.5", None, "198.51.100.9", "198.51.100.5", True,
                     id="sdp-not-source"),
        pytest.param("10.0.0.2", None, "10.0.0.2", "10.0.0.2", False, id="same-private-lan"),
        pytest.param("100.64.0.2", "198.51.100.5", "100.64.0.2", "198.51.100.5", True,
                     id="cgnat-contact"),
    ],
)  # fmt: skip
def test_nat_detection(
    contact_ip: str, via: str | None, sdp_ip: str, source: str, nated: bool
) -> None:
    invite = _invite(contact_ip, sdp_body(sdp_ip, 4000, ice=False), via=via or contact_ip)
    found, why = is_nated(invite, parse_sdp(invite.body), _source(Endpoint(source, 5060)))
    assert found is nated, why


def test_ice_detection() -> None:
    assert has_ice(parse_sdp(sdp_body("192.0.2.1", 4000, ice=True)))
    assert not has_ice(parse_sdp(sdp_body("192.0.2.1", 4000, ice=False)))


def _behind_symmetric(net: Internet, name: str, index: int) -> SimHost:
    public = f"203.0.113.{50 + index}"
    box = NatBox(SYMMETRIC, [public], inside_networks=[f"192.168.{index}.0/24"],
                 rng=seeded_rng(10 + index), trace=False)  # fmt: skip
    middlebox = net.add_middlebox(f"nat-{name}", box, [public], inside=f"192.168.{index}.0/24")
    return net.add_host(name, behind=middlebox)


async def _rtp_between(
    host_a: SimHost, host_b: SimHost, to_a: Endpoint, to_b: Endpoint, count: int = 30
) -> tuple[list[bytes], list[bytes]]:
    """A sends ``a:n`` payloads to ``to_b``, B sends ``b:n`` to ``to_a`` (from
    their RTP ports: symmetric RTP); what each received."""
    from natkit.rtp.packet import RtpPacket, parse_rtp, serialize_rtp

    got_a: list[bytes] = []
    got_b: list[bytes] = []
    sock_a = await host_a.stack.open_udp(
        Endpoint(host_a.ip, RTP_PORT), lambda d, r: got_a.append(parse_rtp(d).payload)
    )
    sock_b = await host_b.stack.open_udp(
        Endpoint(host_b.ip, RTP_PORT), lambda d, r: got_b.append(parse_rtp(d).payload)
    )
    for n in range(count):
        for sock, who, ssrc, target in ((sock_a, "a", 1, to_b), (sock_b, "b", 2, to_a)):
            packet = RtpPacket(payload_type=0, sequence_number=n, timestamp=160 * n, ssrc=ssrc,
                               payload=f"{who}:{n}".encode())  # fmt: skip
            sock.send(serialize_rtp(packet), target)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)
    sock_a.close()
    sock_b.close()
    return got_a, got_b


def _target(message: SipMessage) -> Endpoint:
    desc = parse_sdp(message.body)
    conn = desc.connection_of(0)
    assert conn is not None
    return Endpoint(conn.address, desc.media[0].port)


@contextlib.asynccontextmanager
async def _phones_behind_symmetric_nats_and_a_relay() -> AsyncIterator[
    tuple[SimHost, SimHost, MediaRelayServer, RelayMediaHandler]
]:
    """Phones a and b, each behind its own symmetric NAT, and a running relay
    whose events the yielded handler receives."""
    net = Internet(seed=3, default_link=Link(delay=0.01))
    relay_host = net.add_host("relay", [RELAY_IP])
    a = _behind_symmetric(net, "a", 1)
    b = _behind_symmetric(net, "b", 2)
    config = MediaRelayConfig(rng=seeded_rng(1))
    async with MediaRelayServer(relay_host.stack, config, ipv4=RELAY_IP) as relay:
        handler = RelayMediaHandler(relay)
        relay.on_event = handler.on_relay_event
        yield a, b, relay, handler


def test_symmetric_nats_without_ice_get_media_through_the_relay_both_ways() -> None:
    async def main() -> tuple[list[bytes], list[bytes], RelayMediaHandler, int]:
        async with _phones_behind_symmetric_nats_and_a_relay() as (a, b, relay, handler):
            offer = await handler.offer(_invite(a.ip, sdp_body(a.ip, RTP_PORT, ice=False)),
                                        _source(Endpoint("203.0.113.51", 40000)))  # fmt: skip
            answer = await handler.answer(_ok(b.ip, sdp_body(b.ip, RTP_PORT, ice=False)),
                                          _source(Endpoint("203.0.113.52", 40001)))  # fmt: skip
            to_b, to_a = _target(offer), _target(answer)
            assert to_b.host == RELAY_IP and to_a.host == RELAY_IP and to_a != to_b
            assert "ice" not in offer.body.decode()
            got_a, got_b = await _rtp_between(a, b, to_a, to_b)
            live = relay.call_count
            handler.ended("c1", "bye")
            return got_a, got_b, handler, live - relay.call_count

    got_a, got_b, handler, deleted = run_virtual(main)
    # the first packets are lost until the relay has latched onto each side
    assert len([p for p in got_b if p.startswith(b"a:")]) >= 20 and not any(
        p.startswith(b"b:") for p in got_b
    )
    assert len([p for p in got_a if p.startswith(b"b:")]) >= 20 and not any(
        p.startswith(b"a:") for p in got_a
    )
    assert deleted == 1 and handler.paths_chosen == {MediaPath.RELAY: 1}
    call = handler.calls_json()[0]
    assert call["relayed"] and call["state"] == "ended" and call["ended_by"] == "bye"
    assert call["packets"] >= 40
    assert handler.relayed_totals()[0] >= 40 and handler.ended_by_reason == {"deleted": 1}


def test_without_the_relay_the_same_phones_hear_nothing() -> None:
    async def main() -> tuple[list[bytes], list[bytes]]:
        net = Internet(seed=3, default_link=Link(delay=0.01))
        a = _behind_symmetric(net, "a", 1)
        b = _behind_symmetric(net, "b", 2)
        return await _rtp_between(a, b, Endpoint(a.ip, RTP_PORT), Endpoint(b.ip, RTP_PORT))

    got_a, got_b = run_virtual(main)
    assert got_a == [] and got_b == []


def _handler_case(
    caller_ip: str,
    source: str,
    *,
    ice: bool,
    policy: str = "auto",
    max_calls: int = 10,
    body: bytes | None = None,
) -> tuple[SipMessage, SipMessage, SipMessage, SipMessage, RelayMediaHandler, int]:
    async def main() -> tuple[SipMessage, SipMessage, SipMessage, SipMessage, RelayMediaHandler,
                              int]:  # fmt: skip
        net = Internet(seed=3)
        relay_host = net.add_host("relay", [RELAY_IP])
        config = MediaRelayConfig(rng=seeded_rng(1), max_calls=max_calls)
        async with MediaRelayServer(relay_host.stack, config, ipv4=RELAY_IP) as relay:
            handler = RelayMediaHandler(relay, policy=policy)
            invite = _invite(caller_ip, body or sdp_body(caller_ip, RTP_PORT, ice=ice))
            offer = await handler.offer(invite, _source(Endpoint(source, 5060)))
            ok = _ok("198.51.100.20", sdp_body("198.51.100.20", RTP_PORT, ice=ice))
            answer = await handler.answer(ok, _source(Endpoint("198.51.100.20", 5060)))
            return invite, offer, ok, answer, handler, relay.call_count

    return run_virtual(main)


def test_an_offer_with_ice_is_left_untouched_and_not_relayed() -> None:
    invite, offer, ok, answer, handler, calls = _handler_case("192.168.1.2", "203.0.113.51",
                                                              ice=True)  # fmt: skip
    assert offer is invite and answer is ok and calls == 0
    assert handler.paths_chosen == {MediaPath.ICE: 1}
    assert handler.calls_json()[0]["relayed"] is False


def test_a_public_caller_without_ice_is_direct_unless_policy_always() -> None:
    invite, offer, ok, answer, handler, calls = _handler_case("198.51.100.5", "198.51.100.5",
                                                              ice=False)  # fmt: skip
    assert offer is invite and answer is ok and calls == 0
    assert handler.paths_chosen == {MediaPath.DIRECT: 1}
    _, offer, _, answer, handler, calls = _handler_case(
        "198.51.100.5", "198.51.100.5", ice=False, policy="always"
    )
    assert calls == 1 and handler.paths_chosen == {MediaPath.RELAY: 1}
    assert _target(offer).host == RELAY_IP and _target(answer).host == RELAY_IP


def test_a_full_relay_lets_the_sdp_through_and_counts_a_failure() -> None:
    async def main() -> tuple[SipMessage, SipMessage, RelayMediaHandler]:
        net = Internet(seed=3)
        relay_host = net.add_host("relay", [RELAY_IP])
        config = MediaRelayConfig(rng=seeded_rng(1), max_calls=1)
        async with MediaRelayServer(relay_host.stack, config, ipv4=RELAY_IP) as relay:
            handler = RelayMediaHandler(relay)
            source = _source(Endpoint("203.0.113.51", 5060))
            await handler.offer(_invite("192.168.1.2", sdp_body("192.168.1.2", 4000, ice=False)),
                                source)  # fmt: skip
            second = _invite("192.168.1.2", sdp_body("192.168.1.2", 4002, ice=False),
                             call_id="c2")  # fmt: skip
            return second, await handler.offer(second, source), handler

    second, forwarded, handler = run_virtual(main)
    assert forwarded is second and handler.allocation_failures == 1
    assert handler.paths_chosen == {MediaPath.RELAY: 1, MediaPath.UNRELAYED: 1}


def test_the_relay_idle_timeout_ends_the_call_record() -> None:
    async def main() -> RelayMediaHandler:
        net = Internet(seed=3)
        relay_host = net.add_host("relay", [RELAY_IP])
        config = MediaRelayConfig(rng=seeded_rng(1), idle_timeout=5.0)
        async with MediaRelayServer(relay_host.stack, config, ipv4=RELAY_IP) as relay:
            handler = RelayMediaHandler(relay)
            relay.on_event = handler.on_relay_event
            await handler.offer(_invite("192.168.1.2", sdp_body("192.168.1.2", 4000, ice=False)),
                                _source(Endpoint("203.0.113.51", 5060)))  # fmt: skip
            await asyncio.sleep(10)
            assert relay.call_count == 0
            return handler

    handler = run_virtual(main)
    assert handler.calls == {} and handler.ended_by_reason == {"timed-out": 1}
    assert handler.calls_json()[0]["ended_by"] == "relay timed-out"


def test_a_late_answer_after_the_relay_timed_out_and_a_re_invite_do_not_break() -> None:
    async def main() -> tuple[SipMessage, SipMessage, int]:
        net = Internet(seed=3)
        relay_host = net.add_host("relay", [RELAY_IP])
        config = MediaRelayConfig(rng=seeded_rng(1), idle_timeout=5.0)
        async with MediaRelayServer(relay_host.stack, config, ipv4=RELAY_IP) as relay:
            handler = RelayMediaHandler(relay)
            relay.on_event = handler.on_relay_event
            source = _source(Endpoint("203.0.113.51", 5060))
            invite = _invite("192.168.1.2", sdp_body("192.168.1.2", 4000, ice=False))
            await handler.offer(invite, source)
            # a re-INVITE from the caller with a new port still names the relay
            again = await handler.offer(
                _invite("192.168.1.2", sdp_body("192.168.1.2", 4100, ice=False)), source
            )
            await asyncio.sleep(10)  # idle: the relay call is gone
            late = await handler.answer(_ok("192.168.2.2", sdp_body("192.168.2.2", 4000,
                                                                 ice=False)), source)  # fmt: skip
            return again, late, relay.call_count

    again, late, calls = run_virtual(main)
    assert _target(again).host == RELAY_IP and calls == 0
    assert _target(late) == Endpoint("192.168.2.2", 4000)  # nothing left to rewrite towards


def test_a_relay_behind_a_1to1_nat_advertises_its_public_address() -> None:
    async def main() -> SipMessage:
        net = Internet(seed=3)
        relay_host = net.add_host("relay", [RELAY_IP])
        async with MediaRelayServer(relay_host.stack, MediaRelayConfig(rng=seeded_rng(1)),
                                    ipv4=RELAY_IP) as relay:  # fmt: skip
            handler = RelayMediaHandler(relay, advertised={Family.IPV4: "198.51.100.99"})
            invite = _invite("192.168.1.2", sdp_body("192.168.1.2", 4000, ice=False))
            return await handler.offer(invite, _source(Endpoint("203.0.113.51", 5060)))

    assert _target(run_virtual(main)).host == "198.51.100.99"


def _ack(ip: str, sdp: bytes, *, call_id: str = "c1") -> SipRequest:
    text = (
        f"ACK sip:bob@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {ip}:5060;branch=z9hG4bK3;rport\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=a\r\nTo: <sip:bob@{DOMAIN}>;tag=b\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 ACK\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
    ).encode()
    message = parse_message(text + sdp)
    assert isinstance(message, SipRequest)
    return message


def test_a_late_offer_from_a_natted_callee_is_relayed_both_ways() -> None:
    """INVITE without SDP; the callee's offer in the 2xx, the caller's answer
    in the ACK (RFC 3261 §13.2.1): both rewritten, RTP flows both ways."""

    async def main() -> tuple[list[bytes], list[bytes], str]:
        async with _phones_behind_symmetric_nats_and_a_relay() as (a, b, _relay, handler):
            offer = await handler.answer(_ok(b.ip, sdp_body(b.ip, RTP_PORT, ice=False)),
                                         _source(Endpoint("203.0.113.52", 40001)))  # fmt: skip
            again = await handler.answer(_ok(b.ip, sdp_body(b.ip, RTP_PORT, ice=False)),
                                         _source(Endpoint("203.0.113.52", 40001)))  # fmt: skip
            assert _target(again) == _target(offer)  # a 2xx retransmission
            answer = await handler.answer(_ack(a.ip, sdp_body(a.ip, RTP_PORT, ice=False)),
                                          _source(Endpoint("203.0.113.51", 40000)))  # fmt: skip
            to_a, to_b = _target(offer), _target(answer)
            assert to_a.host == RELAY_IP and to_b.host == RELAY_IP and to_a != to_b
            got_a, got_b = await _rtp_between(a, b, to_a, to_b)
            reason = handler.calls["c1"].reason
            handler.ended("c1", "bye")
            return got_a, got_b, reason

    got_a, got_b, reason = run_virtual(main)
    assert len([p for p in got_b if p.startswith(b"a:")]) >= 20
    assert len([p for p in got_a if p.startswith(b"b:")]) >= 20
    assert reason.startswith("late offer")


def test_an_offer_without_an_rtp_stream_is_not_kept_as_a_relayed_call() -> None:
    # A NATed caller offering only a port-0 stream (or nothing RTP) leaves
    # nothing to anchor: no relay call, and nothing waiting in the call table.
    held = sdp_body("192.168.1.2", RTP_PORT, ice=False).replace(
        f"m=audio {RTP_PORT}".encode(), b"m=audio 0"
    )
    invite, offer, _, _, handler, calls = _handler_case(
        "192.168.1.2", "203.0.113.51", ice=False, body=held
    )
    assert offer is invite and calls == 0
    assert handler.paths_chosen == {MediaPath.NO_RTP: 1}
    assert handler.calls == {}
