"""Self-daemonizing programs (dnsmasq, radvd, udhcpc) tracked by pid file.

Daemons detach from the agent so that an agent restart does not interrupt
service; the pid file plus a marker in the command line (a path unique to the
appliance) identifies them again, so a recycled pid is never mistaken for ours.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from astara.linux.run import in_netns, needs_mounts, reap_unless_running, require_tools, run

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Adopt our daemons' orphans so that we, not pid 1, reap them: on hosts
    whose init does not reap, dead daemons would otherwise linger as zombies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def start_reaper(interval_s: float = 1.0) -> threading.Thread:
    """Collect, in the background, the dead processes we adopt as subreaper:
    the parents a daemon leaves behind when it detaches (dnsmasq's starter),
    its helpers once it is killed (radvd's privilege-separated child). None
    of them is anyone's to wait for. Returns the (daemon) thread."""

    def loop() -> None:
        while True:
            time.sleep(interval_s)
            try:
                reap_adopted()
            except Exception:  # a reaper that stops would let zombies pile up
                log.exception("reaping adopted children failed; trying again")

    thread = threading.Thread(target=loop, name="reaper", daemon=True)
    thread.start()
    return thread


def reap_adopted() -> int:
    """Collect our dead children that belong to another session: processes we
    adopted (a daemon detaches with setsid, so what it leaves behind is in a
    session of its own). Our own forks share our session and are left to
    whoever forked them (`run`'s commands, pyroute2's helpers). Usually costs
    a syscall or two: only when a child of ours is dead and not yet collected
    by its owner are our children listed one by one. How many were collected."""
    reaped = 0
    own_session = os.getsid(0)
    while True:
        try:
            found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return reaped  # no children at all
        if found is None:
            return reaped  # none dead
        if _session(found.si_pid) == own_session or not reap(found.si_pid):
            # Someone's to collect, and first in the kernel's list: look past it.
            return reaped + _reap_adopted_by_listing(own_session)
        reaped += 1


def _reap_adopted_by_listing(own_session: int) -> int:
    reaped = 0
    for pid in _children():
        stat = _stat(pid)
        if stat is not None and stat[0] == "Z" and int(stat[3]) != own_session and reap(pid):
            reaped += 1
    return reaped


def _children() -> list[int]:
    """Our direct children, from every thread's list (needs CONFIG_PROC_CHILDREN)."""
    found: list[int] = []
    for children in Path("/proc/self/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += map(int, children.read_text().split())
    return found


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state, ppid, pgrp, session, ...)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _session(pid: int) -> int | None:
    stat = _stat(pid)
    return int(stat[3]) if stat is not None else None


def reap(pid: int) -> bool:
    """Collect a dead child's exit status if it is ours to collect: never a
    command that `run` is waiting for. Whether it was collected."""
    return reap_unless_running(pid)


def reap_orphans(keep: set[int]) -> int:
    """Reap our dead children except `keep` and the commands `run` waits for
    (whose owners collect them): the daemons a restarted agent left to us, when
    we are their subreaper."""
    reaped = 0
    # Our children only (every thread's list), not every process on the host.
    for pid in _children():
        stat = _stat(pid)
        if stat is not None and stat[0] == "Z" and pid not in keep and reap(pid):
            reaped += 1
    return reaped


@dataclass(frozen=True)
class Daemon:
    netns: str
    pidfile: Path
    marker: str  # a string that must appear in the daemon's command line

    def pid(self) -> int | None:
        """The daemon's pid if it runs (not a zombie) with our marker."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return None
        if state in ("Z", "X"):
            # Dead, so its command line is gone and the pid file may name
            # anything, even a command of ours that `run` still waits for;
            # `reap` leaves those alone and collects only adopted orphans.
            reap(pid)
            return None
        if self.marker not in cmdline:
            return None
        return pid

    def strays(self) -> list[int]:
        """Processes with our marker in our namespace that the pid file does
        not name: left by an apply cut short (an agent killed mid-way)."""
        listed = run(["ip", "netns", "pids", self.netns], check=False).stdout.split()
        found = []
        for pid in map(int, listed):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if self.marker in cmdline and pid != self.pid():
                found.append(pid)
        return found

    def start(self, argv: Sequence[str], timeout_s: float = 30.0, fresh: bool = False) -> int:
        """Run a program that daemonizes and writes `pidfile`; return its pid.
        One instance per namespace and marker: strays are killed first,
        unless the namespace is `fresh` (made by the caller just now: nothing
        runs in it, and looking would scan every process on the host).
        Raises MissingTool, before touching anything, if the program is not
        installed."""
        require_tools(in_netns(self.netns, argv) if needs_mounts(argv) else argv)
        for stray in [] if fresh else self.strays():
            with contextlib.suppress(ProcessLookupError):
                os.kill(stray, signal.SIGKILL)
            reap(stray)
        self.pidfile.unlink(missing_ok=True)
        run(argv, netns=self.netns, timeout_s=timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pid = self.pid()
            if pid is not None:
                return pid
            time.sleep(0.01)
        raise RuntimeError(f"{argv[0]} in {self.netns} did not write {self.pidfile}")

    def signal(self, sig: signal.Signals) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, sig)
        return True

    def stop(self, deadline_s: float = 5.0) -> None:
        pid = self.pid()
        if pid is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                end = time.monotonic() + deadline_s
                while time.monotonic() < end and self.pid() == pid:
                    time.sleep(0.01)
                if self.pid() != pid:
                    break
            reap(pid)
        self.pidfile.unlink(missing_ok=True)
