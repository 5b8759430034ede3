"""A bare SIP phone with SDP and RTP for the media-relay scenarios: it
registers (open registration), calls with an SDP offer (with or without
ICE attributes), answers with an SDP answer, sends RTP packets with its own
payloads from its RTP port to the address the other SDP names (symmetric
RTP), and keeps what arrives. Hand-built like natkit.lab.sip_phone's
LabPhone, so the test controls every SDP line."""

from __future__ import annotations

import asyncio

from natkit.addr import Endpoint
from natkit.lab.sip_phone import DOMAIN, REGISTRAR_IP, SIP_PORT, StackHost
from natkit.net.stack import DatagramEndpoint
from natkit.rng import seeded_rng
from natkit.rtp.packet import RtpPacket, parse_rtp, serialize_rtp
from natkit.sdp import parse_sdp
from natkit.sip.aio.transport import SipTransportLayer
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.message import SipMessage, SipRequest, SipResponse, make_response
from natkit.sip.via_routing import response_target

REGISTRAR = Target(SipTransport.UDP, Endpoint(REGISTRAR_IP, SIP_PORT))
RTP_PORT = 4000


def sdp_body(ip: str, port: int, *, ice: bool) -> bytes:
    lines = [
        "v=0",
        f"o=- 1 1 IN IP4 {ip}",
        "s=-",
        f"c=IN IP4 {ip}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=sendrecv",
    ]
    if ice:
        lines += [
            "a=ice-ufrag:abcd",
            "a=ice-pwd:0123456789abcdef012345",
            f"a=candidate:1 1 UDP 2130706431 {ip} {port} typ host",
        ]
    return ("\r\n".join(lines) + "\r\n").encode()


class SdpPhone:
    def __init__(
        self, host: StackHost, user: str, *, ice: bool = False, invite_status: int = 200
    ) -> None:
        self.host = host
        self.invite_status = invite_status
        self.user = user
        self.ice = ice
        self.responses: asyncio.Queue[SipResponse] = asyncio.Queue()
        self.requests: list[SipRequest] = []
        self.remote_sdp: bytes | None = None  # the SDP the other side's message carried
        self.received: list[bytes] = []  # RTP payloads that arrived
        self.sources: set[Endpoint] = set()
        self.layer = SipTransportLayer(host.stack, self._on, rng=seeded_rng(len(user)))
        self.rtp: DatagramEndpoint | None = None
        self._cseq = 0
        self._seq = 0
        self._ringing: SipRequest | None = None  # an INVITE answered provisionally
        self._invite: tuple[str, str, int] | None = None  # (uri, call-id, cseq) last sent

    async def start(self) -> None:
        await self.layer.listen(SipTransport.UDP, Endpoint(self.host.ip, SIP_PORT))
        self.rtp = await self.host.stack.open_udp(Endpoint(self.host.ip, RTP_PORT), self._on_rtp)

    def close(self) -> None:
        self.layer.close()
        if self.rtp is not None:
            self.rtp.close()

    def _on_rtp(self, data: bytes, source: Endpoint) -> None:
        try:
            packet = parse_rtp(data)
        except Exception:
            return
        self.received.append(packet.payload)
        self.sources.add(source)

    def _on(self, message: SipMessage, source: Source) -> None:
        if isinstance(message, SipResponse):
            if message.body:
                self.remote_sdp = message.body
            self.responses.put_nowait(message)
            return
        assert isinstance(message, SipRequest)
        self.requests.append(message)
        if message.method == "ACK":
            return
        if message.method == "INVITE" and message.body:
            self.remote_sdp = message.body
        if message.method == "CANCEL" and self._ringing is not None:
            # RFC 3261 §9.2: 200 for the CANCEL (below), 487 for the INVITE
            terminated = make_response(self._ringing, 487, to_tag=f"{self.user}-tag")
            target = response_target(terminated, source)
            if target is not None:
                self.layer.send_soon(terminated, target)
            self._ringing = None
        status = self.invite_status if message.method == "INVITE" else 200
        if message.method == "INVITE" and status < 200:
            self._ringing = message
        response = make_response(message, status, to_tag=f"{self.user}-tag")
        response.headers.add("Contact", f"<sip:{self.user}@{self.host.ip}:{SIP_PORT}>")
        if message.method == "INVITE" and status == 200:
            for route in message.headers.values("Record-Route"):  # RFC 3261 §12.1.1
                response.headers.add("Record-Route", route)
            response.headers.add("Content-Type", "application/sdp")
            response.body = sdp_body(self.host.ip, RTP_PORT, ice=self.ice)
        target = response_target(response, source)
        if target is not None:
            self.layer.send_soon(response, target)

    def _request(self, method: str, uri: str, *, body: bytes = b"", call: str = "") -> bytes:
        self._cseq += 1
        ip = self.host.ip
        branch = f"z9hG4bK{self.user}{method.lower()}{self._cseq}"
        to = uri if method != "REGISTER" else f"sip:{self.user}@{DOMAIN}"
        extra = "Content-Type: application/sdp\r\n" if body else ""
        head = (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {ip}:{SIP_PORT};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{self.user}@{DOMAIN}>;tag={self.user}-from\r\n"
            f"To: <{to}>\r\n"
            f"Call-ID: {call or self.user + '-' + method.lower()}\r\n"
            f"CSeq: {self._cseq} {method}\r\n"
            f"Contact: <sip:{self.user}@{ip}:{SIP_PORT}>\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def register(self) -> SipResponse | None:
        await self.layer.send(self._request("REGISTER", f"sip:{DOMAIN}", call="reg"), REGISTRAR)
        return await self.final_response()

    async def invite(self, uri: str, call_id: str, *, wait: bool = True) -> SipResponse | None:
        body = sdp_body(self.host.ip, RTP_PORT, ice=self.ice)
        await self.layer.send(self._request("INVITE", uri, body=body, call=call_id), REGISTRAR)
        self._invite = (uri, call_id, self._cseq)
        return await self.final_response() if wait else None

    async def cancel(self) -> None:
        """CANCEL the last INVITE (RFC 3261 §9.1: its Request-URI, Call-ID,
        CSeq number and Via branch)."""
        assert self._invite is not None
        uri, call_id, cseq = self._invite
        ip = self.host.ip
        head = (
            f"CANCEL {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {ip}:{SIP_PORT};branch=z9hG4bK{self.user}invite{cseq};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{self.user}@{DOMAIN}>;tag={self.user}-from\r\n"
            f"To: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} CANCEL\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        await self.layer.send(head.encode(), REGISTRAR)

    async def bye(self, ok: SipResponse, call_id: str) -> SipResponse | None:
        """End the call ``ok`` answered: a BYE along its route set (the
        Record-Route in reverse, RFC 3261 §12.1.2) to its Contact."""
        routes = list(reversed(ok.headers.values("Record-Route")))
        contact = ok.contacts
        assert contact != "*" and contact
        self._cseq += 1
        ip = self.host.ip
        to = ok.headers.get("To")
        head = (
            f"BYE {contact[0].uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {ip}:{SIP_PORT};branch=z9hG4bK{self.user}bye{self._cseq};rport\r\n"
            "Max-Forwards: 70\r\n"
            + "".join(f"Route: {r}\r\n" for r in routes)
            + f"From: <sip:{self.user}@{DOMAIN}>;tag={self.user}-from\r\n"
            f"To: {to}\r\nCall-ID: {call_id}\r\nCSeq: {self._cseq} BYE\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        await self.layer.send(head.encode(), REGISTRAR)
        return await self.final_response()

    async def final_response(self, timeout: float = 30.0) -> SipResponse | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                response = await asyncio.wait_for(self.responses.get(), deadline - loop.time())
            except TimeoutError:
                return None
            if response.status >= 200:
                return response

    def media_target(self) -> Endpoint:
        """Where the other side's SDP says to send RTP."""
        assert self.remote_sdp is not None
        desc = parse_sdp(self.remote_sdp)
        conn = desc.connection_of(0)
        assert conn is not None
        return Endpoint(conn.address, desc.media[0].port)

    async def send_rtp(self, count: int, *, interval: float = 0.02) -> None:
        """``count`` packets whose payloads say who sent them: ``<user>:<n>``."""
        assert self.rtp is not None
        target = self.media_target()
        ssrc = seeded_rng(len(self.user) + 7).getrandbits(32)
        for _ in range(count):
            self._seq += 1
            payload = f"{self.user}:{self._seq}".encode()
            packet = RtpPacket(payload_type=0, sequence_number=self._seq,
                               timestamp=self._seq * 160, ssrc=ssrc, payload=payload)  # fmt: skip
            self.rtp.send(serialize_rtp(packet), target)
            await asyncio.sleep(interval)
