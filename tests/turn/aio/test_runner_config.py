"""turn-server settings: listen syntax, external IPs, TOML loading, the
flags-over-file merge, every value checked with a message naming its key."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest

from natkit.addr import Endpoint, Transport
from natkit.turn.aio.config import (
    ConfigError,
    build_settings,
    load_toml,
    parse_external_ip,
    parse_listen,
)

UDP, TCP, TLS = Transport.UDP, Transport.TCP, Transport.TLS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("udp:0.0.0.0:3478", [(UDP, Endpoint("0.0.0.0", 3478))], id="udp"),
        pytest.param("tcp:10.0.0.1", [(TCP, Endpoint("10.0.0.1", 3478))], id="tcp-default-port"),
        pytest.param("tls:[::]:443", [(TLS, Endpoint("::", 443))], id="tls-v6"),
        pytest.param("tls:192.0.2.1", [(TLS, Endpoint("192.0.2.1", 5349))], id="tls-5349"),
        pytest.param(
            "192.0.2.1:3479",
            [(UDP, Endpoint("192.0.2.1", 3479)), (TCP, Endpoint("192.0.2.1", 3479))],
            id="plain-is-udp-and-tcp",
        ),
        pytest.param("UDP:::1", [(UDP, Endpoint("::1", 3478))], id="scheme-case-and-bare-v6"),
    ],
)
def test_listen_syntax(text: str, expected: list[tuple[Transport, Endpoint]]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["turn.example.org:3478", "udp:1.2.3.4:99999", "sctp:1.2.3.4"])
def test_bad_listen_is_an_error_naming_the_key(text: str) -> None:
    with pytest.raises(ConfigError, match="listen"):
        parse_listen(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("203.0.113.5", (None, "203.0.113.5"), id="public"),
        pytest.param("10.0.0.5=203.0.113.5", ("10.0.0.5", "203.0.113.5"), id="private=public"),
        pytest.param("203.0.113.5/10.0.0.5", ("10.0.0.5", "203.0.113.5"), id="coturn-style"),
    ],
)
def test_external_ip_forms(text: str, expected: tuple[str | None, str]) -> None:
    assert parse_external_ip(text) == expected


def test_external_ip_maps_each_relay_ip_of_its_family() -> None:
    s = build_settings({}, {"realm": "r", "external-ip": ["203.0.113.5", "fd00::1=2001:db8::1"]})
    assert s.external_map(["10.0.0.5", "fd00::1"]) == {
        "10.0.0.5": "203.0.113.5",
        "fd00::1": "2001:db8::1",
    }
    with pytest.raises(ConfigError, match="not a relay IP"):
        build_settings({}, {"realm": "r", "external-ip": ["10.9.9.9=1.2.3.4"]}).external_map(
            ["10.0.0.5"]
        )


def test_defaults_are_secure_and_standard() -> None:
    s = build_settings({}, {"realm": "example.org"})
    assert s.listen == ((UDP, Endpoint("0.0.0.0", 3478)), (TCP, Endpoint("0.0.0.0", 3478)))
    assert s.admin == Endpoint("127.0.0.1", 9641)
    assert s.allow_peers == () and s.users == ()
    cfg = s.core_config(["192.0.2.1"])
    assert (cfg.default_lifetime, cfg.max_lifetime) == (600.0, 3600.0)
    assert cfg.allowed_peers == ()


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "natkit.toml"
    path.write_text(
        """
[turn-server]
realm = "file.example"
listen = ["udp:0.0.0.0:3478", "tls:0.0.0.0:443"]
user = ["alice:a", "bob:b"]
tls-cert = "cert.pem"
tls_key = "key.pem"
min-port = 61000
max-port = 61999
allow-peer = ["10.0.0.0/8"]
user-quota = 5
no-admin = true
"""
    )
    file = load_toml(path)
    s = build_settings(file, {"realm": "flag.example", "user": ["carol:c"], "max-port": 62000})
    assert s.realm == "flag.example"
    assert s.users == (("carol", "c"),)  # a list flag replaces the file's list
    assert (s.min_port, s.max_port) == (61000, 62000)
    assert s.listen == ((UDP, Endpoint("0.0.0.0", 3478)), (TLS, Endpoint("0.0.0.0", 443)))
    assert s.allow_peers == (ip_network("10.0.0.0/8"),)
    assert s.user_quota == 5 and s.admin is None
    assert s.tls_cert == Path("cert.pem")


def test_a_certificate_alone_adds_a_tls_listener_on_5349() -> None:
    s = build_settings({}, {"realm": "r", "tls-cert": "c.pem", "tls-key": "k.pem"})
    assert (TLS, Endpoint("0.0.0.0", 5349)) in s.listen


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param({"user": ["alice"]}, "user", id="user-without-password"),
        pytest.param({"min-port": 70000}, "min-port", id="port-range"),
        pytest.param({"min-port": 5000, "max-port": 4000}, "above max-port", id="inverted"),
        pytest.param({"allow-peer": ["10.0.0.0/33"]}, "allow-peer", id="bad-cidr"),
        pytest.param({"relay-ip": ["0.0.0.0"]}, "wildcard", id="wildcard-relay"),
        pytest.param({"relay-ip": ["10.0.0.1", "10.0.0.2"]}, "one IPv4", id="two-v4-relays"),
        pytest.param({"tls-cert": "c.pem"}, "go together", id="cert-without-key"),
        pytest.param({"listen": ["tls:0.0.0.0:443"]}, "tls-cert", id="tls-without-cert"),
        pytest.param({"alternate-server": "0.0.0.0:3478"}, "wildcard", id="wildcard-alternate"),
        pytest.param({"max-allocations": -1}, "max-allocations", id="negative-quota"),
        pytest.param({"admin": "localhost:9641"}, "admin", id="admin-host-name"),
        pytest.param({"max-lifetime": 60.0}, "lifetime", id="max-below-default"),
    ],
)
def test_bad_settings_are_errors_naming_the_key(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_settings({}, {"realm": "r", **flags})


@pytest.mark.parametrize("admin", ["0.0.0.0:9641", "192.0.2.1:9641", "[::]:9641"])
def test_an_admin_endpoint_off_loopback_needs_a_token_or_admin_insecure(admin: str) -> None:
    with pytest.raises(ConfigError, match=r"admin: .* is not loopback; give --admin-token"):
        build_settings({}, {"realm": "r", "admin": admin})
    token = build_settings({}, {"realm": "r", "admin": admin, "admin-token": "t"})
    assert token.admin_token == "t"
    insecure = build_settings({"admin": admin, "admin-insecure": True}, {"realm": "r"})
    assert insecure.admin_insecure and insecure.admin_token is None


@pytest.mark.parametrize("admin", ["127.0.0.1:9641", "127.8.9.10:1", "[::1]:9641"])
def test_an_admin_endpoint_on_loopback_needs_no_token(admin: str) -> None:
    assert build_settings({}, {"realm": "r", "admin": admin}).admin_token is None


def test_connection_limits_from_flags_and_file(tmp_path: Path) -> None:
    s = build_settings({}, {"realm": "r"})
    assert (s.max_unauthenticated_per_ip, s.unauthenticated_timeout) == (256, 30.0)
    path = tmp_path / "t.toml"
    path.write_text("max-unauthenticated-per-ip = 0\nunauthenticated_timeout = 5\n")
    s = build_settings(load_toml(path), {"realm": "r", "unauthenticated-timeout": 7.5})
    assert (s.max_unauthenticated_per_ip, s.unauthenticated_timeout) == (0, 7.5)
    with pytest.raises(ConfigError, match="max-unauthenticated-per-ip"):
        build_settings({}, {"realm": "r", "max-unauthenticated-per-ip": -1})
    with pytest.raises(ConfigError, match="unauthenticated-timeout"):
        build_settings({}, {"realm": "r", "unauthenticated-timeout": 0})


def test_the_realm_is_required() -> None:
    with pytest.raises(ConfigError, match="realm"):
        build_settings({}, {"user": ["alice:a"]})


def test_unknown_or_mistyped_file_keys_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "natkit.toml"
    path.write_text('realm = "r"\nmax-alocations = 5\n')
    with pytest.raises(ConfigError, match="unknown key 'max-alocations'"):
        load_toml(path)
    path.write_text('realm = "r"\nmin-port = "61000"\n')
    with pytest.raises(ConfigError, match="min-port: expected an integer"):
        build_settings(load_toml(path), {})
    path.write_text("realm = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_toml(tmp_path / "missing.toml")


def test_core_limits_from_flags_and_file(tmp_path: Path) -> None:
    s = build_settings({}, {"realm": "r"})
    config = s.core_config(["192.0.2.1"])
    assert (config.max_permissions, config.max_channels, config.max_peer_connections) == (
        1000,
        1000,
        100,
    )
    assert (config.denied_connect_ports, config.binding_rate, config.binding_burst) == (
        (25,),
        50.0,
        100.0,
    )
    path = tmp_path / "t.toml"
    path.write_text(
        "max-permissions = 10\nmax_channels = 0\ndeny-connect-port = []\nbinding-rate = 0\n"
    )
    s = build_settings(
        load_toml(path), {"realm": "r", "max-peer-connections": 3, "binding-burst": 7.0}
    )
    config = s.core_config(["192.0.2.1"])
    assert (config.max_permissions, config.max_channels, config.max_peer_connections) == (
        10,
        0,
        3,
    )
    assert (config.denied_connect_ports, config.binding_rate, config.binding_burst) == (
        (),
        0.0,
        7.0,
    )
    s = build_settings({}, {"realm": "r", "deny-connect-port": [25, 465, 25]})
    assert s.deny_connect_ports == (25, 465)
    for bad in ({"max-channels": -1}, {"binding-rate": -1.0}, {"deny-connect-port": [0]}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            build_settings({}, {"realm": "r", **bad})
    path.write_text('deny-connect-port = ["x"]\n')
    with pytest.raises(ConfigError, match="deny-connect-port"):
        build_settings(load_toml(path), {"realm": "r"})


def test_a_negative_flag_turns_off_a_true_in_the_file() -> None:
    file = {"realm": "r", "no-tcp-relay": True}
    assert not build_settings(file, {"no-tcp-relay": None}).tcp_relay
    assert build_settings(file, {"no-tcp-relay": False}).tcp_relay


def test_ports_and_numbers_in_the_file_are_type_checked() -> None:
    s = build_settings({"realm": "r", "deny-connect-port": [25, "465"]}, {})
    assert build_settings({"realm": "r", "default-lifetime": 300}, {}).default_lifetime == 300.0
    assert 465 in s.deny_connect_ports
    with pytest.raises(ConfigError, match="deny-connect-port"):
        build_settings({"realm": "r", "deny-connect-port": [0]}, {})
    with pytest.raises(ConfigError, match="default-lifetime"):
        build_settings({"realm": "r", "default-lifetime": "long"}, {})


def test_the_relay_socket_pool_from_flags_and_file_split_across_workers(tmp_path: Path) -> None:
    config = build_settings({}, {"realm": "r"}).core_config(["192.0.2.1"])
    assert (config.relay_socket_pool, config.relay_port_quarantine) == (16384, 1.0)
    path = tmp_path / "t.toml"
    path.write_text("relay-socket-pool = 0\nrelay-port-quarantine = 5\n")
    config = build_settings(load_toml(path), {"realm": "r"}).core_config(["192.0.2.1"])
    assert (config.relay_socket_pool, config.relay_port_quarantine) == (0, 5.0)
    s = build_settings({}, {"realm": "r", "relay-socket-pool": 101, "workers": 2, "no-admin": True})
    assert [s.for_worker(i).relay_socket_pool for i in (0, 1)] == [51, 51]
    for bad in ({"relay-socket-pool": -1}, {"relay-port-quarantine": -0.5}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            build_settings({}, {"realm": "r", **bad})
