"""RFC 6062 TCP relays of the TURN server: Connect, ConnectionBind, ConnectionAttempt, sans-IO.

An allocation with a TCP relay (RFC 6062 §5.1) relays no datagrams: each
peer is a TCP connection of its own. Connect (§5.2) asks the driver to
connect to the peer (:class:`~natkit.turn.events.PeerConnectRequested`)
and is answered with CONNECTION-ID once it is up, 447 when it fails; a
peer that connects to the relay listener (§5.3) is announced with a
ConnectionAttempt indication if it has a permission (RFC 8656 §9). Either
way the client then opens a new TCP connection to the server and sends
ConnectionBind with the id (§5.4): from then on the driver splices the two
connections and the core only remembers the pairing. An unbound peer
connection expires after ``tcp_connect_timeout``; a bound one lives as
long as both connections (§5.5).
"""

from __future__ import annotations

from natkit.addr import Endpoint
from natkit.stun import attributes as at
from natkit.stun.constants import ErrorCode, MessageClass, Method
from natkit.stun.message import StunMessage
from natkit.turn import attributes as tat
from natkit.turn.allocation import Allocation, PeerConnection
from natkit.turn.events import (
    ConnectionBound,
    FiveTuple,
    PeerConnectionReleased,
    PeerConnectRequested,
)
from natkit.turn.server_base import _error, _Request
from natkit.turn.timers import _Timers


class _TcpRelay(_Timers):
    """RFC 6062 peer connections; see the module docstring."""

    def peer_connected(self, connection_id: int, *, now: float) -> bool:
        """RFC 6062 §5.2: the TCP connection of a Connect request is up;
        answer the Connect with CONNECTION-ID and wait for ConnectionBind.
        ``False``: the core no longer waits for it (its allocation went,
        the connect timed out): the driver must close the connection."""
        self._now = now
        conn = self._connections.get(connection_id)
        if conn is None or conn.state != PeerConnection.CONNECTING:
            return False
        conn.state = PeerConnection.WAITING
        self._arm(conn, now + self.config.tcp_connect_timeout)
        if conn.request is not None:
            tid, key, integrity, fingerprint = conn.request
            conn.request = None
            resp = StunMessage(Method.CONNECT, MessageClass.SUCCESS, tid)
            resp.add(tat.CONNECTION_ID, connection_id)
            ft = conn.allocation.five_tuple
            self._send(resp, ft.client, ft.server, ft.transport, key, integrity, fingerprint)
        return True

    def peer_connect_failed(self, connection_id: int, *, now: float) -> None:
        """RFC 6062 §5.2: the connection to the peer failed: 447."""
        self._now = now
        conn = self._connections.get(connection_id)
        if conn is None or conn.state != PeerConnection.CONNECTING:
            return
        request = conn.request
        self._drop_connection(conn, emit=False)
        if request is not None:
            tid, key, integrity, fingerprint = request
            resp = StunMessage(Method.CONNECT, MessageClass.ERROR, tid)
            resp = _error(resp, ErrorCode.CONNECTION_TIMEOUT_OR_FAILURE)
            ft = conn.allocation.five_tuple
            self._send(resp, ft.client, ft.server, ft.transport, key, integrity, fingerprint)

    def peer_connection_accepted(
        self, relay: Endpoint, peer: Endpoint, *, now: float
    ) -> int | None:
        """RFC 6062 §5.3: a TCP peer connected to relay listener ``relay``.
        Returns the connection id announced to the client with a
        ConnectionAttempt indication, or ``None``: refuse the connection (no
        such TCP allocation, peer denied by policy, or no permission)."""
        self._now = now
        alloc = self._by_relay.get(relay)
        if alloc is None or alloc.udp_relay:
            return None
        if not self._policy.allowed(peer.host):
            self.stats.denied_peers += 1
            return None
        perm = alloc.permissions.get(peer.host)
        if perm is None or perm.expires <= now or peer in alloc.connections:
            return None
        cap = self.config.max_peer_connections
        if cap and len(alloc.connections) >= cap:
            self.stats.quota_rejections += 1
            return None
        conn = self._new_connection(alloc, peer, PeerConnection.WAITING)
        self._arm(conn, now + self.config.tcp_connect_timeout)
        ind = StunMessage(Method.CONNECTION_ATTEMPT, MessageClass.INDICATION, self._tid())
        ind.add(tat.CONNECTION_ID, conn.connection_id)
        ind.add(at.XOR_PEER_ADDRESS, peer)
        self._send(ind, alloc.client, alloc.server, alloc.transport, None, None, False)
        return conn.connection_id

    def peer_connection_closed(self, connection_id: int, *, now: float) -> None:
        """The driver saw RFC 6062 peer connection ``connection_id`` end
        (either side): forget it, without a PeerConnectionReleased event."""
        self._now = now
        conn = self._connections.get(connection_id)
        if conn is not None:
            self._drop_connection(conn, emit=False)

    # -- RFC 6062: Connect, ConnectionBind -------------------------------------------

    def _connect(self, ctx: _Request, now: float) -> None:
        msg = ctx.msg
        alloc = ctx.alloc
        if alloc is None:
            self._answer(ctx, _error(msg, ErrorCode.ALLOCATION_MISMATCH))
            return
        peer = msg.get(at.XOR_PEER_ADDRESS)
        if peer is None or alloc.udp_relay:
            self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))
            return
        relay = alloc.relay_for(peer)
        if relay is None:
            self._answer(ctx, _error(msg, ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH))
            return
        if not self._policy.allowed_peer(peer) or peer.port in self._denied_connect_ports:
            self.stats.denied_peers += 1
            self._answer(ctx, _error(msg, ErrorCode.FORBIDDEN))
            return
        if peer in alloc.connections:
            self._answer(ctx, _error(msg, ErrorCode.CONNECTION_ALREADY_EXISTS))
            return
        cap = self.config.max_peer_connections
        if cap and len(alloc.connections) >= cap:
            self.stats.quota_rejections += 1
            self._answer(ctx, _error(msg, ErrorCode.INSUFFICIENT_CAPACITY))
            return
        conn = self._new_connection(alloc, peer, PeerConnection.CONNECTING)
        conn.request = (msg.transaction_id, ctx.key, ctx.integrity, msg.has_fingerprint)
        self._arm(conn, now + self.config.tcp_connect_timeout)
        self._emit(PeerConnectRequested(connection_id=conn.connection_id, relay=relay, peer=peer))

    def _new_connection(self, alloc: Allocation, peer: Endpoint, state: int) -> PeerConnection:
        cid = 0
        while cid == 0 or cid in self._connections:
            cid = self._rng.getrandbits(32)
        conn = PeerConnection(cid, alloc, peer, state)
        self._connections[cid] = conn
        alloc.connections[peer] = conn
        return conn

    def _drop_connection(self, conn: PeerConnection, *, emit: bool) -> None:
        """Forget ``conn`` (live: every caller found it in an index)."""
        conn.alive = False
        self._connections.pop(conn.connection_id, None)
        conns = conn.allocation.connections
        if conns.get(conn.peer) is conn:
            del conns[conn.peer]
        dc = conn.data_connection
        if dc is not None:
            key = (dc.client, dc.server)
            if self._data_connections.get(key) is conn:
                del self._data_connections[key]
        if emit:
            self._emit(PeerConnectionReleased(connection_id=conn.connection_id))

    def _connection_bind(self, ctx: _Request, username: str, now: float) -> None:
        msg = ctx.msg
        key = (ctx.client, ctx.local)
        if (
            not ctx.transport.is_stream
            or ctx.alloc is not None
            or key in self._data_connections
            or (True, ctx.client, ctx.local) in self._pending_by_client
        ):
            self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))
            return
        cid = msg.get(tat.CONNECTION_ID)
        conn = self._connections.get(cid) if cid is not None else None
        if conn is None or conn.state != PeerConnection.WAITING:
            self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))
            return
        if conn.allocation.username != username:
            self._answer(ctx, _error(msg, ErrorCode.WRONG_CREDENTIALS))
            return
        conn.state = PeerConnection.BOUND
        conn.timer_at = -1.0  # no expiry once bound: it lives as long as both connections
        ft = FiveTuple(ctx.client, ctx.local, ctx.transport)
        conn.data_connection = ft
        self._data_connections[key] = conn
        self._answer(ctx, msg.success(), remember=False)
        self._emit(ConnectionBound(connection_id=conn.connection_id, data_connection=ft))
