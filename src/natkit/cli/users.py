"""What the store-managing commands share: options, store access, and the
``user add|remove|list`` commands that TURN and SIP users both have.

Results go to stdout (``--json`` where it makes sense), messages to stderr;
errors exit with status 1 and one line, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from natkit.store import Store, StoreError, default_store_url, open_store

__all__ = [
    "JsonOption",
    "RealmOption",
    "StoreOption",
    "add_user_commands",
    "fail",
    "read_stdin_line",
    "stdout_json",
    "with_store",
]

err_console = Console(stderr=True)

T = TypeVar("T")

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="NATKIT_STORE",
        show_envvar=True,
        help=(
            "memory: | sqlite:PATH | redis://HOST:PORT/DB"
            " (default: sqlite:$XDG_STATE_HOME/natkit/natkit.db, see docs/store.md)"
        ),
    ),
]
RealmOption = Annotated[
    str,
    typer.Option("--realm", "-r", envvar="NATKIT_REALM", show_envvar=True, help="The realm."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)


def with_store(url: str | None, job: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store, run ``job`` on it, close it; store and argument errors exit 1."""

    async def main() -> T:
        store = await open_store(url or default_store_url())
        try:
            return await job(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except StoreError as exc:
        raise fail(str(exc)) from None
    except ValueError as exc:
        raise fail(str(exc)) from None


def read_stdin_line(what: str) -> str:
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise fail(f"no {what} on standard input")
    return line


def stdout_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


UserAdd = Callable[[Store, str, str, str], Awaitable[bool]]
UserRemove = Callable[[Store, str, str], Awaitable[bool]]
UserList = Callable[[Store, str], Awaitable[list[str]]]


def add_user_commands(
    app: typer.Typer, *, add: UserAdd, remove: UserRemove, list_users: UserList, stored: str
) -> None:
    """Register ``add``, ``remove`` and ``list`` on ``app`` over the given store
    functions; ``stored`` says what is kept instead of the password."""

    @app.command("add")
    def user_add(
        user: Annotated[str, typer.Argument(help="The username.")],
        realm: RealmOption,
        password: Annotated[
            str | None,
            typer.Option(
                "--password",
                "-p",
                help="The password; '-' reads one line from stdin; else a prompt.",
            ),
        ] = None,
        store: StoreOption = None,
    ) -> None:
        if password == "-":
            password = read_stdin_line("password")
        elif password is None:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        if not password:
            raise fail("the password is empty")
        secret_password = password

        async def job(db: Store) -> bool:
            return await add(db, realm, user, secret_password)

        created = with_store(store, job)
        verb = "added" if created else "changed the password of"
        err_console.print(f"{verb} user {user!r} in realm {realm!r}", highlight=False)

    user_add.__doc__ = f"Add a user (or change its password). Only {stored} are stored."

    @app.command("remove")
    def user_remove(
        user: Annotated[str, typer.Argument(help="The username.")],
        realm: RealmOption,
        store: StoreOption = None,
    ) -> None:
        """Remove a user; exit status 1 if there was none."""

        async def job(db: Store) -> bool:
            return await remove(db, realm, user)

        if not with_store(store, job):
            raise fail(f"no user {user!r} in realm {realm!r}")
        err_console.print(f"removed user {user!r} from realm {realm!r}", highlight=False)

    @app.command("list")
    def user_list(
        realm: RealmOption, store: StoreOption = None, as_json: JsonOption = False
    ) -> None:
        """List the users of a realm, one per line."""

        async def job(db: Store) -> list[str]:
            return await list_users(db, realm)

        users = with_store(store, job)
        if as_json:
            stdout_json(users)
        else:
            for name in users:
                sys.stdout.write(name + "\n")
