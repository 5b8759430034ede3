"""natkit turn user / secret / credentials: managing the store a TURN server reads."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from tests.redis_fixture import redis_server_fixture, redis_url_fixture  # noqa: F401
from typer.testing import CliRunner, Result

from natkit.cli import turn as turn_cli
from natkit.cli.main import app
from natkit.store import open_store
from natkit.stun.constants import PasswordAlgorithm
from natkit.stun.credentials import long_term_key
from natkit.turn.aio.credentials import StoreCredentials
from natkit.turn.credentials import RestCredentials, rest_password

runner = CliRunner()
REALM = "example.org"
NOW = 1_700_000_000


@pytest.fixture(name="db")
def db_fixture(tmp_path: Path) -> str:
    return f"sqlite:{tmp_path / 'natkit.db'}"


def _run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, ["turn", *args], input=input, env=env)


def _mirror(url: str, realm: str = REALM) -> StoreCredentials:
    """What a TURN server using ``url`` would load."""

    async def load() -> StoreCredentials:
        store = await open_store(url)
        try:
            return await StoreCredentials.load(store, realm)
        finally:
            await store.close()

    return asyncio.run(load())


def _md5(user: str, password: str) -> bytes:
    return long_term_key(user, REALM, password, PasswordAlgorithm.MD5)


def test_help_lists_the_store_commands() -> None:
    result = _run("--help")
    assert result.exit_code == 0
    for command in ("user", "secret", "credentials"):
        assert command in result.output


def test_user_add_stores_keys_a_server_accepts(db: str) -> None:
    result = _run("user", "add", "alice", "--password", "pw", "--realm", REALM, "--store", db)
    assert result.exit_code == 0, result.output
    assert "added user 'alice'" in result.stderr
    mirror = _mirror(db)
    assert mirror.keys("alice", PasswordAlgorithm.MD5, wallclock=NOW) == (_md5("alice", "pw"),)


def test_user_add_again_changes_the_password(db: str) -> None:
    _run("user", "add", "alice", "-p", "old", "-r", REALM, "--store", db)
    result = _run("user", "add", "alice", "-p", "new", "-r", REALM, "--store", db)
    assert result.exit_code == 0
    assert "changed the password" in result.stderr
    assert _mirror(db).keys("alice", PasswordAlgorithm.MD5, wallclock=NOW) == (
        _md5("alice", "new"),
    )


def test_password_dash_reads_stdin(db: str) -> None:
    result = _run(
        "user", "add", "bob", "--password", "-", "-r", REALM, "--store", db, input="s3cret\n"
    )
    assert result.exit_code == 0, result.output
    assert _mirror(db).keys("bob", PasswordAlgorithm.MD5, wallclock=NOW) == (_md5("bob", "s3cret"),)


def test_without_password_it_prompts_twice(db: str) -> None:
    result = _run("user", "add", "carol", "-r", REALM, "--store", db, input="pw\npw\n")
    assert result.exit_code == 0, result.output
    assert _mirror(db).keys("carol", PasswordAlgorithm.MD5, wallclock=NOW) == (_md5("carol", "pw"),)


def test_empty_stdin_password_is_an_error(db: str) -> None:
    result = _run("user", "add", "bob", "--password", "-", "-r", REALM, "--store", db, input="")
    assert result.exit_code == 1
    assert "no password" in result.stderr


def test_user_list_and_remove(db: str) -> None:
    for name in ("zed", "amy"):
        _run("user", "add", name, "-p", "pw", "-r", REALM, "--store", db)
    _run("user", "add", "other", "-p", "pw", "-r", "other.example", "--store", db)
    listed = _run("user", "list", "-r", REALM, "--store", db)
    assert listed.exit_code == 0
    assert listed.stdout == "amy\nzed\n"
    removed = _run("user", "remove", "zed", "-r", REALM, "--store", db)
    assert removed.exit_code == 0, removed.output
    as_json = _run("user", "list", "-r", REALM, "--store", db, "--json")
    assert json.loads(as_json.stdout) == ["amy"]
    assert _mirror(db).keys("zed", PasswordAlgorithm.MD5, wallclock=NOW) == ()


def test_removing_a_missing_user_fails(db: str) -> None:
    result = _run("user", "remove", "ghost", "-r", REALM, "--store", db)
    assert result.exit_code == 1
    assert "no user 'ghost'" in result.stderr


def test_realm_and_store_come_from_the_environment(tmp_path: Path) -> None:
    env = {"NATKIT_STORE": f"sqlite:{tmp_path / 'env.db'}", "NATKIT_REALM": REALM}
    assert _run("user", "add", "amy", "-p", "pw", env=env).exit_code == 0
    assert _run("user", "list", env=env).stdout == "amy\n"
    assert (tmp_path / "env.db").exists()


def test_the_default_store_is_sqlite_under_xdg_state_home(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path), "NATKIT_STORE": ""}
    result = _run("user", "add", "amy", "-p", "pw", "-r", REALM, env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "natkit" / "natkit.db").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("postgres://db/natkit", "unknown store", id="unknown-scheme"),
        pytest.param("natkit.db", "not a store URL", id="no-scheme"),
    ],
)
def test_a_bad_store_url_is_one_line_and_status_1(url: str, message: str) -> None:
    result = _run("user", "list", "-r", REALM, "--store", url)
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_an_unreachable_redis_is_one_line_and_status_1() -> None:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        result = _run("user", "list", "-r", REALM, "--store", f"redis://127.0.0.1:{port}/0")
    assert result.exit_code == 1
    assert "cannot reach redis" in result.stderr
    assert isinstance(result.exception, SystemExit)


def test_users_added_to_redis_reach_a_server_on_the_same_redis(redis_url: str) -> None:
    result = _run("user", "add", "alice", "-p", "pw", "-r", REALM, "--store", redis_url)
    assert result.exit_code == 0, result.output
    mirror = _mirror(redis_url)
    assert mirror.keys("alice", PasswordAlgorithm.MD5, wallclock=NOW) == (_md5("alice", "pw"),)


def test_secret_add_list_remove(db: str) -> None:
    assert (
        _run("secret", "add", "first", "--label", "q1", "-r", REALM, "--store", db).exit_code == 0
    )
    assert _run("secret", "add", "second", "-r", REALM, "--store", db).exit_code == 0
    listed = json.loads(_run("secret", "list", "-r", REALM, "--store", db, "--json").stdout)
    assert [(s["label"], s["secret"]) for s in listed] == [("q1", None), (None, None)]
    shown = json.loads(
        _run("secret", "list", "-r", REALM, "--store", db, "--json", "--show").stdout
    )
    assert sorted(s["secret"] for s in shown) == ["first", "second"]
    table = _run("secret", "list", "-r", REALM, "--store", db)
    assert listed[0]["id"] in table.stdout and "first" not in table.stdout
    assert _run("secret", "remove", listed[0]["id"], "-r", REALM, "--store", db).exit_code == 0
    removed = _run("secret", "remove", "second", "-r", REALM, "--store", db)
    assert removed.exit_code == 0
    assert listed[1]["id"] in removed.output  # the stored id, whichever name was given
    assert _run("secret", "remove", "second", "-r", REALM, "--store", db).exit_code == 1
    assert _mirror(db).rest.secrets == ()


def test_secret_add_without_a_secret_generates_one(db: str) -> None:
    result = _run("secret", "add", "-r", REALM, "--store", db)
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    assert len(secret) >= 40
    assert _mirror(db).rest.secrets == (secret,)


def test_credentials_are_coturn_rest_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(turn_cli, "wallclock", lambda: float(NOW))
    result = _run(
        "credentials", "--secret", "s3cret", "--user", "alice", "--ttl", "600",
        "--uri", "turn:turn.example.org:3478?transport=udp",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data == {
        "username": f"{NOW + 600}:alice",
        "password": rest_password("s3cret", f"{NOW + 600}:alice"),
        "ttl": 600,
        "uris": ["turn:turn.example.org:3478?transport=udp"],
    }
    rest = RestCredentials(["s3cret"], REALM)
    assert rest.keys(data["username"], PasswordAlgorithm.MD5, wallclock=NOW + 599)
    assert not rest.keys(data["username"], PasswordAlgorithm.MD5, wallclock=NOW + 601)


def test_credentials_use_the_realms_newest_secret(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _run("secret", "add", "only", "-r", REALM, "--store", db)
    result = _run("credentials", "--user", "u", "-r", REALM, "--store", db)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["password"] == rest_password("only", data["username"])
    assert data["ttl"] == 86400


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param([], "give --secret", id="neither-secret-nor-realm"),
        pytest.param(["-r", REALM], "has no REST secret", id="realm-without-secrets"),
    ],
)
def test_credentials_need_a_secret(db: str, args: list[str], message: str) -> None:
    result = _run("credentials", *args, "--store", db, env={"NATKIT_REALM": ""})
    assert result.exit_code == 1
    assert message in result.stderr
