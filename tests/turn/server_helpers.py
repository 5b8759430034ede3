"""Test helpers for the sans-IO TURN server: a fake driver and a signing client.

:class:`FakeDriver` plays the asyncio driver: it drains the core's events,
answers :class:`RelayRequested` with ``relay_opened`` (or ``relay_failed``
for ports listed in ``fail_ports``) and collects every datagram.
:class:`Client` builds requests by hand, does the 401 dance once and signs
everything after with the long-term key (SHA-256 with PASSWORD-ALGORITHMS,
or MD5 like an RFC 5766 client).
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from natkit.addr import Endpoint, Transport
from natkit.stun import attributes as at
from natkit.stun.attributes import AttrSpec, PasswordAlgorithmParams
from natkit.stun.constants import MessageClass, Method, PasswordAlgorithm
from natkit.stun.credentials import long_term_key, userhash
from natkit.stun.message import (
    Integrity,
    StunMessage,
    parse_message,
    serialize_message,
    verify_integrity,
)
from natkit.turn import attributes as tat
from natkit.turn.attributes import TransportProtocol
from natkit.turn.channel import pack_channel_data
from natkit.turn.credentials import CredentialSource, StaticCredentials
from natkit.turn.events import RelayRequested, TurnServerEvent
from natkit.turn.server import TurnDatagram, TurnServer, TurnServerConfig

REALM = "natkit.test"
USERS = {"alice": "wonderland", "bob": "builder"}
RELAY_V4 = "192.0.2.10"
RELAY_V6 = "2001:db8::10"
SERVER = Endpoint("192.0.2.1", 3478)
SERVER_V6 = Endpoint("2001:db8::1", 3478)
CLIENT = Endpoint("198.51.100.5", 40000)
PEER = Endpoint("203.0.113.7", 5000)
PEER2 = Endpoint("203.0.113.8", 5001)
PEER_V6 = Endpoint("2001:db8::77", 6000)

BASE_CONFIG = TurnServerConfig(
    realm=REALM,
    relay_ips=(RELAY_V4, RELAY_V6),
    min_port=61000,
    max_port=61999,
    rng=random.Random(1),
)


def make_server(
    credentials: CredentialSource | None = None, **overrides: Any
) -> tuple[TurnServer, FakeDriver]:
    overrides.setdefault("rng", random.Random(1))
    config = replace(BASE_CONFIG, **overrides)
    server = TurnServer(config, credentials or StaticCredentials.from_passwords(USERS, REALM))
    return server, FakeDriver(server)


class FakeDriver:
    def __init__(self, server: TurnServer) -> None:
        self.server = server
        self.events: list[TurnServerEvent] = []
        self.sent: list[TurnDatagram] = []
        self.auto_open = True
        self.fail_ports: set[int] = set()
        self.fail_all = False

    def pump(self, now: float) -> list[TurnDatagram]:
        """Drain events (answering relay requests) and datagrams; return new datagrams."""
        new: list[TurnDatagram] = []
        while True:
            new.extend(self.server.datagrams_to_send())
            event = self.server.next_event()
            if event is None:
                break
            self.events.append(event)
            if isinstance(event, RelayRequested) and self.auto_open:
                if self.fail_all or any(r.port in self.fail_ports for r in event.relays):
                    self.server.relay_failed(event.request_id, now=now)
                else:
                    self.server.relay_opened(event.request_id, event.relays, now=now)
        self.sent.extend(new)
        return new

    def take_events(self, kind: type | None = None) -> list[Any]:
        out = [e for e in self.events if kind is None or isinstance(e, kind)]
        self.events = [e for e in self.events if not (kind is None or isinstance(e, kind))]
        return out

    def advance(self, now: float) -> list[TurnDatagram]:
        """Fire every timer due at ``now``."""
        self.server.handle_timer(now=now)
        return self.pump(now)


class Client:
    """One TURN client 5-tuple with long-term credentials."""

    _count = 0

    def __init__(
        self,
        driver: FakeDriver,
        *,
        client: Endpoint = CLIENT,
        local: Endpoint = SERVER,
        transport: Transport = Transport.UDP,
        username: str = "alice",
        password: str | None = None,
        algorithm: PasswordAlgorithm | None = PasswordAlgorithm.SHA256,
        integrity: Integrity = Integrity.SHA256,
        use_userhash: bool = False,
        realm: str = REALM,
    ) -> None:
        self.driver = driver
        self.server = driver.server
        self.client = client
        self.local = local
        self.transport = transport
        self.username = username
        self.password = password if password is not None else USERS.get(username, "x")
        self.algorithm = algorithm  # None: an RFC 5766 client (MD5, no PASSWORD-ALGORITHM)
        self.integrity = integrity if algorithm is not None else Integrity.SHA1
        self.use_userhash = use_userhash
        self.realm = realm
        self.nonce: str | None = None
        self.offered: tuple[PasswordAlgorithmParams, ...] | None = None
        Client._count += 1
        self.rng = random.Random(Client._count)

    @property
    def key(self) -> bytes:
        alg = self.algorithm or PasswordAlgorithm.MD5
        return long_term_key(self.username, self.realm, self.password, alg)

    def tid(self) -> bytes:
        return self.rng.randbytes(12)

    def build(
        self,
        method: int,
        attrs: list[tuple[AttrSpec[Any], Any]] = (),  # type: ignore[assignment]
        *,
        tid: bytes | None = None,
        sign: bool = True,
        cls: MessageClass = MessageClass.REQUEST,
        fingerprint: bool = False,
    ) -> bytes:
        msg = StunMessage(method, cls, tid or self.tid())
        for spec, value in attrs:
            msg.add(spec, value)
        if not sign or self.nonce is None:
            return serialize_message(msg, fingerprint=fingerprint)
        if self.use_userhash:
            msg.add(at.USERHASH, userhash(self.username, self.realm))
        else:
            msg.add(at.USERNAME, self.username)
        msg.add(at.REALM, self.realm)
        msg.add(at.NONCE, self.nonce)
        if self.algorithm is not None and self.offered is not None:
            msg.add(at.PASSWORD_ALGORITHMS, self.offered)
            msg.add(at.PASSWORD_ALGORITHM, PasswordAlgorithmParams(self.algorithm))
        return serialize_message(
            msg, key=self.key, integrity=self.integrity, fingerprint=fingerprint
        )

    def send_raw(self, data: bytes, now: float) -> list[TurnDatagram]:
        self.server.receive_datagram(
            data, self.client, local=self.local, transport=self.transport, now=now
        )
        return self.driver.pump(now)

    def responses(self, out: list[TurnDatagram]) -> list[StunMessage]:
        return [
            parse_message(d.data)
            for d in out
            if d.remote == self.client and d.data[0] < 0x40 and d.local == self.local
        ]

    def request(
        self,
        method: int,
        attrs: list[tuple[AttrSpec[Any], Any]] = (),  # type: ignore[assignment]
        *,
        now: float,
        tid: bytes | None = None,
        fingerprint: bool = False,
    ) -> StunMessage | None:
        """Send a signed request (doing the 401 dance first if needed); return the answer."""
        if self.nonce is None:
            first = self.responses(self.send_raw(self.build(method, attrs, sign=False), now))
            if not first:
                return None
            self.learn(first[-1])
            if first[-1].message_class != MessageClass.ERROR:
                return first[-1]
        data = self.build(method, attrs, tid=tid, fingerprint=fingerprint)
        got = self.responses(self.send_raw(data, now))
        if not got:
            return None
        resp: StunMessage | None = got[-1]
        assert resp is not None
        err = resp.error
        if err is not None and err.code == 438:
            self.learn(resp)
            got = self.responses(self.send_raw(self.build(method, attrs), now))
            resp = got[-1] if got else None
        return resp

    def learn(self, resp: StunMessage) -> None:
        nonce = resp.get(at.NONCE)
        if nonce is not None:
            self.nonce = nonce
        offered = resp.get(at.PASSWORD_ALGORITHMS)
        if offered is not None:
            self.offered = offered

    def allocate(
        self,
        now: float = 0.0,
        extra: list[tuple[AttrSpec[Any], Any]] | None = None,
        protocol: int = TransportProtocol.UDP,
    ) -> StunMessage:
        attrs: list[tuple[AttrSpec[Any], Any]] = [(tat.REQUESTED_TRANSPORT, protocol)]
        attrs += extra or []
        resp = self.request(Method.ALLOCATE, attrs, now=now)
        assert resp is not None
        return resp

    def permit(self, *peers: Endpoint, now: float = 0.0) -> StunMessage:
        resp = self.request(
            Method.CREATE_PERMISSION, [(at.XOR_PEER_ADDRESS, p) for p in peers], now=now
        )
        assert resp is not None
        return resp

    def bind(self, number: int, peer: Endpoint, now: float = 0.0) -> StunMessage:
        resp = self.request(
            Method.CHANNEL_BIND,
            [(tat.CHANNEL_NUMBER, number), (at.XOR_PEER_ADDRESS, peer)],
            now=now,
        )
        assert resp is not None
        return resp

    def refresh(self, lifetime: int | None = None, now: float = 0.0) -> StunMessage:
        attrs: list[tuple[AttrSpec[Any], Any]] = []
        if lifetime is not None:
            attrs.append((at.LIFETIME, lifetime))
        resp = self.request(Method.REFRESH, attrs, now=now)
        assert resp is not None
        return resp

    def send_indication(self, peer: Endpoint, data: bytes, now: float = 0.0) -> list[TurnDatagram]:
        raw = self.build(
            Method.SEND,
            [(at.XOR_PEER_ADDRESS, peer), (at.DATA, data)],
            sign=False,
            cls=MessageClass.INDICATION,
        )
        return self.send_raw(raw, now)

    def channel_data(self, number: int, data: bytes, now: float = 0.0) -> list[TurnDatagram]:
        return self.send_raw(pack_channel_data(number, data, stream=self.transport.is_stream), now)

    def verified(self, resp: StunMessage) -> bool:
        return verify_integrity(resp, self.key)


def code_of(resp: StunMessage | None) -> int | None:
    """The response's error code, 0 for success, None for no answer."""
    if resp is None:
        return None
    err = resp.error
    return 0 if err is None else err.code


def relayed(resp: StunMessage) -> list[Endpoint]:
    return resp.get_all(at.XOR_RELAYED_ADDRESS)


ALLOCATE = Method.ALLOCATE
