"""natkit sip-server's settings (natkit.sip.aio.config): every key from a TOML
file, bad values naming the key, flags over the file; and a real server
started with --config and --admin on loopback whose /metrics, /healthz and
/sessions show a registration."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests.server_process import read_until, start_natkit

from natkit.addr import Endpoint
from natkit.sip.aio.config import (
    KEYS,
    ConfigError,
    SipServerSettings,
    build_settings,
    load_toml,
)
from natkit.sip.digest import DigestAlgorithm
from natkit.sip.flow import SipTransport, Target
from natkit.sip.message import SipResponse, parse_message

EVERY_KEY = """
[sip-server]
listen = ["udp:127.0.0.1:5070", "tcp:127.0.0.1:5070"]
domain = ["Example.org", "example.net"]
store = "memory:"
host = "sip.example.org"
realm = "shared"
no-auth = true
md5-first = true
secret = "00112233445566778899aabbccddeeff"
flow-timer = 30
alias-peer = ["192.0.2.7"]
connection-reuse = true
min-expires = 30
max-expires = 600
default-expires = 300
no-record-route = true
no-nat-pings = true
admin = "127.0.0.1:9700"
admin-token = "t0ken"
admin-insecure = false
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sip.toml"
    path.write_text(text)
    return path


def test_every_key_of_the_file_is_read(tmp_path: Path) -> None:
    s = build_settings(load_toml(_write(tmp_path, EVERY_KEY)), {})
    assert s.listen == (
        (SipTransport.UDP, Endpoint("127.0.0.1", 5070)),
        (SipTransport.TCP, Endpoint("127.0.0.1", 5070)),
    )
    assert s.domains == frozenset({"example.org", "example.net"})
    assert s.store == "memory:" and s.host == "sip.example.org" and s.realm == "shared"
    assert not s.authenticate
    assert s.digest_algorithms == (DigestAlgorithm.MD5, DigestAlgorithm.SHA256)
    assert s.secret == bytes.fromhex("00112233445566778899aabbccddeeff")
    assert s.flow_timer == 30 and s.alias_peers == frozenset({"192.0.2.7"})
    assert s.connection_reuse and not s.record_route and not s.nat_pings
    assert (s.min_expires, s.max_expires, s.default_expires) == (30, 600, 300)
    assert s.admin == Endpoint("127.0.0.1", 9700) and s.admin_token == "t0ken"
    config = s.core_config(b"x" * 32)
    assert config.secret == s.secret and config.flow_timer == 30 and not config.nat_pings
    assert config.min_expires == 30 and not config.record_route


def test_the_file_covers_every_flag() -> None:
    # the table above, plus the ones that exclude what it sets
    named = {line.partition("=")[0].strip() for line in EVERY_KEY.splitlines() if "=" in line}
    assert KEYS - named == {"edge-only", "registrar", "tls-cert", "tls-key", "no-admin"}


def test_edge_only_keys_and_no_admin() -> None:
    s = build_settings({"edge_only": True, "registrar": "sip:192.0.2.1:5080", "no_admin": True}, {})
    assert s.edge_upstream == Target(SipTransport.UDP, Endpoint("192.0.2.1", 5080))
    assert s.admin is None and s.domains == frozenset()


def test_defaults() -> None:
    s = build_settings({}, {"domain": ["example.org"]})
    assert s == SipServerSettings(domains=frozenset({"example.org"}))
    assert s.admin is None and s.flow_timer == 120 and s.authenticate


def test_flags_override_the_file_and_lists_are_replaced(tmp_path: Path) -> None:
    file = load_toml(_write(tmp_path, EVERY_KEY))
    s = build_settings(
        file,
        {
            "listen": ["udp:127.0.0.1:6000"],
            "flow-timer": 90,
            "domain": ["other.org"],
            "no-auth": None,  # None: not given, the file's true stays
            "no-record-route": False,  # --record-route: turns the file's true off
            "admin": "127.0.0.1",
        },
    )
    assert s.listen == ((SipTransport.UDP, Endpoint("127.0.0.1", 6000)),)
    assert s.flow_timer == 90 and s.domains == frozenset({"other.org"})
    assert not s.authenticate
    assert s.record_route
    assert s.admin == Endpoint("127.0.0.1", 9642)


def test_a_negative_flag_turns_off_a_true_in_the_file() -> None:
    file = {"domain": ["a.org"], "no-auth": True, "edge-only": False}
    assert not build_settings(file, {"no-auth": None}).authenticate
    assert build_settings(file, {"no-auth": False}).authenticate


def test_every_bool_flag_has_an_off_switch_on_the_command_line() -> None:
    from typer.testing import CliRunner

    from natkit.cli.main import app

    out = CliRunner().invoke(app, ["sip-server", "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--no-edge-only", "--auth", "--no-md5-first", "--record-route", "--nat-pings"):
        assert flag in out, flag


BAD = [
    pytest.param({"listen": ["udp:nonsense"]}, "listen", id="listen"),
    pytest.param({"listen": "tcp:127.0.0.1:1", "domain": 5}, "domain", id="domain-type"),
    pytest.param({"domain": ["bad domain"]}, "domain", id="domain-value"),
    pytest.param({"listen": ["127.0.0.1:1"]}, "domain", id="no-domain"),
    pytest.param({"domain": ["a.org"], "store": "mysql://x"}, "store", id="store"),
    pytest.param({"edge-only": True}, "registrar", id="edge-no-registrar"),
    pytest.param({"edge-only": True, "registrar": "sip:reg.example"}, "registrar", id="named"),
    pytest.param({"domain": ["a.org"], "registrar": "sip:192.0.2.1"}, "registrar", id="not-edge"),
    pytest.param({"domain": ["a.org"], "secret": "zz"}, "secret", id="secret-hex"),
    pytest.param({"domain": ["a.org"], "secret": "00ff"}, "secret", id="secret-short"),
    pytest.param({"domain": ["a.org"], "tls-cert": "c.pem"}, "tls-cert", id="cert-alone"),
    pytest.param({"domain": ["a.org"], "listen": ["tls:127.0.0.1"]}, "tls-cert", id="tls"),
    pytest.param({"domain": ["a.org"], "flow-timer": 0}, "flow-timer", id="flow-timer"),
    pytest.param({"domain": ["a.org"], "flow-timer": "9"}, "flow-timer", id="flow-timer-type"),
    pytest.param({"domain": ["a.org"], "min-expires": 0}, "min-expires", id="min-expires"),
    pytest.param(
        {"domain": ["a.org"], "default-expires": 10}, "default-expires", id="default-expires"
    ),
    pytest.param({"domain": ["a.org"], "alias-peer": ["edge.x"]}, "alias-peer", id="alias-peer"),
    pytest.param({"domain": ["a.org"], "no-auth": "yes"}, "no-auth", id="bool-type"),
    pytest.param({"domain": ["a.org"], "admin": "nowhere"}, "admin", id="admin"),
    pytest.param({"domain": ["a.org"], "admin": "192.0.2.1:9"}, "admin", id="admin-open"),
    pytest.param({"domain": ["a.org"], "colour": "red"}, "colour", id="unknown"),
]


@pytest.mark.parametrize(("file", "key"), BAD)
def test_bad_values_name_their_key(file: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_settings(file, {})


def test_unknown_key_and_bad_toml_in_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        load_toml(_write(tmp_path, 'colour = "red"\n'))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(_write(tmp_path, "listen = [\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_toml(tmp_path / "missing.toml")


def test_non_loopback_admin_with_a_token_or_insecure_is_accepted() -> None:
    with_token = build_settings({"domain": ["a.org"], "admin": "0.0.0.0:9", "admin-token": "x"}, {})
    assert with_token.admin == Endpoint("0.0.0.0", 9)
    insecure = build_settings(
        {"domain": ["a.org"], "admin": "0.0.0.0:9", "admin-insecure": True}, {}
    )
    assert insecure.admin_insecure


# -- a real server ------------------------------------------------------------------------


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_sip_server_with_config_and_admin_serves_metrics_and_registrations(
    tmp_path: Path,
) -> None:
    sip = _free_port(socket.SOCK_DGRAM)
    admin = _free_port(socket.SOCK_STREAM)
    config = _write(
        tmp_path,
        f'listen = ["udp:127.0.0.1:{sip}"]\ndomain = ["example.org"]\nno-auth = true\n'
        f'store = "sqlite:{tmp_path / "natkit.db"}"\nadmin-token = "sekrit"\n',
    )
    proc = start_natkit("sip-server", "--config", str(config), "--admin", f"127.0.0.1:{admin}")
    assert proc.stderr is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        read_until(proc, b"admin endpoint", "sip-server")
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        local = sock.getsockname()[1]
        register = (
            "REGISTER sip:example.org SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKcfg1;rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:alice@example.org>;tag=t1\r\n"
            "To: <sip:alice@example.org>\r\nCall-ID: cfg-reg\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:alice@127.0.0.1:{local}>\r\nExpires: 600\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(register.encode(), ("127.0.0.1", sip))
        ok = parse_message(sock.recv(65535))
        assert isinstance(ok, SipResponse) and ok.status == 200
        base = f"http://127.0.0.1:{admin}"
        assert _get(base + "/healthz") == (200, b"ok\n")
        assert _get(base + "/metrics")[0] == 401  # the token is asked for
        deadline = time.monotonic() + 15
        sessions: list[dict[str, Any]] = []
        while not sessions and time.monotonic() < deadline:  # the snapshot refreshes every 5 s
            status, body = _get(base + "/sessions", "sekrit")
            assert status == 200
            sessions = json.loads(body)
            if not sessions:
                time.sleep(0.2)
        assert [s["aor"] for s in sessions] == ["sip:alice@example.org"]
        assert sessions[0]["expires_in_s"] > 500
        status, metrics = _get(base + "/metrics", "sekrit")
        text = metrics.decode()
        assert status == 200
        assert 'natkit_sip_requests_total{method="REGISTER"} 1.0' in text
        assert 'natkit_sip_responses_total{class="2xx",direction="sent"} 1.0' in text
        assert "natkit_sip_registrations 1.0" in text
        assert "natkit_sip_transactions " in text
    finally:
        sock.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)
        proc.stderr.close()
    assert code == 0
