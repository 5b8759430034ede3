"""Relaying through a TURN allocation: permissions, channels, Send, Data, ChannelData
(RFC 8656 §9-12), sans-IO.

A peer may reach the client only through a permission for its IP
(CreatePermission, §10; a ChannelBind installs one too, §12.2), 300 s
unless refreshed (§9). Permissions are created only for peers the
:class:`~natkit.turn.policy.PeerPolicy` allows, so the data paths check the
permission alone. Client data arrives as Send indications (§11.2) or
ChannelData (§12.6); peer data goes back as ChannelData when a channel is
bound to the peer (§12.7, padded to 4 bytes over streams, §12.5) and as a
Data indication otherwise (§11.3), built directly without a StunMessage.
An ICMP error for a relayed datagram becomes a Data indication with ICMP
and no DATA (§11.5). A channel that expires stays quarantined for 5
minutes: neither its number nor its peer can be bound again (§12).

Hot path: :meth:`_Relaying.relay_client_packet` and
:meth:`_Relaying.relay_peer_packet` relay ChannelData and peer data in a
few dict lookups and return the datagram, without queueing; ``None`` means
"nothing done, nothing counted" and the general path handles and counts
the packet. Byte quotas (:class:`~natkit.turn.quota.ByteBucket`) are only
consulted when one is configured.
"""

from __future__ import annotations

import struct

from natkit.addr import Endpoint, Transport, ip_of
from natkit.errors import MalformedMessageError
from natkit.stun import attributes as at
from natkit.stun.constants import (
    MAGIC_COOKIE,
    MAGIC_COOKIE_BYTES,
    AttributeType,
    ErrorCode,
    MessageClass,
    Method,
)
from natkit.stun.message import StunMessage, message_type
from natkit.turn import attributes as tat
from natkit.turn.allocation import Allocation, Channel, Permission
from natkit.turn.attributes import IcmpValue
from natkit.turn.channel import CHANNEL_MIN
from natkit.turn.server_base import _UDP, TurnDatagram, _error, _Request
from natkit.turn.timers import _Timers


class _Relaying(_Timers):
    """Permissions, channels and the data paths; see the module docstring."""

    def receive_peer_datagram(
        self, data: bytes, peer: Endpoint, *, relay: Endpoint, now: float
    ) -> None:
        """A UDP datagram from ``peer`` arrived at relay address ``relay``: relay
        it to the client as ChannelData when a channel is bound to ``peer``,
        else as a Data indication (RFC 8656 §11.3, §12.7), if a permission for
        the peer's IP exists and the peer is not denied; otherwise drop it."""
        self._now = now
        out = self.relay_peer_packet(data, peer, relay, now)
        if out is not None:
            self._out.append(out)
            return
        stats = self.stats
        stats.dropped += 1
        if self._by_relay.get(relay) is not None and not self._policy.allowed(peer.host):
            stats.denied_peers += 1

    def relay_client_packet(
        self,
        data: bytes,
        client: Endpoint,
        local: Endpoint,
        now: float,
        *,
        transport: Transport,
    ) -> TurnDatagram | None:
        """Hot path for ChannelData from a client (RFC 8656 §12.6): one UDP
        datagram, or one message framed out of a TCP/TLS stream. ``transport``
        is required: a UDP and a TCP client may share an IP:port (one NAT),
        and their 5-tuples, allocations and channels are distinct.

        Returns the datagram to send to the peer now, or ``None``: then
        nothing was done, not even counted, and the driver must hand the
        datagram to :meth:`receive_datagram`, which handles everything else
        (STUN) and counts drops (unbound or expired channel, no permission,
        truncated, over quota).
        """
        alloc = (self._udp if transport is _UDP else self._stream).get((client, local))
        if alloc is None or len(data) < 4:
            return None
        b0 = data[0]
        if b0 & 0xC0 != 0x40:
            return None
        ch = alloc.channels.get(b0 << 8 | data[1])
        if ch is None or ch.expires <= now:
            return None
        n = data[2] << 8 | data[3]
        if n + 4 > len(data) or n > _MAX_UDP_PAYLOAD:
            return None
        perm = alloc.permissions.get(ch.peer.host)
        if perm is None or perm.expires <= now:
            return None
        if self._limited and not self._take_to_peer(alloc, n, now):
            return None
        alloc.packets_out += 1
        alloc.bytes_out += n
        stats = self.stats
        stats.packets_to_peers += 1
        stats.bytes_to_peers += n
        return TurnDatagram(data[4 : 4 + n], ch.peer, ch.relay, _UDP)

    def relay_peer_packet(
        self, data: bytes, peer: Endpoint, relay: Endpoint, now: float
    ) -> TurnDatagram | None:
        """Hot path for a UDP datagram from ``peer`` at relay ``relay``
        (RFC 8656 §11.3, §12.7): returns the ChannelData message or Data
        indication to send to the client now, or ``None``: nothing was done
        or counted; the driver passes the datagram to
        :meth:`receive_peer_datagram`, which drops and counts it. A peer
        needs a permission for its IP; permissions exist only for peers the
        policy allows, so no policy lookup is needed here."""
        alloc = self._by_relay.get(relay)
        if alloc is None or not alloc.udp_relay:
            return None
        perm = alloc.permissions.get(peer.host)
        if perm is None or perm.expires <= now:
            return None
        n = len(data)
        if n > _MAX_RELAYED:
            return None
        if self._limited and not self._take_to_client(alloc, n, now):
            return None
        ch = alloc.by_peer.get(peer)
        if ch is not None and ch.expires > now:
            if alloc.stream and n & 3:
                out = _CD_HEAD.pack(ch.number, n) + data + _PAD[n & 3]
            else:
                out = _CD_HEAD.pack(ch.number, n) + data
        else:
            out = self._data_indication(peer, data)
        alloc.packets_in += 1
        alloc.bytes_in += n
        stats = self.stats
        stats.packets_to_clients += 1
        stats.bytes_to_clients += n
        return TurnDatagram(out, alloc.client, alloc.server, alloc.transport)

    def peer_icmp(
        self,
        relay: Endpoint,
        peer: Endpoint,
        *,
        icmp_type: int,
        icmp_code: int,
        error_data: int = 0,
        now: float,
    ) -> None:
        """The platform reported an ICMP error for a datagram relay ``relay``
        sent to ``peer`` (RFC 8656 §11.5): tell the client with a Data
        indication carrying XOR-PEER-ADDRESS and ICMP (no DATA), if the peer
        has a permission. Otherwise, and for unknown relays, nothing happens."""
        self._now = now
        alloc = self._by_relay.get(relay)
        if alloc is None or not alloc.udp_relay:
            return
        perm = alloc.permissions.get(peer.host)
        if perm is None or perm.expires <= now:
            return
        ind = StunMessage(Method.DATA, MessageClass.INDICATION, self._tid())
        ind.add(at.XOR_PEER_ADDRESS, peer)
        ind.add(tat.ICMP, IcmpValue(icmp_type & 0xFF, icmp_code & 0xFF, error_data & 0xFFFFFFFF))
        self._send(ind, alloc.client, alloc.server, alloc.transport, None, None, False)

    # -- CreatePermission (§10) ---------------------------------------------------

    def _create_permission(self, ctx: _Request, now: float) -> None:
        msg = ctx.msg
        alloc = ctx.alloc
        if alloc is None:
            self._answer(ctx, _error(msg, ErrorCode.ALLOCATION_MISMATCH))
            return
        peers = msg.get_all(at.XOR_PEER_ADDRESS)
        if not peers:
            self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))
            return
        if len(peers) > _MAX_PEERS_PER_REQUEST:
            self._answer(ctx, _error(msg, ErrorCode.INSUFFICIENT_CAPACITY))
            return
        if any(alloc.relay_for(p) is None for p in peers):
            self._answer(ctx, _error(msg, ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH))
            return
        if not all(self._policy.allowed(p.host) for p in peers):
            self.stats.denied_peers += 1
            self._answer(ctx, _error(msg, ErrorCode.FORBIDDEN))
            return
        cap = self.config.max_permissions
        if cap:
            perms = alloc.permissions
            if len(perms) + len({p.host for p in peers if p.host not in perms}) > cap:
                self.stats.quota_rejections += 1
                self._answer(ctx, _error(msg, ErrorCode.INSUFFICIENT_CAPACITY))
                return
        for peer in peers:
            self._permit(alloc, peer.host, now)
        self._answer(ctx, msg.success())

    def _permit(self, alloc: Allocation, host: str, now: float) -> None:
        expires = now + self.config.permission_lifetime
        perm = alloc.permissions.get(host)
        if perm is None:
            perm = Permission(alloc, host, expires)
            alloc.permissions[host] = perm
            self._arm(perm, expires)
        else:
            self._set_expiry(perm, expires)

    # -- ChannelBind (§12.2) -------------------------------------------------------

    def _channel_bind(self, ctx: _Request, now: float) -> None:
        msg = ctx.msg
        alloc = ctx.alloc
        if alloc is None:
            self._answer(ctx, _error(msg, ErrorCode.ALLOCATION_MISMATCH))
            return
        number = msg.get(tat.CHANNEL_NUMBER)
        peer = msg.get(at.XOR_PEER_ADDRESS)
        if (
            number is None
            or peer is None
            or not (CHANNEL_MIN <= number <= self._channel_max)
            or not alloc.udp_relay
        ):
            self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))
            return
        relay = alloc.relay_for(peer)
        if relay is None:
            self._answer(ctx, _error(msg, ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH))
            return
        if not self._policy.allowed(peer.host):
            self.stats.denied_peers += 1
            self._answer(ctx, _error(msg, ErrorCode.FORBIDDEN))
            return
        ch = alloc.channels.get(number)
        other = alloc.by_peer.get(peer)
        if (ch is not None and ch.peer != peer) or (other is not None and other.number != number):
            self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))
            return
        if not self._policy.allowed_peer(peer):  # one of the server's own addresses
            self.stats.denied_peers += 1
            self._answer(ctx, _error(msg, ErrorCode.FORBIDDEN))
            return
        cfg = self.config
        if (ch is None and cfg.max_channels and len(alloc.channels) >= cfg.max_channels) or (
            cfg.max_permissions
            and peer.host not in alloc.permissions
            and len(alloc.permissions) >= cfg.max_permissions
        ):
            self.stats.quota_rejections += 1
            self._answer(ctx, _error(msg, ErrorCode.INSUFFICIENT_CAPACITY))
            return
        expires = now + self.config.channel_lifetime
        if ch is None:
            ch = Channel(alloc, number, peer, relay, expires)
            alloc.channels[number] = ch
            alloc.by_peer[peer] = ch
            self._arm(ch, expires + _CHANNEL_QUARANTINE)
        else:
            ch.expires = expires  # later than before: the timer entry re-arms itself
        self._permit(alloc, peer.host, now)
        self._answer(ctx, msg.success())

    def _drop_channel(self, ch: Channel) -> None:
        ch.alive = False
        alloc = ch.allocation
        if alloc.channels.get(ch.number) is ch:
            del alloc.channels[ch.number]
        if alloc.by_peer.get(ch.peer) is ch:
            del alloc.by_peer[ch.peer]

    # -- Send indications and ChannelData from clients (§11.2, §12.6) -------------

    def _send_indication(
        self, msg: StunMessage, client: Endpoint, local: Endpoint, transport: Transport, now: float
    ) -> None:
        stats = self.stats
        alloc = (self._stream if transport.is_stream else self._udp).get((client, local))
        try:
            peer = msg.get(at.XOR_PEER_ADDRESS)
            data = msg.get(at.DATA)
        except MalformedMessageError:
            peer = data = None
        if alloc is None or peer is None or data is None or not alloc.udp_relay:
            stats.dropped += 1
            return
        relay = alloc.relay_for(peer)
        if relay is None:
            stats.dropped += 1
            return
        if not self._policy.allowed_peer(peer):
            stats.denied_peers += 1
            stats.dropped += 1
            return
        perm = alloc.permissions.get(peer.host)
        if perm is None or perm.expires <= now:
            stats.dropped += 1
            return
        n = len(data)
        if n > _MAX_UDP_PAYLOAD or (self._limited and not self._take_to_peer(alloc, n, now)):
            stats.dropped += 1
            return
        alloc.packets_out += 1
        alloc.bytes_out += n
        stats.packets_to_peers += 1
        stats.bytes_to_peers += n
        self._out.append(TurnDatagram(data, peer, relay, _UDP))

    def _client_channel_data(
        self, data: bytes, client: Endpoint, local: Endpoint, transport: Transport, now: float
    ) -> None:
        # Over TCP/TLS the framer delivered exactly one message, padding stripped.
        out = self.relay_client_packet(data, client, local, now, transport=transport)
        if out is not None:
            self._out.append(out)
        else:
            self.stats.dropped += 1

    def _take_to_peer(self, alloc: Allocation, n: int, now: float) -> bool:
        bucket = alloc.bucket_to_peer
        if bucket is not None and not bucket.take(n, now):
            return False
        total = self._total_to_peer
        return total is None or total.take(n, now)

    def _take_to_client(self, alloc: Allocation, n: int, now: float) -> bool:
        bucket = alloc.bucket_to_client
        if bucket is not None and not bucket.take(n, now):
            return False
        total = self._total_to_client
        return total is None or total.take(n, now)

    def _data_indication(self, peer: Endpoint, data: bytes) -> bytes:
        """A Data indication (§11.3) with XOR-PEER-ADDRESS and DATA, built directly."""
        tid = self._rng.randbytes(12)
        n = len(data)
        pad = _PAD[n & 3]
        packed = ip_of(peer.host).packed
        xport = peer.port ^ 0x2112
        if len(packed) == 4:
            xpeer = _XPEER_V4.pack(
                AttributeType.XOR_PEER_ADDRESS,
                8,
                1,
                xport,
                int.from_bytes(packed, "big") ^ MAGIC_COOKIE,
            )
        else:
            mask = int.from_bytes(MAGIC_COOKIE_BYTES + tid, "big")
            xpeer = _XPEER_V6_HEAD.pack(AttributeType.XOR_PEER_ADDRESS, 20, 2, xport) + (
                int.from_bytes(packed, "big") ^ mask
            ).to_bytes(16, "big")
        length = len(xpeer) + 4 + n + len(pad)
        return b"".join(
            (
                _STUN_HEAD.pack(_DATA_INDICATION, length, MAGIC_COOKIE),
                tid,
                xpeer,
                _ATTR_HEAD.pack(AttributeType.DATA, n),
                data,
                pad,
            )
        )


_RFC5766_CHANNEL_MAX = 0x7FFF  # RFC 5766 §11; 0x8000 and up look like nothing valid
_MAX_PEERS_PER_REQUEST = 128  # XOR-PEER-ADDRESS in one CreatePermission; more: 508
_CHANNEL_QUARANTINE = 300.0  # RFC 8656 §12: no reuse for 5 minutes after expiry
_MAX_UDP_PAYLOAD = 65507  # the most one IPv4 UDP datagram carries
# The largest peer payload whose Data indication (20 + 24 + 4 bytes of STUN
# for an IPv6 peer) still fits one UDP datagram to the client.
_MAX_RELAYED = _MAX_UDP_PAYLOAD - 48
_CD_HEAD = struct.Struct("!HH")
_STUN_HEAD = struct.Struct("!HHI")
_ATTR_HEAD = struct.Struct("!HH")
_XPEER_V4 = struct.Struct("!HHxBHI")
_XPEER_V6_HEAD = struct.Struct("!HHxBH")
_DATA_INDICATION = message_type(Method.DATA, MessageClass.INDICATION)
_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")
