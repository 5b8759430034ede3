"""``natkit turn ...``: manage TURN users and REST secrets in the store, and
look at running servers (sessions, kick)."""

from __future__ import annotations

import typer

turn_app = typer.Typer(
    help="TURN users, REST secrets and live sessions.",
    no_args_is_help=True,
)
