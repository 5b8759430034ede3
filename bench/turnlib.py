"""A minimal TURN client and the servers for natkit's TURN benchmarks.

The benchmarks load natkit's server and coturn with the same client, so the
client is written here from RFC 8656 / RFC 8489 directly and shares no code
with the server under test: byte templates, ``struct`` and ``hmac``, a
long-term credential key ``MD5(user:realm:password)`` and MESSAGE-INTEGRITY
(HMAC-SHA1), which every TURN server accepts (RFC 8489 §9.2, §14.5).

Servers: coturn's ``turnserver`` with a config of our own in the work
directory, and ``natkit turn-server`` (``python -m natkit.cli.main``), both
on 127.0.0.1 with long-term credentials, loopback peers allowed and the relay
port range above the Linux ephemeral range (unless a run needs more ports).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import BenchError, Server, require_binary

COOKIE = 0x2112A442
COOKIE_BYTES = struct.pack("!I", COOKIE)
HOST = "127.0.0.1"
USER, PASSWORD, REALM = "test", "test", "example.org"

# Methods (RFC 8656 §17) and the message types built from them (RFC 8489 §5).
ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND = 0x003, 0x004, 0x008, 0x009
SUCCESS, ERROR = 0x100, 0x110

# Attributes.
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE = 0x0006, 0x0008, 0x0009
CHANNEL_NUMBER, LIFETIME, XOR_PEER_ADDRESS = 0x000C, 0x000D, 0x0012
REALM_ATTR, NONCE, XOR_RELAYED_ADDRESS = 0x0014, 0x0015, 0x0016
REQUESTED_TRANSPORT = 0x0019

UDP_TRANSPORT = b"\x11\x00\x00\x00"


class TurnError(BenchError):
    """A TURN request failed (an error response, a timeout, a malformed answer)."""


def long_term_key(user: str = USER, realm: str = REALM, password: str = PASSWORD) -> bytes:
    return hashlib.md5(f"{user}:{realm}:{password}".encode()).digest()


def attr(kind: int, value: bytes) -> bytes:
    pad = -len(value) % 4
    return struct.pack("!HH", kind, len(value)) + value + b"\x00" * pad


def xor_address(host: str, port: int) -> bytes:
    ip = struct.unpack("!I", socket.inet_aton(host))[0]
    return struct.pack("!BBHI", 0, 1, port ^ (COOKIE >> 16), ip ^ COOKIE)


def parse_xor_address(value: bytes) -> tuple[str, int]:
    if len(value) < 8 or value[1] != 1:
        raise TurnError(f"not an IPv4 XOR address: {value.hex()}")
    port, ip = struct.unpack("!HI", value[2:8])
    return socket.inet_ntoa(struct.pack("!I", ip ^ COOKIE)), port ^ (COOKIE >> 16)


def message(msg_type: int, tid: bytes, attrs: bytes, key: bytes | None = None) -> bytes:
    """A STUN message; with ``key``, MESSAGE-INTEGRITY last (RFC 8489 §14.5)."""
    if key is None:
        return struct.pack("!HHI", msg_type, len(attrs), COOKIE) + tid + attrs
    head = struct.pack("!HHI", msg_type, len(attrs) + 24, COOKIE) + tid + attrs
    mac = hmac.new(key, head, hashlib.sha1).digest()
    return head + struct.pack("!HH", MESSAGE_INTEGRITY, 20) + mac


def parse(data: bytes) -> tuple[int, bytes, dict[int, bytes]]:
    """(type, transaction id, first value of each attribute)."""
    if len(data) < 20 or data[4:8] != COOKIE_BYTES:
        raise TurnError(f"not a STUN message: {data[:20].hex()}")
    msg_type, length = struct.unpack("!HH", data[:4])
    attrs: dict[int, bytes] = {}
    pos, end = 20, min(len(data), 20 + length)
    while pos + 4 <= end:
        kind, alen = struct.unpack("!HH", data[pos : pos + 4])
        attrs.setdefault(kind, data[pos + 4 : pos + 4 + alen])
        pos += 4 + alen + (-alen % 4)
    return msg_type, data[8:20], attrs


def error_code(attrs: dict[int, bytes]) -> int | None:
    value = attrs.get(ERROR_CODE)
    if value is None or len(value) < 4:
        return None
    return (value[2] & 7) * 100 + value[3]


def auth_attrs(nonce: bytes, realm: bytes, user: str = USER) -> bytes:
    return attr(USERNAME, user.encode()) + attr(REALM_ATTR, realm) + attr(NONCE, nonce)


@dataclass
class Allocation:
    """A UDP allocation made on a connected socket."""

    sock: socket.socket
    relay: tuple[str, int]
    nonce: bytes
    realm: bytes
    key: bytes

    def request(self, method: int, attrs: bytes, timeout: float = 1.0) -> dict[int, bytes]:
        """An authenticated request; retries once on 438 (stale nonce)."""
        for _ in range(3):
            tid = secrets.token_bytes(12)
            body = attrs + auth_attrs(self.nonce, self.realm)
            msg_type, attributes = transact(
                self.sock, message(method, tid, body, self.key), tid, timeout
            )
            if msg_type == method | SUCCESS:
                return attributes
            code = error_code(attributes)
            if code == 438 and NONCE in attributes:
                self.nonce = attributes[NONCE]
                continue
            raise TurnError(f"request 0x{method:03x} failed with {code}")
        raise TurnError(f"request 0x{method:03x}: nonce kept going stale")

    def permit_and_bind(self, peer: tuple[str, int], channel: int) -> None:
        peer_attr = attr(XOR_PEER_ADDRESS, xor_address(*peer))
        self.request(CREATE_PERMISSION, peer_attr)
        self.request(CHANNEL_BIND, attr(CHANNEL_NUMBER, struct.pack("!HH", channel, 0)) + peer_attr)

    def release(self) -> None:
        with contextlib.suppress(BenchError):
            self.request(REFRESH, attr(LIFETIME, struct.pack("!I", 0)), timeout=0.5)
        self.sock.close()


def transact(
    sock: socket.socket, data: bytes, tid: bytes, timeout: float
) -> tuple[int, dict[int, bytes]]:
    """Send ``data`` and wait for the answer with ``tid`` (retransmitted every 100 ms)."""
    deadline = time.monotonic() + timeout
    sock.settimeout(0.1)
    while time.monotonic() < deadline:
        sock.send(data)
        try:
            while True:
                reply = sock.recv(4096)
                if len(reply) >= 20 and reply[8:20] == tid:
                    msg_type, _, attributes = parse(reply)
                    return msg_type, attributes
        except TimeoutError:
            continue
    raise TurnError(f"no answer from {sock.getpeername()} within {timeout} s")


def set_buffers(sock: socket.socket, size: int) -> None:
    """Large socket buffers (forced past rmem_max/wmem_max when we may), so the load
    tool's own sockets are never where datagrams are lost."""
    for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):  # SO_*BUFFORCE
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


def allocate(server: tuple[str, int], *, bufsize: int = 4 << 20) -> Allocation:
    """Allocate a UDP relay with the 401 dance (RFC 8656 §7.1, RFC 8489 §9.2.3)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        set_buffers(sock, bufsize)
        sock.bind((HOST, 0))
        sock.connect(server)
        tid = secrets.token_bytes(12)
        req = attr(REQUESTED_TRANSPORT, UDP_TRANSPORT)
        msg_type, attrs = transact(sock, message(ALLOCATE, tid, req), tid, 2.0)
        if msg_type != ALLOCATE | ERROR or error_code(attrs) != 401:
            raise TurnError(f"first Allocate: expected 401, got type 0x{msg_type:04x}")
        realm, nonce = attrs[REALM_ATTR], attrs[NONCE]
        key = long_term_key(realm=realm.decode())
        alloc = Allocation(sock, ("", 0), nonce, realm, key)
        answer = alloc.request(ALLOCATE, req + attr(LIFETIME, struct.pack("!I", 600)))
        alloc.relay = parse_xor_address(answer[XOR_RELAYED_ADDRESS])
        return alloc
    except BaseException:
        sock.close()
        raise


# -- servers ------------------------------------------------------------------------


def coturn_server(
    port: int,
    workdir: Path,
    *,
    min_port: int,
    max_port: int,
    threads: int = 1,
    host: str = HOST,
) -> Server:
    """coturn with long-term credentials (user test:test), UDP only, loopback peers allowed."""
    turnserver = require_binary("turnserver", "Debian package coturn")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "turnserver.conf"
    conf.write_text(
        "\n".join(
            [
                f"listening-ip={host}",
                f"relay-ip={host}",
                f"listening-port={port}",
                f"min-port={min_port}",
                f"max-port={max_port}",
                "lt-cred-mech",
                f"user={USER}:{PASSWORD}",
                f"realm={REALM}",
                "allow-loopback-peers",
                "no-tcp",
                "no-tls",
                "no-dtls",
                "no-cli",
                "no-tcp-relay",
                f"relay-threads={threads}",
                "total-quota=0",
                "user-quota=0",
                f"pidfile={workdir / 'turnserver.pid'}",
                f"userdb={workdir / 'turndb'}",
                "log-file=stdout",
                "simple-log",
                "",
            ]
        )
    )
    return Server("coturn", [turnserver, "-c", str(conf)], host, port, workdir)


def natkit_server(
    port: int,
    workdir: Path,
    *,
    min_port: int,
    max_port: int,
    host: str = HOST,
    workers: int = 1,
    python: str | None = None,
) -> Server:
    """``natkit turn-server`` on UDP only, the same user, realm and peer allow-list,
    no RFC 6062 relaying (like coturn's config here); ``workers`` > 1 adds
    ``--workers`` (that many processes on one UDP port, SO_REUSEPORT).
    ``python``: the interpreter to run it with (default: this one's), one
    with natkit installed (see bench/README.md, "Which Python")."""
    argv = [
        os.path.abspath(python) if python else sys.executable,  # the server runs in workdir
        "-m",
        "natkit.cli.main",
        "turn-server",
        "--listen",
        f"udp:{host}:{port}",
        "--realm",
        REALM,
        "--user",
        f"{USER}:{PASSWORD}",
        "--allow-peer",
        "127.0.0.0/8",
        "--min-port",
        str(min_port),
        "--max-port",
        str(max_port),
        "--no-admin",
        # as coturn's no-tcp-relay; it also lets the command run on uvloop (see
        # natkit.cli.turn_server._loop_factory: with TCP it falls back to asyncio's loop)
        "--no-tcp-relay",
    ]
    if workers > 1:
        argv += ["--workers", str(workers)]
    return Server("natkit", argv, host, port, workdir)


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (children inherit it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def vm_rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in kB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")
