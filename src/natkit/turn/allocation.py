"""The state a TURN server keeps per allocation (RFC 8656 §2.2, §5, §9, §12), sans-IO.

Plain slotted records, owned and indexed by :class:`natkit.turn.server.TurnServer`:

* :class:`Allocation`: one 5-tuple's relayed transport address(es), its
  lifetime, permissions by peer IP, channels by number and by peer, RFC 6062
  peer connections by peer, byte counters, and the last responses sent (so a
  retransmitted request gets the same answer, RFC 8656 §7.2, §8).
* :class:`Permission` (RFC 8656 §9): one peer IP, 300 s unless refreshed.
* :class:`Channel` (RFC 8656 §12): one number bound to one peer transport
  address, 600 s unless refreshed; after expiry the number and the peer stay
  unusable by any other binding for another 5 minutes (§12), so the record
  lives until ``expires + quarantine``.
* :class:`Reservation` (§7.2, EVEN-PORT with R): a held relay port, 30 s.
* :class:`PeerConnection` (RFC 6062 §5.2-5.4): a TCP connection to a peer.
* :class:`PendingAllocate`: an Allocate waiting for the driver to open sockets.

Every record that expires carries ``timer_at`` (the deadline of its one live
entry in the server's timer heap) and ``alive``; a heap entry whose deadline
is not the record's ``timer_at`` is stale and skipped, which keeps each
refresh O(log n) without searching the heap.
"""

from __future__ import annotations

from natkit.addr import Endpoint, Transport
from natkit.stun.message import Integrity
from natkit.turn.attributes import AddressErrorCode
from natkit.turn.events import FiveTuple
from natkit.turn.quota import ByteBucket

__all__ = [
    "Allocation",
    "Channel",
    "PeerConnection",
    "PendingAllocate",
    "Permission",
    "Reservation",
]


class Permission:
    __slots__ = ("alive", "allocation", "expires", "host", "timer_at")

    def __init__(self, allocation: Allocation, host: str, expires: float) -> None:
        self.allocation = allocation
        self.host = host
        self.expires = expires
        self.timer_at = expires
        self.alive = True


class Channel:
    __slots__ = ("alive", "allocation", "expires", "number", "peer", "relay", "timer_at")

    def __init__(
        self, allocation: Allocation, number: int, peer: Endpoint, relay: Endpoint, expires: float
    ) -> None:
        self.allocation = allocation
        self.number = number
        self.peer = peer
        self.relay = relay
        self.expires = expires
        self.timer_at = 0.0
        self.alive = True


class Reservation:
    __slots__ = ("alive", "relay", "timer_at", "token")

    def __init__(self, token: bytes, relay: Endpoint, expires: float) -> None:
        self.token = token
        self.relay = relay
        self.timer_at = expires
        self.alive = True


class PeerConnection:
    """RFC 6062: ``state`` is CONNECTING (Connect sent to the driver),
    WAITING (connected, waiting for ConnectionBind) or BOUND."""

    CONNECTING = 0
    WAITING = 1
    BOUND = 2

    __slots__ = (
        "alive",
        "allocation",
        "connection_id",
        "data_connection",
        "peer",
        "request",
        "state",
        "timer_at",
    )

    def __init__(
        self, connection_id: int, allocation: Allocation, peer: Endpoint, state: int
    ) -> None:
        self.connection_id = connection_id
        self.allocation = allocation
        self.peer = peer
        self.state = state
        self.timer_at = 0.0
        self.alive = True
        self.data_connection: FiveTuple | None = None
        # The Connect request to answer: (transaction id, key, integrity, fingerprint).
        self.request: tuple[bytes, bytes, Integrity, bool] | None = None


class Allocation:
    __slots__ = (
        "advertised",
        "alive",
        "allocate_response",
        "allocate_tid",
        "allocation_id",
        "bucket_to_client",
        "bucket_to_peer",
        "by_peer",
        "bytes_in",
        "bytes_out",
        "channels",
        "client",
        "connections",
        "created",
        "expires",
        "five_tuple",
        "last_response",
        "last_tid",
        "packets_in",
        "packets_out",
        "permissions",
        "relay_transport",
        "relay_v4",
        "relay_v6",
        "relays",
        "server",
        "stream",
        "timer_at",
        "transport",
        "udp_relay",
        "username",
    )

    def __init__(
        self,
        allocation_id: int,
        five_tuple: FiveTuple,
        username: str,
        relays: tuple[Endpoint, ...],
        advertised: tuple[Endpoint, ...],
        relay_transport: Transport,
        now: float,
        expires: float,
    ) -> None:
        self.allocation_id = allocation_id
        self.five_tuple = five_tuple
        self.client = five_tuple.client
        self.server = five_tuple.server
        self.transport = five_tuple.transport
        self.stream = five_tuple.transport.is_stream
        self.username = username
        self.relays = relays
        self.advertised = advertised
        self.relay_transport = relay_transport
        self.udp_relay = relay_transport is Transport.UDP
        self.relay_v4: Endpoint | None = None
        self.relay_v6: Endpoint | None = None
        for relay in relays:
            if ":" in relay.host:
                self.relay_v6 = relay
            else:
                self.relay_v4 = relay
        self.created = now
        self.expires = expires
        self.timer_at = expires
        self.alive = True
        self.permissions: dict[str, Permission] = {}
        self.channels: dict[int, Channel] = {}
        self.by_peer: dict[Endpoint, Channel] = {}
        self.connections: dict[Endpoint, PeerConnection] = {}
        self.allocate_tid = b""
        self.allocate_response = b""
        self.last_tid = b""
        self.last_response = b""
        self.packets_in = 0
        self.packets_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.bucket_to_peer: ByteBucket | None = None
        self.bucket_to_client: ByteBucket | None = None

    def relay_for(self, peer: Endpoint) -> Endpoint | None:
        """The relayed address of ``peer``'s family, if the allocation has one."""
        return self.relay_v6 if ":" in peer.host else self.relay_v4


class PendingAllocate:
    """An Allocate request that passed every check and waits for sockets."""

    __slots__ = (
        "address_error",
        "alive",
        "attempts",
        "even",
        "fingerprint",
        "five_tuple",
        "integrity",
        "key",
        "lifetime",
        "relay_transport",
        "relays",
        "request_id",
        "reservation",
        "reserve",
        "reserve_token",
        "timer_at",
        "transaction_id",
        "username",
    )

    def __init__(
        self,
        request_id: int,
        five_tuple: FiveTuple,
        transaction_id: bytes,
        username: str,
        key: bytes,
        integrity: Integrity,
        fingerprint: bool,
        lifetime: float,
        relay_transport: Transport,
    ) -> None:
        self.request_id = request_id
        self.five_tuple = five_tuple
        self.transaction_id = transaction_id
        self.username = username
        self.key = key
        self.integrity = integrity
        self.fingerprint = fingerprint
        self.lifetime = lifetime
        self.relay_transport = relay_transport
        self.relays: tuple[Endpoint, ...] = ()
        self.reserve: Endpoint | None = None  # EVEN-PORT R: port + 1 to hold
        self.reserve_token = b""
        self.reservation: Reservation | None = None  # consumed RESERVATION-TOKEN
        self.even = False
        self.address_error: AddressErrorCode | None = None
        self.attempts = 0
        self.timer_at = 0.0
        self.alive = True
