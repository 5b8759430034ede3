"""Configuration of the ICE agent core (RFC 8445, RFC 7675).

One frozen dataclass; every knob that an RFC names carries the RFC's own
symbol: ``ta`` (§14.2 pacing), ``rto``/``rc``/``rm`` (§14.3 and RFC 8489
§6.2.1 retransmission), ``tr`` (§11 keepalive interval), and RFC 7675's
consent interval and timeout. natkit's own additions (nomination delay,
hot-spare failover) are documented where they are used in
:mod:`natkit.ice.agent` and in ``docs/conformance/ice.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from natkit.rng import Rng, default_rng

__all__ = ["IceConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class IceConfig:
    """Timers and policies of one :class:`~natkit.ice.agent.IceAgent`.

    - ``ta``: pacing of new connectivity checks (RFC 8445 §14.2, 50 ms).
    - ``rto``: the floor of a check's RTO (§14.3: ``max(500 ms, Ta * N)``
      where N counts Waiting and In-Progress pairs); ``rc`` transmissions,
      then ``rm * rto`` more waiting (RFC 8489 §6.2.1: 39.5 s at 500 ms).
    - ``tr``: keepalive interval on the selected pair when nothing else was
      sent (§11, 15 s).
    - ``consent_interval``/``consent_jitter``/``consent_timeout``: RFC 7675
      §5.1: a consent check every 5 s, randomized to 0.8-1.2 of it, consent
      lost 30 s after the last authenticated response.
    - ``aggressive_nomination``: RFC 5245 §8.1.1.2 compatibility: the
      controlling agent puts USE-CANDIDATE on every check.
    - ``nomination_delay``/``nomination_rtts``: regular nomination (§8.1.1)
      waits, after the first valid pair of a component, ``nomination_rtts``
      round trips of the best valid pair's check (at least ``ta``, at most
      ``nomination_delay``; the full ``nomination_delay`` when no round trip
      was measured) for a better one to succeed; it nominates at once when
      no higher-priority pair is pending.
    - ``nomination_timeout``: a controlled agent whose component has valid
      pairs and nothing left to check re-checks its best valid pair every
      ``consent_interval`` (so a controlling peer whose own checks were all
      lost gets a triggered check that succeeds) and gives up with
      ``IceFailed`` when no nomination came this long after that.
    - ``lite``: this agent is an ICE-lite agent (§2.5): it never sends
      checks, answers them, and is always controlled.
    - ``hot_spares``: after nomination keep checking the remaining pairs and
      keep the best valid pair of every distinct path alive; the selected
      pair and the spares are checked every ``failover_check_interval``
      (randomized like consent checks) and the selected pair is replaced by
      the best live spare when it has had no response for
      ``failover_timeout`` seconds; after a switch the next failover waits
      ``failover_holddown`` seconds (hysteresis: a lossy network must not
      make the agents flap between paths), unless consent is lost. When no
      spare answered its latest check either, ``FailoverExhausted`` is
      reported at that timeout (the application restarts ICE, RFC 8445 §9).
    - ``max_pairs``: the check list limit of §6.1.2.5 (per stream).
    """

    ta: float = 0.05
    rto: float = 0.5
    rc: int = 7
    rm: int = 16
    tr: float = 15.0
    consent_interval: float = 5.0
    consent_jitter: float = 0.2
    consent_timeout: float = 30.0
    aggressive_nomination: bool = False
    nomination_delay: float = 0.5
    nomination_rtts: float = 1.5
    nomination_timeout: float = 40.0
    lite: bool = False
    hot_spares: bool = True
    failover_check_interval: float = 0.3
    failover_timeout: float = 1.2
    failover_holddown: float = 5.0
    max_pairs: int = 100
    software: str | None = None
    rng: Rng = field(default_factory=default_rng)

    def __post_init__(self) -> None:
        if self.ta <= 0 or self.rto <= 0:
            raise ValueError("ta and rto must be positive")
        if self.rc < 1 or self.rm < 1:
            raise ValueError("rc and rm must be at least 1")
        if not 0 <= self.consent_jitter < 1:
            raise ValueError("consent_jitter must be in [0, 1)")
        if self.nomination_rtts < 0 or self.nomination_delay < 0:
            raise ValueError("nomination_rtts and nomination_delay must not be negative")
        if self.max_pairs < 1:
            raise ValueError("max_pairs must be at least 1")
        longest_gap = self.failover_check_interval * (1 + self.consent_jitter)
        if self.hot_spares and self.failover_timeout <= longest_gap:
            raise ValueError("failover_timeout must exceed the longest gap between path checks")
        if self.consent_timeout <= self.consent_interval * (1 + self.consent_jitter):
            raise ValueError("consent_timeout must exceed the longest gap between consent checks")
