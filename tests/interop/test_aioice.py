"""natkit and aioice (PyPI), the STUN/ICE stack of aiortc, both ways.

aioice parses natkit's Binding responses (and checks their FINGERPRINT and
MESSAGE-INTEGRITY), its transactions and candidate gathering get correct
answers from natkit's server, and natkit parses aioice's ICE connectivity
check requests and verifies their short-term MESSAGE-INTEGRITY.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
from natkit.stun import attributes as at
from natkit.stun.auth import ShortTermAuthenticator
from natkit.stun.constants import AttributeType, MessageClass, Method
from natkit.stun.credentials import short_term_key
from natkit.stun.message import parse_message, verify_integrity
from natkit.stun.server import StunServerConfig

from .conftest import LOOPBACK, InProcessServer, require_module, start_in_process_server

pytestmark = [pytest.mark.interop, pytest.mark.timeout(30)]

require_module("aioice", "aioice")
from aioice import stun as astun  # noqa: E402
from aioice.ice import Connection, StunProtocol  # noqa: E402

# ICE short-term credentials (RFC 8445 §7.2.2): USERNAME is "RFRAG:LFRAG",
# the key is the answering side's password.
USERNAME = "rfrg:lfrg"
PASSWORD = "natkit-interop-password-0123"


def _flip_bit(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


async def _exchange(request: bytes, server: Endpoint) -> tuple[bytes, Endpoint, Endpoint]:
    """Send one datagram from a fresh loopback socket; return the answer, its
    source and our own address."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.setblocking(False)
        local = Endpoint(*sock.getsockname())
        await loop.sock_sendto(sock, request, (server.host, server.port))
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 4096), 5)
    return data, Endpoint(addr[0], addr[1]), local


def _authenticated_binding() -> Any:
    """A Binding request with short-term credentials (RFC 8489 §9.1) and no ICE
    attributes: PRIORITY and USE-CANDIDATE are comprehension-required, and a
    STUN server that is not an ICE agent answers them with 420."""
    return astun.Message(
        astun.Method.BINDING, astun.Class.REQUEST, attributes={"USERNAME": USERNAME}
    )


def _ice_check() -> Any:
    """An ICE connectivity check as aioice sends it (RFC 8445 §7.1)."""
    return astun.Message(
        astun.Method.BINDING,
        astun.Class.REQUEST,
        attributes={
            "USERNAME": USERNAME,
            "PRIORITY": 1853824767,
            "ICE-CONTROLLING": 0x1122334455667788,
            "USE-CANDIDATE": None,
        },
    )


@pytest.fixture
async def short_term_server() -> AsyncIterator[InProcessServer]:
    """natkit's server requiring ICE-style short-term credentials."""
    auth = ShortTermAuthenticator(lambda user: PASSWORD if user == USERNAME else None)
    server = await start_in_process_server(
        lambda primary, _alternate: StunServerConfig(primary=primary, authenticator=auth)
    )
    try:
        yield server
    finally:
        server.runner.close()
        await server.runner.wait_closed()


async def test_aioice_parses_natkit_binding_response(natkit_server: InProcessServer) -> None:
    peer = natkit_server.peer
    request = astun.Message(astun.Method.BINDING, astun.Class.REQUEST)
    request.add_fingerprint()
    data, source, local = await _exchange(bytes(request), peer.primary)

    response = astun.parse_message(data)
    assert source == peer.primary
    assert response.message_method == astun.Method.BINDING
    assert response.message_class == astun.Class.RESPONSE
    assert response.transaction_id == request.transaction_id
    assert response.attributes["XOR-MAPPED-ADDRESS"] == (local.host, local.port)
    assert response.attributes["RESPONSE-ORIGIN"] == (peer.primary.host, peer.primary.port)
    assert response.attributes["OTHER-ADDRESS"] == (peer.alternate.host, peer.alternate.port)
    assert "FINGERPRINT" in response.attributes
    assert list(response.attributes)[-1] == "FINGERPRINT"
    # aioice really checks natkit's FINGERPRINT: one flipped bit of the mapped port fails it.
    port_at = data.index(b"\x00\x20\x00\x08") + 6  # XOR-MAPPED-ADDRESS, IPv4
    with pytest.raises(ValueError, match="fingerprint"):
        astun.parse_message(_flip_bit(data, port_at))


async def test_aioice_gathers_a_server_reflexive_candidate_from_natkit(
    natkit_server: InProcessServer,
) -> None:
    primary = natkit_server.peer.primary
    connection = Connection(
        ice_controlling=True, stun_server=(primary.host, primary.port), use_ipv6=False
    )
    try:
        # gather_candidates() skips 127.0.0.1; ask for the loopback host candidate itself.
        candidates = await asyncio.wait_for(
            connection.get_component_candidates(component=1, addresses=[LOOPBACK]), 10
        )
    finally:
        await connection.close()
    host = [c for c in candidates if c.type == "host"]
    srflx = [c for c in candidates if c.type == "srflx"]
    assert len(host) == 1
    assert len(srflx) == 1, candidates
    assert (srflx[0].host, srflx[0].port) == (host[0].host, host[0].port)
    assert (srflx[0].related_address, srflx[0].related_port) == (host[0].host, host[0].port)
    assert Endpoint(host[0].host, host[0].port) in natkit_server.sources


async def test_aioice_transaction_accepts_natkit_signed_answer(
    short_term_server: InProcessServer,
) -> None:
    # aioice's Transaction discards responses whose MESSAGE-INTEGRITY does not
    # verify with the request's key, so an answer at all proves natkit signed it.
    primary = short_term_server.peer.primary
    loop = asyncio.get_running_loop()
    connection = Connection(ice_controlling=True, use_ipv6=False)
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: StunProtocol(connection), local_addr=(LOOPBACK, 0)
    )
    try:
        local = transport.get_extra_info("sockname")
        response, addr = await asyncio.wait_for(
            protocol.request(
                _authenticated_binding(),
                (primary.host, primary.port),
                integrity_key=PASSWORD.encode(),
                retransmissions=2,
            ),
            10,
        )
    finally:
        await protocol.close()
        await connection.close()
    assert addr == (primary.host, primary.port)
    assert response.message_class == astun.Class.RESPONSE
    assert response.attributes["XOR-MAPPED-ADDRESS"] == (local[0], local[1])
    assert response.check_message_integrity(PASSWORD.encode())
    assert "FINGERPRINT" in response.attributes


async def test_natkit_server_refuses_aioice_request_signed_with_wrong_password(
    short_term_server: InProcessServer,
) -> None:
    request = _authenticated_binding()
    request.add_message_integrity(b"not-the-password")
    data, _source, _local = await _exchange(bytes(request), short_term_server.peer.primary)
    response = astun.parse_message(data)
    assert response.message_class == astun.Class.ERROR
    assert response.error_code == 401
    assert "MESSAGE-INTEGRITY" not in response.attributes


async def test_natkit_server_answers_aioice_ice_check_with_420(
    short_term_server: InProcessServer,
) -> None:
    # natkit's STUN server is not an ICE agent: RFC 8489 §6.3.1 makes it
    # refuse the comprehension-required ICE attributes it does not implement.
    request = _ice_check()
    request.add_message_integrity(PASSWORD.encode())
    data, _source, _local = await _exchange(bytes(request), short_term_server.peer.primary)
    assert astun.parse_message(data).error_code == 420
    unknown = parse_message(data).get(at.UNKNOWN_ATTRIBUTES)
    assert unknown is not None
    assert set(unknown) == {AttributeType.PRIORITY, AttributeType.USE_CANDIDATE}


def test_natkit_parses_aioice_ice_check_and_verifies_its_integrity() -> None:
    request = _ice_check()
    request.add_message_integrity(PASSWORD.encode())  # appends FINGERPRINT too
    data = bytes(request)

    msg = parse_message(data)
    assert msg.method == Method.BINDING
    assert msg.message_class == MessageClass.REQUEST
    assert msg.transaction_id == request.transaction_id
    assert msg.has_fingerprint
    assert msg.get(at.USERNAME) == USERNAME
    assert msg.get(at.PRIORITY) == 1853824767
    assert msg.get(at.ICE_CONTROLLING) == 0x1122334455667788
    assert msg.get(at.USE_CANDIDATE) is True
    assert verify_integrity(msg, short_term_key(PASSWORD))
    assert not verify_integrity(msg, short_term_key(PASSWORD + "x"))
    # A flipped bit in PRIORITY breaks FINGERPRINT, which natkit rejects silently.
    with pytest.raises(MalformedMessageError) as excinfo:
        parse_message(_flip_bit(data, data.index(b"\x00\x24\x00\x04") + 7))
    assert excinfo.value.error_code is None
