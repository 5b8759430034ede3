"""How the TURN client's requests leave and their answers come back (RFC 8656 §7-§12).

Theory of operation
-------------------
Every request of :class:`~natkit.turn.client.TurnClient` - Allocate (§7.1),
Refresh (§8.1), CreatePermission (§9.1), ChannelBind (§12.1) and RFC 6062's
Connect (§4.3) - goes through :meth:`_Requests._request`: the
:class:`~natkit.stun.transaction.StunClient` sends and retransmits it and
answers 401/438 challenges (RFC 8489 §9.2), and the client remembers a
:class:`_Pending` record of why it asked under the transaction ID.
:meth:`_Requests._pull` moves the StunClient's datagrams to the client's
output in wire order and turns its final answers into one call of
:meth:`_Requests._on_answer` with ``code`` 0 (success), the error code, or
None (no usable answer), which dispatches by the request's :class:`_Kind`.
A CreatePermission for many peers may travel as several requests: a
:class:`_PermissionRequest` ties them to the one event their caller waits for.

:class:`_Requests` is a mixin of :class:`~natkit.turn.client.TurnClient`
(the state is the client's; this module holds the plumbing), with the
Allocate and Refresh builders; the answers are handled in ``client.py``
(allocation), ``client_peers.py`` (permissions, channels) and
``client_tcp.py`` (Connect).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from natkit.addr import Datagram, Endpoint, Family, ip_of
from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.stun.constants import ErrorCode, MessageClass, Method
from natkit.stun.events import ResponseReceived, StunEvent, TransactionFailed, TransactionTimedOut
from natkit.stun.message import StunMessage
from natkit.stun.transaction import LongTermCredentials, StunClient
from natkit.turn import attributes as tat
from natkit.turn.client_config import AllocateParams, ClientState, TurnClientConfig
from natkit.turn.client_events import AllocationReleased, TurnClientEvent

# coturn 4.6 implements dual allocation with the code points of the turnbis
# drafts (0x8032 ADDITIONAL-ADDRESS-FAMILY, 0x8033 ADDRESS-ERROR-CODE), not RFC
# 8656's 0x8000/0x8001. Both are comprehension-optional, so a server ignores
# the one it does not know: sending both makes dual allocation work with either.
_DRAFT_ADDITIONAL_ADDRESS_FAMILY = 0x8032
_DRAFT_ADDRESS_ERROR_CODE = 0x8033


class _Kind(enum.Enum):
    ALLOCATE = "allocate"
    CLEAR = "clear"  # Refresh LIFETIME=0 after a 437, before allocating again
    REFRESH = "refresh"
    RELEASE = "release"
    PERMISSION = "permission"
    CHANNEL = "channel"
    CONNECT = "connect"


@dataclass(slots=True, eq=False)
class _PermissionRequest:
    """One ``create_permission`` call, or one permission ``send_to`` asked for:
    its IPs may travel in several CreatePermission requests (batches, and
    the halves of a refused batch), so its one event waits for all of them."""

    request_id: int | None
    ips: tuple[str, ...]
    outstanding: int = 0  # requests not answered yet
    failed: list[str] = field(default_factory=list)
    code: int | None = None  # of the first failure
    reason: str = ""
    dropped: int = 0


@dataclass(slots=True)
class _Pending:
    kind: _Kind
    request_id: int | None = None
    ips: tuple[str, ...] = ()
    channel: int = 0
    peer: Endpoint | None = None
    refresh: bool = False
    lifetime: int | None = None  # a Refresh: the LIFETIME it asked for
    group: _PermissionRequest | None = None  # a CreatePermission that is not a refresh


def _error_of(resp: StunMessage) -> tuple[int | None, str]:
    try:
        err = resp.error
    except MalformedMessageError:
        return None, "malformed ERROR-CODE"
    if err is None:
        return None, "error response without ERROR-CODE"
    return err.code, err.reason


def _peer_ip(peer: str | Endpoint) -> str:
    host = peer.host if isinstance(peer, Endpoint) else peer
    try:
        return str(ip_of(host))
    except ValueError as exc:
        raise LocalProtocolError(f"not an IP address: {host!r}") from exc


class _Requests:
    """TurnClient's request plumbing (see the module docstring)."""

    if TYPE_CHECKING:
        config: TurnClientConfig
        server: Endpoint
        credentials: LongTermCredentials | None
        state: ClientState
        relayed: tuple[Endpoint, ...]
        _stun: StunClient
        _params: AllocateParams | None
        _pending: dict[bytes, _Pending]
        _out: list[Datagram]
        _events: deque[TurnClientEvent]
        _sent: bool
        _timer_dirty: bool
        _next_request: int
        _refresh_at: float | None
        _refreshing: bool

        def _learn_auth(self, data: bytes) -> None: ...
        def _end(self, state: ClientState) -> None: ...
        def _on_allocate(
            self, resp: StunMessage | None, code: int | None, reason: str, now: float
        ) -> None: ...
        def _on_refresh(
            self,
            pending: _Pending,
            resp: StunMessage | None,
            code: int | None,
            reason: str,
            now: float,
            *,
            timed_out: bool,
        ) -> None: ...
        def _on_permission(
            self, pending: _Pending, code: int | None, reason: str, now: float, *, timed_out: bool
        ) -> None: ...
        def _on_channel(
            self, pending: _Pending, code: int | None, reason: str, now: float
        ) -> None: ...
        def _on_connect(
            self, pending: _Pending, resp: StunMessage | None, code: int | None, reason: str
        ) -> None: ...

    def _new_request_id(self) -> int:
        rid = self._next_request
        self._next_request += 1
        return rid

    def _require_allocated(self, what: str) -> None:
        if self.state is not ClientState.ALLOCATED:
            raise LocalProtocolError(f"{what}() needs an allocation (state {self.state.value})")

    def _check_family(self, host: str) -> None:
        """RFC 8656 §9.1/§12.1 (443): a peer must match a relayed address's family."""
        try:
            family = Family.IPV4 if ip_of(host).version == 4 else Family.IPV6
        except ValueError as exc:
            raise LocalProtocolError(f"not an IP address: {host!r}") from exc
        if all(r.family != family for r in self.relayed):
            raise LocalProtocolError(
                f"no {family.name} relayed address for peer {host}"
                " (443 Peer Address Family Mismatch)"
            )

    def _request(self, msg: StunMessage, pending: _Pending, now: float) -> None:
        tid = self._stun.send_request(msg, self.server, now=now, credentials=self.credentials)
        self._pending[tid] = pending
        self._pull(now)

    def _pull(self, now: float) -> None:
        """Move the StunClient's output into ours (keeping wire order) and
        handle its events."""
        stun = self._stun
        out = stun.datagrams_to_send(now=now)
        if out:
            self._sent = True
            self._out.extend(out)
            if self.credentials is not None:
                for datagram in out:
                    self._learn_auth(datagram.data)
        while (event := stun.next_event()) is not None:
            self._on_stun_event(event, now)

    def _send_allocate(self, now: float) -> None:
        p = self._params
        assert p is not None  # allocate() set it before any request
        msg = StunMessage.request(Method.ALLOCATE, b"")
        msg.add(tat.REQUESTED_TRANSPORT, int(p.transport))
        if p.lifetime is not None:
            msg.add(tat.LIFETIME, p.lifetime)
        if p.family == Family.IPV6:
            msg.add(tat.REQUESTED_ADDRESS_FAMILY, int(Family.IPV6))
        if p.additional_family is not None:
            msg.add(tat.ADDITIONAL_ADDRESS_FAMILY, int(p.additional_family))
            if self.config.draft_dual_allocation:
                msg.add_raw(_DRAFT_ADDITIONAL_ADDRESS_FAMILY, bytes((p.additional_family, 0, 0, 0)))
        if p.even_port is not None:
            msg.add(tat.EVEN_PORT, p.even_port)
        if p.reservation_token is not None:
            msg.add(tat.RESERVATION_TOKEN, p.reservation_token)
        if p.dont_fragment:
            msg.add(tat.DONT_FRAGMENT, True)
        self._request(msg, _Pending(_Kind.ALLOCATE), now)

    def _send_refresh(self, now: float, lifetime: int | None) -> None:
        self._refresh_at = None
        self._refreshing = True
        self._timer_dirty = True
        msg = StunMessage.request(Method.REFRESH, b"")
        if lifetime is None and self._params is not None:
            lifetime = self._params.lifetime
        if lifetime is not None:
            msg.add(tat.LIFETIME, lifetime)
        self._request(msg, _Pending(_Kind.REFRESH, lifetime=lifetime), now)

    def _on_stun_event(self, event: StunEvent, now: float) -> None:
        pending = self._pending.pop(event.transaction_id, None)
        if pending is None:
            return
        self._timer_dirty = True
        match event:
            case ResponseReceived(response=resp):
                if resp.message_class == MessageClass.SUCCESS:
                    code: int | None = 0
                    reason = ""
                else:
                    code, reason = _error_of(resp)
                self._on_answer(pending, resp, code, reason, now)
            case TransactionTimedOut():
                self._on_answer(pending, None, None, "no response (timed out)", now, timed_out=True)
            case TransactionFailed(reason=reason):
                self._on_answer(pending, None, None, reason, now)

    def _on_answer(
        self,
        pending: _Pending,
        resp: StunMessage | None,
        code: int | None,
        reason: str,
        now: float,
        *,
        timed_out: bool = False,
    ) -> None:
        """``code`` is 0 for a success, the error code, or None (no usable
        response; ``timed_out``: none at all)."""
        try:
            match pending.kind:
                case _Kind.ALLOCATE:
                    self._on_allocate(resp, code, reason, now)
                case _Kind.CLEAR:
                    if self.state is ClientState.ALLOCATING:
                        self._send_allocate(now)
                case _Kind.REFRESH:
                    self._on_refresh(pending, resp, code, reason, now, timed_out=timed_out)
                case _Kind.RELEASE:
                    if self.state is ClientState.RELEASING:
                        self._end(ClientState.RELEASED)
                        confirmed = code in (0, ErrorCode.ALLOCATION_MISMATCH)
                        self._events.append(AllocationReleased(confirmed=confirmed))
                case _Kind.PERMISSION:
                    self._on_permission(pending, code, reason, now, timed_out=timed_out)
                case _Kind.CHANNEL:
                    self._on_channel(pending, code, reason, now)
                case _Kind.CONNECT:
                    self._on_connect(pending, resp, code, reason)
        except MalformedMessageError as exc:
            # A success response whose attributes do not decode: a failure of
            # the request, not of the client.
            self._on_answer(pending, None, None, f"malformed response: {exc}", now)
