"""natkit's own STUN client transactions (401/438 handling, PASSWORD-ALGORITHMS,
USERHASH) against the TURN server core: the two halves of RFC 8489 §9.2 agree."""

from __future__ import annotations

import random

from natkit.stun import attributes as at
from natkit.stun.constants import MessageClass, Method
from natkit.stun.events import ResponseReceived
from natkit.stun.message import StunMessage
from natkit.stun.transaction import LongTermCredentials, StunClient, StunClientConfig
from natkit.turn import attributes as tat
from natkit.turn.credentials import (
    CombinedCredentials,
    RestCredentials,
    StaticCredentials,
    rest_credentials,
)
from natkit.turn.server import TurnServer

from .server_helpers import CLIENT, REALM, SERVER, USERS, FakeDriver, make_server


def _run(server: TurnServer, driver: FakeDriver, creds: LongTermCredentials) -> StunMessage:
    client = StunClient(StunClientConfig(rng=random.Random(3)))
    req = StunMessage(Method.ALLOCATE, MessageClass.REQUEST, b"")
    req.add(tat.REQUESTED_TRANSPORT, 17)
    client.send_request(req, SERVER, now=0.0, credentials=creds)
    for _ in range(4):
        for d in client.datagrams_to_send(now=0.0):
            server.receive_datagram(d.data, CLIENT, local=SERVER, now=0.0)
        for out in driver.pump(0.0):
            client.receive_datagram(out.data, SERVER, now=0.0)
        event = client.next_event()
        if isinstance(event, ResponseReceived):
            return event.response
    raise AssertionError("no answer")


def test_stun_client_allocates_with_userhash_from_static_users() -> None:
    server, driver = make_server()
    resp = _run(server, driver, LongTermCredentials("alice", USERS["alice"]))
    assert resp.message_class == MessageClass.SUCCESS
    assert resp.get(at.XOR_RELAYED_ADDRESS) is not None
    assert server.allocations()[0].username == "alice"


def test_stun_client_allocates_with_rest_credentials_next_to_static_users() -> None:
    creds = CombinedCredentials(
        [StaticCredentials.from_passwords(USERS, REALM), RestCredentials(["s3cret"], REALM)]
    )
    server, driver = make_server(credentials=creds, wallclock=lambda: 1000.0)
    user, password = rest_credentials("s3cret", "carol", expiry=2000)
    resp = _run(server, driver, LongTermCredentials(user, password))
    assert resp.message_class == MessageClass.SUCCESS
    assert server.allocations()[0].username == user
