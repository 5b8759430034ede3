"""The stateful forking proxy (RFC 3261 §16; RFC 5626 §7 for outbound flows), sans-IO.

Theory of operation
-------------------
A :class:`ForkingProxy` forwards a request to a set of targets chosen by
its caller (the home proxy's router: the location service's bindings of the
Request-URI, each with its Path and flow) and returns one answer upstream.
It drives a :class:`~natkit.sip.transaction.TransactionLayer` that it shares
with the element: the element hands it the layer's events that concern the
proxied transactions.

* **Response context** (§16.6, §16.7): one per proxied server transaction.
  Targets are tried by q-value, highest first: targets of equal q in
  parallel, the next q-group only when every branch of the current one
  ended without a 2xx or 6xx (§16.6 "in parallel or sequentially").
* **Forwarding** (§16.6): each branch is a copy with the target as its
  Request-URI, the target's Path pushed as Route (RFC 3327 §5.4), an
  optional Record-Route, Max-Forwards decremented and the proxy's own Via
  with a fresh branch that carries the §16.6 step 8 loop-detection hash
  (:func:`~natkit.sip.forwarding.loop_branch`; the element answers a
  request that comes back with it 482, §16.3 step 4); the client transaction goes to the target's
  :class:`~natkit.sip.flow.Target` (an edge proxy, or straight over the
  flow the contact registered on).
* **Responses** (§16.7): 100 is absorbed; other provisionals and every 2xx
  are forwarded at once; a 2xx or 6xx cancels the other pending branches
  (§16.7 step 10) and stops new ones. Other final responses are kept; when
  no branch is pending and no target is left, the best is forwarded:
  a 6xx, else the lowest class, preferring 401, 407, 415, 420 and 484 among
  4xx, with every challenge of every 401/407 merged (step 7), a 503 turned
  into 500 (step 6), a branch timeout counting as 408 and a transport
  failure as 503 (so 500 upstream when it is the best).
* **Flows** (RFC 5626 §7): a target may name alternative flows to the same
  instance; a branch that fails with 430 Flow Failed, a transport error or
  a timeout moves on to the next flow instead of being a final answer —
  never two flows of one instance at once.
* **Servers** (RFC 3263 §4.3, RFC 3261 §16.7 step 10 / §17.1.1.2 transport
  errors): a target whose destinations are the servers of one next hop's
  DNS plan (``ForkTarget.servers``) tries them in the plan's order: a
  timeout, a transport failure (ICMP on UDP, a TCP connect that fails) or
  a 503 moves on to the next server with a new branch. An INVITE does not
  move on once the branch had a provisional response (the server has it:
  a second copy could ring twice).
* **CANCEL** (§16.10) from upstream: 200 for the CANCEL, then every pending
  branch is cancelled and no new one starts; the INVITE is answered by the
  branches' 487s. Timer C (§16.6 step 11) cancels a branch that rings too long.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from natkit.errors import LocalProtocolError
from natkit.sip.flow import Target
from natkit.sip.forwarding import forward_request, loop_branch, pop_own_via
from natkit.sip.headers import NameAddr, Via
from natkit.sip.message import SipRequest, SipResponse, make_response
from natkit.sip.transaction import TransactionLayer
from natkit.sip.transaction_events import (
    ClientTransactionId,
    RequestReceived,
    ResponseReceived,
    ServerTransactionId,
    TimerCExpired,
    TransactionEvent,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from natkit.sip.uri import Uri

__all__ = ["Destination", "ForkTarget", "ForkingProxy", "best_response_status"]

_PREFERRED_4XX = (401, 407, 415, 420, 484)
_RETRY_ON_NEXT_FLOW = frozenset({408, 430, 503})
_RETRY_ON_NEXT_SERVER = frozenset({503})


@dataclass(frozen=True, slots=True)
class Destination:
    """One way to reach a target: the Request-URI, the Route set to push
    (a binding's Path) and where the first hop is."""

    uri: Uri
    target: Target
    routes: tuple[NameAddr, ...] = ()
    record_routes: tuple[NameAddr, ...] | None = None
    """Record-Route values for this branch only (None: the request's)."""


@dataclass(frozen=True, slots=True)
class ForkTarget:
    """A target of the fork: a registered contact, with the flows that reach
    it in the order to try them (RFC 5626 §7: one at a time)."""

    destinations: tuple[Destination, ...]
    q: float = 1.0
    servers: bool = False
    """The destinations are one next hop's RFC 3263 servers, best first
    (failover on timeout, transport failure and 503, for an INVITE only
    before a provisional), not an instance's flows (RFC 5626 §7: also on
    430 and 408 responses)."""

    def __post_init__(self) -> None:
        if not self.destinations:
            raise ValueError("a fork target needs at least one destination")


@dataclass(slots=True)
class _Branch:
    target: ForkTarget
    index: int
    txn: ClientTransactionId
    final: SipResponse | None = None
    done: bool = False
    provisional: bool = False


@dataclass(slots=True)
class _Context:
    request: SipRequest
    server_txn: ServerTransactionId
    groups: list[list[ForkTarget]]
    record_route: NameAddr | None
    branches: dict[ClientTransactionId, _Branch] = field(default_factory=dict)
    finals: list[SipResponse] = field(default_factory=list)
    answered: bool = False  # a final response (2xx or best) went upstream
    cancelled: bool = False


class ForkingProxy:
    """Stateful forking for an element's :class:`TransactionLayer`.

    ``via_for(target)`` gives the proxy's Via for a branch towards
    ``target`` without branch parameter (sent-by as the element listens on
    that transport); ``is_own_via`` recognises that Via in responses.
    """

    def __init__(
        self,
        layer: TransactionLayer,
        *,
        via_for: Callable[[Target], Via],
        is_own_via: Callable[[Via], bool],
    ) -> None:
        self._layer = layer
        self._via_for = via_for
        self._is_own_via = is_own_via
        self._contexts: dict[ServerTransactionId, _Context] = {}
        self._by_branch: dict[ClientTransactionId, _Context] = {}

    @property
    def context_count(self) -> int:
        """Proxied requests not yet answered (for leak checks and metrics)."""
        return len(self._contexts)

    @property
    def branch_count(self) -> int:
        """Branch transactions still alive."""
        return len(self._by_branch)

    def proxy(
        self,
        request: SipRequest,
        server_txn: ServerTransactionId,
        targets: Sequence[ForkTarget],
        *,
        now: float,
        record_route: NameAddr | None = None,
    ) -> None:
        """Forward ``request`` (received in ``server_txn``) to ``targets``
        (§16.5-16.6). With no target at all it is answered 480 Temporarily
        Unavailable (§16.7 step 6 with no response: nothing could be reached)."""
        if not targets:
            self._layer.send_response(
                make_response(request, 480, to_tag=_tag(server_txn)),
                now=now,
                server_txn=server_txn,
            )
            return
        by_q: dict[float, list[ForkTarget]] = {}
        for target in targets:
            by_q.setdefault(target.q, []).append(target)
        groups = [by_q[q] for q in sorted(by_q, reverse=True)]
        context = _Context(request, server_txn, groups, record_route)
        self._contexts[server_txn] = context
        self._next_group(context, now)

    def handle_event(self, event: TransactionEvent, *, now: float) -> bool:
        """Take a transaction-layer event if it concerns a proxied request;
        False when it is not the proxy's (the element handles it)."""
        match event:
            case ResponseReceived(response=response, client_txn=txn):
                if txn.method == "CANCEL":  # the 200 for a branch's CANCEL
                    return ClientTransactionId(txn.branch, "INVITE") in self._by_branch
                context = self._by_branch.get(txn)
                if context is None:
                    return False
                self._on_response(context, context.branches[txn], response, now)
                return True
            case TransactionTerminated(txn=ClientTransactionId() as txn):
                if txn.method == "CANCEL":
                    return ClientTransactionId(txn.branch, "INVITE") in self._by_branch
                context = self._by_branch.pop(txn, None)
                if context is None:
                    return False
                self._maybe_forget(context)
                return True
            case (
                TransactionTimedOut(txn=ClientTransactionId() as txn)
                | TransportFailed(txn=ClientTransactionId() as txn)
            ):
                context = self._by_branch.get(txn)
                if context is None:
                    return False
                if txn.method == "CANCEL":
                    return True  # the INVITE's own outcome decides
                branch = context.branches[txn]
                status = 408 if isinstance(event, TransactionTimedOut) else 503
                self._on_failure(
                    context, branch, status, now, timed_out=isinstance(event, TransactionTimedOut)
                )
                return True
            case TimerCExpired(client_txn=txn):
                context = self._by_branch.get(txn)
                if context is None:
                    return False
                self._layer.cancel(txn, now=now)
                return True
            case RequestReceived(request=request, server_txn=cancel_txn, cancelled_txn=invite_txn):
                if request.method != "CANCEL" or invite_txn is None:
                    return False
                context = self._contexts.get(invite_txn)
                if context is None:
                    return False
                self._layer.send_response(
                    make_response(request, 200, to_tag=_tag(cancel_txn)),
                    now=now,
                    server_txn=cancel_txn,
                )
                context.cancelled = True
                self._cancel_pending(context, now)
                return True
        return False

    # -- branches -----------------------------------------------------------------

    def _next_group(self, context: _Context, now: float) -> None:
        while context.groups and not context.cancelled:
            group = context.groups.pop(0)
            started = [self._start(context, target, 0, now) for target in group]
            if any(started):
                return
        self._finish_if_done(context, now)

    def _start(self, context: _Context, target: ForkTarget, index: int, now: float) -> bool:
        """Send the branch for ``target.destinations[index]``; False if it could
        not even be handed to the transaction layer."""
        destination = target.destinations[index]
        via = self._via_for(destination.target)
        via = via.with_params(branch=loop_branch(context.request, self._layer.new_branch()))
        forwarded = forward_request(
            context.request,
            via=via,
            uri=destination.uri,
            record_route=(
                destination.record_routes
                if destination.record_routes is not None
                else context.record_route
            ),
            push_routes=destination.routes,
        )
        try:
            txn = self._layer.send_request(forwarded, destination.target, now=now)
        except LocalProtocolError:
            return False
        branch = _Branch(target, index, txn)
        context.branches[txn] = branch
        self._by_branch[txn] = context
        return True

    def _on_response(
        self, context: _Context, branch: _Branch, response: SipResponse, now: float
    ) -> None:
        status = response.status
        if status == 100:
            branch.provisional = True
            return
        if 200 <= status < 300:
            branch.done = True
            self._forward(context, response, now)
            context.answered = True
            self._cancel_pending(context, now)
            self._finish_if_done(context, now)
            return
        if status < 200:
            branch.provisional = True
            if not context.answered:
                self._forward(context, response, now)
            return
        if branch.done:
            return
        retry_on = _RETRY_ON_NEXT_SERVER if branch.target.servers else _RETRY_ON_NEXT_FLOW
        if status in retry_on and self._try_next_flow(context, branch, now):
            return
        branch.done = True
        context.finals.append(response)
        if status >= 600:
            context.groups.clear()
            self._cancel_pending(context, now)
        self._finish_if_done(context, now)

    def _on_failure(
        self, context: _Context, branch: _Branch, status: int, now: float, *, timed_out: bool
    ) -> None:
        if branch.done:
            return
        if not (timed_out and branch.provisional) and self._try_next_flow(context, branch, now):
            return
        branch.done = True
        context.finals.append(
            make_response(context.request, status, to_tag=_tag(context.server_txn))
        )
        self._finish_if_done(context, now)

    def _try_next_flow(self, context: _Context, branch: _Branch, now: float) -> bool:
        """RFC 5626 §7: another flow to the same instance, if there is one;
        RFC 3263 §4.3: the next server of the plan (an INVITE only while no
        provisional came back). A timeout after a provisional is no failure
        for any method (RFC 3263 §4.3: the request got there; resending it
        elsewhere would duplicate it), so :meth:`_on_failure` skips this."""
        if context.answered or context.cancelled:
            return False
        if branch.target.servers and branch.provisional and branch.txn.method == "INVITE":
            return False
        for index in range(branch.index + 1, len(branch.target.destinations)):
            branch.done = True
            if self._start(context, branch.target, index, now):
                return True
        return False

    def _cancel_pending(self, context: _Context, now: float) -> None:
        for txn, branch in context.branches.items():
            if not branch.done and txn.method == "INVITE":
                self._layer.cancel(txn, now=now)

    def _finish_if_done(self, context: _Context, now: float) -> None:
        if any(not branch.done for branch in context.branches.values()):
            return
        if not context.answered and context.groups and not context.cancelled:
            self._next_group(context, now)
            return
        if not context.answered:
            context.answered = True
            self._layer.send_response(
                self._best_response(context), now=now, server_txn=context.server_txn
            )
        self._contexts.pop(context.server_txn, None)  # no more CANCEL to apply
        self._maybe_forget(context)

    def _maybe_forget(self, context: _Context) -> None:
        """A context lives until it is answered and its last branch
        transaction has terminated: a 2xx from a late branch is still
        forwarded (§16.7 step 5)."""
        if context.answered and not any(txn in self._by_branch for txn in context.branches):
            self._contexts.pop(context.server_txn, None)

    # -- responses upstream -------------------------------------------------------

    def _forward(self, context: _Context, response: SipResponse, now: float) -> None:
        popped = pop_own_via(response, self._is_own_via)
        if popped is None:
            return
        self._layer.send_response(popped[0], now=now, server_txn=context.server_txn)

    def _best_response(self, context: _Context) -> SipResponse:
        """§16.7 steps 6-7: the answer forwarded when no branch succeeded."""
        request = context.request
        if not context.finals:
            return make_response(request, 480, to_tag=_tag(context.server_txn))
        status = best_response_status([r.status for r in context.finals])
        chosen = next(r for r in context.finals if r.status == status)
        if status == 503:
            return make_response(request, 500, to_tag=_tag(context.server_txn))
        popped = pop_own_via(chosen, self._is_own_via)
        if popped is None:  # a synthesised 408/503 (no own Via): built upstream already
            return chosen
        out = popped[0]
        if status in (401, 407):
            for header in ("WWW-Authenticate", "Proxy-Authenticate"):
                merged = [
                    value
                    for r in context.finals
                    if r is not chosen and r.status in (401, 407)
                    for value in r.headers.get_all(header)
                ]
                for value in merged:
                    out.headers.add(header, value)
        return out


def best_response_status(statuses: Sequence[int]) -> int:
    """RFC 3261 §16.7 step 6: any 6xx; else the lowest class, where among 4xx
    401, 407, 415, 420 and 484 are preferred; else the first of the class."""
    if not statuses:
        raise ValueError("no responses to choose from")
    six = [s for s in statuses if s >= 600]
    if six:
        return six[0]
    lowest = min(s // 100 for s in statuses)
    of_class = [s for s in statuses if s // 100 == lowest]
    if lowest == 4:
        for preferred in _PREFERRED_4XX:
            if preferred in of_class:
                return preferred
    return of_class[0]


def _tag(txn: ServerTransactionId) -> str:
    """A To tag for responses the proxy makes itself (stable per transaction)."""
    return "nk" + hashlib.sha256(f"{txn.branch}|{txn.sent_by}".encode()).hexdigest()[:12]
