"""TURN (RFC 8656, RFC 5766, RFC 6062, RFC 6156): sans-IO server and client
cores; their asyncio drivers live in :mod:`natkit.turn.aio`."""
