"""Which peers a TURN relay may talk to (RFC 8656 §21, security considerations), sans-IO.

A relay that forwards to any address lets anyone on the internet reach the
server's own loopback services, its private network, the cloud metadata
service at 169.254.169.254, or multicast groups. :class:`PeerPolicy` denies
every special-purpose range of :func:`natkit.addr.address_class` by default:
unspecified (0.0.0.0/8, ::/128), loopback, link-local (169.254.0.0/16,
fe80::/10), RFC 1918, shared address space 100.64.0.0/10, unique-local
fc00::/7, multicast, Teredo 2001::/32, 6to4 2002::/16, IPv4-mapped IPv6
::ffff:0:0/96 (a v6 relay socket would send those as IPv4, around the IPv4
rules) and the reserved ranges (240.0.0.0/4, broadcast, 192.0.0.0/24,
198.18.0.0/15, 64:ff9b:1::/48), and :data:`DEFAULT_DENIED_NETWORKS`, the
special-purpose ranges :func:`~natkit.addr.address_class` calls global:
IPv4-compatible IPv6 ::a.b.c.d (::/96, deprecated by RFC 4291; ``::127.0.0.1``
must not reach loopback), site-local fec0::/10 (deprecated, RFC 3879),
discard-only 100::/64 (RFC 6666), benchmarking 2001:2::/48 (RFC 5180),
ORCHID 2001:10::/28 and ORCHIDv2 2001:20::/28 (RFC 7343), and the 6to4
relay anycast 192.88.99.0/24 (RFC 7526). Addresses in the NAT64 prefix
64:ff9b::/96 are judged by the IPv4 address they embed.

The server's own addresses (:meth:`PeerPolicy.allowed_peer`): a peer on one
of its relay IPs (or their advertised external IPs, or an IP it listens on)
is allowed only on a port of the relay range (another allocation's relayed
address: two clients of one server reach each other that way), and never at
a listening endpoint itself: anything else would let a client send TURN
requests to the server from its own relay (TURN in TURN) or reach other
services on the server's addresses.

Documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
2001:db8::/32) are allowed: natkit's simulated internet uses them as its
public addresses.

``allowed`` (an allow-list) overrides everything but the listening
endpoints, as coturn's ``allowed-peer-ip`` does; ``denied`` adds ranges on
top of the defaults.
Verdicts are cached per address text (bounded), because the same few peers
are asked about for every packet that takes the general path.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from natkit.addr import AddressClass, Endpoint, address_class, ip_of

__all__ = ["DEFAULT_DENIED_CLASSES", "DEFAULT_DENIED_NETWORKS", "PeerPolicy"]

DEFAULT_DENIED_CLASSES = frozenset(AddressClass) - {AddressClass.GLOBAL, AddressClass.DOCUMENTATION}

DEFAULT_DENIED_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "::/96",  # IPv4-compatible (::1 and :: are classified already)
        "fec0::/10",  # site-local
        "100::/64",  # discard-only
        "2001:2::/48",  # benchmarking
        "2001:10::/28",  # ORCHID
        "2001:20::/28",  # ORCHIDv2
        "192.88.99.0/24",  # 6to4 relay anycast
    )
)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class PeerPolicy:
    """``allowed(host)``: may the relay exchange packets with IP ``host``?"""

    __slots__ = (
        "_allowed",
        "_cache",
        "_cache_size",
        "_denied",
        "_listeners",
        "_own",
        "_relay_max",
        "_relay_min",
    )

    def __init__(
        self,
        allowed: Iterable[IPNetwork] = (),
        denied: Iterable[IPNetwork] = (),
        *,
        own_ips: Iterable[str] = (),
        relay_ports: tuple[int, int] = (0, 0xFFFF),
        cache_size: int = 65536,
    ) -> None:
        self._allowed = tuple(allowed)
        self._denied = tuple(denied) + DEFAULT_DENIED_NETWORKS
        self._cache: dict[str, bool] = {}
        self._cache_size = cache_size
        self._own = {str(ip_of(ip)) for ip in own_ips}
        self._relay_min, self._relay_max = relay_ports
        self._listeners: set[Endpoint] = set()

    def add_listener(self, local: Endpoint) -> None:
        """The server receives clients at ``local``: that endpoint is never a
        peer, and its IP counts as one of the server's own (bounded: a
        server has a few listening addresses)."""
        if local in self._listeners or len(self._listeners) >= _MAX_LISTENERS:
            return
        self._listeners.add(local)
        if not ip_of(local.host).is_unspecified:
            self._own.add(local.host)

    def allowed_peer(self, peer: Endpoint) -> bool:
        """:meth:`allowed` for ``peer``'s IP, and not one of the server's own
        addresses: a listening endpoint is always refused; another port on
        one of the server's IPs only inside the relay range, unless the IP
        is allow-listed (see the module docstring)."""
        if peer in self._listeners or not self.allowed(peer.host):
            return False
        if peer.host not in self._own:
            return True
        if self._relay_min <= peer.port <= self._relay_max:
            return True
        ip = ip_of(peer.host)
        return any(ip in net for net in self._allowed if net.version == ip.version)

    def __len__(self) -> int:
        """Cached verdicts (bounded by ``cache_size``)."""
        return len(self._cache)

    def allowed(self, host: str) -> bool:
        """The verdict for one IP literal (anything unparsable is denied)."""
        verdict = self._cache.get(host)
        if verdict is None:
            verdict = self._decide(host)
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[host] = verdict
        return verdict

    def _decide(self, host: str) -> bool:
        try:
            ip = ip_of(host)
        except ValueError:
            return False
        if any(ip in net for net in self._allowed if net.version == ip.version):
            return True
        if any(ip in net for net in self._denied if net.version == ip.version):
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip in _NAT64:
            embedded = ipaddress.IPv4Address(ip.packed[12:])
            return self._decide(str(embedded))
        return address_class(ip) not in DEFAULT_DENIED_CLASSES


_MAX_LISTENERS = 256
