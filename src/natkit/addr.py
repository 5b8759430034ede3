"""Transport addresses and address classes.

An :class:`Endpoint` is an IP address (in its canonical text form) and a port.
It is a named tuple so that it is as cheap as the ``(host, port)`` pairs that
sockets hand out, yet typed: every module passes ``Endpoint`` values, never
loose tuples. The IP is parsed once and cached, so per-packet code can ask for
``endpoint.ip`` or ``endpoint.packed`` without paying for ``ipaddress`` again.

Address classes (:func:`address_class`) name the special-purpose ranges of
RFC 6890 that NAT traversal cares about: a STUN client compares its mapped
address with its local one, a TURN server refuses to relay to loopback or
RFC 1918 peers unless told to.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from typing import NamedTuple

__all__ = [
    "AddressClass",
    "Datagram",
    "Endpoint",
    "Family",
    "IPAddress",
    "Transport",
    "address_class",
    "canonical_ip",
    "ip_of",
    "parse_endpoint",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Family(enum.IntEnum):
    """Address family, numbered as STUN encodes it (RFC 8489 §14.1)."""

    IPV4 = 0x01
    IPV6 = 0x02


class Transport(enum.StrEnum):
    """How a message travels."""

    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"
    DTLS = "dtls"

    @property
    def is_stream(self) -> bool:
        return self in (Transport.TCP, Transport.TLS)


@functools.lru_cache(maxsize=65536)
def ip_of(host: str) -> IPAddress:
    """Parse an IP literal (cached: per-packet code calls this freely)."""
    # A scope suffix (fe80::1%eth0) is kept in Endpoint.host but not in the IP.
    return ipaddress.ip_address(host.partition("%")[0])


@functools.lru_cache(maxsize=65536)
def canonical_ip(text: str) -> str:
    """Return the canonical text form of an IP address (raises ``ValueError``).

    Cached: SIP header parsing calls it several times per message, for the
    few addresses a server sees over and over.
    """
    bare, sep, scope = text.strip("[]").partition("%")
    ip = ipaddress.ip_address(bare)
    return f"{ip}{sep}{scope}"


@functools.lru_cache(maxsize=65536)
def host_of_packed(packed: bytes) -> str:
    """The canonical text of a packed address: 4 bytes IPv4, 16 bytes IPv6."""
    return str(ipaddress.ip_address(packed))


class Endpoint(NamedTuple):
    """An IP address and a port: a transport address.

    ``host`` must be an IP literal in canonical form (use :func:`parse_endpoint`
    or :meth:`of` for user input); names are resolved before an Endpoint exists.
    """

    host: str
    port: int

    @classmethod
    def of(cls, host: str, port: int) -> Endpoint:
        """Build an Endpoint from any IP spelling, validating both parts."""
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port out of range: {port}")
        return cls(canonical_ip(host), port)

    @property
    def ip(self) -> IPAddress:
        return ip_of(self.host)

    @property
    def family(self) -> Family:
        return Family.IPV4 if ip_of(self.host).version == 4 else Family.IPV6

    @property
    def packed(self) -> bytes:
        return ip_of(self.host).packed

    def with_port(self, port: int) -> Endpoint:
        return Endpoint(self.host, port)

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_endpoint(text: str, default_port: int | None = None) -> Endpoint:
    """Parse ``1.2.3.4:5``, ``[::1]:5``, ``::1`` or ``1.2.3.4`` into an Endpoint.

    Raises ``ValueError`` for anything else, including host names: resolving
    names is the job of :mod:`natkit.net.dns`.
    """
    text = text.strip()
    host: str
    port: int | None = default_port
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"missing ']' in {text!r}")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"junk after ']' in {text!r}")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    else:
        host = text
    if port is None:
        raise ValueError(f"no port in {text!r}")
    return Endpoint.of(host, port)


class AddressClass(enum.Enum):
    """Special-purpose address ranges (RFC 6890 and friends)."""

    UNSPECIFIED = "unspecified"  # 0.0.0.0/8, ::/128
    LOOPBACK = "loopback"  # 127.0.0.0/8, ::1
    LINK_LOCAL = "link-local"  # 169.254.0.0/16 (incl. cloud metadata), fe80::/10
    PRIVATE = "private"  # RFC 1918
    SHARED = "shared"  # 100.64.0.0/10, RFC 6598 carrier-grade NAT
    UNIQUE_LOCAL = "unique-local"  # fc00::/7
    MULTICAST = "multicast"
    DOCUMENTATION = "documentation"  # RFC 5737, RFC 3849
    TEREDO = "teredo"  # 2001::/32
    SIX_TO_FOUR = "6to4"  # 2002::/16
    IPV4_MAPPED = "ipv4-mapped"  # ::ffff:0:0/96
    RESERVED = "reserved"  # 240.0.0.0/4, broadcast, benchmarking ...
    GLOBAL = "global"


_V4_CLASSES: tuple[tuple[ipaddress.IPv4Network, AddressClass], ...] = tuple(
    (ipaddress.IPv4Network(net), cls)
    for net, cls in (
        ("0.0.0.0/8", AddressClass.UNSPECIFIED),
        ("127.0.0.0/8", AddressClass.LOOPBACK),
        ("169.254.0.0/16", AddressClass.LINK_LOCAL),
        ("10.0.0.0/8", AddressClass.PRIVATE),
        ("172.16.0.0/12", AddressClass.PRIVATE),
        ("192.168.0.0/16", AddressClass.PRIVATE),
        ("100.64.0.0/10", AddressClass.SHARED),
        ("224.0.0.0/4", AddressClass.MULTICAST),
        ("192.0.2.0/24", AddressClass.DOCUMENTATION),
        ("198.51.100.0/24", AddressClass.DOCUMENTATION),
        ("203.0.113.0/24", AddressClass.DOCUMENTATION),
        ("192.0.0.0/24", AddressClass.RESERVED),
        ("198.18.0.0/15", AddressClass.RESERVED),
        ("240.0.0.0/4", AddressClass.RESERVED),
    )
)

_V6_CLASSES: tuple[tuple[ipaddress.IPv6Network, AddressClass], ...] = tuple(
    (ipaddress.IPv6Network(net), cls)
    for net, cls in (
        ("::/128", AddressClass.UNSPECIFIED),
        ("::1/128", AddressClass.LOOPBACK),
        ("fe80::/10", AddressClass.LINK_LOCAL),
        ("fc00::/7", AddressClass.UNIQUE_LOCAL),
        ("ff00::/8", AddressClass.MULTICAST),
        ("2001:db8::/32", AddressClass.DOCUMENTATION),
        ("2001::/32", AddressClass.TEREDO),
        ("2002::/16", AddressClass.SIX_TO_FOUR),
        ("::ffff:0:0/96", AddressClass.IPV4_MAPPED),
        ("64:ff9b:1::/48", AddressClass.RESERVED),
    )
)


@functools.lru_cache(maxsize=16384)
def address_class(ip: IPAddress | str) -> AddressClass:
    """Classify an address into the special-purpose range it belongs to."""
    addr = ip_of(ip) if isinstance(ip, str) else ip
    if isinstance(addr, ipaddress.IPv4Address):
        if addr == ipaddress.IPv4Address("255.255.255.255"):
            return AddressClass.RESERVED
        for net4, cls in _V4_CLASSES:
            if addr in net4:
                return cls
        return AddressClass.GLOBAL
    for net6, cls in _V6_CLASSES:
        if addr in net6:
            return cls
    return AddressClass.GLOBAL


class Datagram(NamedTuple):
    """A datagram a core wants sent: ``data`` to ``remote``, from the local
    transport address ``local`` (cores that own several sockets, such as an
    RFC 5780 STUN server, say which; ``None`` means "the only one")."""

    data: bytes
    remote: Endpoint
    local: Endpoint | None = None
