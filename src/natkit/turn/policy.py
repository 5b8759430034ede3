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
198.18.0.0/15, 64:ff9b:1::/48). Addresses in the NAT64 prefix 64:ff9b::/96
are judged by the IPv4 address they embed.

Documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
2001:db8::/32) are allowed: natkit's simulated internet uses them as its
public addresses.

``allowed`` (an allow-list) overrides everything, as coturn's
``allowed-peer-ip`` does; ``denied`` adds ranges on top of the defaults.
Verdicts are cached per address text (bounded), because the same few peers
are asked about for every packet that takes the general path.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from natkit.addr import AddressClass, address_class, ip_of

__all__ = ["DEFAULT_DENIED_CLASSES", "PeerPolicy"]

DEFAULT_DENIED_CLASSES = frozenset(AddressClass) - {AddressClass.GLOBAL, AddressClass.DOCUMENTATION}

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class PeerPolicy:
    """``allowed(host)``: may the relay exchange packets with IP ``host``?"""

    __slots__ = ("_allowed", "_cache", "_cache_size", "_denied")

    def __init__(
        self,
        allowed: Iterable[IPNetwork] = (),
        denied: Iterable[IPNetwork] = (),
        *,
        cache_size: int = 65536,
    ) -> None:
        self._allowed = tuple(allowed)
        self._denied = tuple(denied)
        self._cache: dict[str, bool] = {}
        self._cache_size = cache_size

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
