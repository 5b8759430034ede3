"""Finding servers in the DNS: SRV with A/AAAA fallback (RFC 2782, RFC 8489 §8).

``stun.example.org`` becomes an ordered list of endpoints: SRV records
``_stun._udp`` (``_stun._tcp`` over TCP, ``_stuns._tcp`` over TLS), sorted by
priority and, within a priority, by RFC 2782's weighted random draw; each
target's AAAA and A records in that order. Without SRV records the name's own
addresses are used with the default port (3478, 5349 for TLS). An explicit
port or an IP literal skips SRV, as RFC 8489 §8 says. RFC 3263 (SIP) reuses
:func:`order_srv` and :func:`resolve_addresses`.
"""

from __future__ import annotations

import contextlib
import ipaddress

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from natkit.addr import Endpoint, Transport, parse_endpoint
from natkit.errors import TransportError
from natkit.rng import Rng
from natkit.srv import SrvRecord, order_srv

__all__ = ["SrvRecord", "order_srv", "resolve_addresses", "resolve_stun", "split_host_port"]

STUN_PORT = 3478
STUNS_PORT = 5349


def split_host_port(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port``, or a bare IPv6 literal."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, None


async def resolve_addresses(
    host: str, port: int, resolver: dns.asyncresolver.Resolver | None = None
) -> list[Endpoint]:
    """AAAA then A records of ``host`` (an IP literal resolves to itself)."""
    with contextlib.suppress(ValueError):
        return [Endpoint.of(str(ipaddress.ip_address(host)), port)]
    res = resolver or dns.asyncresolver.Resolver()
    out: list[Endpoint] = []
    for rdtype in (dns.rdatatype.AAAA, dns.rdatatype.A):
        try:
            answer = await res.resolve(host, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            continue
        except dns.exception.Timeout as exc:
            raise TransportError(f"DNS timeout resolving {host}") from exc
        out.extend(Endpoint.of(rr.address, port) for rr in answer)
    return out


async def resolve_stun(
    target: str,
    *,
    transport: Transport = Transport.UDP,
    resolver: dns.asyncresolver.Resolver | None = None,
    rng: Rng | None = None,
) -> list[Endpoint]:
    """Every endpoint at which ``target`` offers STUN, best first (RFC 8489 §8).

    Raises :class:`TransportError` when the name resolves to nothing.
    """
    secure = transport is Transport.TLS
    default_port = STUNS_PORT if secure else STUN_PORT
    with contextlib.suppress(ValueError):
        return [parse_endpoint(target, default_port)]
    host, port = split_host_port(target)
    res = resolver or dns.asyncresolver.Resolver()
    if port is not None:
        found = await resolve_addresses(host, port, res)
    else:
        service = (
            "_stuns._tcp" if secure else ("_stun._tcp" if transport.is_stream else "_stun._udp")
        )
        records: list[SrvRecord] = []
        try:
            answer = await res.resolve(f"{service}.{host}", dns.rdatatype.SRV)
            records = [
                SrvRecord(
                    rr.priority,
                    rr.weight,
                    rr.port,
                    "." if rr.target == dns.name.root else rr.target.to_text(omit_final_dot=True),
                )
                for rr in answer
            ]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            records = []
        except dns.exception.Timeout as exc:
            raise TransportError(f"DNS timeout resolving {service}.{host}") from exc
        found = []
        if records:
            for rec in order_srv(records, rng):
                found.extend(await resolve_addresses(rec.target, rec.port, res))
        else:
            found = await resolve_addresses(host, default_port, res)
    if not found:
        raise TransportError(f"{target} has no address")
    return found
