"""A bare SIP phone and registrar for the lab's SIP scenarios.

:class:`LabPhone` is the smallest user agent that can prove a traversal
claim: it sends hand-built REGISTER and INVITE requests over UDP from its SIP
port, answers INVITEs, sends RFC 5626 §4.4.1 STUN keepalives, and queues what
it receives. It is deliberately not natkit's user agent: scenarios control
every header (``rport`` or not) and every timing. :func:`lab_registrar`
starts natkit's registrar + proxy with open registration.

Both only need a stack and an address (:class:`StackHost`): a simulated
host, or an :class:`OnStack` holding an OS stack inside a lab namespace
(:mod:`natkit.lab.sip_netns`), where the registrar is not at
:data:`REGISTRAR_IP` and the phone is told where it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from natkit.addr import Endpoint
from natkit.net.stack import Stack
from natkit.rng import seeded_rng
from natkit.sip.aio.server import SipServer, SipServerConfig
from natkit.sip.aio.transport import SipTransportLayer
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.message import SipMessage, SipRequest, SipResponse, make_response
from natkit.sip.via_routing import response_target
from natkit.store.memory import MemoryStore
from natkit.stun.constants import MessageClass, Method
from natkit.stun.message import StunMessage, serialize_message

__all__ = [
    "DOMAIN",
    "REGISTRAR_IP",
    "SIP_PORT",
    "LabPhone",
    "OnStack",
    "StackHost",
    "lab_registrar",
]

REGISTRAR_IP = "203.0.113.10"
SIP_PORT = 5060
DOMAIN = "example.org"
EPOCH = 1_800_000_000.0
"""The lab's wall clock: virtual loop time plus this (bindings expire by wall time)."""

REGISTRAR = Target(SipTransport.UDP, Endpoint(REGISTRAR_IP, SIP_PORT))


class StackHost(Protocol):
    """What a phone or the registrar runs on: a stack and its address
    (a :class:`~natkit.net.sim.SimHost` is one)."""

    @property
    def stack(self) -> Stack: ...

    @property
    def ip(self) -> str: ...


@dataclass(frozen=True, slots=True)
class OnStack:
    """A stack and an address of it, e.g. an OS stack inside a namespace."""

    stack: Stack
    ip: str


@asynccontextmanager
async def lab_registrar(
    host: StackHost, *, seed: int = 0, nat_pings: bool = False
) -> AsyncIterator[SipServer]:
    """natkit's registrar + home proxy for ``example.org`` on ``host``, UDP 5060,
    registration open, bindings in memory under the lab's wall clock; with
    ``nat_pings`` it keeps NATed bindings alive itself (its NAT helper)."""
    loop = asyncio.get_running_loop()
    store = MemoryStore(clock=lambda: EPOCH + loop.time())
    config = SipServerConfig(
        listen=((SipTransport.UDP, Endpoint(host.ip, SIP_PORT)),),
        domains=frozenset({DOMAIN}),
        secret=b"lab-secret-lab-secret-lab-secret",
        authenticate=False,
        nat_pings=nat_pings,
    )
    async with SipServer(host.stack, config, store, rng=seeded_rng(seed + 5)) as server:
        yield server


class LabPhone:
    """A UDP phone named ``user`` on ``host``'s SIP port, registering at
    ``registrar`` (default: the simulated lab's, :data:`REGISTRAR_IP`)."""

    def __init__(
        self,
        host: StackHost,
        user: str,
        *,
        answer: int = 200,
        registrar: Endpoint | None = None,
    ) -> None:
        self.host = host
        self.registrar = REGISTRAR if registrar is None else Target(SipTransport.UDP, registrar)
        self.user = user
        self.answer = answer
        self.responses: asyncio.Queue[SipResponse] = asyncio.Queue()
        self.requests: list[SipRequest] = []
        self._cseq = 0
        self._rng = seeded_rng(len(user))
        self.layer = SipTransportLayer(host.stack, self._on, rng=seeded_rng(len(user) + 1))

    async def start(self) -> None:
        await self.layer.listen(SipTransport.UDP, Endpoint(self.host.ip, SIP_PORT))

    def close(self) -> None:
        self.layer.close()

    def _on(self, message: SipMessage, source: Source) -> None:
        if isinstance(message, SipResponse):
            self.responses.put_nowait(message)
            return
        assert isinstance(message, SipRequest)
        self.requests.append(message)
        if message.method == "ACK":
            return
        response = make_response(message, self.answer, to_tag=f"{self.user}-tag")
        response.headers.add("Contact", f"<sip:{self.user}@{self.host.ip}:{SIP_PORT}>")
        target = response_target(response, source)
        if target is not None:
            self.layer.send_soon(response, target)

    def _request(self, method: str, uri: str, *, rport: bool, extra: str = "") -> bytes:
        self._cseq += 1
        ip = self.host.ip
        branch = f"z9hG4bK{self.user}{method.lower()}{self._cseq}"
        return (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {ip}:{SIP_PORT};branch={branch}{';rport' if rport else ''}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{self.user}@{DOMAIN}>;tag={self.user}-{method.lower()}\r\n"
            f"To: <{uri if method != 'REGISTER' else f'sip:{self.user}@{DOMAIN}'}>\r\n"
            f"Call-ID: {self.user}-{method.lower()}-{self._cseq if method != 'REGISTER' else 0}\r\n"
            f"CSeq: {self._cseq} {method}\r\n"
            f"Contact: <sip:{self.user}@{ip}:{SIP_PORT}>\r\n"
            f"{extra}Content-Length: 0\r\n\r\n"
        ).encode()

    async def register(self, *, rport: bool = True, expires: int = 600) -> None:
        """Send one REGISTER to the lab registrar (the answer lands in :attr:`responses`)."""
        extra = f"Expires: {expires}\r\n"
        data = self._request("REGISTER", f"sip:{DOMAIN}", rport=rport, extra=extra)
        await self.layer.send(data, self.registrar)

    async def invite(self, uri: str) -> None:
        await self.layer.send(self._request("INVITE", uri, rport=True), self.registrar)

    async def keepalive(self) -> None:
        """RFC 5626 §4.4.1: a STUN Binding request to the registrar's SIP port,
        which refreshes the NAT's mapping of this phone's SIP port."""
        request = StunMessage(
            method=Method.BINDING,
            message_class=MessageClass.REQUEST,
            transaction_id=self._rng.randbytes(12),
        )
        await self.layer.send(serialize_message(request), self.registrar)

    async def final_response(self, timeout: float = 60.0) -> SipResponse | None:
        """The next final response, or None if none comes within ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                response = await asyncio.wait_for(self.responses.get(), deadline - loop.time())
            except TimeoutError:
                return None
            if response.status >= 200:
                return response
