"""Network namespaces: create, list, delete without leaving anything behind."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
import threading
import time
from pathlib import Path

from pyroute2 import netns as _netns

from astara.linux import inside
from astara.linux.process import reap
from astara.linux.run import run

NETNS_DIR = Path("/var/run/netns")


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def names() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir())


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: the name, then ifr_flags

# Two threads creating the same namespace (two networks' PUTs both making the
# fabric's) must not both try: one waits for the other's. Striped, so that
# the locks stay few however many namespaces come and go.
_creating = [threading.Lock() for _ in range(64)]


def create(name: str, sysctls: dict[str, str] | None = None) -> bool:
    """Make the namespace exist with loopback up and `sysctls` set; True if it
    was created. An existing namespace gets its settings again: one left
    half-made (a crash between creating and configuring) is repaired. No
    command runs: the namespace is made, and set, by this thread entering it
    (`astara.linux.inside`), in microseconds."""
    with _creating[hash(name) % len(_creating)]:
        created = not exists(name)
        if created:
            inside.create(name)
        with inside.entered(name):
            _loopback_up()
            if sysctls:
                _write_sysctls(name, sysctls)
    return created


def _loopback_up() -> None:
    """Loopback up in the namespace this thread is in."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = _IFREQ.pack(b"lo", 0)
        flags = _IFREQ.unpack(fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(sock, SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | IFF_UP))


def set_sysctls(name: str, sysctls: dict[str, str]) -> None:
    """Set `sysctls` (`sysctl`'s dotted keys) in the namespace, as `sysctl -w`
    would, by writing under /proc/sys from inside it. OSError if one is
    missing or refused."""
    with inside.entered(name):
        _write_sysctls(name, sysctls)


def _write_sysctls(name: str, sysctls: dict[str, str]) -> None:
    for key, value in sysctls.items():
        # sysctl's spelling: dots separate levels, a slash stands for a dot
        # within one (an interface named eth0.100).
        path = "/proc/sys/" + "/".join(p.replace("/", ".") for p in key.split("."))
        try:
            with open(path, "w") as file:
                file.write(value)
        except OSError as error:
            message = f"sysctl {key}={value} in {name}: {error.strerror}"
            raise OSError(error.errno, message) from None


def pids(name: str) -> list[int]:
    """Processes running in the namespace."""
    if not exists(name):
        return []
    result = run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in result.stdout.split()]


def kill_all(name: str, deadline_s: float = 5.0) -> None:
    """TERM, then KILL, every process in the namespace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        victims = pids(name)
        if not victims:
            return
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        end = time.monotonic() + deadline_s
        while time.monotonic() < end and any(_alive(p) for p in victims):
            time.sleep(0.02)
        for pid in victims:
            reap(pid)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def delete(name: str) -> None:
    """Kill the namespace's processes, then remove it (its links go with it)."""
    if not exists(name):
        return
    kill_all(name)
    _netns.remove(name)
