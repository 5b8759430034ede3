"""The TURN server's one frozen configuration (STYLE.md "Configuration"), sans-IO.

:class:`TurnServerConfig` carries RFC 8656's defaults, named after the RFC's
own values: allocation lifetimes (§7.2: 600 s default, 3600 s maximum),
permission lifetime (§9: 300 s), channel lifetime (§12: 600 s), the channel
number range (§12, optionally RFC 5766's wider one), the RFC 6062 TCP relay
switch and its ConnectionBind deadline (RFC 6062 §5.2-5.3). Security
defaults are on: the special-purpose peer ranges are denied (§21.1.6), REST
credentials fail closed without a wall clock, and unsigned answers are rate
limited per source IP (§21). :class:`natkit.turn.server.TurnServer` reads
it; nothing here changes at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

from natkit.addr import Endpoint
from natkit.rng import Rng, default_rng
from natkit.stun.constants import PasswordAlgorithm

IPNetwork = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class TurnServerConfig:
    """Defaults are RFC 8656's (§7.2 lifetimes, §9 permissions, §12 channels) and
    secure (peer denial, fail-closed REST expiry)."""

    realm: str
    relay_ips: tuple[str, ...]  # local IPs relay sockets bind to (at most one per family)
    external_ips: dict[str, str] = field(default_factory=dict)  # relay IP -> advertised IP
    min_port: int = 49152
    max_port: int = 65535
    # Released UDP relay sockets the driver keeps open for the next allocations,
    # and how long a released port rests before it is handed out again
    # (natkit.turn.released_ports); 0 sockets: every relay socket is new.
    relay_socket_pool: int = 16384
    relay_port_quarantine: float = 1.0
    default_lifetime: float = 600.0
    max_lifetime: float = 3600.0
    permission_lifetime: float = 300.0
    channel_lifetime: float = 600.0
    nonce_lifetime: float = 3600.0
    tcp_connect_timeout: float = 30.0  # RFC 6062 §5.2-5.3 ConnectionBind deadline
    allowed_peers: tuple[IPNetwork, ...] = ()  # allow-list that overrides the denied ranges
    denied_peers: tuple[IPNetwork, ...] = ()  # denied on top of the default special ranges
    max_allocations_per_user: int = 0  # 0 = no limit
    max_allocations: int = 0  # 0 = no limit
    max_bps_per_allocation: int = 0  # bytes/s relayed each way; 0 = no limit
    max_bps_total: int = 0
    unauthenticated_rate: float = 20.0  # 401s per second per source IP ...
    unauthenticated_burst: float = 40.0  # ... and its burst
    # Binding answers over UDP to sources without an allocation, per source IP
    # (a 20-byte request draws a 44-byte answer: no reflection); 0 = no limit.
    binding_rate: float = 50.0
    binding_burst: float = 100.0
    # Per allocation (0 = no limit); past them the request is 508.
    max_permissions: int = 1000  # peer IPs (RFC 8656 §9)
    max_channels: int = 1000  # channel bindings, quarantined ones included (§12)
    max_peer_connections: int = 100  # RFC 6062 peer connections, both directions
    # RFC 6062 Connect to these peer ports is 403 (port 25: no SMTP from the relay).
    denied_connect_ports: tuple[int, ...] = (25,)
    alternate_server: Endpoint | None = None  # ALTERNATE-SERVER: answer Allocate with 300
    algorithms: tuple[PasswordAlgorithm, ...] = (PasswordAlgorithm.SHA256, PasswordAlgorithm.MD5)
    software: str | None = "natkit"
    tcp_relay: bool = True  # RFC 6062
    # Accept RFC 5766's channel numbers 0x5000-0x7FFF too (coturn does, and its
    # turnutils_uclient picks numbers from the whole range); False: RFC 8656 §12's
    # 0x4000-0x4FFF only.
    rfc5766_channels: bool = True
    rng: Rng = field(default_factory=default_rng)
    wallclock: Callable[[], float] | None = None  # for REST credential expiry
