"""The classic NAT type test (RFC 3489 §10.1; ECC report Annex A), sans-IO.

Theory of operation
-------------------
Two local sockets, A and B. Phase 1 sends three Binding requests to the
server's primary address at once:

* Test I: plain. No answer: ``udp-blocked``. The answer gives the mapped
  address M1 and the server's CHANGED-ADDRESS / OTHER-ADDRESS (CA).
* Test II (from B): CHANGE-REQUEST change-IP + change-port; answered from CA.
* Test III (from A): CHANGE-REQUEST change-port; answered from primary IP, CA port.

Sending them together is safe: all three go to the same server address, so
none opens the NAT's filter for another's answer. Test II leaves from its own
socket because a filtered answer is not always forgotten: Linux conntrack
keeps an entry for the dropped packet from CA, and when the same socket later
sends to CA (phase 2), the kernel must pick another external port - which
would make a port-restricted cone look symmetric. Then:

* M1 equals the local address (no NAT): Test II answered means
  ``open-internet``, unanswered ``symmetric-udp-firewall``.
* Behind a NAT, Test II answered: ``full-cone``.
* Otherwise (Test II unanswered): Test I again, to CA, sent from A as soon as
  Test I's answer names CA - it cannot open the filter Test II measures,
  which sits on B. A different mapped address: ``symmetric``. The same: Test
  III answered means ``restricted-cone``, unanswered ``port-restricted-cone``.

Every answer's source address is checked against where it should come
from. A server without an alternate address, one that ignores
CHANGE-REQUEST, or one that answers 420 to it yields ``server-cannot-tell``
instead of a wrong verdict (a server ignoring CHANGE-REQUEST would otherwise
make every NAT look like a full cone).
"""

from __future__ import annotations

from dataclasses import dataclass

from natkit.addr import Endpoint
from natkit.nat.prober import ProbeOutcome, Prober
from natkit.nat.types import NatType
from natkit.stun.attributes import ChangeRequest

__all__ = ["ClassicResult", "ClassicTest"]


@dataclass(frozen=True, slots=True)
class ClassicResult:
    nat_type: NatType
    public_address: Endpoint | None
    local_address: Endpoint
    reason: str = ""


class ClassicTest:
    """Drives the decision tree through a shared :class:`Prober`."""

    def __init__(
        self, prober: Prober, local: Endpoint, server: Endpoint, *, test2_local: Endpoint
    ) -> None:
        self.prober = prober
        self.local = local
        self.test2_local = test2_local
        self.server = server
        self.result: ClassicResult | None = None
        self._outcomes: dict[str, ProbeOutcome] = {}
        self._phase2_started = False

    def start(self, *, now: float) -> None:
        p, loc, srv = self.prober, self.local, self.server
        p.probe("classic.test1", loc, srv, now=now)
        p.probe("classic.test2", self.test2_local, srv, now=now, change=ChangeRequest(True, True))
        p.probe("classic.test3", loc, srv, now=now, change=ChangeRequest(False, True))

    def on_outcome(self, outcome: ProbeOutcome, *, now: float) -> None:
        if self.result is not None or not outcome.name.startswith("classic."):
            return
        self._outcomes[outcome.name.removeprefix("classic.")] = outcome
        self._decide(now)

    def _finish(self, nat_type: NatType, reason: str = "") -> None:
        t1 = self._outcomes.get("test1")
        self.result = ClassicResult(nat_type, t1.mapped if t1 else None, self.local, reason)

    def _decide(self, now: float) -> None:
        o = self._outcomes
        t1 = o.get("test1")
        if t1 is None:
            return
        m1 = t1.mapped
        if m1 is None:
            if any(x.succeeded for x in o.values()):
                self._finish(NatType.UNDETERMINED, "Test I failed while another test succeeded")
            elif t1.response is not None:
                self._finish(NatType.UNDETERMINED, "the server refused Test I")
            else:
                self._finish(NatType.UDP_BLOCKED)
            return
        ca = t1.other_address
        if ca is None:
            self._finish(NatType.UNDETERMINED, "the server reports no alternate address")
            return
        if ca.host == self.server.host or ca.port == self.server.port:
            self._finish(
                NatType.UNDETERMINED,
                "the server's alternate address is not a different IP and port",
            )
            return
        if m1 != self.local and not self._phase2_started:
            # Test II has its own socket, so Test I to CA need not wait for it.
            self._phase2_started = True
            self.prober.probe("classic.test1b", self.local, ca, now=now)
        t2 = o.get("test2")
        if t2 is None:
            return
        if t2.response is not None and not t2.succeeded:
            self._finish(NatType.UNDETERMINED, "the server does not support CHANGE-REQUEST")
            return
        if t2.succeeded and t2.source != ca:
            self._finish(NatType.UNDETERMINED, f"Test II answered from {t2.source}, not {ca}")
            return
        if m1 == self.local:
            self._finish(NatType.OPEN_INTERNET if t2.succeeded else NatType.SYMMETRIC_UDP_FIREWALL)
            return
        if t2.succeeded:
            self._finish(NatType.FULL_CONE)
            return
        t1b = o.get("test1b")
        if t1b is None:
            return
        if t1b.mapped is None:
            self._finish(NatType.UNDETERMINED, "Test I to the alternate address got no answer")
            return
        if t1b.mapped != m1:
            self._finish(NatType.SYMMETRIC)
            return
        t3 = o.get("test3")
        if t3 is None:
            return
        if t3.succeeded:
            expected = Endpoint(self.server.host, ca.port)
            if t3.source != expected:
                self._finish(
                    NatType.UNDETERMINED, f"Test III answered from {t3.source}, not {expected}"
                )
                return
            self._finish(NatType.RESTRICTED_CONE)
        else:
            self._finish(NatType.PORT_RESTRICTED_CONE)

    @property
    def done(self) -> bool:
        return self.result is not None
