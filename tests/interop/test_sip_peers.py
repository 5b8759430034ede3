"""The SIP interop harness (tests/interop/sip_peers.py) against the real peers.

No natkit server is involved yet: these prove that Kamailio, sipp and
baresip start, talk and stop on loopback as the harness drives them, so the
same fixtures can later face ``natkit sip-server``. Each test runs a few
seconds at most; every process is stopped by PID in a ``finally``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import sip_peers as sp
from .conftest import LOOPBACK, require_program

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

PASSWORD = "s3cret"


@pytest.fixture(autouse=True)
def _programs() -> None:
    require_program("kamailio", "kamailio")
    require_program("kamcmd", "kamailio")
    require_program("sipp", "sip-tester")


@pytest.fixture
def registrar(tmp_path: Path) -> Iterator[sp.KamailioPeer]:
    with sp.kamailio(tmp_path / "kamailio") as peer:
        yield peer


@pytest.mark.parametrize("transport", [pytest.param("u1", id="udp"), pytest.param("t1", id="tcp")])
def test_sipp_registers_without_auth_and_kamailio_stores_every_aor(
    registrar: sp.KamailioPeer, tmp_path: Path, transport: str
) -> None:
    users = [f"user{n:03d}" for n in range(20)]
    csv = sp.write_users_csv(tmp_path / "users.csv", users)
    result = sp.run_sipp(
        "register_noauth.xml",
        tmp_path / "sipp",
        target=f"{registrar.host}:{registrar.port}",
        calls=len(users),
        rate=200,
        users_csv=csv,
        transport=transport,
        timeout_s=5,
    )
    assert result.ok, result.stderr
    assert (result.successful, result.failed) == (len(users), 0)
    assert sorted(registrar.registered_aors()) == users


@pytest.mark.parametrize(
    ("password", "succeeds"),
    [pytest.param(PASSWORD, True, id="right-password"), pytest.param("wrong", False, id="wrong")],
)
def test_sipp_registers_with_digest_against_auth_db(
    tmp_path: Path, password: str, succeeds: bool
) -> None:
    users = {"alice": PASSWORD, "bob": "other"}
    with sp.kamailio(tmp_path / "kamailio", auth="db", users=users) as registrar:
        result = sp.run_sipp(
            "register_auth.xml",
            tmp_path / "sipp",
            target=f"{registrar.host}:{registrar.port}",
            calls=1,
            users_csv=sp.write_users_csv(tmp_path / "users.csv", ["alice"]),
            credentials=("alice", password),
            timeout_s=3,
        )
        assert result.ok is succeeds, result.stderr
        assert registrar.registered_aors() == (["alice"] if succeeds else [])


def test_sipp_registers_unique_users_with_one_static_password(tmp_path: Path) -> None:
    users = [f"u{n}" for n in range(10)]
    with sp.kamailio(tmp_path / "kamailio", auth="static", password=PASSWORD) as registrar:
        result = sp.run_sipp(
            "register_auth.xml",
            tmp_path / "sipp",
            target=f"{registrar.host}:{registrar.port}",
            calls=len(users),
            rate=100,
            users_csv=sp.write_users_csv(tmp_path / "users.csv", users),
            credentials=("bench", PASSWORD),
            timeout_s=5,
        )
        assert (result.successful, result.failed) == (len(users), 0), result.stderr
        assert sorted(registrar.registered_aors()) == sorted(users)


def test_sipp_call_through_kamailio_proxy_reaches_sipp_uas(tmp_path: Path) -> None:
    calls = 3
    uas = sp.start_sipp_uas(tmp_path / "uas", calls=calls, timeout_s=10)
    try:
        forward = f"sip:{LOOPBACK}:{uas.port}"
        with sp.kamailio(tmp_path / "kamailio", forward_uri=forward) as proxy:
            result = sp.run_sipp(
                "uac_invite.xml",
                tmp_path / "uac",
                target=f"{proxy.host}:{proxy.port}",
                calls=calls,
                rate=20,
                timeout_s=8,
            )
            assert (result.successful, result.failed) == (calls, 0), result.stderr
        answered = uas.wait(5)
    finally:
        uas.stop()
    assert (answered.successful, answered.failed) == (calls, 0), answered.stdout[-2000:]


def test_malformed_flood_leaves_kamailio_serving(
    registrar: sp.KamailioPeer, tmp_path: Path
) -> None:
    calls = 100  # 8 malformed requests and one valid OPTIONS each
    result = sp.run_sipp(
        "malformed_flood.xml",
        tmp_path / "flood",
        target=f"{registrar.host}:{registrar.port}",
        calls=calls,
        rate=500,
        timeout_s=8,
    )
    assert (result.successful, result.failed) == (calls, 0), result.stderr[-2000:]
    assert registrar.process.popen.poll() is None
    assert sp.sip_ping(registrar.host, registrar.port, timeout=1.0) == 200


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_baresip_registers_to_kamailio(
    registrar: sp.KamailioPeer, tmp_path: Path, transport: str
) -> None:
    require_program("baresip", "baresip-core")
    account = sp.account_line("carol", f"{registrar.host}:{registrar.port}", transport=transport)
    baresip = sp.start_baresip(tmp_path, [account], lifetime_s=30)
    try:
        # baresip registers at start-up, maybe before ctrl_tcp has a client for the
        # REGISTER_OK event: the registrar's location table is the witness
        assert sp.wait_until(lambda: f":{baresip.sip_port}" in registrar.contacts("carol"), 8)
        contacts = registrar.contacts("carol")
        if transport == "tcp":
            assert "transport=tcp" in contacts.lower(), contacts
        reginfo = baresip.control.command("reginfo")
        assert reginfo.get("ok") is True, reginfo
        assert "carol" in str(reginfo.get("data", "")), reginfo
    finally:
        status = baresip.stop()
    assert status is not None


def test_baresip_dials_through_kamailio_to_sipp_uas_and_hangs_up(tmp_path: Path) -> None:
    require_program("baresip", "baresip-core")
    uas = sp.start_sipp_uas(tmp_path / "uas", calls=1, timeout_s=15)
    try:
        forward = f"sip:{LOOPBACK}:{uas.port}"
        with sp.kamailio(tmp_path / "kamailio", forward_uri=forward) as proxy:
            registrar = f"{proxy.host}:{proxy.port}"
            baresip = sp.start_baresip(tmp_path, [sp.account_line("dave", registrar)])
            try:
                control = baresip.control
                assert control.command("dial", f"sip:service@{registrar}").get("ok") is True
                established = control.wait_event("CALL_ESTABLISHED", timeout=8)
                assert "service" in str(established.get("peeruri", "")), established
                assert control.command("hangup").get("ok") is True
                control.wait_event("CALL_CLOSED", timeout=8)
            finally:
                baresip.stop()
        answered = uas.wait(5)
    finally:
        uas.stop()
    assert (answered.successful, answered.failed) == (1, 0), answered.stdout[-2000:]
