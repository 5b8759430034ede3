"""``natkit turn-server``: run natkit's TURN server (and ``natkit turn sessions``
/ ``natkit turn kick``, which talk to a running one)."""

from __future__ import annotations

import typer

from natkit.cli.turn import turn_app


def turn_server_command() -> None:
    """Run a TURN relay server (RFC 8656) over UDP, TCP and TLS."""
    raise typer.Exit(1)


__all__ = ["turn_app", "turn_server_command"]
