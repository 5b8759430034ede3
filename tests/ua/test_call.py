"""The UA call state machine under explicit time: two UserAgentCores (or one
and a hand-made peer) exchanging messages in memory, no I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from natkit.addr import Endpoint
from natkit.sdp import LocalCapabilities, MediaCapabilities, parse_sdp, serialize_sdp
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.message import SipMessage, SipRequest, SipResponse, make_response, parse_message
from natkit.sip.uri import SipUri, parse_uri
from natkit.ua.call import CallState, UserAgentConfig, UserAgentCore
from natkit.ua.events import (
    CallEnded,
    CallEstablished,
    CallOffered,
    CallProgressed,
    MediaUpdated,
    OfferRejected,
    OptionsAnswered,
    UserAgentEvent,
)

A_IP, B_IP = "192.0.2.1", "192.0.2.2"
A_SIP, B_SIP = Endpoint(A_IP, 5060), Endpoint(B_IP, 5060)


def _uri(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


def _config(user: str, ep: Endpoint, seed: int, **kw: object) -> UserAgentConfig:
    return UserAgentConfig(
        aor=_uri(f"sip:{user}@example.org"),
        contact=_uri(f"sip:{user}@{ep.host}:{ep.port}"),
        sent_by=ep,
        rng=random.Random(seed),
        **kw,  # type: ignore[arg-type]
    )


def _caps(ip: str, port: int, seed: int, **kw: object) -> LocalCapabilities:
    return LocalCapabilities(
        address=ip,
        media=(MediaCapabilities(port=port, **kw),),  # type: ignore[arg-type]
        rng=random.Random(seed),
    )


@dataclass
class Wire:
    """Two cores on a lossless (or lossy, by filter) wire; messages are
    serialized and parsed again, as the transport would."""

    a: UserAgentCore
    b: UserAgentCore
    now: float = 0.0
    events_a: list[UserAgentEvent] = field(default_factory=list)
    events_b: list[UserAgentEvent] = field(default_factory=list)
    sent: list[tuple[str, SipMessage]] = field(default_factory=list)
    drop: set[str] = field(default_factory=set)  # "INVITE", "200 INVITE", ... to drop once

    def _key(self, msg: SipMessage) -> str:
        if isinstance(msg, SipRequest):
            return msg.method
        return f"{msg.status} {msg.cseq.method}"

    def pump(self) -> None:
        for _ in range(100):
            moved = False
            for src, dst, src_ep in ((self.a, self.b, A_SIP), (self.b, self.a, B_SIP)):
                for msg, target in src.messages_to_send():
                    key = self._key(msg)
                    self.sent.append((("a" if src is self.a else "b"), msg))
                    if key in self.drop:
                        self.drop.discard(key)
                        continue
                    data = parse_message(msg_bytes(msg))
                    source = Source(SipTransport.UDP, src_ep, target.remote, "flow")
                    dst.receive_message(data, source, now=self.now)
                    moved = True
            self.events_a.extend(iter(self.a.next_event, None))
            self.events_b.extend(iter(self.b.next_event, None))
            if not moved:
                return

    def advance(self, to: float) -> None:
        """Fire every timer up to ``to``, pumping after each."""
        while True:
            deadlines = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
            if not deadlines or min(deadlines) > to:
                break
            self.now = max(self.now, min(deadlines))
            for core in (self.a, self.b):
                timer = core.get_timer()
                if timer is not None and timer <= self.now:
                    core.handle_timer(now=self.now)
            self.pump()
        self.now = to

    def sent_keys(self, side: str) -> list[str]:
        return [self._key(m) for s, m in self.sent if s == side]


def msg_bytes(msg: SipMessage) -> bytes:
    from natkit.sip.message import serialize_message

    return serialize_message(msg)


def _pair(**b_kw: object) -> Wire:
    a = UserAgentCore(_config("alice", A_SIP, 1))
    b = UserAgentCore(_config("bob", B_SIP, 2, **b_kw))
    return Wire(a, b)


def _of(events: list[UserAgentEvent], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


def _call(wire: Wire) -> str:
    call_id = wire.a.invite(_uri(f"sip:bob@{B_IP}"), _caps(A_IP, 4000, 3), now=wire.now)
    wire.pump()
    return call_id


def _answer(wire: Wire) -> None:
    offered = _of(wire.events_b, CallOffered)[-1]
    assert wire.b.accept(offered.call_id, _caps(B_IP, 6000, 4), now=wire.now)
    wire.pump()


def test_uac_invite_ringing_answer_ack_and_media() -> None:
    wire = _pair()
    call_id = _call(wire)
    progress = [e.status for e in _of(wire.events_a, CallProgressed)]
    assert progress == [180]
    offered = _of(wire.events_b, CallOffered)
    assert len(offered) == 1 and offered[0].offer is not None
    assert wire.a.call_state(call_id) is CallState.PROCEEDING
    _answer(wire)
    up_a = _of(wire.events_a, CallEstablished)
    up_b = _of(wire.events_b, CallEstablished)
    assert len(up_a) == len(up_b) == 1
    assert up_a[0].streams[0].remote_rtp == Endpoint(B_IP, 6000)
    assert up_b[0].streams[0].remote_rtp == Endpoint(A_IP, 4000)
    assert up_a[0].streams[0].codec is not None and up_a[0].streams[0].codec.name == "PCMU"
    assert "ACK" in wire.sent_keys("a")
    # the ACK stopped the 2xx retransmissions: no second 200 within 10 s
    wire.advance(10.0)
    assert wire.sent_keys("b").count("200 INVITE") == 1
    assert wire.a.call_state(call_id) is CallState.ESTABLISHED


def test_100_trying_is_reported_when_the_callee_does_not_ring() -> None:
    wire = _pair(auto_ringing=False)
    _call(wire)
    wire.advance(0.3)  # the transaction layer's 100 after 200 ms (§17.2.1)
    assert [e.status for e in _of(wire.events_a, CallProgressed)] == [100]


@pytest.mark.parametrize("who", ["caller", "callee"])
def test_bye_either_way_ends_the_call_on_both_sides(who: str) -> None:
    wire = _pair()
    call_id = _call(wire)
    _answer(wire)
    (wire.a if who == "caller" else wire.b).hangup(call_id, now=wire.now)
    wire.pump()
    ended_a = _of(wire.events_a, CallEnded)
    ended_b = _of(wire.events_b, CallEnded)
    assert len(ended_a) == len(ended_b) == 1
    assert ended_a[0].by_remote is (who == "callee")
    assert ended_b[0].by_remote is (who == "caller")
    assert "200 BYE" in wire.sent_keys("b" if who == "caller" else "a")
    assert wire.a.call_ids == [] and wire.b.call_ids == []


def test_cancel_before_answer_gives_487() -> None:
    wire = _pair()
    call_id = _call(wire)
    wire.a.hangup(call_id, now=wire.now)
    wire.pump()
    assert "CANCEL" in wire.sent_keys("a")
    assert "200 CANCEL" in wire.sent_keys("b") and "487 INVITE" in wire.sent_keys("b")
    (ended_a,) = _of(wire.events_a, CallEnded)
    (ended_b,) = _of(wire.events_b, CallEnded)
    assert ended_a.status == ended_b.status == 487
    assert not ended_a.by_remote and ended_b.by_remote
    assert "ACK" in wire.sent_keys("a")  # the transaction ACKs the 487


def test_cancel_crossing_the_2xx_is_acked_and_byed() -> None:
    wire = _pair()
    call_id = _call(wire)
    offered = _of(wire.events_b, CallOffered)[-1]
    # B answers; A hangs up before the 200 arrives (the CANCEL crosses it)
    wire.b.accept(offered.call_id, _caps(B_IP, 6000, 4), now=wire.now)
    wire.a.hangup(call_id, now=wire.now)
    wire.pump()
    keys_a = wire.sent_keys("a")
    assert "CANCEL" in keys_a and "ACK" in keys_a and "BYE" in keys_a
    assert keys_a.index("ACK") < keys_a.index("BYE")
    assert "200 CANCEL" in wire.sent_keys("b")
    assert not _of(wire.events_a, CallEstablished)
    assert _of(wire.events_b, CallEnded)[0].by_remote


def test_cancel_held_until_a_provisional_arrives() -> None:
    wire = _pair(auto_ringing=False)
    wire.drop.add("INVITE")  # the first INVITE is lost
    call_id = _call(wire)
    wire.a.hangup(call_id, now=wire.now)
    wire.pump()
    assert "CANCEL" not in wire.sent_keys("a")  # §9.1: not before a provisional
    wire.advance(1.0)  # Timer A retransmits; B answers 100 after 200 ms; CANCEL goes out
    assert "CANCEL" in wire.sent_keys("a")
    assert _of(wire.events_a, CallEnded)[0].status == 487


def test_2xx_retransmitted_until_ack_and_bye_when_none_comes() -> None:
    wire = _pair()
    _call(wire)
    wire.drop |= {"ACK"}
    _answer(wire)
    # the lost ACK: B retransmits its 2xx, A ACKs the retransmission
    wire.advance(1.0)
    assert wire.sent_keys("b").count("200 INVITE") == 2
    assert wire.sent_keys("a").count("ACK") == 2
    assert not _of(wire.events_b, CallEnded)


def test_no_ack_at_all_ends_the_call_after_64_t1() -> None:
    a = UserAgentCore(_config("alice", A_SIP, 1))
    b = UserAgentCore(_config("bob", B_SIP, 2))
    call_id = a.invite(_uri(f"sip:bob@{B_IP}"), _caps(A_IP, 4000, 3), now=0.0)
    ((invite, _),) = a.messages_to_send()
    b.receive_message(
        parse_message(msg_bytes(invite)), Source(SipTransport.UDP, A_SIP, B_SIP, "f"), now=0.0
    )
    offered = b.next_event()
    assert isinstance(offered, CallOffered) and offered.call_id == call_id
    b.accept(call_id, _caps(B_IP, 6000, 4), now=0.0)
    sent: list[str] = []
    now = 0.0
    while (timer := b.get_timer()) is not None and timer <= 40.0:
        now = timer
        b.handle_timer(now=now)
        sent += [
            m.cseq.method if isinstance(m, SipRequest) else f"{m.status}"
            for m, _ in b.messages_to_send()
        ]
    events = list(iter(b.next_event, None))
    assert sent.count("200") >= 7  # 0.5, 1, 2, 4, 4, 4 ... to 32 s
    ended = [e for e in events if isinstance(e, CallEnded)]
    assert ended and ended[0].status == 408
    assert "BYE" in sent


@pytest.mark.parametrize("method", ["INVITE", "UPDATE"])
@pytest.mark.parametrize("from_caller", [True, False])
def test_reoffer_moves_the_media(method: str, from_caller: bool) -> None:
    wire = _pair()
    call_id = _call(wire)
    _answer(wire)
    sender, receiver = (wire.a, wire.b) if from_caller else (wire.b, wire.a)
    ip = A_IP if from_caller else B_IP
    caps = _caps(ip, 7000, 9)
    send = sender.reinvite if method == "INVITE" else sender.update
    assert send(call_id, caps, now=wire.now)
    wire.pump()
    ev_sender = wire.events_a if from_caller else wire.events_b
    ev_receiver = wire.events_b if from_caller else wire.events_a
    (upd_r,) = _of(ev_receiver, MediaUpdated)
    (upd_s,) = _of(ev_sender, MediaUpdated)
    assert upd_r.method == upd_s.method == method
    assert upd_r.streams[0].remote_rtp == Endpoint(ip, 7000)
    assert upd_s.streams[0].local_port == 7000
    if method == "INVITE":
        assert "ACK" in wire.sent_keys("a" if from_caller else "b")
    assert receiver.call_state(call_id) is CallState.ESTABLISHED


def test_reinvite_with_unusable_sdp_gets_488_and_the_call_goes_on() -> None:
    wire = _pair()
    call_id = _call(wire)
    _answer(wire)
    # a video-only re-offer: nothing B can take
    caps = LocalCapabilities(
        address=A_IP,
        media=(MediaCapabilities(media="video", port=7000),),
        rng=random.Random(1),
    )
    assert wire.a.reinvite(call_id, caps, now=wire.now)
    wire.pump()
    assert "488 INVITE" in wire.sent_keys("b")
    (rejected,) = _of(wire.events_a, OfferRejected)
    assert rejected.status == 488
    assert wire.a.call_state(call_id) is CallState.ESTABLISHED
    assert wire.b.call_state(call_id) is CallState.ESTABLISHED
    # and a good one still works afterwards
    assert wire.a.update(call_id, _caps(A_IP, 7002, 2), now=wire.now)
    wire.pump()
    assert _of(wire.events_b, MediaUpdated)


def test_options_is_answered_with_allow() -> None:
    wire = _pair()
    request_id = wire.a.options(_uri(f"sip:bob@{B_IP}"), now=0.0)
    wire.pump()
    (answered,) = _of(wire.events_a, OptionsAnswered)
    assert answered.request_id == request_id and answered.status == 200
    assert "INVITE" in answered.allow and "UPDATE" in answered.allow


def test_options_timeout_is_408() -> None:
    wire = _pair()
    wire.drop |= {"OPTIONS"}
    wire.a.options(_uri(f"sip:bob@{B_IP}"), now=0.0)
    wire.pump()
    # every retransmission lost too
    wire.b = UserAgentCore(_config("nobody", B_SIP, 5))
    for _ in range(20):
        wire.drop.add("OPTIONS")
    lost: list[str] = []
    now = 0.0
    while (timer := wire.a.get_timer()) is not None and timer < 40:
        now = timer
        wire.a.handle_timer(now=now)
        lost += [m.method for m, _ in wire.a.messages_to_send() if isinstance(m, SipRequest)]
    events = list(iter(wire.a.next_event, None))
    assert [e.status for e in events if isinstance(e, OptionsAnswered)] == [408]
    assert len(lost) >= 9  # Timer E retransmissions (§17.1.2.2)


# -- the callee's side against hand-made requests -------------------------------------

_SDP_TYPE = "application/sdp"
_GOOD_SDP = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0\r\n"
)


def _invite_bytes(
    body: str, *, call_id: str = "c1", branch: str = "z9hG4bKabc1", ctype: str = "application/sdp"
) -> bytes:
    encoded = body.encode()
    return (
        f"INVITE sip:bob@{B_IP} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {A_IP}:5060;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.org>;tag=a1\r\n"
        f"To: <sip:bob@{B_IP}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:alice@{A_IP}:5060>\r\n"
        f"Content-Type: {ctype}\r\n"
        f"Content-Length: {len(encoded)}\r\n\r\n"
    ).encode() + encoded


def _feed(core: UserAgentCore, data: bytes, now: float = 0.0) -> list[SipMessage]:
    core.receive_message(parse_message(data), Source(SipTransport.UDP, A_SIP, B_SIP, "f"), now=now)
    return [m for m, _ in core.messages_to_send()]


BAD_SDP = [
    pytest.param("this is not sdp", 400, id="garbage"),
    pytest.param(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
        488,
        id="no-c-line",
    ),
    pytest.param(_GOOD_SDP.replace("4000", "99999"), 400, id="bad-port"),
    pytest.param(_GOOD_SDP.replace("m=audio 4000", "m=audio 0"), 488, id="only-rejected-streams"),
    pytest.param(
        _GOOD_SDP.replace("RTP/AVP 0", "RTP/AVP 18") + "a=rtpmap:18 G729/8000\r\n",
        488,
        id="no-common-codec",
    ),
    pytest.param(_GOOD_SDP + "a=x\r\n" * 3000, 400, id="absurd-attribute-count"),
]


@pytest.mark.parametrize(("body", "status"), BAD_SDP)
def test_bad_sdp_in_invite_is_refused_and_the_ua_keeps_serving(body: str, status: int) -> None:
    core = UserAgentCore(_config("bob", B_SIP, 2))
    out = _feed(core, _invite_bytes(body))
    offered = [e for e in iter(core.next_event, None) if isinstance(e, CallOffered)]
    if offered:  # parsed but unusable: refused when answering
        core.accept(offered[0].call_id, _caps(B_IP, 6000, 4), now=0.0)
        out += [m for m, _ in core.messages_to_send()]
    finals = [m.status for m in out if isinstance(m, SipResponse) and m.status >= 200]
    assert finals == [status] or (status == 400 and finals and finals[0] in (400, 488))
    # the next good INVITE is served as usual
    out = _feed(core, _invite_bytes(_GOOD_SDP, call_id="c2", branch="z9hG4bKgood2"))
    assert [m.status for m in out if isinstance(m, SipResponse)] == [180]
    assert any(isinstance(e, CallOffered) for e in iter(core.next_event, None))


def test_non_sdp_body_gets_415() -> None:
    core = UserAgentCore(_config("bob", B_SIP, 2))
    out = _feed(core, _invite_bytes("hello", ctype="text/plain"))
    assert [m.status for m in out if isinstance(m, SipResponse)] == [415]


def test_offerless_invite_gets_our_offer_and_the_ack_answer() -> None:
    core = UserAgentCore(_config("bob", B_SIP, 2))
    raw = _invite_bytes("").replace(b"Content-Type: application/sdp\r\n", b"")
    _feed(core, raw)
    (offered,) = [e for e in iter(core.next_event, None) if isinstance(e, CallOffered)]
    assert offered.offer is None
    core.accept("c1", _caps(B_IP, 6000, 4), now=0.0)
    (ok,) = [m for m, _ in core.messages_to_send() if isinstance(m, SipResponse)]
    assert ok.status == 200 and parse_sdp(ok.body).media[0].port == 6000
    answer_sdp = _GOOD_SDP.encode()
    ack = (
        f"ACK sip:bob@{B_IP}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {A_IP}:5060;branch=z9hG4bKack1\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@example.org>;tag=a1\r\n"
        f"To: {ok.headers.get('To')}\r\n"
        f"Call-ID: c1\r\nCSeq: 1 ACK\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(answer_sdp)}\r\n\r\n"
    ).encode() + answer_sdp
    _feed(core, ack, now=0.1)
    (up,) = [e for e in iter(core.next_event, None) if isinstance(e, CallEstablished)]
    assert up.streams[0].remote_rtp == Endpoint(A_IP, 4000)


@pytest.mark.parametrize(
    ("method", "status"),
    [pytest.param("MESSAGE", 405, id="known-method"), pytest.param("FOO", 501, id="unknown-method"),
     pytest.param("BYE", 481, id="bye-without-dialog")],
)  # fmt: skip
def test_other_requests(method: str, status: int) -> None:
    core = UserAgentCore(_config("bob", B_SIP, 2))
    raw = (
        f"{method} sip:bob@{B_IP} SIP/2.0\r\nVia: SIP/2.0/UDP {A_IP}:5060;branch=z9hG4bKm1\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@example.org>;tag=a1\r\n"
        f"To: <sip:bob@{B_IP}>\r\nCall-ID: m1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    out = _feed(core, raw)
    assert [m.status for m in out if isinstance(m, SipResponse)] == [status]


def test_cancel_for_nothing_is_481() -> None:
    core = UserAgentCore(_config("bob", B_SIP, 2))
    raw = (
        f"CANCEL sip:bob@{B_IP} SIP/2.0\r\nVia: SIP/2.0/UDP {A_IP}:5060;branch=z9hG4bKzz\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@example.org>;tag=a1\r\n"
        f"To: <sip:bob@{B_IP}>\r\nCall-ID: x1\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    assert [m.status for m in _feed(core, raw) if isinstance(m, SipResponse)] == [481]


def test_unanswered_call_is_refused_with_480_at_the_ring_timeout() -> None:
    core = UserAgentCore(_config("bob", B_SIP, 2, call_timeout=30.0))
    _feed(core, _invite_bytes(_GOOD_SDP))
    core.handle_timer(now=30.0)
    statuses = [m.status for m, _ in core.messages_to_send() if isinstance(m, SipResponse)]
    assert 480 in statuses
    assert any(isinstance(e, CallEnded) and e.status == 480 for e in iter(core.next_event, None))


# -- digest authentication ------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 407])
def test_challenged_invite_is_retried_once_with_credentials(status: int) -> None:
    a = UserAgentCore(_config("alice", A_SIP, 1, username="alice", password="secret"))
    call_id = a.invite(_uri(f"sip:bob@{B_IP}"), _caps(A_IP, 4000, 3), now=0.0)
    ((first, _),) = a.messages_to_send()
    assert isinstance(first, SipRequest)
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    value = 'Digest realm="example.org", nonce="abc123", algorithm=MD5, qop="auth"'
    challenge = make_response(first, status, to_tag="s1", headers=[(header, value)])
    a.receive_message(challenge, Source(SipTransport.UDP, B_SIP, A_SIP, "f"), now=0.1)
    sent = [m for m, _ in a.messages_to_send() if isinstance(m, SipRequest)]
    retry = [m for m in sent if m.method == "INVITE"]
    assert len(retry) == 1
    cred = "Authorization" if status == 401 else "Proxy-Authorization"
    assert retry[0].headers.get(cred) is not None
    assert retry[0].cseq.seq == 2 and retry[0].call_id == call_id
    assert retry[0].top_via.branch != first.top_via.branch
    assert retry[0].from_.tag == first.from_.tag
    # a second challenge for the same nonce gives up
    again = make_response(retry[0], status, to_tag="s1", headers=[(header, value)])
    a.receive_message(again, Source(SipTransport.UDP, B_SIP, A_SIP, "f"), now=0.2)
    ended = [e for e in iter(a.next_event, None) if isinstance(e, CallEnded)]
    assert ended and ended[0].status == status


def test_invite_to_a_host_name_without_proxy_fails_cleanly() -> None:
    a = UserAgentCore(_config("alice", A_SIP, 1))
    a.invite(_uri("sip:bob@example.net"), _caps(A_IP, 4000, 3), now=0.0)
    ended = [e for e in iter(a.next_event, None) if isinstance(e, CallEnded)]
    assert ended and ended[0].status == 503


def test_outbound_target_carries_every_request() -> None:
    proxy = Target(SipTransport.UDP, Endpoint("203.0.113.10", 5060))
    a = UserAgentCore(_config("alice", A_SIP, 1, outbound=proxy))
    a.invite(_uri("sip:bob@example.org"), _caps(A_IP, 4000, 3), now=0.0)
    ((_, target),) = a.messages_to_send()
    assert target == proxy


def test_sdp_serializes_what_the_offer_says() -> None:
    caps = _caps(A_IP, 4000, 3)
    a = UserAgentCore(_config("alice", A_SIP, 1))
    a.invite(_uri(f"sip:bob@{B_IP}"), caps, now=0.0)
    ((invite, _),) = a.messages_to_send()
    sdp = parse_sdp(invite.body)
    assert sdp.media[0].port == 4000 and serialize_sdp(sdp) == invite.body
