"""The TURN client's permissions and channels (RFC 8656 §9, §12), sans-IO.

Theory of operation
-------------------
A permission (§9) lets a peer IP's data through the relay for 300 s from
its last CreatePermission; a channel binding (§12) ties a number
(0x4000-0x4FFF) to one peer transport address for 600 s, installs or
refreshes that IP's permission too (§12.2), and keeps the number tied to
its peer for 5 more minutes after it expires. The client refreshes
permissions at ``permission_refresh`` (240 s) and channels at
``channel_refresh`` (540 s): those asked for explicitly are kept until the
allocation ends, those ``send_to`` made on its own only while used (data
sent or received since the last refresh); an idle one is left to expire at
the server, and a channel number is not reused before the server has
forgotten it. A permission is PENDING until its CreatePermission succeeds,
queueing the data ``send_to`` has for it (Send indications before that would
be dropped, §10.2), then INSTALLED. CreatePermission carries at most
``permission_batch`` peers, fewer over UDP to fit the minimum MTU; the
server grants or refuses a request whole (§9.3), so a refused batch is
halved until the refusal names one IP, and only that IP is refused for
``permission_retry``. An unanswered refresh is asked again; permissions
still unanswered when their 300 s end are dropped.

:class:`_PeerBook` is a mixin of :class:`~natkit.turn.client.TurnClient`: the
state (``_perms``, ``_channels``, ``_channel_of``, ``_cooldown``, ...) is the
client's, read directly by its data hot paths; this module holds the rules.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from natkit.addr import Datagram, Endpoint
from natkit.errors import LocalProtocolError
from natkit.stun.constants import ErrorCode, Method
from natkit.stun.message import StunMessage
from natkit.turn import attributes as tat
from natkit.turn.channel import CHANNEL_MAX, CHANNEL_MIN, pack_channel_data
from natkit.turn.client_config import ClientState, TurnClientConfig
from natkit.turn.client_events import (
    ChannelBindFailed,
    ChannelBound,
    PermissionCreated,
    PermissionFailed,
    TurnClientEvent,
)
from natkit.turn.client_requests import _Kind, _Pending, _PermissionRequest

_CHANNEL_REUSE_DELAY = 300.0  # RFC 8656 §12: a number stays tied to its peer 5 min after expiry
_PERMISSION_LIFETIME = 300.0  # RFC 8656 §9: a permission lasts 5 min from its last refresh
# Over UDP a CreatePermission carries at most this many bytes of XOR-PEER-ADDRESS
# (83 IPv4 or 41 IPv6 peers), so that, signed, it stays under IPv6's minimum MTU
# of 1280 bytes (RFC 8489 §6.1: keep requests within the path MTU).
_UDP_PEER_BYTES = 1000


class _Perm(enum.Enum):
    PENDING = "pending"
    INSTALLED = "installed"


@dataclass(slots=True, eq=False)
class _Permission:
    ip: str
    state: _Perm = _Perm.PENDING
    keep: bool = False
    used: bool = False
    refresh_at: float | None = None
    expires: float = 0.0  # when the server forgets it unless refreshed (set when installed)
    refreshing: bool = False
    queue: deque[tuple[bytes, Endpoint, float]] = field(default_factory=deque)


@dataclass(slots=True, eq=False)
class _Channel:
    number: int
    peer: Endpoint
    bound: bool = False
    keep: bool = False
    used: bool = False
    refresh_at: float | None = None
    refreshing: bool = False


class _PeerBook:
    """TurnClient's permission and channel bookkeeping (see the module docstring)."""

    if TYPE_CHECKING:
        config: TurnClientConfig
        server: Endpoint
        state: ClientState
        dropped: int
        sent_channel_data: int
        _perms: dict[str, _Permission]
        _channels: dict[int, _Channel]
        _channel_of: dict[Endpoint, _Channel]
        _cooldown: dict[int, float]
        _refused: dict[str, float]
        _no_auto_bind: set[Endpoint]
        _next_channel: int
        _out: list[Datagram]
        _events: deque[TurnClientEvent]
        _sent: bool
        _timer_dirty: bool

        def _request(self, msg: StunMessage, pending: _Pending, now: float) -> None: ...
        def _lose(self, code: int | None, reason: str) -> None: ...
        def _send_indication(self, data: bytes, peer: Endpoint) -> None: ...

    def _send_permission(
        self, ips: tuple[str, ...], now: float, *, request_id: int | None, refresh: bool
    ) -> None:
        """CreatePermission for ``ips`` (RFC 8656 §9.1) in batches: at most
        ``permission_batch`` peers per request (servers cap the attributes
        they parse: natkit's at 256), over UDP no more than keeps the request
        within the minimum MTU. A refresh reports only failures; otherwise
        one event answers for all the batches."""
        group = None if refresh else _PermissionRequest(request_id, ips)
        batches = self._batches(ips)
        if group is not None:
            group.outstanding = len(batches)
        for batch in batches:
            self._send_permission_batch(batch, now, group=group, refresh=refresh)

    def _batches(self, ips: tuple[str, ...]) -> list[tuple[str, ...]]:
        limit = max(1, self.config.permission_batch)
        budget = None if self.config.stream else _UDP_PEER_BYTES
        batches: list[tuple[str, ...]] = []
        batch: list[str] = []
        size = 0
        for ip in ips:
            cost = 24 if ":" in ip else 12  # the attribute's header and value
            if batch and (len(batch) >= limit or (budget is not None and size + cost > budget)):
                batches.append(tuple(batch))
                batch, size = [], 0
            batch.append(ip)
            size += cost
        if batch:
            batches.append(tuple(batch))
        return batches

    def _send_permission_batch(
        self,
        ips: tuple[str, ...],
        now: float,
        *,
        group: _PermissionRequest | None,
        refresh: bool,
    ) -> None:
        msg = StunMessage.request(Method.CREATE_PERMISSION, b"")
        for ip in ips:
            msg.add(tat.XOR_PEER_ADDRESS, Endpoint(ip, 0))
            if refresh:
                self._perms[ip].refreshing = True
        request_id = group.request_id if group is not None else None
        pending = _Pending(
            _Kind.PERMISSION, request_id=request_id, ips=ips, refresh=refresh, group=group
        )
        self._request(msg, pending, now)

    def _free_channel(self, now: float) -> int | None:
        span = CHANNEL_MAX - CHANNEL_MIN + 1
        for i in range(span):
            number = CHANNEL_MIN + (self._next_channel - CHANNEL_MIN + i) % span
            if number in self._channels:
                continue
            until = self._cooldown.get(number)
            if until is not None and now < until:
                continue
            return number
        return None

    def _bind(self, peer: Endpoint, now: float, *, keep: bool) -> _Channel:
        number = self._free_channel(now)
        if number is None:
            raise LocalProtocolError("every channel number is in use")
        self._cooldown.pop(number, None)
        self._next_channel = number + 1 if number < CHANNEL_MAX else CHANNEL_MIN
        ch = _Channel(number, peer, keep=keep)
        self._channels[number] = ch
        self._channel_of[peer] = ch
        self._send_channel_bind(ch, now, refresh=False)
        return ch

    def _send_channel_bind(self, ch: _Channel, now: float, *, refresh: bool) -> None:
        ch.refreshing = refresh
        msg = StunMessage.request(Method.CHANNEL_BIND, b"")
        msg.add(tat.CHANNEL_NUMBER, ch.number).add(tat.XOR_PEER_ADDRESS, ch.peer)
        self._request(
            msg, _Pending(_Kind.CHANNEL, channel=ch.number, peer=ch.peer, refresh=refresh), now
        )

    def _drop_channel(self, ch: _Channel, now: float) -> None:
        self._channels.pop(ch.number, None)
        if self._channel_of.get(ch.peer) is ch:
            del self._channel_of[ch.peer]
        # The server keeps the binding until it expires, and the number stays
        # tied to this peer for 5 more minutes (§12): do not reuse it before.
        expires = (ch.refresh_at or now) + (600.0 - self.config.channel_refresh)
        self._cooldown[ch.number] = max(now, expires) + _CHANNEL_REUSE_DELAY
        self._timer_dirty = True

    def _channel_needs(self, ip: str) -> bool:
        return any(ch.peer.host == ip and (ch.keep or ch.used) for ch in self._channels.values())

    def _on_permission(
        self, pending: _Pending, code: int | None, reason: str, now: float, *, timed_out: bool
    ) -> None:
        """A CreatePermission answered (RFC 8656 §9.3). The server grants or
        refuses a request as a whole, so a refused batch is split in halves
        until the refusal names one IP: only that IP is dropped. A refresh
        that goes unanswered is retried (the server keeps the permissions
        for the rest of their 300 s; handle_timer drops those that expire
        first); an unanswered first request drops the IPs it was to install,
        without refusing them."""
        if self.state is not ClientState.ALLOCATED:
            return
        group = pending.group
        perms = [self._perms[ip] for ip in pending.ips if ip in self._perms]
        if pending.refresh:  # those this refresh still speaks for (not expired meanwhile)
            perms = [p for p in perms if p.refreshing and p.state is _Perm.INSTALLED]
            if timed_out:
                # Those that expire first stay "refreshing": handle_timer drops them.
                live = tuple(p.ip for p in perms if now < p.expires)
                if live:
                    self._send_permission(live, now, request_id=None, refresh=True)
                return
            for perm in perms:
                perm.refreshing = False
        ips = tuple(p.ip for p in perms)
        if code == 0:
            for perm in perms:
                self._install(perm, now)
            self._settle(group, (), None, "", 0)
            return
        if code == ErrorCode.ALLOCATION_MISMATCH:
            self._lose(code, reason)
            return
        if code is not None and len(ips) > 1:
            half = len(ips) // 2
            if group is not None:
                group.outstanding += 1  # this request becomes two
            for part in (ips[:half], ips[half:]):
                self._send_permission_batch(part, now, group=group, refresh=pending.refresh)
            return
        dropped = 0
        for perm in perms:
            if timed_out and perm.state is _Perm.INSTALLED:
                continue  # installed before: the server still holds it, refreshed on schedule
            dropped += len(perm.queue)
            del self._perms[perm.ip]
            if not timed_out:
                self._refused[perm.ip] = now + self.config.permission_retry
        self.dropped += dropped
        failed = ips if pending.refresh else pending.ips
        if group is None:
            if failed:
                self._events.append(
                    PermissionFailed(
                        request_id=None, peer_ips=failed, code=code, reason=reason, dropped=dropped
                    )
                )
            return
        self._settle(group, failed, code, reason, dropped)

    def _settle(
        self,
        group: _PermissionRequest | None,
        failed: tuple[str, ...],
        code: int | None,
        reason: str,
        dropped: int,
    ) -> None:
        """One request of ``group`` answered; its event once all are."""
        if group is None:
            return
        if failed:
            if not group.failed:
                group.code, group.reason = code, reason
            group.failed.extend(failed)
            group.dropped += dropped
        group.outstanding -= 1
        if group.outstanding > 0:
            return
        if group.failed:
            refused = set(group.failed)
            self._events.append(
                PermissionFailed(
                    request_id=group.request_id,
                    peer_ips=tuple(ip for ip in group.ips if ip in refused),
                    code=group.code,
                    reason=group.reason,
                    dropped=group.dropped,
                )
            )
        else:
            self._events.append(PermissionCreated(request_id=group.request_id, peer_ips=group.ips))

    def _install(self, perm: _Permission, now: float) -> None:
        perm.state = _Perm.INSTALLED
        perm.refresh_at = now + self.config.permission_refresh
        perm.expires = now + _PERMISSION_LIFETIME
        self._timer_dirty = True
        queue, perm.queue = perm.queue, deque()
        oldest = now - self.config.max_queue_delay
        for data, peer, queued_at in queue:
            if queued_at < oldest:
                self.dropped += 1
                continue
            ch = self._channel_of.get(peer)
            if ch is not None and ch.bound:
                self.sent_channel_data += 1
                self._sent = True
                self._out.append(
                    Datagram(
                        pack_channel_data(ch.number, data, stream=self.config.stream), self.server
                    )
                )
            else:
                self._send_indication(data, peer)

    def _on_channel(self, pending: _Pending, code: int | None, reason: str, now: float) -> None:
        if self.state is not ClientState.ALLOCATED:
            return
        ch = self._channels.get(pending.channel)
        assert pending.peer is not None  # set for every ChannelBind
        if ch is None or ch.peer != pending.peer:
            return
        ch.refreshing = False
        if code == 0:
            first = not ch.bound
            ch.bound = True
            ch.refresh_at = now + self.config.channel_refresh
            # A ChannelBind installs or refreshes the peer's permission too (§12.2).
            perm = self._perms.get(ch.peer.host)
            if perm is None:
                perm = self._perms[ch.peer.host] = _Permission(ch.peer.host, keep=ch.keep)
            if perm.state is _Perm.PENDING:
                self._install(perm, now)
            else:
                perm.expires = max(perm.expires, now + _PERMISSION_LIFETIME)
            if first:
                self._events.append(ChannelBound(channel=ch.number, peer=ch.peer))
            return
        if code == ErrorCode.ALLOCATION_MISMATCH:
            self._lose(code, reason)
            return
        if not ch.keep:
            self._no_auto_bind.add(ch.peer)  # one refusal is enough: Send indications it is
        self._drop_channel(ch, now)
        self._events.append(
            ChannelBindFailed(channel=ch.number, peer=ch.peer, code=code, reason=reason)
        )

    def _refresh_peers(self, now: float) -> None:
        """The permission and channel part of ``handle_timer`` (allocation
        ALLOCATED): drop permissions whose refresh went unanswered until they
        expired (§9), refresh the due ones still in use and let idle ones
        lapse, likewise channels (§12), and free cooled-down channel numbers."""
        expired = [
            p
            for p in self._perms.values()
            if p.state is _Perm.INSTALLED and p.refreshing and now >= p.expires
        ]
        if expired:
            # Their refreshes went unanswered until the server forgot them.
            for perm in expired:
                del self._perms[perm.ip]
            self._events.append(
                PermissionFailed(
                    request_id=None,
                    peer_ips=tuple(p.ip for p in expired),
                    code=None,
                    reason="the permission expired before its refresh was answered",
                )
            )
        due = [
            p.ip
            for p in self._perms.values()
            if p.state is _Perm.INSTALLED
            and not p.refreshing
            and p.refresh_at is not None
            and now >= p.refresh_at
        ]
        keep: list[str] = []
        for ip in due:
            perm = self._perms[ip]
            if perm.keep or perm.used or self._channel_needs(ip):
                keep.append(ip)
                perm.used = False
            else:
                # Idle: let it expire at the server, with any channel to that
                # IP (useless without it); a later send_to starts afresh.
                del self._perms[ip]
                for ch in [c for c in self._channels.values() if c.peer.host == ip]:
                    self._drop_channel(ch, now)
        if keep:
            self._send_permission(tuple(keep), now, request_id=None, refresh=True)
        for ch in list(self._channels.values()):
            if (
                ch.bound
                and not ch.refreshing
                and ch.refresh_at is not None
                and now >= ch.refresh_at
            ):
                if ch.keep or ch.used:
                    ch.used = False
                    self._send_channel_bind(ch, now, refresh=True)
                else:
                    self._drop_channel(ch, now)
        for number, until in list(self._cooldown.items()):
            if now >= until:
                del self._cooldown[number]

    def _peer_deadlines(self, times: list[float]) -> None:
        """Add the permission and channel deadlines to ``times`` (for ``get_timer``)."""
        for p in self._perms.values():
            if p.state is not _Perm.INSTALLED:
                continue
            if p.refreshing:
                times.append(p.expires)
            elif p.refresh_at is not None:
                times.append(p.refresh_at)
        times.extend(
            ch.refresh_at
            for ch in self._channels.values()
            if ch.refresh_at is not None and not ch.refreshing and ch.bound
        )
        times.extend(self._cooldown.values())
