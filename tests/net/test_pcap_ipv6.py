"""The pcap writer writes IPv6 packets too (LINKTYPE_RAW carries both
families): RFC 8200 headers with the transport checksum over the IPv6
pseudo-header (§8.1), ICMP errors as ICMPv6 Destination Unreachable
(RFC 4443 §3.1); tshark decodes them."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natkit.addr import Endpoint, ip_of
from natkit.net.pcap import PcapWriter, encode_ipv6
from natkit.packet import IcmpError, IpProto, Packet, TcpFlags, internet_checksum

A6, B6 = Endpoint("2001:db8::1", 40000), Endpoint("2001:db8:1::2", 3478)


def _pseudo_sum_ok(datagram: bytes) -> bool:
    """The transport checksum verifies over the pseudo-header (RFC 8200 §8.1)."""
    length = struct.unpack_from("!H", datagram, 4)[0]
    next_header = datagram[6]
    pseudo = datagram[8:40] + struct.pack("!IxxxB", length, next_header)
    return internet_checksum(pseudo + datagram[40:]) == 0


def test_udp_over_ipv6_has_a_valid_header_and_checksum() -> None:
    datagram = encode_ipv6(Packet(IpProto.UDP, A6, B6, b"natkit"))
    assert datagram[0] >> 4 == 6
    assert struct.unpack_from("!H", datagram, 4)[0] == 8 + 6  # payload length
    assert datagram[6] == 17 and datagram[7] == 64
    assert datagram[8:24] == ip_of(A6.host).packed and datagram[24:40] == ip_of(B6.host).packed
    assert struct.unpack_from("!HH", datagram, 40) == (40000, 3478)
    assert datagram[48:] == b"natkit"
    assert _pseudo_sum_ok(datagram)


def test_tcp_and_icmp_errors_over_ipv6() -> None:
    syn = encode_ipv6(Packet(IpProto.TCP, A6, B6, b"", TcpFlags.SYN, seq=7))
    assert syn[6] == 6 and _pseudo_sum_ok(syn)
    quoted = encode_ipv6(Packet(IpProto.UDP, B6, A6, b"x"))
    error = Packet(IpProto.ICMP, B6, A6, quoted, icmp=IcmpError.PORT_UNREACHABLE)
    icmp = encode_ipv6(error)
    assert icmp[6] == 58 and icmp[40:42] == bytes((1, 4))  # Destination Unreachable, port
    assert icmp[48:] == quoted and _pseudo_sum_ok(icmp)


def test_ipv6_encoding_refuses_ipv4_addresses() -> None:
    with pytest.raises(ValueError, match="IPv6"):
        encode_ipv6(Packet(IpProto.UDP, Endpoint("192.0.2.1", 1), B6))


@given(
    payload=st.binary(max_size=300),
    sport=st.integers(0, 65535),
    dport=st.integers(0, 65535),
    proto=st.sampled_from([IpProto.UDP, IpProto.TCP]),
)
def test_every_ipv6_segment_checksums(
    payload: bytes, sport: int, dport: int, proto: IpProto
) -> None:
    packet = Packet(proto, Endpoint(A6.host, sport), Endpoint(B6.host, dport), payload)
    datagram = encode_ipv6(packet)
    assert _pseudo_sum_ok(datagram)
    assert datagram.endswith(payload)


def test_the_writer_keeps_both_families_and_tshark_reads_them(tmp_path: Path) -> None:
    pcap = tmp_path / "mixed.pcap"
    with PcapWriter(pcap) as writer:
        writer.write(0.5, Packet(IpProto.UDP, A6, B6, b"six"))
        v4 = Packet(IpProto.UDP, Endpoint("192.0.2.1", 1000), Endpoint("198.51.100.1", 2000))
        writer.write(1.0, v4)
        assert writer.count == 2
    tshark = shutil.which("tshark")
    if tshark is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tshark is missing: scripts/setup.sh installs Debian's tshark")
        pytest.skip("tshark not installed (Debian package tshark)")
    fields = ["-e", "ipv6.src", "-e", "ipv6.dst", "-e", "ip.src", "-e", "udp.srcport"]
    fields += ["-e", "udp.checksum.status", "-o", "udp.check_checksum:TRUE"]
    out = subprocess.run(
        [tshark, "-r", str(pcap), "-T", "fields", *fields],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    assert out[0].split("\t") == [
        "2001:db8::1",
        "2001:db8:1::2",
        "",
        "40000",
        "1",
    ]  # 1: checksum good
    assert out[1].split("\t")[2:4] == ["192.0.2.1", "1000"]
