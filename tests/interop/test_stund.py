"""natkit against Debian's stund (stun-server 0.97), an RFC 3489 server.

stund answers every Binding request with MAPPED-ADDRESS, SOURCE-ADDRESS and
CHANGED-ADDRESS and honours CHANGE-REQUEST, but knows nothing of RFC 5780:
no OTHER-ADDRESS, no RESPONSE-ORIGIN. On loopback there is no NAT, so the
right verdict is "open internet" with the public address equal to the local
one.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from natkit.addr import Endpoint
from natkit.nat.aio import natcheck
from natkit.nat.natcheck import NatCheckConfig
from natkit.nat.types import Filtering, Mapping
from natkit.net.os_stack import OsStack
from natkit.stun import attributes as at
from natkit.stun.aio import AsyncStunClient
from natkit.stun.constants import Method
from natkit.stun.message import StunMessage
from natkit.stun.server import StunServerConfig
from natkit.stun.transaction import StunClientConfig

from .conftest import (
    LOOPBACK,
    StunPeer,
    natkit_command,
    run_program,
    start_in_process_server,
    start_stund,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(30)]

FAST = StunClientConfig(rto=0.1, rc=4, rm=4, rng=random.Random(3489))


async def test_stund_answers_with_changed_address_and_no_other_address(stund: StunPeer) -> None:
    async with await AsyncStunClient.open_udp(
        OsStack(), Endpoint(LOOPBACK, 0), config=FAST
    ) as client:
        answer = await asyncio.wait_for(
            client.request(StunMessage.request(Method.BINDING, b""), stund.primary), 5
        )
        resp = answer.response
        assert answer.is_success
        assert answer.source == stund.primary
        assert resp.get(at.MAPPED_ADDRESS) == client.local_endpoint
        assert resp.get(at.CHANGED_ADDRESS) == stund.alternate
        assert resp.get(at.SOURCE_ADDRESS) == stund.primary
        assert resp.get(at.OTHER_ADDRESS) is None
        assert resp.get(at.RESPONSE_ORIGIN) is None


def test_natcheck_cli_reports_open_internet_against_stund(stund: StunPeer) -> None:
    result = run_program([*natkit_command(), "natcheck", str(stund.primary), "--json"])
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["classic"] == "open-internet", data
    assert data["classic_reason"] is None
    assert data["public_address"] == data["local_address"]
    assert data["public_address"].startswith(f"{LOOPBACK}:")
    assert data["nat_present"] is False
    assert data["other_address"] == str(stund.alternate)  # stund's CHANGED-ADDRESS


async def test_natcheck_rfc5780_part_uses_changed_address_of_rfc3489_stund(
    stund: StunPeer,
) -> None:
    # Without a NAT, Test I alone settles the mapping (RFC 5780 §4.3), and
    # stund carries out CHANGE-REQUEST from its CHANGED-ADDRESS, which natkit
    # checks the answers against in place of OTHER-ADDRESS: every RFC 5780
    # verdict is available, none is guessed, and nothing needs a note.
    config = NatCheckConfig(classic=False, rng=random.Random(5780))
    result = await asyncio.wait_for(
        natcheck(OsStack(), stund.primary, config, bind_ip=LOOPBACK), 10
    )
    assert result.classic is None
    assert result.nat_present is False
    assert result.public_address == result.local_address
    assert result.mapping == Mapping.ENDPOINT_INDEPENDENT
    assert result.filtering == Filtering.ENDPOINT_INDEPENDENT
    assert result.hairpinning is True
    assert result.port_preservation is True
    assert result.other_address == stund.alternate
    assert result.notes == ()


async def test_stund_can_bind_the_ports_of_a_natkit_server_that_has_closed(
    tmp_path: Path,
) -> None:
    # wait_closed() means the sockets are released: a third-party server
    # started right after it must be able to bind the same four addresses.
    server = await start_in_process_server(
        lambda primary, alternate: StunServerConfig(
            primary=primary, alternate=alternate, rfc5780=True
        )
    )
    server.runner.close()
    await server.runner.wait_closed()
    peer = start_stund(tmp_path, server.peer.primary.port, server.peer.alternate.port)
    assert peer.process is not None
    try:
        assert peer.endpoints == server.peer.endpoints
    finally:
        peer.process.stop()
