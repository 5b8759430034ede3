"""The media scenario interface: two NAT presets in, the observed outcome
and both sides' RecordingChecks out (two-way audio proven by content)."""

from __future__ import annotations

from natkit.lab.matrix_media import run_media_call, run_relay_call
from natkit.media.tone import RecordingCheck


def test_stun_through_a_symmetric_nat_is_one_way_by_content() -> None:
    outcome = run_media_call("symmetric", "full-cone", seed=3)
    assert outcome.observed == "one-way (b hears a)"
    assert isinstance(outcome.a, RecordingCheck) and isinstance(outcome.b, RecordingCheck)
    assert not outcome.a.heard_far and outcome.b.heard_far
    assert not outcome.b.heard_own  # what Bob heard was Alice, not his own tone looped back


def test_ice_and_the_relay_give_two_way_audio() -> None:
    for outcome in (
        run_media_call("symmetric", "restricted-cone", ice=True, seed=3),
        run_relay_call("symmetric", "symmetric", seed=3),
    ):
        assert outcome.a is not None and outcome.b is not None
        assert outcome.a.heard_far and outcome.b.heard_far
        assert outcome.observed.startswith("two-way")
    assert run_relay_call("full-cone", "symmetric", seed=4).observed == "two-way via relay"
