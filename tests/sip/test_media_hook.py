"""The SIP element's media hook (natkit.sip.media_hook) on the simulated
internet: a fake handler rewrites offers and answers, sees who is NATed, and
hears when calls end."""

from __future__ import annotations

from dataclasses import dataclass, field

from natkit.lab.topology import attach_nat
from natkit.nat.presets import PORT_RESTRICTED_CONE
from natkit.net.sim import run_virtual
from natkit.sip.aio.server import SipServer
from natkit.sip.flow import SipTransport, Source
from natkit.sip.media_hook import MediaSource, carries_sdp, with_body
from natkit.sip.message import (
    SipMessage,
    SipRequest,
    SipResponse,
    make_response,
    parse_message,
    serialize_message,
)
from natkit.sip.via_routing import response_target
from natkit.store.memory import MemoryStore
from tests.sip.test_aio_server import UDP_SERVER, Phone, registered, server_config, wallclock, world

OFFER = b"v=0\r\no=bob 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\n"
ANSWER = b"v=0\r\no=alice 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"


@dataclass
class FakeRelay:
    """Rewrites every SDP it is shown into a marker naming the call and the side."""

    seen: list[tuple[str, str, str | None, str | None, str, bool]] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    keep: bool = False

    async def on_offer(
        self,
        call_id: str,
        from_tag: str | None,
        to_tag: str | None,
        message: SipMessage,
        source_flow: MediaSource,
    ) -> bytes | None:
        return self._note("offer", call_id, from_tag, to_tag, message, source_flow)

    async def on_answer(
        self,
        call_id: str,
        from_tag: str | None,
        to_tag: str | None,
        message: SipMessage,
        source_flow: MediaSource,
    ) -> bytes | None:
        return self._note("answer", call_id, from_tag, to_tag, message, source_flow)

    def on_call_ended(self, call_id: str) -> None:
        self.ended.append(call_id)

    def _note(
        self,
        kind: str,
        call_id: str,
        from_tag: str | None,
        to_tag: str | None,
        message: SipMessage,
        source: MediaSource,
    ) -> bytes | None:
        what = message.method if isinstance(message, SipRequest) else str(message.status)
        self.seen.append((kind, what, from_tag, to_tag, call_id, source.natted))
        if self.keep:
            return None
        return b"v=0\r\ns=relayed " + kind.encode() + b" of " + what.encode() + b"\r\n"


def _with_sdp(message: SipMessage, body: bytes) -> SipMessage:
    message.headers.set("Content-Type", "application/sdp")
    return with_body(message, body)


async def _final(phone: Phone) -> SipResponse:
    while True:
        got, _ = await phone.next()
        assert isinstance(got, SipResponse)
        if got.status >= 200:
            return got


async def _answer(phone: Phone, request: SipRequest, source: Source, status: int) -> None:
    response = make_response(request, status, to_tag="callee", copy_record_route=True)
    response.headers.add("Contact", f"<sip:alice@{phone.host.ip}:{phone.port}>")
    if status < 300:
        response = _with_sdp(response, ANSWER)  # type: ignore[assignment]
    target = response_target(response, source)
    assert target is not None
    await phone.layer.send(response, target)


def test_offers_answers_and_the_ack_go_through_the_handler_and_bye_ends_the_call() -> None:
    relay = FakeRelay()

    async def main() -> None:
        net, server_host, _, bob_host = world()
        nat = attach_nat(net, PORT_RESTRICTED_CONE, seed=3)
        alice_host = net.add_host("alice-natted", behind=nat)
        store = MemoryStore(clock=wallclock)
        config = server_config(authenticate=False)
        async with SipServer(server_host.stack, config, store, media_handler=relay):
            alice = Phone(alice_host, SipTransport.UDP, 5070)
            bob = Phone(bob_host, SipTransport.UDP, 5080)
            await alice.start()
            await bob.start()
            await registered(alice, UDP_SERVER, password=None)
            assert relay.seen == []  # REGISTER has no SDP
            invite = bob.request(
                "INVITE", "sip:alice@example.org", to="sip:alice@example.org", user="bob"
            )
            invite = _with_sdp(invite, OFFER)  # type: ignore[assignment]
            await bob.send(invite, UDP_SERVER)
            arrived, source = await alice.next()
            assert isinstance(arrived, SipRequest) and arrived.method == "INVITE"
            assert arrived.body == b"v=0\r\ns=relayed offer of INVITE\r\n"
            assert arrived.headers.get("Content-Length") == str(len(arrived.body))
            await _answer(alice, arrived, source, 200)
            ok = await _final(bob)
            assert ok.status == 200
            assert ok.body == b"v=0\r\ns=relayed answer of 200\r\n"
            assert f"Content-Length: {len(ok.body)}\r\n".encode() in serialize_message(ok)
            # bob is on a public address, alice behind a NAT with a private Contact
            assert relay.seen == [
                ("offer", "INVITE", "bob1", None, invite.call_id, False),
                ("answer", "200", "bob1", "callee", invite.call_id, True),
            ]
            # RFC 3261 §9.2: a CANCEL after the 2xx has no effect on the call
            cancel = bob.request(
                "CANCEL", "sip:alice@example.org", to="sip:alice@example.org", user="bob"
            )
            cancel.headers.set("Via", invite.headers.get("Via") or "")
            cancel.headers.set("Call-ID", invite.call_id)
            cancel.headers.set("CSeq", f"{invite.cseq.seq} CANCEL")
            await bob.send(cancel, UDP_SERVER)
            await _final(bob)
            assert relay.ended == []
            routes = ", ".join(str(r) for r in reversed(ok.name_addrs("Record-Route")))
            remote_target = str(ok.contacts[0].uri) if ok.contacts != "*" else ""
            for method in ("ACK", "BYE"):
                request = bob.request(
                    method,
                    remote_target,
                    to="sip:alice@example.org",
                    user="bob",
                    extra=f"Route: {routes}\r\n",
                )
                request.headers.set("To", str(ok.to))
                request.headers.set("Call-ID", invite.call_id)
                if method == "ACK":
                    request.headers.set("CSeq", f"{invite.cseq.seq} ACK")
                    request = _with_sdp(request, OFFER)  # type: ignore[assignment]
                await bob.send(request, UDP_SERVER)
                got, got_source = await alice.next()
                assert isinstance(got, SipRequest) and got.method == method
                if method == "ACK":
                    assert got.body == b"v=0\r\ns=relayed answer of ACK\r\n"
                    assert relay.ended == []
                else:
                    assert not got.body  # no SDP: untouched
            assert relay.seen[-1][:2] == ("answer", "ACK")
            assert len(relay.seen) == 3
            assert relay.ended == []  # a BYE alone (maybe spoofed) does not end media
            assert isinstance(got, SipRequest)
            await alice.reply(got, got_source, 200)
            await _final(bob)
            assert relay.ended == [invite.call_id]  # its 2xx forwarded back does
            alice.layer.close()
            bob.layer.close()

    run_virtual(main)


def test_a_rejected_call_ends_and_requests_without_sdp_skip_the_handler() -> None:
    relay = FakeRelay(keep=True)

    async def main() -> None:
        _net, server_host, alice_host, bob_host = world()
        store = MemoryStore(clock=wallclock)
        config = server_config(authenticate=False)
        async with SipServer(server_host.stack, config, store, media_handler=relay):
            alice = Phone(alice_host, SipTransport.UDP, 5070)
            bob = Phone(bob_host, SipTransport.UDP, 5080)
            await alice.start()
            await bob.start()
            await registered(alice, UDP_SERVER, password=None)
            invite = bob.request(
                "INVITE", "sip:alice@example.org", to="sip:alice@example.org", user="bob"
            )
            await bob.send(invite, UDP_SERVER)  # no SDP (a late offer)
            arrived, source = await alice.next()
            assert isinstance(arrived, SipRequest) and not arrived.body
            assert relay.seen == []
            await _answer(alice, arrived, source, 486)
            busy = await _final(bob)
            assert busy.status == 486
            assert relay.ended == [invite.call_id]
            # an INVITE for nobody: the server's own 404 ends it too
            offer = bob.request("INVITE", "sip:carol@example.org", to="sip:carol@example.org",
                                user="bob")  # fmt: skip
            offer.headers.set("Call-ID", "second")
            offer = _with_sdp(offer, OFFER)  # type: ignore[assignment]
            await bob.send(offer, UDP_SERVER)
            assert (await _final(bob)).status == 404
            assert relay.ended == [invite.call_id, "second"]
            assert relay.seen == []  # nothing proxied: the handler did not see it
            alice.layer.close()
            bob.layer.close()

    run_virtual(main)


def test_with_body_updates_content_length_and_keeps_the_original() -> None:
    raw = (
        b"INVITE sip:a@example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n"
        b"From: <sip:b@example.org>;tag=1\r\nTo: <sip:a@example.org>\r\nCall-ID: c\r\n"
        b"CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
    )
    message = parse_message(raw)
    assert carries_sdp(message)
    changed = with_body(message, b"v=0\r\ns=longer\r\n")
    assert changed.headers.get("Content-Length") == "15"
    assert message.body == b"v=0\n" and message.headers.get("Content-Length") == "4"
    reparsed = parse_message(serialize_message(changed))
    assert reparsed.body == b"v=0\r\ns=longer\r\n"
    message.headers.set("Content-Type", "multipart/mixed;boundary=x")
    assert not carries_sdp(message)
    assert not carries_sdp(with_body(changed, b""))
