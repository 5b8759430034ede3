"""natkit.toml: the embedded defaults (loopback only), every key of every
table, bad values naming section.key, and overrides (--set, flags) winning
over the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from natkit.addr import Endpoint, Transport
from natkit.serve.settings import (
    DEFAULT_TOML,
    ConfigError,
    RelayPolicy,
    build_serve_settings,
    load_serve_toml,
    parse_override,
)
from natkit.sip.flow import SipTransport

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "natkit.toml"


def test_no_file_runs_everything_on_loopback() -> None:
    s = build_serve_settings({})
    assert s.stun is not None and s.turn is not None and s.sip is not None
    assert s.media_relay is not None
    endpoints = [
        *s.stun.listen,
        *(ep for _, ep in s.turn.listen),
        *(ep for _, ep in s.sip.listen),
    ]
    assert endpoints and all(ep.ip.is_loopback for ep in endpoints)
    assert s.admin.listen == Endpoint("127.0.0.1", 9640)
    assert s.media_relay.ipv4 == "127.0.0.1" and s.media_relay.policy == RelayPolicy.AUTO
    assert s.store_url == f"sqlite:{s.data_dir / 'natkit.db'}" and s.default_store
    assert s.turn.realm == "natkit" and s.sip.domains == frozenset({"localhost"})
    assert s.turn.admin is None and s.sip.admin is None  # one admin endpoint: [admin]


def test_the_defaults_text_is_what_the_settings_use(tmp_path: Path) -> None:
    path = tmp_path / "natkit.toml"
    path.write_text(DEFAULT_TOML)
    assert build_serve_settings(load_serve_toml(path)) == build_serve_settings({})


EVERY_KEY = """
data-dir = "DATA"

[store]
url = "memory:"

[stun]
enabled = true
listen = ["192.0.2.1:3478", "127.0.0.1:3480"]
alternate = "192.0.2.2:3479"
tcp = false
software = "x"

[turn]
enabled = true
realm = "example.org"
listen = ["udp:127.0.0.1:3478"]
user = ["alice:pw"]
auth_secret = ["s3cret"]
external-ip = ["203.0.113.5"]
relay-ip = ["127.0.0.1"]
min-port = 50000
max-port = 50100
relay-socket-pool = 12
relay-port-quarantine = 2.5
allow-peer = ["10.0.0.0/8"]
deny-peer = ["192.0.2.0/24"]
alternate-server = "192.0.2.9:3478"
max-allocations = 10
user-quota = 2
max-bps = 1000
bps-capacity = 10000
default-lifetime = 300.0
max-lifetime = 600.0
no-tcp-relay = true
max-connections = 5
idle-timeout = 20.0
max-unauthenticated-per-ip = 3
unauthenticated-timeout = 4.0
max-permissions = 6
max-channels = 7
max-peer-connections = 8
deny-connect-port = [25, 587]
binding-rate = 5.0
binding-burst = 9.0
software = "turn-x"

[sip]
enabled = true
listen = ["udp:127.0.0.1:5070"]
domain = ["example.org"]
host = "sip.example.org"
realm = "example.org"
no-auth = true
md5-first = true
secret = "00112233445566778899aabbccddeeff"
flow-timer = 60
alias-peer = ["192.0.2.7"]
connection-reuse = true
min-expires = 30
max-expires = 900
default-expires = 600
no-record-route = true
no-nat-pings = true

[media_relay]
enabled = true
ipv4 = "127.0.0.1"
ipv6 = "::1"
advertised-ipv4 = "203.0.113.7"
advertised-ipv6 = "2001:db8::7"
min-port = 20000
max-port = 20999
learning-packets = 3
learning-time = 1.5
strict-source = false
idle-timeout = 30.0
max-calls = 50
policy = "always"

[admin]
enabled = true
listen = "0.0.0.0:9700"
token = "t0ken"
insecure = false
"""


def test_every_key_of_every_table_is_read(tmp_path: Path) -> None:
    path = tmp_path / "natkit.toml"
    path.write_text(EVERY_KEY.replace("DATA", str(tmp_path / "d")))
    s = build_serve_settings(load_serve_toml(path))
    assert s.data_dir == tmp_path / "d" and s.store_url == "memory:" and not s.default_store
    assert s.stun is not None and s.stun.listen == (
        Endpoint("192.0.2.1", 3478),
        Endpoint("127.0.0.1", 3480),
    )
    assert s.stun.alternate == Endpoint("192.0.2.2", 3479) and not s.stun.tcp
    assert s.stun.software == "x"
    t = s.turn
    assert t is not None and t.realm == "example.org"
    assert t.listen == ((Transport.UDP, Endpoint("127.0.0.1", 3478)),)
    assert t.users == (("alice", "pw"),) and t.auth_secrets == ("s3cret",)
    assert t.external_ips == ((None, "203.0.113.5"),) and t.relay_ips == ("127.0.0.1",)
    assert (t.min_port, t.max_port, t.max_allocations, t.user_quota) == (50000, 50100, 10, 2)
    assert (t.relay_socket_pool, t.relay_port_quarantine) == (12, 2.5)
    assert (t.max_bps, t.bps_capacity, t.default_lifetime, t.max_lifetime) == (
        1000, 10000, 300.0, 600.0,
    )  # fmt: skip
    assert not t.tcp_relay and t.max_connections == 5 and t.idle_timeout == 20.0
    assert t.max_unauthenticated_per_ip == 3 and t.unauthenticated_timeout == 4.0
    assert (t.max_permissions, t.max_channels, t.max_peer_connections) == (6, 7, 8)
    assert t.deny_connect_ports == (25, 587) and t.binding_rate == 5.0
    assert t.binding_burst == 9.0 and t.software == "turn-x"
    assert t.alternate_server == Endpoint("192.0.2.9", 3478)
    assert [str(n) for n in t.allow_peers] == ["10.0.0.0/8"]
    assert [str(n) for n in t.deny_peers] == ["192.0.2.0/24"]
    p = s.sip
    assert p is not None and p.listen == ((SipTransport.UDP, Endpoint("127.0.0.1", 5070)),)
    assert p.domains == frozenset({"example.org"}) and p.host == "sip.example.org"
    assert not p.authenticate and p.flow_timer == 60 and p.connection_reuse
    assert not p.record_route and not p.nat_pings and p.alias_peers == frozenset({"192.0.2.7"})
    assert (p.min_expires, p.max_expires, p.default_expires) == (30, 900, 600)
    m = s.media_relay
    assert m is not None and (m.ipv4, m.ipv6) == ("127.0.0.1", "::1")
    assert (m.advertised_ipv4, m.advertised_ipv6) == ("203.0.113.7", "2001:db8::7")
    assert (m.min_port, m.max_port, m.learning_packets, m.learning_time) == (20000, 20999, 3, 1.5)
    assert not m.strict_source and m.idle_timeout == 30.0 and m.max_calls == 50
    assert m.policy == RelayPolicy.ALWAYS
    assert s.admin.listen == Endpoint("0.0.0.0", 9700) and s.admin.token == "t0ken"


def test_the_example_file_is_valid() -> None:
    s = build_serve_settings(load_serve_toml(EXAMPLE))
    assert s.sip is not None and s.turn is not None and s.media_relay is not None


@pytest.mark.parametrize("section", ["stun", "turn", "sip", "media_relay"])
def test_each_server_can_be_disabled(section: str) -> None:
    s = build_serve_settings({section: {"enabled": False}})
    assert getattr(s, section) is None


def test_admin_can_be_disabled() -> None:
    assert build_serve_settings({"admin": {"enabled": False}}).admin.listen is None


BAD = [
    pytest.param({"": {"data-dir": 5}}, "data-dir", id="data-dir"),
    pytest.param({"store": {"url": "mysql://x"}}, "store.url", id="store-url"),
    pytest.param({"store": {"path": "x"}}, "store.path", id="store-unknown"),
    pytest.param({"stun": {"enabled": "yes"}}, "stun.enabled", id="stun-enabled"),
    pytest.param({"stun": {"listen": ["nowhere"]}}, "stun.listen", id="stun-listen"),
    pytest.param({"stun": {"listen": []}}, "stun.listen", id="stun-listen-empty"),
    pytest.param(
        {"stun": {"listen": ["127.0.0.1:3478"], "alternate": "127.0.0.1:3479"}},
        "stun.alternate",
        id="stun-alternate-same-ip",
    ),
    pytest.param({"stun": {"software": 3}}, "stun.software", id="stun-software"),
    pytest.param({"turn": {"realm": ""}}, "turn.realm", id="turn-realm"),
    pytest.param({"turn": {"min-port": 0}}, "turn.min-port", id="turn-min-port"),
    pytest.param({"turn": {"user": ["nopass"]}}, "turn.user", id="turn-user"),
    pytest.param({"turn": {"store": "memory:"}}, "turn.store", id="turn-store-is-serves"),
    pytest.param({"turn": {"admin": "127.0.0.1:1"}}, "turn.admin", id="turn-admin-is-serves"),
    pytest.param({"turn": {"workers": 2}}, "turn.workers", id="turn-workers"),
    pytest.param({"turn": {"colour": 1}}, "turn.colour", id="turn-unknown"),
    pytest.param({"sip": {"domain": []}}, "sip.domain", id="sip-no-domain"),
    pytest.param({"sip": {"flow-timer": -1}}, "sip.flow-timer", id="sip-flow-timer"),
    pytest.param({"sip": {"listen": ["tls:127.0.0.1"]}}, "sip.tls-cert", id="sip-tls"),
    pytest.param({"sip": {"admin-token": "x"}}, "sip.admin-token", id="sip-admin"),
    pytest.param({"media-relay": {"ipv4": "x"}}, "media_relay.ipv4", id="relay-ipv4"),
    pytest.param({"media-relay": {"ipv4": "::1"}}, "media_relay.ipv4", id="relay-ipv4-v6"),
    pytest.param({"media-relay": {"ipv4": "0.0.0.0"}}, "media_relay.ipv4", id="relay-wild"),
    pytest.param({"media-relay": {"ipv6": "127.0.0.1"}}, "media_relay.ipv6", id="relay-ipv6"),
    pytest.param({"media-relay": {"ipv4": ""}}, "media_relay.ipv4", id="relay-no-address"),
    pytest.param(
        {"media-relay": {"min-port": 5000, "max-port": 4000}},
        "media_relay.min-port",
        id="relay-ports",
    ),
    pytest.param({"media-relay": {"max-port": "x"}}, "media_relay.max-port", id="relay-port-type"),
    pytest.param({"media-relay": {"policy": "sometimes"}}, "media_relay.policy", id="policy"),
    pytest.param({"media-relay": {"idle-timeout": 0}}, "media_relay.idle-timeout", id="idle"),
    pytest.param(
        {"media-relay": {"learning-packets": 0}}, "media_relay.learning-packets", id="learning"
    ),
    pytest.param({"media-relay": {"strict-source": 1}}, "media_relay.strict-source", id="strict"),
    pytest.param({"media-relay": {"max-calls": 0}}, "media_relay.max-calls", id="max-calls"),
    pytest.param({"media-relay": {"colour": 1}}, "media_relay.colour", id="relay-unknown"),
    pytest.param({"admin": {"listen": "x"}}, "admin.listen", id="admin-listen"),
    pytest.param({"admin": {"listen": "0.0.0.0:9"}}, "admin.listen", id="admin-open"),
    pytest.param({"admin": {"token": 5}}, "admin.token", id="admin-token"),
    pytest.param({"admin": {"colour": 1}}, "admin.colour", id="admin-unknown"),
]


@pytest.mark.parametrize(("file", "key"), BAD)
def test_bad_values_name_section_and_key(file: dict[str, dict[str, Any]], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_serve_settings(file)


def test_unknown_tables_and_top_level_keys_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "natkit.toml"
    path.write_text("[sipp]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"unknown table \[sipp\]"):
        load_serve_toml(path)
    path.write_text("domain = 'x'\n")
    with pytest.raises(ConfigError, match="unknown key 'domain'"):
        load_serve_toml(path)
    path.write_text("[sip\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_serve_toml(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_serve_toml(tmp_path / "missing.toml")


def test_overrides_win_over_the_file_and_replace_lists() -> None:
    file: dict[str, dict[str, Any]] = {
        "sip": {"domain": ["a.org", "b.org"], "flow-timer": 30},
        "turn": {"user": ["alice:pw"]},
        "admin": {"listen": "127.0.0.1:9700"},
    }
    overrides: dict[str, dict[str, Any]] = {
        "sip": {"domain": ["c.org"]},
        "turn": {"user": ["bob:pw"]},
        "admin": {"listen": "127.0.0.1:9800"},
    }
    s = build_serve_settings(file, overrides)
    assert s.sip is not None and s.sip.domains == frozenset({"c.org"}) and s.sip.flow_timer == 30
    assert s.turn is not None and s.turn.users == (("bob", "pw"),)
    assert s.admin.listen == Endpoint("127.0.0.1", 9800)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("sip.flow_timer=30", ("sip", "flow-timer", 30), id="int"),
        pytest.param('sip.domain=["a.org"]', ("sip", "domain", ["a.org"]), id="list"),
        pytest.param(
            "media_relay.strict-source=false", ("media-relay", "strict-source", False), id="bool"
        ),
        pytest.param("turn.realm=example.org", ("turn", "realm", "example.org"), id="bare-string"),
        pytest.param("data-dir=/var/lib/natkit", ("", "data-dir", "/var/lib/natkit"), id="top"),
    ],
)
def test_set_overrides_parse_toml_values(text: str, expected: tuple[str, str, Any]) -> None:
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["novalue", "nope.key=1", "sip.=1"])
def test_bad_set_overrides(text: str) -> None:
    with pytest.raises(ConfigError, match="--set"):
        parse_override(text)
