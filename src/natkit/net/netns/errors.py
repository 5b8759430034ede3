"""Errors of the namespace lab: it needs root, network namespaces and tools."""

from __future__ import annotations

from natkit.errors import TransportError

__all__ = ["LabError", "LabUnavailable"]


class LabError(TransportError):
    """Building or running the namespace lab failed (a link, a NAT, a process)."""


class LabUnavailable(LabError):
    """The lab cannot run on this machine at all: not root, no network
    namespaces, no TUN device, or a missing tool. The message says which and
    what to do about it."""
