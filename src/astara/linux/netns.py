"""Network namespaces: create, list, delete without leaving anything behind."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from pyroute2 import netns as _netns

from astara.linux.process import reap
from astara.linux.run import run

NETNS_DIR = Path("/var/run/netns")


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def names() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir())


def create(name: str, sysctls: dict[str, str] | None = None) -> bool:
    """Make the namespace exist with loopback up and `sysctls` set; True if it
    was created. An existing namespace gets its settings again: one left
    half-made (a crash between creating and configuring) is repaired."""
    created = not exists(name)
    if created:
        _netns.create(name)
    run(["ip", "link", "set", "lo", "up"], netns=name)
    if sysctls:
        set_sysctls(name, sysctls)
    return created


def set_sysctls(name: str, sysctls: dict[str, str]) -> None:
    run(["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in sysctls.items())], netns=name)


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
