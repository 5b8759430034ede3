"""The traversal matrix report: ``index.html`` with the result table and,
per scenario, a ladder diagram of the packets as they crossed the NATs (in
the manner of RFC 6314's figures: one column per host, NAT and server, one
arrow per packet, labelled with what it carries and its addresses before
and after translation), and ``<scenario>.pcap`` holding the same packets.

A NAT appears once per packet it forwards: the host's packet arrives at the
NAT's column with the private source, the NAT's copy leaves it with the
translated one, so the rewrite is visible as two arrows.
"""

from __future__ import annotations

import html
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from natkit.lab.matrix import Capture, ScenarioResult, Sent
from natkit.net.pcap import PcapWriter
from natkit.net.sim.network import Domain, Internet, Middlebox
from natkit.packet import IpProto, Packet, TcpFlags
from natkit.stun.constants import MessageClass, Method

MAX_ARROWS = 80
"""Arrows drawn per ladder; the pcap keeps every packet."""

_COOKIE = 0x2112A442
_STUN_CLASS = {
    MessageClass.REQUEST: "",
    MessageClass.INDICATION: " ind",
    MessageClass.SUCCESS: " OK",
    MessageClass.ERROR: " error",
}
_SIP_METHODS = (b"REGISTER", b"INVITE", b"ACK", b"BYE", b"CANCEL", b"OPTIONS", b"UPDATE")


def file_stem(scenario: str) -> str:
    """A file name for ``scenario`` (``detect/full-cone`` -> ``detect_full-cone``)."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", scenario)


def label(packet: Packet) -> str:
    """What ``packet`` carries, in a few words: ``STUN Binding``, ``REGISTER``,
    ``200 OK``, ``RTP``, ``TLS``, ``SYN`` ..."""
    if packet.proto is IpProto.ICMP:
        return "ICMP error"
    data = packet.payload
    if packet.proto is IpProto.TCP:
        if not data:
            return _tcp_flags(packet.flags)
        if len(data) >= 2 and data[0] in (0x14, 0x15, 0x16, 0x17) and data[1] == 0x03:
            return "TLS"
        # TURN over TCP carries STUN unframed (RFC 8656 §3.1); ICE-TCP frames
        # it with a 2-byte length (RFC 6544 §3), recognised by the magic cookie.
        direct = _stun_label(data)
        if direct is not None and not direct.startswith("STUN (3489)"):
            return direct
        framed = _stun_label(data[2:]) if len(data) > 2 else None
        if framed is not None and not framed.startswith("STUN (3489)"):
            return framed
    stun = _stun_label(data)
    if stun is not None:
        return stun
    sip = _sip_label(data)
    if sip is not None:
        return sip
    if len(data) >= 4 and 0x40 <= data[0] <= 0x4F:
        return "ChannelData"
    if len(data) >= 12 and data[0] >> 6 == 2:
        return "RTCP" if 200 <= data[1] <= 206 else "RTP"
    return f"{packet.proto.name} {len(data)} B"


def _tcp_flags(flags: TcpFlags) -> str:
    names = [f.name for f in TcpFlags if f and f in flags and f.name]
    return "+".join(names) if names else "TCP"


def _stun_label(data: bytes) -> str | None:
    if len(data) < 20 or data[0] & 0xC0:
        return None
    msg_type, _, cookie = struct.unpack_from("!HHI", data)
    method = (msg_type & 0x000F) | ((msg_type & 0x00E0) >> 1) | ((msg_type & 0x3E00) >> 2)
    klass = MessageClass(((msg_type >> 4) & 1) | ((msg_type >> 7) & 2))
    try:
        name = Method(method).name.replace("_", " ").title()
    except ValueError:
        name = f"0x{method:03x}"
    prefix = "STUN" if cookie == _COOKIE else "STUN (3489)"
    return f"{prefix} {name}{_STUN_CLASS[klass]}"


def _sip_label(data: bytes) -> str | None:
    line = data.split(b"\r\n", 1)[0]
    if line.startswith(b"SIP/2.0 "):
        return line[8:40].decode("ascii", "replace")
    if line.split(b" ", 1)[0] in _SIP_METHODS:
        return line.split(b" ", 1)[0].decode("ascii")
    return None


# -- columns ---------------------------------------------------------------------------


@dataclass(slots=True)
class WireCapture(Capture):
    """Packets captured on a real link (the namespace lab), not on a
    simulated internet: ``raw`` holds every datagram as captured (epoch
    seconds), written to the pcap unchanged; ``sent`` the decoded ones the
    ladder draws, each ``origin`` the column of its source; ``names`` maps
    an address to its column (addresses not in it are their own column)."""

    raw: list[tuple[float, bytes]] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Arrow:
    """One packet on the ladder: from column ``src`` to column ``dst``."""

    time: float
    src: str
    dst: str
    label: str
    addresses: str


def _column_of_origin(origin: str) -> str:
    return origin.rsplit(":", 1)[0] if origin.endswith((":inside", ":outside")) else origin


def _domain_of(net: Internet, origin: str) -> Domain | None:
    host = net.hosts.get(origin)
    if host is not None:
        return host.domain
    name, _, side = origin.rpartition(":")
    box = net.middleboxes.get(name)
    if box is None:
        return None
    return box.inner if side == "inside" else box.outer


def _receiver(domain: Domain, ip: str) -> str:
    """Which column gets a packet for ``ip`` sent in ``domain``: a host there,
    a middlebox's public address, a firewall routing to it, else the
    domain's own gateway (the packet leaves the private realm)."""
    host = domain.hosts.get(ip)
    if host is not None:
        return host.name
    box: Middlebox | None = domain.middleboxes.get(ip)
    if box is not None:
        return box.name
    import ipaddress

    address = ipaddress.ip_address(ip)
    for network, router in domain.routes:
        if address in network:
            return router.name
    if domain.gateway is not None:
        return domain.gateway.name
    return ip


def arrows(capture: Capture) -> list[Arrow]:
    """The ladder's arrows, in time order; with more than one internet in a
    scenario, columns are prefixed by the internet's number."""
    out = []
    several = len(capture.nets) > 1
    names = capture.names if isinstance(capture, WireCapture) else {}
    for sent in capture.sent:
        if sent.net >= len(capture.nets):  # a real link: columns by address
            src = sent.origin
            dst = names.get(sent.packet.dst.host, sent.packet.dst.host)
        else:
            domain = _domain_of(capture.nets[sent.net], sent.origin)
            src = _column_of_origin(sent.origin)
            dst = _receiver(domain, sent.packet.dst.host) if domain is not None else "?"
        if several:
            src, dst = f"{sent.net + 1}.{src}", f"{sent.net + 1}.{dst}"
        p = sent.packet
        out.append(
            Arrow(
                sent.time,
                src,
                dst,
                label(p),
                f"{p.proto.name.lower()} {p.src} \u2192 {p.dst}",
            )
        )
    return out


def columns(items: Sequence[Arrow]) -> list[str]:
    """Columns in order of first appearance, as senders or receivers."""
    seen: dict[str, None] = {}
    for arrow in items:
        seen.setdefault(arrow.src)
        seen.setdefault(arrow.dst)
    return list(seen)


COLUMN_W = 280
"""Wide enough for an arrow's address line (monospace, 10 px)."""
ROW_H = 34
TOP = 40


def ladder_svg(capture: Capture, *, max_arrows: int = MAX_ARROWS) -> str:
    """An SVG ladder diagram of the scenario's packets (the first ``max_arrows``)."""
    all_arrows = arrows(capture)
    shown = all_arrows[:max_arrows]
    cols = columns(shown)
    x = {name: COLUMN_W // 2 + i * COLUMN_W for i, name in enumerate(cols)}
    width = max(1, len(cols)) * COLUMN_W
    height = TOP + (len(shown) + 1) * ROW_H + (20 if len(all_arrows) > len(shown) else 0)
    e = html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ladder" width="{width}" '
        f'height="{height}" font-family="monospace" font-size="10">',
        '<defs><marker id="head" markerWidth="8" markerHeight="8" refX="8" refY="4" '
        'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#333"/></marker></defs>',
    ]
    for name, cx in x.items():
        parts.append(
            f'<text x="{cx}" y="20" text-anchor="middle" font-size="12" '
            f'font-weight="bold">{e(name)}</text>'
            f'<line x1="{cx}" y1="28" x2="{cx}" y2="{height - 10}" stroke="#999" '
            'stroke-dasharray="4,3"/>'
        )
    for i, arrow in enumerate(shown):
        y = TOP + (i + 1) * ROW_H
        x1, x2 = x[arrow.src], x[arrow.dst]
        mid = (x1 + x2) / 2
        if x1 == x2:  # a packet that stays in its column (nothing to cross)
            x2 = x1 + 30
        parts.append(
            f'<g class="arrow" data-src="{e(arrow.src)}" data-dst="{e(arrow.dst)}" '
            f'data-label="{e(arrow.label)}">'
            f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="#333" '
            'marker-end="url(#head)"/>'
            f'<text x="{mid}" y="{y - 14}" text-anchor="middle" font-weight="bold">'
            f"{e(arrow.label)}</text>"
            f'<text x="{mid}" y="{y - 3}" text-anchor="middle" fill="#555">'
            f"{arrow.time:.3f}s {e(arrow.addresses)}</text></g>"
        )
    if len(all_arrows) > len(shown):
        parts.append(
            f'<text x="4" y="{height - 6}" fill="#555">... {len(all_arrows) - len(shown)} '
            "more packets in the pcap</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def write_pcap(capture: Capture, path: Path) -> int:
    """Every packet of the scenario, as each sender put it on its link (a
    NAT's translated copy follows the original), or for a :class:`WireCapture`
    every datagram as captured; returns how many were written."""
    if isinstance(capture, WireCapture):
        with PcapWriter(path) as writer:
            for timestamp, data in capture.raw:
                writer.write_raw(timestamp, data)
            return writer.count
    ordered: list[Sent] = sorted(capture.sent, key=lambda s: s.time)
    with PcapWriter(path) as writer:
        for sent in ordered:
            writer.write(sent.time, sent.packet)
        return writer.count


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 13px; }
tr.ok td.verdict { color: #060; } tr.bad td.verdict { color: #b00; font-weight: bold; }
tr.bad { background: #fee; }
details { margin: 1em 0; } summary { cursor: pointer; font-weight: bold; }
.ladder { background: #fcfcfc; border: 1px solid #ddd; }
"""


def write_report(results: Sequence[ScenarioResult], directory: Path, *, mode: str = "sim") -> Path:
    """Write ``directory/index.html`` and one pcap per scenario; returns the index."""
    directory.mkdir(parents=True, exist_ok=True)
    e = html.escape
    rows, sections = [], []
    for result in results:
        stem = file_stem(result.scenario)
        pcap = directory / f"{stem}.pcap"
        written = write_pcap(result.capture, pcap)
        verdict = "ok" if result.ok else "DIFFERS"
        rows.append(
            f'<tr class="{"ok" if result.ok else "bad"}"><td><a href="#{e(stem)}">'
            f"{e(result.scenario)}</a></td><td>{e(result.group)}</td>"
            f"<td>{e(result.expected)}</td><td>{e(result.observed)}</td>"
            f'<td class="verdict">{verdict}</td>'
            f'<td><a href="{e(pcap.name)}">{written} packets</a></td></tr>'
        )
        sections.append(
            f'<details id="{e(stem)}"{"" if result.ok else " open"}><summary>'
            f"{e(result.scenario)}: {e(result.observed)} ({verdict})</summary>"
            f"<p>{e(result.claim)}. Expected <b>{e(result.expected)}</b>, observed "
            f'<b>{e(result.observed)}</b>. <a href="{e(pcap.name)}">{e(pcap.name)}</a></p>'
            f"{ladder_svg(result.capture)}</details>"
        )
    passed = sum(r.ok for r in results)
    page = (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>natkit traversal matrix</title><style>{_STYLE}</style></head><body>"
        f"<h1>natkit traversal matrix ({e(mode)})</h1>"
        f"<p>{passed} of {len(results)} scenarios as expected.</p>"
        "<table><tr><th>scenario</th><th>group</th><th>expected</th><th>observed</th>"
        f"<th></th><th>pcap</th></tr>{''.join(rows)}</table>"
        f"<h2>Ladders</h2>{''.join(sections)}</body></html>\n"
    )
    index = directory / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
