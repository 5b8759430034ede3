from __future__ import annotations

import pytest

from natkit.addr import (
    AddressClass,
    Endpoint,
    Family,
    address_class,
    canonical_ip,
    host_of_packed,
    parse_endpoint,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("192.0.2.1:3478", Endpoint("192.0.2.1", 3478), id="ipv4"),
        pytest.param("[2001:db8::1]:5349", Endpoint("2001:db8::1", 5349), id="ipv6-bracketed"),
        pytest.param("[2001:DB8:0::1]", Endpoint("2001:db8::1", 3478), id="ipv6-canonicalised"),
        pytest.param("2001:db8::1", Endpoint("2001:db8::1", 3478), id="ipv6-bare"),
        pytest.param("198.51.100.7", Endpoint("198.51.100.7", 3478), id="default-port"),
    ],
)
def test_parse_endpoint(text: str, expected: Endpoint) -> None:
    assert parse_endpoint(text, 3478) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("example.org:3478", id="name"),
        pytest.param("192.0.2.1:70000", id="port-range"),
        pytest.param("[::1", id="unclosed"),
        pytest.param("[::1]x", id="junk"),
        pytest.param("192.0.2.1", id="no-port-no-default"),
    ],
)
def test_parse_endpoint_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(text)


def test_endpoint_str_and_properties() -> None:
    v4, v6 = Endpoint("192.0.2.1", 1), Endpoint("2001:db8::1", 2)
    assert (str(v4), str(v6)) == ("192.0.2.1:1", "[2001:db8::1]:2")
    assert (v4.family, v6.family) == (Family.IPV4, Family.IPV6)
    assert v4.packed == bytes([192, 0, 2, 1])
    assert v4.with_port(9) == Endpoint("192.0.2.1", 9)


@pytest.mark.parametrize(
    ("ip", "cls"),
    [
        ("127.0.0.1", AddressClass.LOOPBACK),
        ("0.1.2.3", AddressClass.UNSPECIFIED),
        ("169.254.169.254", AddressClass.LINK_LOCAL),
        ("10.1.2.3", AddressClass.PRIVATE),
        ("172.20.0.1", AddressClass.PRIVATE),
        ("192.168.1.1", AddressClass.PRIVATE),
        ("100.64.0.1", AddressClass.SHARED),
        ("224.0.0.1", AddressClass.MULTICAST),
        ("255.255.255.255", AddressClass.RESERVED),
        ("203.0.113.9", AddressClass.DOCUMENTATION),
        ("8.8.8.8", AddressClass.GLOBAL),
        ("::", AddressClass.UNSPECIFIED),
        ("::1", AddressClass.LOOPBACK),
        ("fe80::1", AddressClass.LINK_LOCAL),
        ("fd00::1", AddressClass.UNIQUE_LOCAL),
        ("ff02::1", AddressClass.MULTICAST),
        ("2001:0:1::1", AddressClass.TEREDO),
        ("2002:c000:201::1", AddressClass.SIX_TO_FOUR),
        ("::ffff:10.0.0.1", AddressClass.IPV4_MAPPED),
        ("2001:db8::5", AddressClass.DOCUMENTATION),
        ("2606:4700::1", AddressClass.GLOBAL),
    ],
)
def test_address_class(ip: str, cls: AddressClass) -> None:
    assert address_class(ip) is cls


def test_host_of_packed_and_canonical_ip_agree_and_reject_bad_input() -> None:
    assert host_of_packed(bytes([192, 0, 2, 1])) == "192.0.2.1"
    assert host_of_packed(bytes(15) + b"\x01") == "::1"
    assert canonical_ip("[2001:DB8::0001]") == "2001:db8::1"
    assert canonical_ip("fe80::1%eth0") == "fe80::1%eth0"
    for bad in (b"\x01\x02\x03", bytes(5)):
        with pytest.raises(ValueError):
            host_of_packed(bad)
    # A failure is not cached: the same bad text fails every time.
    for _ in range(2):
        with pytest.raises(ValueError):
            canonical_ip("999.0.0.1")
