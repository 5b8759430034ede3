"""Issue 7: ``natkit lab matrix --mode netns``, the ECC 4x4 grid as real calls.

One CLI run, as a user types it: 16 calls between two natkit user agents
behind natkit's TUN NATs (ICE with the lab's STUN and TURN servers,
signalling through natkit's SIP server), in one lab. Every call must have
two-way audio (each recording holds the other side's tone) over the path
DESIGN.md's matrix predicts, and its pcap must hold the call's packets as
they crossed the lab internet. About 45 s."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from natkit.addr import Endpoint
from natkit.lab.ice_netns import expected_netns_path
from natkit.lab.matrix_netns import Captured, chosen_pairs, netns_names, wire_capture
from natkit.lab.report import arrows, write_pcap
from natkit.net.netns import TunNat, lab_namespaces
from natkit.packet import IpProto, Packet, encode_ipv4

pytestmark = [pytest.mark.netns, pytest.mark.timeout(150)]

RELAYED = {
    "call-netns/port-restricted-cone+symmetric",
    "call-netns/symmetric+port-restricted-cone",
    "call-netns/symmetric+symmetric",
}


def _records(pcap: Path) -> list[bytes]:
    """The packets of a LINKTYPE_RAW pcap."""
    data = pcap.read_bytes()
    assert struct.unpack_from("<IHHiIII", data)[6] == 101
    out, at = [], 24
    while at < len(data):
        _, _, captured, _ = struct.unpack_from("<IIII", data, at)
        out.append(data[at + 16 : at + 16 + captured])
        at += 16 + captured
    return out


def _tshark_invites(pcap: Path) -> int | None:
    tshark = shutil.which("tshark")
    if tshark is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tshark is missing: scripts/setup.sh installs Debian's tshark")
        return None
    out = subprocess.run(
        [tshark, "-r", str(pcap), "-Y", 'sip.Method == "INVITE"', "-T", "fields", "-e", "ip.dst"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return len(out.split())


def test_the_whole_grid_calls_with_two_way_audio_and_writes_pcaps(tmp_path: Path) -> None:
    report = tmp_path / "report"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "natkit.cli.main",
            "lab",
            "matrix",
            "--mode",
            "netns",
            "--json",
            "--report",
            str(report),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
    )
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert [r["scenario"] for r in rows] == netns_names()
    index = (report / "index.html").read_text()
    for row in rows:
        (a, b) = dict(chosen_pairs())[row["scenario"]]
        expected = expected_netns_path(TunNat(a), TunNat(b))
        assert row["expected"] == expected == ("relay" if row["scenario"] in RELAYED else "direct")
        assert row["ok"] and row["observed"] == expected, row
        call = row["call"]
        assert call["media_a"] == call["media_b"] == "ice", call
        assert call["a_heard_b_s"] >= 1.0 and call["b_heard_a_s"] >= 1.0, call
        assert ("relay" in call["pair"]) == (expected == "relay"), call
        assert row["packets"] > 100, row
        pcap = report / f"{row['scenario'].replace('/', '_')}.pcap"
        assert f'href="{pcap.name}"' in index
        packets = _records(pcap)
        assert len(packets) >= row["packets"] > 100
        assert all(p[0] >> 4 == 4 for p in packets)
        assert any(b"INVITE sip:" in p for p in packets)
    assert not lab_namespaces(f"natkit-{rows[0]['lab']}-")
    invites = _tshark_invites(report / "call-netns_symmetric+symmetric.pcap")
    if invites is not None:
        assert invites >= 2  # caller to the proxy, proxy to the callee (re-INVITE too)


def test_a_wire_capture_names_columns_by_address_and_keeps_raw_bytes(tmp_path: Path) -> None:
    """The report side of the capture, without a lab: the ladder's columns
    come from the address names, the pcap gets the datagrams unchanged
    (fragments included, which the ladder cannot decode)."""
    register = Packet(
        IpProto.UDP, Endpoint("198.51.100.2", 5060), Endpoint("203.0.113.12", 5060), b"REGISTER x"
    )
    raw = encode_ipv4(register)
    fragment = raw[:6] + b"\x20\x00" + raw[8:]  # more fragments: not decodable
    names = {"198.51.100.2": "nat-a (full-cone)", "203.0.113.12": "sip"}
    capture = wire_capture([Captured(100.0, "tn0", raw), Captured(100.5, "lan", fragment)], names)
    (arrow,) = arrows(capture)
    assert (arrow.src, arrow.dst, arrow.label, arrow.time) == (
        "nat-a (full-cone)",
        "sip",
        "REGISTER",
        0.0,
    )
    assert write_pcap(capture, tmp_path / "x.pcap") == 2
    assert _records(tmp_path / "x.pcap") == [raw, fragment]
