"""What the namespace lab asks of the operating system, in one place.

Everything here touches only the lab's own network namespaces (names that
start with :data:`PREFIX`). The root namespace is never changed except for
creating and deleting those namespaces' mount points in ``/run/netns``.

Work inside a namespace is done from a short-lived thread that has entered
it with ``setns(2)``: on Linux a thread's network namespace is its own, so
the thread can open sockets, TUN devices and ``/proc/sys/net`` files there
while the rest of the process stays in the root namespace. Every wait is
bounded: process exits are awaited on a pidfd with a timeout, never by
sleeping.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from natkit.net.netns.errors import LabError, LabUnavailable

__all__ = [
    "NETNS_DIR",
    "PREFIX",
    "WORKDIR_PREFIX",
    "CleanReport",
    "check_available",
    "clean",
    "create_namespace",
    "delete_namespace",
    "in_namespace",
    "lab_namespaces",
    "namespace_pids",
    "netns_exec_argv",
    "process_alive",
    "socket_in_namespace",
    "stop_pids",
    "write_sysctl",
]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

NETNS_DIR = Path("/run/netns")
PREFIX = "natkit-"
"""Every namespace the lab creates is named ``natkit-<run id>-<role>``."""
WORKDIR_PREFIX = "natkit-lab-"
"""A lab's default work directory is ``$TMPDIR/natkit-lab-<run id>-XXXXXXXX``."""

CLONE_NEWNET = 0x40000000
STOP_TIMEOUT = 3.0
"""Seconds a process gets to exit after SIGTERM, and again after SIGKILL."""

_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
_NAME_RE = re.compile(r"^natkit-[A-Za-z0-9][A-Za-z0-9_.-]{0,48}$")

T = TypeVar("T")


def tool(name: str) -> str | None:
    """Full path of a system program (``/usr/sbin`` included), or ``None``."""
    return shutil.which(name, path=_SEARCH_PATH)


def check_available(*, tun: bool = False, nft: bool = False) -> None:
    """Raise :class:`LabUnavailable` with a reason unless the lab can run here.

    The lab needs root (creating namespaces and links), the ``ip`` program
    (``ip netns exec`` starts programs on lab hosts), a kernel with network
    namespaces, and for the NATs ``nft`` (kernel NAT) or ``/dev/net/tun``
    (natkit's TUN NAT).
    """
    if not hasattr(os, "geteuid") or not Path("/proc/self/ns/net").exists():
        raise LabUnavailable("the namespace lab needs Linux with network namespaces")
    if os.geteuid() != 0:
        raise LabUnavailable(
            "the namespace lab needs root (it creates network namespaces, veth links "
            "and TUN devices): run it as root, e.g. with sudo"
        )
    if tool("ip") is None:
        raise LabUnavailable("the 'ip' program is missing: apt-get install iproute2")
    if nft and tool("nft") is None:
        raise LabUnavailable(
            "the kernel NAT needs 'nft': apt-get install nftables (scripts/setup.sh does)"
        )
    if tun and not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        raise LabUnavailable(
            "natkit's TUN NAT needs /dev/net/tun (modprobe tun; in a container, "
            "pass the device through)"
        )


def valid_name(name: str) -> bool:
    """Whether ``name`` is a lab namespace name (prefix, no path tricks)."""
    return bool(_NAME_RE.match(name)) and "/" not in name


def _require_lab_name(name: str) -> None:
    if not valid_name(name):
        raise LabError(f"{name!r} is not a natkit lab namespace name")


# -- namespaces ----------------------------------------------------------------------


def lab_namespaces(prefix: str = PREFIX) -> list[str]:
    """Names of the existing namespaces that start with ``prefix``."""
    if not prefix.startswith(PREFIX):
        raise LabError(f"lab namespace prefixes start with {PREFIX!r}")
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix) and valid_name(n))


def create_namespace(name: str) -> None:
    """Create the named network namespace (``ip netns add`` semantics)."""
    _require_lab_name(name)
    from pyroute2 import netns

    if name in lab_namespaces():
        raise LabError(f"namespace {name} already exists")
    try:
        netns.create(name)
    except OSError as exc:
        raise LabUnavailable(f"cannot create network namespace {name}: {exc}") from exc


def delete_namespace(name: str) -> bool:
    """Unmount and remove the named namespace; ``False`` if it was gone."""
    _require_lab_name(name)
    from pyroute2 import netns

    try:
        netns.remove(name)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.EINVAL):
            with contextlib.suppress(FileNotFoundError):
                (NETNS_DIR / name).unlink()
            return False
        raise LabError(f"cannot delete namespace {name}: {exc}") from exc
    return True


def in_namespace(name: str, work: Callable[[], T], *, timeout: float = 10.0) -> T:
    """Run ``work()`` on a thread that has entered namespace ``name``.

    The thread's namespace switch dies with the thread; sockets and devices
    it opened stay bound to ``name``.
    """
    _require_lab_name(name)
    libc = ctypes.CDLL(None, use_errno=True)
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            failure.append(LabError(f"namespace {name} is not there: {exc}"))
            return
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                failure.append(LabError(f"setns({name}) failed: {os.strerror(err)}"))
                return
        finally:
            os.close(fd)
        try:
            result.append(work())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise LabError(f"work in namespace {name} did not finish within {timeout} s")
    if failure:
        raise failure[0]
    return result[0]


def socket_in_namespace(
    name: str, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM
) -> socket.socket:
    """A socket that lives in namespace ``name`` (the caller owns it)."""
    return in_namespace(name, lambda: socket.socket(family, kind))


def write_sysctl(name: str, key: str, value: str | int) -> None:
    """Set ``/proc/sys/<key>`` (dotted, e.g. ``net.ipv4.ip_forward``) in ``name``."""
    if not key.startswith("net.") or ".." in key:
        raise LabError(f"only per-namespace net.* sysctls are set by the lab, not {key}")
    path = Path("/proc/sys", *key.split("."))

    def work() -> None:
        path.write_text(f"{value}\n")

    in_namespace(name, work)


def netns_exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    """``ip netns exec NAME ARGV...``: ``ip`` execs the program, so the PID
    Popen reports is the program's own."""
    _require_lab_name(name)
    ip = tool("ip") or "ip"
    return [ip, "netns", "exec", name, *argv]


# -- processes -----------------------------------------------------------------------


def namespace_pids(name: str) -> list[int]:
    """PIDs of the processes whose network namespace is ``name``."""
    _require_lab_name(name)
    ip = tool("ip") or "ip"
    try:
        out = subprocess.run(
            [ip, "netns", "pids", name],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"ip netns pids {name} did not answer") from exc
    pids = [int(x) for x in out.stdout.split() if x.isdigit()]
    return [p for p in pids if p != os.getpid()]


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait (bounded) for ``pid`` to exit; reap it if it is our child."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:
        return not process_alive(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    if ready:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        return True
    return False


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def stop_pids(pids: Iterable[int], *, timeout: float = STOP_TIMEOUT) -> list[int]:
    """SIGTERM each PID, SIGKILL the ones still there after ``timeout``;
    returns the PIDs that were signalled."""
    signalled: list[int] = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
    for pid in signalled:
        if not _wait_gone(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not _wait_gone(pid, timeout):
                log.warning("process %d did not exit after SIGKILL", pid)
    return signalled


@dataclass
class CleanReport:
    """What :func:`clean` removed."""

    namespaces: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    workdirs: list[Path] = field(default_factory=list)


def clean(prefix: str = PREFIX) -> CleanReport:
    """Stop every process inside the ``prefix`` namespaces, then delete them.

    Every such process was started by a lab: lab namespaces are created
    empty, and only the lab runs programs in them.
    """
    report = CleanReport()
    names = lab_namespaces(prefix)
    pids: list[int] = []
    for name in names:
        pids.extend(namespace_pids(name))
    report.pids = stop_pids(sorted(set(pids)))
    for name in names:
        if delete_namespace(name):
            report.namespaces.append(name)
    report.workdirs = _clean_workdirs(prefix)
    return report


def _clean_workdirs(prefix: str) -> list[Path]:
    """Remove the default work directories of labs whose namespaces are all
    gone (a lab killed with SIGKILL leaves its logs behind)."""
    wanted = prefix.removeprefix(PREFIX)
    removed: list[Path] = []
    for path in sorted(Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*")):
        run_id = path.name.removeprefix(WORKDIR_PREFIX).split("-", 1)[0]
        if not path.is_dir() or not f"{run_id}-".startswith(wanted):
            continue
        if lab_namespaces(f"{PREFIX}{run_id}-"):
            continue  # that lab is still running
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
