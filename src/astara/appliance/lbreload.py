"""A load balancer's haproxy (master-worker) reloaded, or started, and known
to serve: the edge between "the config file is written" and "haproxy runs
it".

A reload (SIGUSR2 to the master) returns at once: the master re-executes,
forks a new worker and tells the old ones to finish (measured here: ~150 ms
during which the old worker still takes new connections with the old
config). So a reload is done only when the master's CLI (`show proc`)
counts one more reload, no more failed ones, and the new worker answers on
the stats socket (it has its listeners then: they are enabled together);
an appliance must not report a config applied before. A reload haproxy
refuses (`failed: N` grows) leaves the old worker serving the old config,
and is an error naming haproxy's count.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

# The master's first line: "<pid> master <reloads> [failed: <n>] <uptime> <version>".
_MASTER = re.compile(r"^(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]", re.MULTILINE)
_WORKER = re.compile(r"^(\d+)\s+worker\s+(\d+)\s", re.MULTILINE)
_PID = re.compile(r"^Pid:\s*(\d+)$", re.MULTILINE)

T = TypeVar("T")

TIMEOUT_S = 30.0
POLL_S = 0.01


class ReloadFailed(RuntimeError):
    """haproxy refused the new config on reload, or did not come back."""


@dataclass(frozen=True)
class MasterState:
    """What `show proc` on the master CLI says."""

    master: int
    reloads: int
    failed: int
    worker: int | None  # the current worker (the one with no reload behind it)


def parse_show_proc(text: str) -> MasterState | None:
    """The master's state from `show proc`; None if `text` is not one."""
    found = _MASTER.search(text)
    if found is None:
        return None
    current = text.split("# old workers")[0]
    workers = [int(pid) for pid, reloads in _WORKER.findall(current) if reloads == "0"]
    return MasterState(int(found[1]), int(found[2]), int(found[3]), workers[0] if workers else None)


def parse_show_info_pid(text: str) -> int | None:
    """The pid of the process that answered `show info`."""
    found = _PID.search(text)
    return int(found[1]) if found else None


def ask(path: Path, command: str, timeout_s: float = 2.0) -> str | None:
    """One command on a haproxy CLI socket; its answer, or None if nothing
    answers (not running, or re-executing)."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout_s)
    chunks = []
    try:
        client.connect(str(path))
        client.sendall(command.encode() + b"\n")
        client.shutdown(socket.SHUT_WR)  # the master CLI answers, then closes
        while chunk := client.recv(65536):
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            client.close()
    return b"".join(chunks).decode(errors="replace")


def master_state(master_socket: Path) -> MasterState | None:
    answer = ask(master_socket, "show proc")
    return parse_show_proc(answer) if answer is not None else None


def reload(master_pid: int, master_socket: Path, stats_socket: Path) -> None:
    """Reload and return once the new worker serves; ReloadFailed if haproxy
    refused the new config (the old worker serves on) or never came back."""
    before = _wait(lambda: master_state(master_socket), "its master CLI to answer")
    os.kill(master_pid, signal.SIGUSR2)

    def reloaded() -> MasterState | None:
        state = master_state(master_socket)
        return state if state is not None and state.reloads > before.reloads else None

    after = _wait(reloaded, "the reload to be counted")
    if after.failed > before.failed:
        raise ReloadFailed(
            f"haproxy could not load the new config (failed reloads: {after.failed}):"
            " it passed `haproxy -c`, so something on the host prevents it, such as a"
            " port already in use in the namespace; the old config still serves"
        )
    wait_serving(master_socket, stats_socket)


def wait_serving(master_socket: Path, stats_socket: Path) -> None:
    """Until the master's current worker answers on the stats socket."""

    def serving() -> bool:
        state = master_state(master_socket)
        if state is None or state.worker is None:
            return False
        answer = ask(stats_socket, "show info")
        return answer is not None and parse_show_info_pid(answer) == state.worker

    _wait(serving, "its new worker to serve")


def _wait(probe: Callable[[], T | None], what: str) -> T:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise ReloadFailed(f"haproxy did not answer in {TIMEOUT_S:.0f} s waiting for {what}")
        time.sleep(POLL_S)
