"""``natkit turn ...``: manage TURN users and REST secrets in the store, and
look at running servers (sessions, kick).

``natkit turn user add|remove|list`` and ``natkit turn secret add|remove|list``
work on the store a TURN server reads (``--store URL``, else ``$NATKIT_STORE``,
else the default SQLite file, see docs/store.md); a running server picks
changes up within its refresh interval. ``natkit turn credentials`` prints a
TURN REST API username/password pair, as a web service would hand one to a
browser. Results go to stdout (``--json`` where it makes sense), messages to
stderr; errors exit with status 1 and one line, never a traceback.
"""

from __future__ import annotations

import secrets as _secrets
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from natkit.cli.users import (
    JsonOption,
    RealmOption,
    StoreOption,
    add_user_commands,
    fail,
    read_stdin_line,
    stdout_json,
    with_store,
)
from natkit.store import Store
from natkit.turn.aio import credentials as tc
from natkit.turn.credentials import rest_credentials

turn_app = typer.Typer(
    help="TURN users, REST secrets and live sessions.",
    no_args_is_help=True,
)
user_app = typer.Typer(
    help="TURN users (long-term credentials, stored as keys) in the store.",
    no_args_is_help=True,
)
secret_app = typer.Typer(
    help="TURN REST API shared secrets (coturn's use-auth-secret) in the store.",
    no_args_is_help=True,
)
turn_app.add_typer(user_app, name="user")
turn_app.add_typer(secret_app, name="secret")

console = Console()
err_console = Console(stderr=True)

wallclock: Callable[[], float] = time.time
"""Unix time for REST credential expiry (tests replace it)."""

_fail = fail
_with_store = with_store
_read_stdin_line = read_stdin_line
_stdout_json = stdout_json


def _when(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# -- users ---------------------------------------------------------------------------

add_user_commands(
    user_app,
    add=tc.add_user,
    remove=tc.remove_user,
    list_users=tc.list_users,
    stored="its MD5 and SHA-256 keys",
)


# -- REST secrets --------------------------------------------------------------------


@secret_app.command("add")
def secret_add(
    realm: RealmOption,
    secret: Annotated[
        str | None,
        typer.Argument(help="The shared secret; '-' reads it from stdin; none: a random one."),
    ] = None,
    label: Annotated[
        str | None, typer.Option("--label", help="A note for listings (e.g. 2026-q1).")
    ] = None,
    store: StoreOption = None,
) -> None:
    """Add a REST secret. All stored secrets are valid at once, for rotation."""
    generated = secret is None
    if secret == "-":
        secret = _read_stdin_line("secret")
    value = secret if secret is not None else _secrets.token_urlsafe(32)

    async def job(db: Store) -> tc.StoredSecret:
        return await tc.add_secret(db, realm, value, label=label)

    stored = _with_store(store, job)
    if generated:
        sys.stdout.write(value + "\n")
    err_console.print(f"added REST secret {stored.id} to realm {realm!r}", highlight=False)


@secret_app.command("remove")
def secret_remove(
    secret: Annotated[str, typer.Argument(help="The secret, or its id from 'secret list'.")],
    realm: RealmOption,
    store: StoreOption = None,
) -> None:
    """Remove a REST secret; exit status 1 if there was none."""
    if secret == "-":
        secret = _read_stdin_line("secret")
    name = secret

    async def job(db: Store) -> str | None:
        found = await tc.find_secret(db, realm, name)
        if found is None or not await tc.remove_secret(db, realm, found.id):
            return None
        return found.id

    removed = _with_store(store, job)
    if removed is None:
        raise _fail(f"no such REST secret in realm {realm!r}")
    err_console.print(f"removed REST secret {removed} from realm {realm!r}")


@secret_app.command("list")
def secret_list(
    realm: RealmOption,
    store: StoreOption = None,
    show: Annotated[bool, typer.Option("--show", help="Print the secrets themselves.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List a realm's REST secrets, oldest first (ids only, unless --show)."""

    async def job(db: Store) -> list[tc.StoredSecret]:
        return await tc.list_secrets(db, realm)

    found = _with_store(store, job)
    if as_json:
        _stdout_json([s.to_json(reveal=show) for s in found])
        return
    table = Table("id", "label", "created", *(["secret"] if show else []))
    for s in found:
        table.add_row(s.id, s.label or "", _when(s.created), *([s.secret] if show else []))
    console.print(table)


# -- REST credentials ----------------------------------------------------------------


@turn_app.command("credentials")
def credentials(
    user: Annotated[
        str, typer.Option("--user", "-u", help="Who the credentials are for (may be empty).")
    ] = "",
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret", help="The shared secret ('-': stdin); default: the realm's newest."
        ),
    ] = None,
    ttl: Annotated[int, typer.Option("--ttl", min=1, help="Seconds they stay valid.")] = 86400,
    uri: Annotated[
        list[str] | None,
        typer.Option("--uri", help="A TURN URI to include (turn:host:3478?transport=udp ...)."),
    ] = None,
    separator: Annotated[
        str, typer.Option("--separator", help="Between expiry and user (coturn: ':').")
    ] = ":",
    realm: Annotated[
        str | None,
        typer.Option(
            "--realm", "-r", envvar="NATKIT_REALM", help="Whose newest secret, without --secret."
        ),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Print a TURN REST API username and password (JSON), like a web service hands out."""
    if secret == "-":
        secret = _read_stdin_line("secret")
    if secret is None:
        if not realm:
            raise _fail("give --secret, or --realm to use the newest secret in the store")
        where = realm

        async def job(db: Store) -> list[tc.StoredSecret]:
            return await tc.list_secrets(db, where)

        stored = _with_store(store, job)
        if not stored:
            raise _fail(f"realm {realm!r} has no REST secret: natkit turn secret add")
        secret = stored[-1].secret
    expiry = int(wallclock()) + ttl
    username, password = rest_credentials(secret, user, expiry=expiry, separator=separator)
    _stdout_json({"username": username, "password": password, "ttl": ttl, "uris": uri or []})
