"""Running commands, optionally inside a network namespace.

The one place (with `netlink`) where Astara touches the host. Every command
runs with a timeout and its failure carries the command and its stderr.

It also knows which of our child processes are its own: a process that is a
subreaper (the agent, `astara serve`) collects dead orphans by pid, and must
never collect a command that `run` is still waiting for, or `subprocess` gets
ECHILD and reports exit status 0 for a command that failed.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Sequence

# Pids of the commands `run` has started and not yet collected. The lock is
# held from the fork until the pid is in the set, so a reaper never sees one
# of them unlisted.
_running: set[int] = set()
_running_lock = threading.Lock()


class CommandError(RuntimeError):
    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"{' '.join(argv)} exited {returncode}: {stderr.strip() or stdout.strip()}"
        )


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def run(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    input_text: str | None = None,
    check: bool = True,
    timeout_s: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    full = in_netns(netns, argv)
    with _running_lock:
        process = subprocess.Popen(
            full,
            stdin=subprocess.PIPE if input_text is not None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _running.add(process.pid)
    try:
        # What subprocess.run does, with the pid listed until it is collected.
        with process:
            try:
                stdout, stderr = process.communicate(input_text, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise
            except BaseException:
                process.kill()  # `with` waits for it
                raise
    finally:
        with _running_lock:
            _running.discard(process.pid)
    returncode = process.returncode
    assert returncode is not None
    if check and returncode != 0:
        raise CommandError(full, returncode, stdout, stderr)
    return subprocess.CompletedProcess(full, returncode, stdout, stderr)


def reap_unless_running(pid: int) -> bool:
    """Collect the exit status of `pid` if it is a dead child of ours that no
    `run` is waiting for (an orphan we adopted as subreaper); whether it was."""
    with _running_lock:
        if pid in _running:
            return False
        try:
            collected, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return False
    return collected == pid
