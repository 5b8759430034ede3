"""IceConnection signals a Ta other than the default as ``a=ice-pacing``
and paces its checks by the higher of both proposals, a peer without the
attribute counting as 50 ms (RFC 8445 §14.2, RFC 8839 §5.5)."""

from __future__ import annotations

import dataclasses

from natkit.ice.aio.agent import fast_ice_config
from natkit.ice.aio.connection import IceConnection
from natkit.ice.config import IceConfig
from natkit.ice.sdp import parse_ice_description, serialize_ice_description
from natkit.net.os_stack import OsStack
from natkit.rng import seeded_rng


def _connection(config: IceConfig) -> IceConnection:
    return IceConnection(OsStack(), controlling=True, config=config)


async def test_the_fast_profile_proposes_5_ms_and_keeps_it_with_a_fast_peer() -> None:
    fast = _connection(fast_ice_config(rng=seeded_rng(1)))
    peer = _connection(fast_ice_config(rng=seeded_rng(2)))
    offer = fast.local_description()
    assert offer.pacing == 5
    assert "a=ice-pacing:5" in serialize_ice_description(offer)
    peer.apply_remote_description(parse_ice_description(serialize_ice_description(offer)))
    assert peer.agent.core.config.ta == 0.005


async def test_a_peer_without_ice_pacing_counts_as_the_default_50_ms() -> None:
    fast = _connection(fast_ice_config(rng=seeded_rng(3)))
    default = _connection(IceConfig(rng=seeded_rng(4)))
    assert default.local_description().pacing is None  # the default is not signalled
    fast.apply_remote_description(default.local_description())
    assert fast.agent.core.config.ta == 0.05
    slower = dataclasses.replace(default.local_description(), pacing=80)
    default.apply_remote_description(slower)
    assert default.agent.core.config.ta == 0.08  # the higher proposal
    assert default.local_description().pacing is None  # still proposing its own
