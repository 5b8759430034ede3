"""The matrix report: index.html with the table and ladders, a pcap per
scenario that tshark reads, and ladder arrows that show the translation."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from natkit.addr import Endpoint
from natkit.lab.matrix import all_scenarios, run_matrix, select
from natkit.lab.report import arrows, columns, file_stem, label, ladder_svg, write_report
from natkit.packet import IpProto, Packet, TcpFlags
from natkit.stun.message import StunMessage, serialize_message

A, B = Endpoint("192.168.1.2", 5060), Endpoint("203.0.113.10", 5060)


def _run(pattern: str):  # type: ignore[no-untyped-def]
    return run_matrix(select(all_scenarios(), pattern), seed=0)


def test_no_rport_ladder_shows_the_response_going_to_the_wrong_ua() -> None:
    """RFC 6314 §3's figure: the NAT gives the UA a new port, the registrar
    answers the port in Via (5060), and the NAT hands it to the other UA."""
    (result,) = _run("sip/no-rport")
    steps = [(a.src, a.dst, a.label) for a in arrows(result.capture)]
    ua_steps = steps[4:]
    assert ua_steps[:4] == [
        ("ua", "nat", "REGISTER"),
        ("nat", "registrar", "REGISTER"),
        ("registrar", "nat", "200 OK"),
        ("nat", "other-ua", "200 OK"),
    ]
    translated = arrows(result.capture)[5]
    assert "198.51.100.1:1024" in translated.addresses  # the NAT's new port
    svg = ladder_svg(result.capture)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert 'data-src="nat" data-dst="other-ua" data-label="200 OK"' in svg
    assert 'data-src="ua" data-dst="nat" data-label="REGISTER"' in svg
    assert columns(arrows(result.capture)) == ["other-ua", "nat", "registrar", "ua"]


def test_report_files_exist_and_tshark_opens_the_pcap(tmp_path: Path) -> None:
    results = _run("sip/*")
    index = write_report(results, tmp_path)
    page = index.read_text()
    assert index == tmp_path / "index.html"
    for result in results:
        pcap = tmp_path / f"{file_stem(result.scenario)}.pcap"
        assert pcap.stat().st_size > 24
        assert result.scenario in page
    assert page.count("<svg") == len(results)
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.fail("tshark is installed on this machine; the pcap must be read by it")
    out = subprocess.run(
        [tshark, "-r", str(tmp_path / "sip_no-rport.pcap"), "-c", "5"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "REGISTER" in out and "200 OK" in out


def test_a_difference_is_marked_in_the_report(tmp_path: Path) -> None:
    import dataclasses

    from natkit.lab.matrix import run_scenario

    (rport,) = select(all_scenarios(), "sip/rport")
    result = run_scenario(dataclasses.replace(rport, expected="response lost"))
    page = write_report([result], tmp_path).read_text()
    assert "DIFFERS" in page and "0 of 1 scenarios as expected" in page


def test_labels() -> None:
    binding = serialize_message(StunMessage.request(0x001, b"\x01" * 12))
    assert label(Packet(IpProto.UDP, A, B, binding)) == "STUN Binding"
    sip = b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n"
    assert label(Packet(IpProto.UDP, B, A, sip)) == "200 OK"
    assert label(Packet(IpProto.UDP, A, B, b"INVITE sip:b@x SIP/2.0\r\n\r\n")) == "INVITE"
    rtp = bytes([0x80, 0x00]) + bytes(10) + b"\xff" * 160
    assert label(Packet(IpProto.UDP, A, B, rtp)) == "RTP"
    assert label(Packet(IpProto.TCP, A, B, b"", TcpFlags.SYN)) == "SYN"
    assert label(Packet(IpProto.TCP, A, B, b"\x16\x03\x01\x00\x05hello")) == "TLS"
    assert label(Packet(IpProto.UDP, A, B, b"\x00")) == "UDP 1 B"


def test_stun_over_tcp_is_labelled_framed_or_not() -> None:
    allocate = serialize_message(StunMessage.request(0x003, b"\x02" * 12))
    # With an attribute, the length field is non-zero: the bytes after it must
    # not be taken for an RFC 3489 header.
    software = b"\x80\x22\x00\x04abcd"
    allocate = allocate[:2] + len(software).to_bytes(2, "big") + allocate[4:] + software
    assert label(Packet(IpProto.TCP, A, B, allocate)) == "STUN Allocate"  # TURN over TCP
    framed = len(allocate).to_bytes(2, "big") + allocate  # ICE-TCP, RFC 6544 §3
    assert label(Packet(IpProto.TCP, A, B, framed)) == "STUN Allocate"


def test_file_stem() -> None:
    assert file_stem("ice/full-cone+symmetric") == "ice_full-cone+symmetric"
