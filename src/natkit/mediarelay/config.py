"""Configuration of the media relay core (one frozen dataclass, STYLE.md).

The latching knobs follow the comedia practice of ECC report §6.4 ("NAT
proxy") and rtpengine's strict-source / media-handover options; the port
range convention (RTP on an even port, RTCP on the next odd one) is
RFC 3550 §11's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from natkit.rng import Rng, default_rng

__all__ = ["MediaRelayConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaRelayConfig:
    """How the relay allocates ports and decides where media goes.

    * ``port_min``/``port_max``: the relay's UDP port range; RTP takes an
      even port, RTCP the odd one above it (RFC 3550 §11), also reserved
      for an rtcp-mux leg (RFC 5761) so a re-offer could drop mux.
    * ``learning_packets``, ``learning_time``: the learning window that
      opens when a call is created or re-offered. Until it closes, each
      valid packet from a new source moves the latch there; it closes once
      ``learning_packets`` packets in a row came from the latched source,
      or at the first packet after ``learning_time`` seconds.
    * ``strict_source``: after the window, packets from any other source
      are dropped and counted (RTP-bleed protection). ``False``: the latch
      follows every new source (rtpengine without ``strict-source``).
    * ``relatch_silence``, ``relatch_same_ssrc``: the one exception to
      strictness, a NAT rebinding: the latched source has been silent for
      ``relatch_silence`` seconds and a packet with the *same SSRC* arrives
      from a new source (rtpengine's "media handover" limited to the
      stream the endpoint was already sending).
    * ``idle_timeout``: a call whose legs received no valid packet for this
      long is reported (``CallTimedOut``) and torn down.
    * ``max_calls``: a bound on the relay table.
    """

    port_min: int = 30000
    port_max: int = 39999
    learning_packets: int = 5
    learning_time: float = 3.0
    strict_source: bool = True
    relatch_same_ssrc: bool = True
    relatch_silence: float = 2.0
    idle_timeout: float = 60.0
    max_calls: int = 10000
    rng: Rng = field(default_factory=default_rng)

    def __post_init__(self) -> None:
        if not 1 <= self.port_min < self.port_max <= 0xFFFF:
            raise ValueError("need 1 <= port_min < port_max <= 65535")
        if self.port_max - self.port_min < 1:
            raise ValueError("the port range must hold at least one RTP/RTCP pair")
        if self.learning_packets < 1 or self.learning_time < 0:
            raise ValueError("learning_packets >= 1 and learning_time >= 0")
        if self.relatch_silence < 0 or self.idle_timeout <= 0 or self.max_calls < 1:
            raise ValueError("relatch_silence >= 0, idle_timeout > 0 and max_calls >= 1")
