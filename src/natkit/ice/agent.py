"""The sans-IO ICE agent (RFC 8445, RFC 5245 compatibility, RFC 7675, RFC 8838).

Theory of operation
-------------------
The application declares media *streams* with their *components*
(:meth:`IceAgent.add_stream`), hands the agent its local candidates as they
are gathered and the peer's candidates and credentials as they arrive over
signalling (trickle, RFC 8838), and wires the agent to sockets: every
datagram received on a local *base* goes to :meth:`receive_datagram` with the
base that received it, every :class:`Transmit` from :meth:`datagrams_to_send`
is sent from the base it names (a relayed candidate's base is its relayed
address: the driver sends through that TURN allocation).

Connectivity checks (§7.2) are STUN Binding requests with short-term
credentials; this module builds and answers them and runs their
retransmissions itself (§14.3: ``RTO = max(500 ms, Ta * N)``), because a
check is bound to a 5-tuple, not to a server. New checks leave at most every
``Ta`` (§14.2), chosen by :class:`~natkit.ice.checklist.CheckListSet`
(triggered first, then the best Waiting pair, unfreezing by foundation).

Nomination: the controlling agent nominates, per component, the best valid
pair as soon as no higher-priority pair is still pending, or
``nomination_delay`` after its first valid pair, by a check carrying
USE-CANDIDATE (§8.1.1, regular nomination); with ``aggressive_nomination``
every check carries it (RFC 5245 §8.1.1.2) and the best nominated pair is
used. The controlled agent nominates a pair when USE-CANDIDATE arrived on it
and its own check on it succeeded (§7.3.1.5).

After selection the agent keeps the selected pair (and, with hot spares, the
best pair of every other path) alive with consent checks (RFC 7675) and
fails over as :mod:`natkit.ice.consent` describes (``FailoverExhausted``
when no spare is left to fail over to). With hot spares the
remaining checks go on after nomination, and a direct pair that succeeds
after a relayed one was selected replaces it (the controlling agent
re-nominates). A controlled agent with valid pairs re-checks its best one
while it waits for a nomination, and gives up after ``nomination_timeout``. Application data shares
the sockets with STUN and is told apart by its first byte (RFC 7983 §7:
0-3 is STUN); it is accepted on any pair of the component.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from natkit.addr import Endpoint, Transport
from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.ice.candidate import Candidate, CandidateType, compute_foundation
from natkit.ice.checklist import (
    CandidatePair,
    CheckList,
    CheckListSet,
    PairState,
    compute_pair_priority,
)
from natkit.ice.config import IceConfig
from natkit.ice.consent import choose_spares, has_fresh_spare, jittered, pick_failover
from natkit.ice.events import (
    CandidatePairFailed,
    CandidatePairSucceeded,
    ChecksCompleted,
    ConsentLost,
    DataReceived,
    FailoverExhausted,
    IceEvent,
    IceFailed,
    PairNominated,
    PeerReflexiveDiscovered,
    RoleSwitched,
    SelectedPairChanged,
)
from natkit.stun import attributes as at
from natkit.stun.constants import AttributeType, ErrorCode, MessageClass, Method
from natkit.stun.credentials import short_term_key
from natkit.stun.message import StunMessage, parse_message, serialize_message, verify_integrity

__all__ = ["IceAgent", "IceCredentials", "Transmit"]

_ICE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
_A = AttributeType
_UNDERSTOOD = frozenset(
    int(a)
    for a in (
        _A.USERNAME,
        _A.MESSAGE_INTEGRITY,
        _A.MESSAGE_INTEGRITY_SHA256,
        _A.ERROR_CODE,
        _A.UNKNOWN_ATTRIBUTES,
        _A.XOR_MAPPED_ADDRESS,
        _A.PRIORITY,
        _A.USE_CANDIDATE,
    )
)
_PRFLX_TYPE_PREFERENCE = 110
_MAX_PRIORITY = 2**31 - 1


class IceCredentials(NamedTuple):
    """ICE ufrag and pwd (RFC 8445 §5.3, RFC 8839 §5.4)."""

    ufrag: str
    pwd: str


class Transmit(NamedTuple):
    """A datagram to send from the local base ``local`` to ``remote``."""

    data: bytes
    local: Endpoint
    remote: Endpoint


@dataclass(slots=True, eq=False)
class _Generation:
    """The credentials of one ICE generation (restart makes a new one, §9)."""

    number: int
    local: IceCredentials
    local_key: bytes
    remote: IceCredentials | None = None
    remote_key: bytes = b""


@dataclass(slots=True, eq=False)
class _Component:
    id: int
    selected: CandidatePair | None = None
    previous: CandidatePair | None = None  # the pair used across an ICE restart
    spares: list[CandidatePair] = field(default_factory=list)
    first_valid_at: float | None = None
    nominate_at: float | None = None
    recheck_at: float | None = None  # controlled, valid pairs, no nomination yet
    give_up_at: float | None = None
    switched_at: float = -math.inf
    next_due: float | None = None
    exhausted_at: float | None = None  # when FailoverExhausted was reported


@dataclass(slots=True, eq=False)
class _Stream:
    id: int
    components: dict[int, _Component]
    gen: _Generation
    checklist: CheckList
    old_gen: _Generation | None = None
    local_candidates: list[Candidate] = field(default_factory=list)
    local_by_addr: dict[tuple[int, Endpoint, Endpoint], Candidate] = field(default_factory=dict)
    local_by_base: dict[Endpoint, Candidate] = field(default_factory=dict)
    pairing_locals: dict[int, dict[Endpoint, Candidate]] = field(default_factory=dict)
    remote_candidates: dict[tuple[int, Endpoint], Candidate] = field(default_factory=dict)
    local_eoc: bool = False
    remote_eoc: bool = False
    completed: bool = False
    failed: bool = False


@dataclass(slots=True, eq=False)
class _Check:
    """One Binding transaction on a pair: a connectivity or a consent check."""

    tid: bytes
    pair: CandidatePair
    consent: bool
    data: bytes
    key: bytes
    use_candidate: bool
    controlling: bool
    priority: int
    rto: float
    sends: int = 1
    deadline: float = 0.0
    cancelled: bool = False
    first_sent: float = 0.0
    retransmitted: bool = False  # Karn: the answer's RTT is then ambiguous


class IceAgent:
    """One ICE agent: every stream and component of a session (RFC 8445)."""

    def __init__(self, config: IceConfig | None = None, *, controlling: bool) -> None:
        self.config = config if config is not None else IceConfig()
        self._rng = self.config.rng
        self._controlling = controlling and not self.config.lite
        self.tie_breaker = self._rng.getrandbits(64)
        self._streams: dict[int, _Stream] = {}
        self._lists = CheckListSet()
        self._ready: set[int] = set()
        self._checks: dict[bytes, _Check] = {}
        self._check_heap: list[tuple[float, int, _Check]] = []
        self._serial = itertools.count()
        self._out: list[Transmit] = []
        self._events: deque[IceEvent] = deque()
        self._ufrags: dict[str, tuple[_Stream, _Generation]] = {}
        self._pairs_by_tuple: dict[tuple[Endpoint, Endpoint], CandidatePair] = {}
        self._next_tick: float | None = None
        self._last_tick = -math.inf
        self._now = 0.0
        self._remote_lite = False
        self.checks_sent = 0
        """Connectivity-check transmissions so far (retransmissions included)."""

    # -- properties ----------------------------------------------------------------

    @property
    def controlling(self) -> bool:
        return self._controlling

    @property
    def lite(self) -> bool:
        return self.config.lite

    # -- streams and credentials ----------------------------------------------------

    def add_stream(self, components: int = 1) -> int:
        """Declare a media stream with components 1..``components`` (§5.1.1;
        one component for rtcp-mux, two for RTP and RTCP); returns its ID."""
        if not 1 <= components <= 256:
            raise LocalProtocolError(f"a stream has 1 to 256 components, not {components}")
        stream_id = len(self._streams)
        gen = self._new_generation(0)
        stream = _Stream(
            id=stream_id,
            components={c: _Component(c) for c in range(1, components + 1)},
            gen=gen,
            checklist=self._lists.add_list(stream_id),
            pairing_locals={c: {} for c in range(1, components + 1)},
        )
        self._streams[stream_id] = stream
        self._ufrags[gen.local.ufrag] = (stream, gen)
        return stream_id

    def local_credentials(self, stream: int) -> IceCredentials:
        """The ufrag/pwd to signal for ``stream`` (§5.3; new after a restart)."""
        return self._stream(stream).gen.local

    def set_remote_credentials(self, stream: int, ufrag: str, pwd: str) -> None:
        """The peer's ufrag/pwd for ``stream``; checks may start (§6.1.1).

        New credentials for a stream that already has others mean the peer
        restarted ICE (§9.1.1): the stream restarts too, and the application
        must signal the new :meth:`local_credentials`.
        """
        if not ufrag or not pwd:
            raise LocalProtocolError("remote ufrag and pwd must not be empty")
        st = self._stream(stream)
        new = IceCredentials(ufrag, pwd)
        if st.gen.remote is not None and st.gen.remote != new:
            self._restart_stream(st)
        st.gen.remote = new
        st.gen.remote_key = short_term_key(pwd)
        if not self.config.lite:
            self._ready.add(stream)
            self._wake()

    def set_remote_lite(self, lite: bool = True) -> None:
        """The peer is an ICE-lite agent (a=ice-lite): a full agent then is
        controlling (§6.1.1)."""
        self._remote_lite = lite
        if lite and not self.config.lite and not self._controlling:
            self._switch_role(True)

    # -- candidates (trickle, RFC 8838) ---------------------------------------------

    def add_local_candidate(self, stream: int, candidate: Candidate) -> None:
        """A gathered local candidate (it must carry its ``base``); it is
        paired with the remote candidates known so far (§6.1.2.2)."""
        st = self._stream(stream)
        if candidate.base is None:
            raise LocalProtocolError("a local candidate needs its base")
        if candidate.component not in st.components:
            raise LocalProtocolError(f"stream {stream} has no component {candidate.component}")
        key = (candidate.component, candidate.address, candidate.base)
        if key in st.local_by_addr:
            return
        st.local_by_addr[key] = candidate
        st.local_candidates.append(candidate)
        base = candidate.base
        if candidate.address == base or base not in st.local_by_base:
            st.local_by_base[base] = candidate
        if candidate.transport is not Transport.UDP or self.config.lite:
            return
        # §6.1.2.4: a server-reflexive candidate is replaced by its base, so
        # pairing uses one candidate per base: the one whose address is it.
        pairing = st.pairing_locals[candidate.component]
        current = pairing.get(base)
        if current is not None and (current.address == base or candidate.address != base):
            return
        pairing[base] = candidate
        for remote in list(st.remote_candidates.values()):
            if remote.component == candidate.component:
                self._add_pair(st, candidate, remote)

    def end_of_local_candidates(self, stream: int) -> None:
        """Gathering for ``stream`` is done (RFC 8838 §8.2)."""
        st = self._stream(stream)
        st.local_eoc = True
        self._check_failed(st)

    def add_remote_candidate(self, stream: int, candidate: Candidate) -> None:
        """A candidate the peer signalled (§5.3, RFC 8838 §11); paired with
        the local candidates gathered so far."""
        st = self._stream(stream)
        if candidate.component not in st.components:
            raise LocalProtocolError(f"stream {stream} has no component {candidate.component}")
        key = (candidate.component, candidate.address)
        known = st.remote_candidates.get(key)
        if known is not None and (
            known.type is not CandidateType.PEER_REFLEXIVE
            or candidate.type is CandidateType.PEER_REFLEXIVE
        ):
            return
        # A signalled candidate replaces a peer-reflexive one learned from a
        # check (§7.3.1.3, RFC 8838 §11.4): the pairs already made with it
        # (the selected one included) take its type, priority and
        # foundation, and the other local candidates are paired with it now.
        st.remote_candidates[key] = candidate
        if known is not None:
            self._upgrade_peer_reflexive(st, known, candidate)
        if candidate.transport is not Transport.UDP or self.config.lite:
            return
        for local in list(st.pairing_locals[candidate.component].values()):
            self._add_pair(st, local, candidate)

    def _upgrade_peer_reflexive(self, st: _Stream, prflx: Candidate, signalled: Candidate) -> None:
        for pair in st.checklist.pairs.values():
            if pair.remote is prflx:
                self._lists.replace_remote(pair, signalled, self._controlling)
        for comp in st.components.values():
            if comp.selected is not None and comp.selected.remote is signalled:
                self._refresh_spares(st, comp, self._now)

    def end_of_remote_candidates(self, stream: int) -> None:
        """The peer signalled end-of-candidates (RFC 8838 §13): from now on a
        stream without anything left to check fails."""
        st = self._stream(stream)
        st.remote_eoc = True
        self._check_failed(st)

    def local_candidates(self, stream: int) -> list[Candidate]:
        """The local candidates, peer-reflexive ones learned in checks included."""
        return list(self._stream(stream).local_candidates)

    def remote_candidates(self, stream: int) -> list[Candidate]:
        return list(self._stream(stream).remote_candidates.values())

    def pairs(self, stream: int) -> list[CandidatePair]:
        """The stream's check list, highest priority first (for inspection)."""
        return sorted(self._stream(stream).checklist.pairs.values(), key=lambda p: -p.priority)

    def selected_pair(self, stream: int, component: int) -> tuple[Candidate, Candidate] | None:
        """The (local, remote) candidates data is sent over, or ``None``."""
        pair = self._data_pair(self._component(stream, component))
        return None if pair is None else (pair.reported_local, pair.remote)

    # -- restart ------------------------------------------------------------------

    def restart(self, stream: int | None = None, *, now: float) -> None:
        """ICE restart (§9): new local credentials, check lists and remote
        candidates forgotten, local candidates kept. Data keeps flowing over
        the previously selected pairs until new ones are selected."""
        self._now = max(self._now, now)
        targets = list(self._streams.values()) if stream is None else [self._stream(stream)]
        for st in targets:
            self._restart_stream(st)

    def _restart_stream(self, st: _Stream) -> None:
        old = st.gen
        if any(c.selected is not None for c in st.components.values()):
            # The current generation carries data: it serves until the new
            # one is selected (its credentials keep answering consent checks).
            if st.old_gen is not None:
                self._ufrags.pop(st.old_gen.local.ufrag, None)
            st.old_gen = old
        else:
            # Nothing selected yet (a restart during a restart): the older
            # generation, if any, still carries the data.
            self._ufrags.pop(old.local.ufrag, None)
        st.gen = self._new_generation(old.number + 1)
        self._ufrags[st.gen.local.ufrag] = (st, st.gen)
        keep: set[int] = set()
        for comp in st.components.values():
            prev = comp.selected if comp.selected is not None else comp.previous
            comp.previous = prev
            if prev is not None:
                keep.add(id(prev))
                comp.next_due = self._now
            comp.selected = None
            comp.spares = []
            comp.exhausted_at = None
            comp.first_valid_at = None
            comp.nominate_at = None
        for tid, check in list(self._checks.items()):
            if check.pair.stream == st.id and id(check.pair) not in keep:
                del self._checks[tid]
        for tup, pair in list(self._pairs_by_tuple.items()):
            if pair.stream == st.id and id(pair) not in keep:
                del self._pairs_by_tuple[tup]
        st.checklist = self._lists.reset_list(st.id)
        st.remote_candidates = {}
        st.remote_eoc = False
        st.completed = False
        st.failed = False
        self._ready.discard(st.id)

    def _new_generation(self, number: int) -> _Generation:
        rng = self._rng
        ufrag = "".join(rng.choice(_ICE_CHARS) for _ in range(8))
        while ufrag in self._ufrags:
            ufrag = "".join(rng.choice(_ICE_CHARS) for _ in range(8))
        pwd = "".join(rng.choice(_ICE_CHARS) for _ in range(24))
        return _Generation(number, IceCredentials(ufrag, pwd), short_term_key(pwd))

    # -- data ---------------------------------------------------------------------

    def send_data(self, stream: int, component: int, data: bytes, *, now: float) -> bool:
        """Queue application data on the component's selected pair (§12).

        Returns False, sending nothing, when the component has no usable pair
        (not yet selected, or consent lost).
        """
        comp = self._component(stream, component)
        pair = self._data_pair(comp)
        if pair is None:
            return False
        self._now = max(self._now, now)
        pair.last_sent = now
        self._out.append(Transmit(data, pair.local_base, pair.remote.address))
        return True

    def _data_pair(self, comp: _Component) -> CandidatePair | None:
        pair = comp.selected if comp.selected is not None else comp.previous
        if pair is None or pair.consent_lost:
            return None
        return pair

    # -- the sans-IO surface ------------------------------------------------------

    def receive_datagram(
        self, data: bytes, remote: Endpoint, *, local: Endpoint, now: float
    ) -> None:
        """A datagram arrived on the local base ``local`` from ``remote``.

        STUN (first byte 0-3, RFC 7983) is handled here; anything else is
        application data of the pair with that 5-tuple, or dropped.
        Malformed input is dropped (or answered 400), never raised.
        """
        self._now = max(self._now, now)
        if not data:
            return
        if data[0] < 4:
            try:
                msg = parse_message(data)
            except MalformedMessageError:
                return
            if msg.method != Method.BINDING:
                return
            try:
                if msg.message_class is MessageClass.REQUEST:
                    self._on_request(msg, remote, local, now)
                elif msg.message_class is not MessageClass.INDICATION:
                    self._on_response(msg, remote, local, now)
            except MalformedMessageError as exc:
                if msg.message_class is MessageClass.REQUEST and exc.error_code is not None:
                    self._reply_error(msg, ErrorCode.BAD_REQUEST, local, remote, None)
            return
        pair = self._pairs_by_tuple.get((local, remote))
        if pair is None:
            return
        self._events.append(
            DataReceived(stream=pair.stream, component=pair.component, data=data, remote=remote)
        )

    def datagrams_to_send(self, *, now: float) -> list[Transmit]:
        """Everything queued since the last call, in order."""
        self._now = max(self._now, now)
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        """The earliest deadline: the next paced check, a retransmission, a
        nomination, consent or keepalive check; ``None`` when idle."""
        best = self._next_tick
        heap = self._check_heap
        while heap:
            deadline, _, check = heap[0]
            if self._checks.get(check.tid) is check and check.deadline == deadline:
                if best is None or deadline < best:
                    best = deadline
                break
            heapq.heappop(heap)
        for st in self._streams.values():
            for comp in st.components.values():
                due = comp.next_due
                if due is not None and (best is None or due < best):
                    best = due
        return best

    def handle_timer(self, *, now: float) -> None:
        """Run everything due at ``now``."""
        self._now = max(self._now, now)
        heap = self._check_heap
        while heap and heap[0][0] <= now:
            deadline, _, check = heapq.heappop(heap)
            if self._checks.get(check.tid) is check and check.deadline == deadline:
                self._on_check_deadline(check, now)
        if self._next_tick is not None and self._next_tick <= now:
            self._tick(now)
        for st in list(self._streams.values()):
            for comp in st.components.values():
                if comp.next_due is not None and comp.next_due <= now:
                    self._maintain(st, comp, now)

    def next_event(self) -> IceEvent | None:
        return self._events.popleft() if self._events else None

    # -- lookups ------------------------------------------------------------------

    def _stream(self, stream: int) -> _Stream:
        st = self._streams.get(stream)
        if st is None:
            raise LocalProtocolError(f"no stream {stream}")
        return st

    def _component(self, stream: int, component: int) -> _Component:
        comp = self._stream(stream).components.get(component)
        if comp is None:
            raise LocalProtocolError(f"stream {stream} has no component {component}")
        return comp

    def _generation_of(self, pair: CandidatePair) -> _Generation | None:
        st = self._streams[pair.stream]
        if pair.generation == st.gen.number:
            return st.gen
        if st.old_gen is not None and pair.generation == st.old_gen.number:
            return st.old_gen
        return None

    # -- pairs --------------------------------------------------------------------

    def _add_pair(self, st: _Stream, local: Candidate, remote: Candidate) -> CandidatePair | None:
        """§6.1.2.2-6.1.2.5: same component, transport and address family;
        redundant pairs (same base and remote) are never created."""
        if local.address.family != remote.address.family:
            return None
        if st.completed and not self.config.hot_spares:
            return None
        checklist = st.checklist
        key = (local.component, local.effective_base, remote.address)
        existing = checklist.pairs.get(key)
        if existing is not None:
            return existing
        priority = compute_pair_priority(local, remote, self._controlling)
        if len(checklist.pairs) >= self.config.max_pairs and not self._evict_for(st, priority):
            return None
        pair = CandidatePair(
            stream=st.id,
            local=local,
            remote=remote,
            priority=priority,
            generation=st.gen.number,
        )
        self._lists.add_pair(pair, unfreeze=self._lists.should_unfreeze_new_pair(pair))
        self._pairs_by_tuple[(pair.local_base, remote.address)] = pair
        self._wake()
        return pair

    def _evict_for(self, st: _Stream, priority: int) -> bool:
        """§6.1.2.5: a full check list drops its lowest-priority Frozen or
        Waiting pair for a better one (O(n), only when full)."""
        victims = [
            p
            for p in st.checklist.pairs.values()
            if p.state is PairState.FROZEN or p.state is PairState.WAITING
        ]
        if not victims:
            return False
        worst = min(victims, key=lambda p: p.priority)
        if worst.priority >= priority:
            return False
        self._lists.remove_pair(worst)
        if self._pairs_by_tuple.get((worst.local_base, worst.remote.address)) is worst:
            del self._pairs_by_tuple[(worst.local_base, worst.remote.address)]
        return True

    # -- pacing (§6.1.4.2, §14.2) -----------------------------------------------------

    def _wake(self) -> None:
        if self._next_tick is None and not self.config.lite:
            self._next_tick = max(self._last_tick + self.config.ta, self._now)

    def _tick(self, now: float) -> None:
        pair = self._lists.next_check(self._ready)
        if pair is None:
            self._next_tick = None
            return
        self._last_tick = now
        self._next_tick = now + self.config.ta
        self._send_check(pair, now)

    def _send_check(self, pair: CandidatePair, now: float) -> None:
        st = self._streams[pair.stream]
        gen = st.gen
        if gen.remote is None:
            return
        use_candidate = self._controlling and (self.config.aggressive_nomination or pair.nominating)
        pair.recheck = False
        if pair.state is not PairState.SUCCEEDED:
            self._lists.set_state(pair, PairState.IN_PROGRESS)
        # §14.3, counting this check's own pair among the In-Progress ones.
        rto = max(self.config.rto, self.config.ta * self._lists.waiting_or_in_progress)
        check = self._new_check(pair, gen, consent=False, use_candidate=use_candidate, rto=rto)
        pair.check_tid = check.tid
        self._start_check(check, now)

    def _new_check(
        self,
        pair: CandidatePair,
        gen: _Generation,
        *,
        consent: bool,
        use_candidate: bool,
        rto: float,
    ) -> _Check:
        """§7.2.2: USERNAME ``rfrag:lfrag``, PRIORITY of a would-be peer-reflexive
        candidate, ICE-CONTROLLING/ICE-CONTROLLED with the tie-breaker,
        USE-CANDIDATE when nominating; MESSAGE-INTEGRITY and FINGERPRINT."""
        assert gen.remote is not None  # callers check: a check needs the peer's ufrag
        tid = self._rng.randbytes(12)
        local_pref = (pair.local.priority >> 8) & 0xFFFF
        priority = (_PRFLX_TYPE_PREFERENCE << 24) + (local_pref << 8) + (256 - pair.local.component)
        msg = StunMessage.request(Method.BINDING, tid)
        msg.add(at.USERNAME, f"{gen.remote.ufrag}:{gen.local.ufrag}")
        msg.add(at.PRIORITY, priority)
        if self._controlling:
            msg.add(at.ICE_CONTROLLING, self.tie_breaker)
        else:
            msg.add(at.ICE_CONTROLLED, self.tie_breaker)
        if use_candidate:
            msg.add(at.USE_CANDIDATE, True)
        if self.config.software:
            msg.add(at.SOFTWARE, self.config.software)
        data = serialize_message(msg, key=gen.remote_key, fingerprint=True)
        return _Check(
            tid=tid,
            pair=pair,
            consent=consent,
            data=data,
            key=gen.remote_key,
            use_candidate=use_candidate,
            controlling=self._controlling,
            priority=priority,
            rto=rto,
        )

    def _start_check(self, check: _Check, now: float) -> None:
        self._checks[check.tid] = check
        check.first_sent = now
        if check.consent:
            # A consent check is sent once: the next one is its retransmission.
            check.sends = self.config.rc
            check.deadline = now + self.config.consent_interval
        else:
            self.checks_sent += 1
            check.deadline = now + (check.rto if self.config.rc > 1 else self.config.rm * check.rto)
        heapq.heappush(self._check_heap, (check.deadline, next(self._serial), check))
        self._transmit(check.pair, check.data, now)

    def _transmit(self, pair: CandidatePair, data: bytes, now: float) -> None:
        pair.last_sent = now
        self._out.append(Transmit(data, pair.local_base, pair.remote.address))

    def _on_check_deadline(self, check: _Check, now: float) -> None:
        """§14.3 / RFC 8489 §6.2.1: double the RTO up to Rc transmissions,
        then wait Rm * RTO; a check that times out fails its pair."""
        cfg = self.config
        if check.sends < cfg.rc:
            check.sends += 1
            check.retransmitted = True
            self.checks_sent += 1
            interval = check.rto * (2 ** (check.sends - 1))
            if check.sends == cfg.rc:
                interval = cfg.rm * check.rto
            check.deadline = now + interval
            heapq.heappush(self._check_heap, (check.deadline, next(self._serial), check))
            self._transmit(check.pair, check.data, now)
            return
        del self._checks[check.tid]
        if not check.consent and not check.cancelled:
            self._fail_pair(check.pair, now)

    # -- answering checks (§7.3) --------------------------------------------------------

    def _reply(
        self, msg: StunMessage, local: Endpoint, remote: Endpoint, key: bytes | None
    ) -> None:
        data = serialize_message(msg, key=key, fingerprint=True)
        self._out.append(Transmit(data, local, remote))

    def _reply_error(
        self,
        request: StunMessage,
        code: int,
        local: Endpoint,
        remote: Endpoint,
        key: bytes | None,
    ) -> None:
        self._reply(request.error_response(code), local, remote, key)

    def _on_request(self, msg: StunMessage, src: Endpoint, local: Endpoint, now: float) -> None:
        """§7.3: authenticate (400 without USERNAME or MESSAGE-INTEGRITY, 401
        for an unknown ufrag or a wrong MAC, RFC 8489 §9.1.3), resolve role
        conflicts (§7.3.1.1), answer with XOR-MAPPED-ADDRESS, learn a
        peer-reflexive remote candidate (§7.3.1.3), queue a triggered check
        (§7.3.1.4) and note USE-CANDIDATE (§7.3.1.5)."""
        username = msg.get(at.USERNAME)
        if username is None or (msg.integrity_offset < 0 and msg.integrity_sha256_offset < 0):
            self._reply_error(msg, ErrorCode.BAD_REQUEST, local, src, None)
            return
        lfrag, sep, _rfrag = username.partition(":")
        entry = self._ufrags.get(lfrag)
        if entry is None or not sep:
            self._reply_error(msg, ErrorCode.UNAUTHENTICATED, local, src, None)
            return
        st, gen = entry
        if not verify_integrity(msg, gen.local_key):
            self._reply_error(msg, ErrorCode.UNAUTHENTICATED, local, src, None)
            return
        key = gen.local_key
        unknown = msg.unknown_required(_UNDERSTOOD)
        if unknown:
            resp = msg.error_response(ErrorCode.UNKNOWN_ATTRIBUTE)
            resp.add(at.UNKNOWN_ATTRIBUTES, unknown)
            self._reply(resp, local, src, key)
            return
        priority = msg.get(at.PRIORITY)
        if priority is None or not 1 <= priority <= _MAX_PRIORITY:
            self._reply_error(msg, ErrorCode.BAD_REQUEST, local, src, key)
            return
        their_controlling = msg.get(at.ICE_CONTROLLING)
        their_controlled = msg.get(at.ICE_CONTROLLED)
        if not self._resolve_role_conflict(their_controlling, their_controlled):
            self._reply_error(msg, ErrorCode.ROLE_CONFLICT, local, src, key)
            return
        resp = msg.success().add(at.XOR_MAPPED_ADDRESS, src)
        if self.config.software:
            resp.add(at.SOFTWARE, self.config.software)
        self._reply(resp, local, src, key)
        if gen is not st.gen:
            return  # a consent check on the previous generation's pair
        local_cand = st.local_by_base.get(local)
        if local_cand is None:
            return
        use_candidate = msg.has(_A.USE_CANDIDATE) and their_controlling is not None
        self._after_answer(st, local_cand, src, priority, use_candidate, now)

    def _resolve_role_conflict(self, controlling: int | None, controlled: int | None) -> bool:
        """§7.3.1.1: False means answer 487 (the peer must switch)."""
        if self._controlling and controlling is not None:
            if self.tie_breaker >= controlling:
                return False
            self._switch_role(False)
        elif not self._controlling and controlled is not None:
            if self.config.lite or self.tie_breaker < controlled:
                return False
            self._switch_role(True)
        return True

    def _after_answer(
        self,
        st: _Stream,
        local_cand: Candidate,
        src: Endpoint,
        priority: int,
        use_candidate: bool,
        now: float,
    ) -> None:
        component = local_cand.component
        remote = st.remote_candidates.get((component, src))
        if remote is None:
            if len(st.remote_candidates) >= 2 * self.config.max_pairs:
                return  # bounded: learned candidates cost memory
            remote = Candidate(
                foundation=compute_foundation(CandidateType.PEER_REFLEXIVE, src.host),
                component=component,
                transport=Transport.UDP,
                priority=priority,
                address=src,
                type=CandidateType.PEER_REFLEXIVE,
            )
            st.remote_candidates[(component, src)] = remote
            self._events.append(
                PeerReflexiveDiscovered(
                    stream=st.id, component=component, candidate=remote, local=False
                )
            )
        pair = st.checklist.pairs.get((component, local_cand.effective_base, src))
        if pair is None:
            if len(st.checklist.pairs) >= self.config.max_pairs:
                return
            pair = CandidatePair(
                stream=st.id,
                local=local_cand,
                remote=remote,
                priority=compute_pair_priority(local_cand, remote, self._controlling),
                generation=st.gen.number,
            )
            self._lists.add_pair(pair, unfreeze=False)
            self._pairs_by_tuple[(pair.local_base, src)] = pair
        if self.config.lite:
            # A lite agent never checks: the peer's check proves the pair (§2.5).
            if pair.state is not PairState.SUCCEEDED:
                pair.valid_local = pair.local
                pair.valid_priority = pair.priority
                self._lists.set_state(pair, PairState.SUCCEEDED)
            pair.last_response = now
            if use_candidate:
                self._nominated(st, pair, now)
            return
        if use_candidate and not self._controlling:
            pair.remote_nominated = True
        if pair.state is PairState.SUCCEEDED:
            if use_candidate and not self._controlling:
                self._nominated(st, pair, now)
            return
        if pair.state is PairState.IN_PROGRESS:
            # §7.3.1.4: cancel the running check (no more retransmissions, no
            # failure on timeout, a late answer still counts) and check again
            # now that the peer's check has opened the path.
            running = self._checks.get(pair.check_tid)
            if running is not None and not running.cancelled:
                running.cancelled = True
                running.sends = self.config.rc
                running.deadline = now + self.config.rm * running.rto
                heapq.heappush(self._check_heap, (running.deadline, next(self._serial), running))
            self._lists.set_state(pair, PairState.WAITING)
        self._lists.enqueue_triggered(pair)
        self._wake()

    # -- responses to our checks (§7.2.5) ------------------------------------------------

    def _on_response(self, msg: StunMessage, src: Endpoint, local: Endpoint, now: float) -> None:
        check = self._checks.get(msg.transaction_id)
        if check is None or not verify_integrity(msg, check.key):
            return  # §7.2.5.1: an unauthenticated response is discarded
        del self._checks[check.tid]
        pair = check.pair
        if check.consent:
            if (
                msg.message_class is MessageClass.SUCCESS
                and src == pair.remote.address
                and local == pair.local_base
            ):
                pair.last_response = now
            return
        if msg.message_class is MessageClass.ERROR:
            err = msg.error
            if err is not None and err.code == ErrorCode.ROLE_CONFLICT:
                # §7.2.5.1: switch to the role opposite of the one we sent,
                # then check the pair again.
                if self._controlling == check.controlling and not self.config.lite:
                    self._switch_role(not check.controlling)
                self._lists.set_state(pair, PairState.WAITING)
                self._lists.enqueue_triggered(pair)
                self._wake()
                return
            self._fail_pair(pair, now)
            return
        if src != pair.remote.address or local != pair.local_base:
            self._fail_pair(pair, now)  # §7.2.5.2.1: non-symmetric addresses
            return
        mapped = msg.get(at.XOR_MAPPED_ADDRESS)
        self._succeed_pair(check, mapped if mapped is not None else pair.local.address, now)

    def _succeed_pair(self, check: _Check, mapped: Endpoint, now: float) -> None:
        """§7.2.5.3: the valid pair, peer-reflexive discovery, unfreezing and
        nomination."""
        pair = check.pair
        st = self._streams[pair.stream]
        component = pair.component
        valid_local = pair.local
        if mapped != pair.local.address:
            found = st.local_by_addr.get((component, mapped, pair.local_base))
            if found is None:
                local_pref = (pair.local.priority >> 8) & 0xFFFF
                found = Candidate.local(
                    CandidateType.PEER_REFLEXIVE,
                    mapped,
                    base=pair.local_base,
                    component=component,
                    local_preference=local_pref,
                )
                st.local_by_addr[(component, mapped, pair.local_base)] = found
                st.local_candidates.append(found)
                self._events.append(
                    PeerReflexiveDiscovered(
                        stream=st.id, component=component, candidate=found, local=True
                    )
                )
            valid_local = found
        pair.valid_local = valid_local
        pair.valid_priority = compute_pair_priority(valid_local, pair.remote, self._controlling)
        pair.last_response = now
        if not check.retransmitted:
            pair.rtt = now - check.first_sent
        newly = pair.state is not PairState.SUCCEEDED
        self._lists.set_state(pair, PairState.SUCCEEDED)
        comp = st.components[component]
        if newly:
            self._lists.unfreeze_foundation(pair.foundation)
            self._events.append(
                CandidatePairSucceeded(
                    stream=st.id, component=component, local=valid_local, remote=pair.remote
                )
            )
            if comp.first_valid_at is None:
                comp.first_valid_at = now
        self._wake()
        nominated_by_us = check.use_candidate and check.controlling
        if nominated_by_us or (pair.remote_nominated and not self._controlling):
            self._nominated(st, pair, now)
        elif comp.selected is not None and self.config.hot_spares:
            if self._is_upgrade(pair, comp.selected):
                self._switch_selected(st, comp, pair, "upgrade", now)
                pair.nominating = True
                self._lists.enqueue_triggered(pair)
            else:
                comp.spares = choose_spares(st.checklist.pairs.values(), comp.selected)
                self._due(comp, now)
        else:
            self._maybe_nominate(st, comp, now)
        self._await_nomination(st, comp, now)

    def _is_upgrade(self, pair: CandidatePair, selected: CandidatePair) -> bool:
        """A direct pair that succeeds after a relayed one was selected
        (checks go on with hot spares): the controlling agent moves media off
        the relay and re-nominates (§8.1.1 nominates once; natkit's peers
        follow a better nomination, others keep using the relayed pair)."""
        if not self._controlling or self.config.lite or pair.consent_lost:
            return False
        relayed = CandidateType.RELAYED
        selected_relayed = relayed in (selected.local.type, selected.remote.type)
        pair_relayed = relayed in (pair.local.type, pair.remote.type)
        return (
            selected_relayed and not pair_relayed and pair.valid_priority > selected.valid_priority
        )

    def _await_nomination(self, st: _Stream, comp: _Component, now: float) -> None:
        """A controlled component with valid pairs and nothing pending waits
        for the nomination: it re-checks its best valid pair now and then and
        gives up after ``nomination_timeout`` (see :class:`IceConfig`)."""
        if self._controlling or self.config.lite or comp.selected is not None:
            return
        pairs = st.checklist.by_component(comp.id)
        if any(p.is_pending for p in pairs):
            return
        if not any(p.state is PairState.SUCCEEDED for p in pairs):
            return
        comp.recheck_at = now + jittered(
            self._rng, self.config.consent_interval, self.config.consent_jitter
        )
        if comp.give_up_at is None:
            comp.give_up_at = now + self.config.nomination_timeout
        self._due(comp, comp.recheck_at)

    def _waiting_for_nomination(self, st: _Stream, comp: _Component, now: float) -> float:
        """Run the controlled side's wait (re-checks, give-up); its next deadline."""
        if comp.selected is not None or self._controlling:
            comp.recheck_at = comp.give_up_at = None
            return math.inf
        if comp.give_up_at is not None and now >= comp.give_up_at:
            comp.recheck_at = comp.give_up_at = None
            if not st.failed:
                st.failed = True
                self._events.append(IceFailed(stream=st.id, reason="no nomination"))
            return math.inf
        if comp.recheck_at is not None and now >= comp.recheck_at:
            valid = [
                p for p in st.checklist.by_component(comp.id) if p.state is PairState.SUCCEEDED
            ]
            if valid:
                best = max(valid, key=lambda p: p.valid_priority)
                best.recheck = True
                self._lists.enqueue_triggered(best)
                self._wake()
            comp.recheck_at = now + jittered(
                self._rng, self.config.consent_interval, self.config.consent_jitter
            )
        return min(
            comp.recheck_at if comp.recheck_at is not None else math.inf,
            comp.give_up_at if comp.give_up_at is not None else math.inf,
        )

    def _fail_pair(self, pair: CandidatePair, now: float) -> None:
        st = self._streams[pair.stream]
        if st.checklist.pairs.get(pair.key) is not pair:
            return
        self._lists.set_state(pair, PairState.FAILED)
        pair.nominating = False
        self._events.append(
            CandidatePairFailed(
                stream=st.id, component=pair.component, local=pair.local, remote=pair.remote
            )
        )
        self._wake()
        comp = st.components[pair.component]
        if comp.selected is None:
            self._maybe_nominate(st, comp, now)
        elif comp.selected is pair:
            self._due(comp, now)  # a failed re-nomination: fail over again
        self._check_failed(st)
        self._await_nomination(st, comp, now)

    def _check_failed(self, st: _Stream) -> None:
        """§8.1.2 / RFC 8838 §8: with both sides' end-of-candidates and nothing
        left pending, a component without a valid pair fails the stream."""
        if st.completed or st.failed or self.config.lite:
            return
        if not (st.local_eoc and st.remote_eoc) or st.checklist.pending:
            return
        valid = {p.component for p in st.checklist.pairs.values() if p.state is PairState.SUCCEEDED}
        missing = [c for c in st.components if c not in valid]
        if missing:
            st.failed = True
            self._events.append(
                IceFailed(stream=st.id, reason=f"no valid pair for component {missing[0]}")
            )

    # -- roles (§7.3.1.1, §7.2.5.1) ---------------------------------------------------

    def _switch_role(self, controlling: bool) -> None:
        self._controlling = controlling
        self._lists.reprioritize(controlling)
        self._events.append(RoleSwitched(controlling=controlling))
        for st in self._streams.values():
            for pair in st.checklist.pairs.values():
                if not controlling:
                    pair.nominating = False
            if controlling:
                for comp in st.components.values():
                    self._maybe_nominate(st, comp, self._now)

    # -- nomination (§8) ---------------------------------------------------------------

    def _maybe_nominate(self, st: _Stream, comp: _Component, now: float) -> None:
        """Regular nomination by the controlling agent (§8.1.1)."""
        if (
            not self._controlling
            or self.config.lite
            or self.config.aggressive_nomination
            or comp.selected is not None
        ):
            return
        pairs = st.checklist.by_component(comp.id)
        if any(p.nominating for p in pairs):
            return
        valid = [p for p in pairs if p.state is PairState.SUCCEEDED]
        if not valid:
            return
        best = max(valid, key=lambda p: p.valid_priority)
        if comp.first_valid_at is None:
            comp.first_valid_at = now
        deadline = comp.first_valid_at + self._nomination_wait(best)
        better_pending = any(p.is_pending and p.priority > best.valid_priority for p in pairs)
        if better_pending and now < deadline:
            comp.nominate_at = deadline
            self._due(comp, deadline)
            return
        comp.nominate_at = None
        best.nominating = True
        self._lists.enqueue_triggered(best)
        self._wake()

    def _nomination_wait(self, best: CandidatePair) -> float:
        """How long regular nomination waits, after the component's first
        valid pair, for a higher-priority pair to succeed (§8.1.1 leaves the
        choice to the agent): ``nomination_rtts`` round trips of the best
        valid pair, at least ``Ta`` and at most ``nomination_delay``; the
        full ``nomination_delay`` while no round trip is known. A direct path
        is no longer than the path through a relay, so a better pair whose
        check is in flight answers within about that time; one that succeeds
        later still replaces a relayed selection (hot spares, upgrade)."""
        cfg = self.config
        if best.rtt < 0:
            return cfg.nomination_delay
        return min(cfg.nomination_delay, max(cfg.ta, cfg.nomination_rtts * best.rtt))

    def _nominated(self, st: _Stream, pair: CandidatePair, now: float) -> None:
        """The pair is nominated (§8.1.1 success, §7.3.1.5): select it, or
        switch to it when it is better, or when the controlling peer moved
        off a pair that went silent (hot-spare re-nomination)."""
        pair.nominated = True
        pair.nominating = False
        comp = st.components[pair.component]
        current = comp.selected
        if current is None:
            comp.selected = pair
            comp.previous = None
            comp.nominate_at = None
            pair.last_response = max(pair.last_response, now)
            pair.next_check = now + self._check_interval()
            self._refresh_spares(st, comp, now)
            self._events.append(
                PairNominated(
                    stream=st.id,
                    component=comp.id,
                    local=pair.reported_local,
                    remote=pair.remote,
                )
            )
            self._check_completed(st, now)
            return
        if current is pair:
            return
        better = pair.valid_priority > current.valid_priority
        # The controlled agent follows a lower-priority nomination when the
        # controlling agent moved off a pair that went silent, or when its own
        # failover picked a pair the controlling agent did not nominate.
        stale = (
            current.consent_lost
            or not current.nominated
            or current.last_response < 0
            or now - current.last_response > self.config.failover_timeout / 2
        )
        if better or (not self._controlling and (stale or self.config.lite)):
            self._switch_selected(st, comp, pair, "nomination", now)

    def _check_completed(self, st: _Stream, now: float) -> None:
        if st.completed or any(c.selected is None for c in st.components.values()):
            return
        st.completed = True
        st.failed = False
        if st.old_gen is not None:
            self._ufrags.pop(st.old_gen.local.ufrag, None)
            st.old_gen = None
        if not self.config.hot_spares:
            # §8.1.2: nothing more to check once every component is selected.
            for pair in st.checklist.pairs.values():
                if pair.state is PairState.FROZEN or pair.state is PairState.WAITING:
                    self._lists.set_state(pair, PairState.FAILED)
        self._events.append(ChecksCompleted(stream=st.id))

    def _switch_selected(
        self, st: _Stream, comp: _Component, pair: CandidatePair, reason: str, now: float
    ) -> None:
        previous = comp.selected
        assert previous is not None  # callers switch only from a selected pair
        comp.selected = pair
        comp.switched_at = now
        pair.next_check = now
        self._refresh_spares(st, comp, now)
        self._events.append(
            SelectedPairChanged(
                stream=st.id,
                component=comp.id,
                local=pair.reported_local,
                remote=pair.remote,
                previous_local=previous.reported_local,
                previous_remote=previous.remote,
                reason=reason,
            )
        )

    def _refresh_spares(self, st: _Stream, comp: _Component, now: float) -> None:
        if self.config.hot_spares and comp.selected is not None and not self.config.lite:
            comp.spares = choose_spares(st.checklist.pairs.values(), comp.selected)
            for spare in comp.spares:
                if spare.next_check < now:
                    spare.next_check = now + self._check_interval()
        else:
            comp.spares = []
        self._due(comp, now)

    # -- consent, failover and keepalives (RFC 7675, §11) -----------------------------------

    def _check_interval(self) -> float:
        cfg = self.config
        base = cfg.failover_check_interval if cfg.hot_spares else cfg.consent_interval
        return jittered(self._rng, base, cfg.consent_jitter)

    def _due(self, comp: _Component, when: float) -> None:
        if comp.next_due is None or when < comp.next_due:
            comp.next_due = when

    def _maintain(self, st: _Stream, comp: _Component, now: float) -> None:
        cfg = self.config
        comp.next_due = None
        due = math.inf
        if comp.nominate_at is not None:
            if now >= comp.nominate_at:
                comp.nominate_at = None
                self._maybe_nominate(st, comp, now)
            if comp.nominate_at is not None:
                due = min(due, comp.nominate_at)
        if comp.recheck_at is not None or comp.give_up_at is not None:
            due = min(due, self._waiting_for_nomination(st, comp, now))
        selected = comp.selected if comp.selected is not None else comp.previous
        if selected is None:
            comp.next_due = None if due == math.inf else due
            return
        if not cfg.lite:
            monitored = [selected, *comp.spares] if comp.selected is not None else [selected]
            for pair in monitored:
                if pair.consent_lost:
                    continue
                # Deadlines are compared as computed (a + b), never as now - a >= b:
                # float rounding would leave a timer due that never fires.
                if now >= pair.last_response + cfg.consent_timeout:
                    self._consent_lost(st, comp, pair, now)
                    continue
                if now >= pair.next_check:
                    gen = self._generation_of(pair)
                    if gen is not None and gen.remote is not None:
                        check = self._new_check(
                            pair, gen, consent=True, use_candidate=False, rto=cfg.rto
                        )
                        self._start_check(check, now)
                    pair.next_check = now + self._check_interval()
                due = min(due, pair.next_check, pair.last_response + cfg.consent_timeout)
            current = comp.selected
            if cfg.hot_spares and current is not None and not current.consent_lost:
                holddown_end = comp.switched_at + cfg.failover_holddown
                if now > current.last_response + cfg.failover_timeout:
                    self._check_exhausted(st, comp, current, now)
                    if now < holddown_end:
                        due = min(due, holddown_end)
                    else:
                        spare = pick_failover(
                            comp.spares,
                            now=now,
                            timeout=cfg.failover_timeout,
                            fresh=self._spare_freshness(),
                            failed=current,
                        )
                        if spare is not None:
                            self._failover(st, comp, spare, now)
                            due = min(due, now)
                else:
                    if comp.exhausted_at is not None and current.last_response > comp.exhausted_at:
                        comp.exhausted_at = None  # a path answers again
                    due = min(due, current.last_response + cfg.failover_timeout + 1e-3)
        keep = comp.selected if comp.selected is not None else comp.previous
        if keep is not None and not keep.consent_lost:
            if now >= keep.last_sent + cfg.tr:
                # §11: a Binding indication keeps NAT bindings open.
                ind = StunMessage(Method.BINDING, MessageClass.INDICATION, self._rng.randbytes(12))
                self._transmit(keep, serialize_message(ind, fingerprint=True), now)
            due = min(due, keep.last_sent + cfg.tr)
        if due != math.inf:
            self._due(comp, due)

    def _check_exhausted(
        self, st: _Stream, comp: _Component, current: CandidatePair, now: float
    ) -> None:
        """The selected pair is past ``failover_timeout``: with no spare that
        answered its latest check either, report :class:`FailoverExhausted`
        once (the application restarts ICE, RFC 8445 §9)."""
        if comp.exhausted_at is not None:
            return
        if has_fresh_spare(comp.spares, now=now, fresh=self._spare_freshness()):
            return
        comp.exhausted_at = now
        self._events.append(
            FailoverExhausted(
                stream=st.id,
                component=comp.id,
                local=current.reported_local,
                remote=current.remote,
                silent_since=current.last_response,
            )
        )

    def _spare_freshness(self) -> float:
        """The longest gap between two checks of a spare: one that has not
        answered within it (and two round trips) missed its latest check."""
        cfg = self.config
        return cfg.failover_check_interval * (1 + cfg.consent_jitter)

    def _failover(self, st: _Stream, comp: _Component, spare: CandidatePair, now: float) -> None:
        """Hot-spare switch: the controlling agent re-nominates the spare."""
        self._switch_selected(st, comp, spare, "failover", now)
        if self._controlling:
            spare.nominating = True
            self._lists.enqueue_triggered(spare)
            self._wake()

    def _consent_lost(self, st: _Stream, comp: _Component, pair: CandidatePair, now: float) -> None:
        """RFC 7675 §5.1: consent expired; stop sending on the pair."""
        pair.consent_lost = True
        if pair is comp.previous:
            comp.previous = None
        if pair is not comp.selected:
            if pair in comp.spares:
                comp.spares = [p for p in comp.spares if p is not pair]
            return
        self._events.append(
            ConsentLost(
                stream=st.id, component=comp.id, local=pair.reported_local, remote=pair.remote
            )
        )
        spare = pick_failover(
            comp.spares,
            now=now,
            timeout=self.config.failover_timeout,
            fresh=self._spare_freshness(),
            failed=pair,
        )
        if spare is not None:
            self._failover(st, comp, spare, now)
            return
        comp.selected = None
        comp.spares = []
        st.completed = False
        st.failed = True
        self._events.append(IceFailed(stream=st.id, reason="consent lost"))
