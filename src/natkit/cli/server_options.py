"""Command-line options every long-running server command takes the same way
(``natkit sip-server``, ``natkit turn-server``): the admin endpoint's bearer
token and the TOML settings file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["TOKEN_ENV", "AdminTokenOption", "ConfigFileOption"]

TOKEN_ENV = "NATKIT_ADMIN_TOKEN"
"""The environment variable ``--admin-token`` defaults to."""

AdminTokenOption = Annotated[
    str | None,
    typer.Option(help="Bearer token the admin endpoint requires.", envvar=TOKEN_ENV),
]
"""``--admin-token`` (or ``$NATKIT_ADMIN_TOKEN``)."""

ConfigFileOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML file with the same keys.")
]
"""``--config`` / ``-c``: a TOML file holding the same keys as the flags."""
