"""natkit's natcheck against coturn, an RFC 5780 server (two listening IPs).

On loopback there is no NAT: the classic test must say "open internet" and
RFC 5780 discovery must find endpoint-independent mapping and filtering and
a hairpinning path (a request to one's own mapped address arrives).
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from natkit.nat.aio import natcheck
from natkit.nat.natcheck import NatCheckConfig
from natkit.nat.types import Filtering, Mapping, NatType
from natkit.net.os_stack import OsStack

from .conftest import LOOPBACK, StunPeer, natkit_command, run_program

pytestmark = [pytest.mark.interop, pytest.mark.timeout(30)]


async def test_natcheck_against_coturn_finds_no_nat_and_endpoint_independent_behaviour(
    coturn: StunPeer,
) -> None:
    config = NatCheckConfig(rng=random.Random(8489))
    result = await asyncio.wait_for(
        natcheck(OsStack(), coturn.primary, config, bind_ip=LOOPBACK), 10
    )
    assert result.classic == NatType.OPEN_INTERNET, result.classic_reason
    assert result.public_address == result.local_address
    assert result.nat_present is False
    assert result.mapping == Mapping.ENDPOINT_INDEPENDENT
    assert result.filtering == Filtering.ENDPOINT_INDEPENDENT
    assert result.hairpinning is True
    assert result.port_preservation is True
    assert result.other_address == coturn.alternate
    assert result.notes == ()


def test_natcheck_cli_behavior_mode_against_coturn(coturn: StunPeer) -> None:
    result = run_program(
        [*natkit_command(), "natcheck", str(coturn.primary), "--behavior", "--json"]
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["classic"] is None
    assert data["mapping"] == "endpoint-independent"
    assert data["filtering"] == "endpoint-independent"
    assert data["hairpinning"] is True
    assert data["other_address"] == str(coturn.alternate)
    assert data["notes"] == []
