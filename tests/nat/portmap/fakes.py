"""A fake NAT box with the port-mapping API, and in-memory plumbing between
port-mapping clients and servers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from natkit.addr import Datagram, Endpoint
from natkit.packet import IpProto

GATEWAY = Endpoint("192.168.1.1", 5351)
CLIENT_IP = "192.168.1.10"
CLIENT = Endpoint(CLIENT_IP, 50000)
PUBLIC_IP = "203.0.113.7"


@dataclass
class FakeBox:
    """Explicit mappings only; ``external_port`` is a hint honoured when free."""

    public: list[str] = field(default_factory=lambda: [PUBLIC_IP])
    first_port: int = 40000
    capacity: int = 100
    refuse: bool = False
    strict: bool = False  # a taken suggested port fails instead of picking another
    taken: set[int] = field(default_factory=set)  # ports used by something else
    mappings: dict[tuple[IpProto, Endpoint], tuple[Endpoint, float]] = field(default_factory=dict)
    calls: list[tuple[str, IpProto, Endpoint, int | None, float]] = field(default_factory=list)

    @property
    def public_ips(self) -> Sequence[str]:
        return tuple(self.public)

    def add_port_mapping(
        self,
        proto: IpProto,
        internal: Endpoint,
        *,
        external_port: int | None,
        lifetime: float,
        now: float,
    ) -> Endpoint | None:
        self.calls.append(("add", proto, internal, external_port, lifetime))
        if self.refuse or not self.public:
            return None
        key = (proto, internal)
        current = self.mappings.get(key)
        if current is not None and current[1] > now:
            self.mappings[key] = (current[0], now + lifetime)
            return current[0]
        used = self.taken | {
            ext.port for (p, _), (ext, exp) in self.mappings.items() if p == proto and exp > now
        }
        if external_port is not None and external_port not in used:
            port = external_port
        elif external_port is not None and self.strict:
            return None
        else:
            free = [
                p for p in range(self.first_port, self.first_port + self.capacity) if p not in used
            ]
            if not free:
                return None
            port = free[0]
        external = Endpoint(self.public[0], port)
        self.mappings[key] = (external, now + lifetime)
        return external

    def remove_port_mapping(self, proto: IpProto, internal: Endpoint, *, now: float) -> bool:
        self.calls.append(("remove", proto, internal, None, 0.0))
        return self.mappings.pop((proto, internal), None) is not None


class _Core(Protocol):
    def receive_datagram(self, data: bytes, addr: Endpoint, *, now: float) -> None: ...

    def datagrams_to_send(self, *, now: float) -> list[Datagram]: ...


def pump(
    client: _Core,
    server: _Core,
    *,
    now: float,
    client_addr: Endpoint = CLIENT,
    server_addr: Endpoint = GATEWAY,
    drop: bool = False,
) -> list[bytes]:
    """Deliver everything queued both ways until quiet (or, with ``drop``,
    lose what the client sends); returns the client's datagrams."""
    sent: list[bytes] = []
    for _ in range(100):
        out = client.datagrams_to_send(now=now)
        if not out:
            break
        for data, remote, _local in out:
            sent.append(data)
            if drop or remote != server_addr:
                continue
            server.receive_datagram(data, client_addr, now=now)
            for answer, dest, _ in server.datagrams_to_send(now=now):
                if dest == client_addr:
                    client.receive_datagram(answer, server_addr, now=now)
    return sent


def ask(server: _Core, data: bytes, *, now: float, src: Endpoint = CLIENT) -> list[bytes]:
    """Send one request to a server core and return its answers."""
    server.receive_datagram(data, src, now=now)
    out = server.datagrams_to_send(now=now)
    assert all(dest == src for _, dest, _ in out)
    return [d for d, _, _ in out]


def events_of(core: object) -> list[object]:
    out = []
    while (event := core.next_event()) is not None:  # type: ignore[attr-defined]
        out.append(event)
    return out
