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
import shutil
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


class MissingTool(FileNotFoundError):
    """A program Astara runs is not installed (not found in PATH). A
    FileNotFoundError, as exec's own failure was, so older callers still
    catch it; `tool` names the program."""

    def __init__(self, tool: str) -> None:
        self.tool = tool
        super().__init__(f"{tool} is not installed on this host (not found in PATH)")


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def programs(argv: Sequence[str]) -> list[str]:
    """The programs a command line execs: through `ip netns exec NS` and
    `env VAR=VALUE` too, whose own failure to exec would otherwise be only an
    exit status and a line of stderr."""
    found: list[str] = []
    rest = list(argv)
    while rest:
        found.append(rest[0])
        if rest[:3] == ["ip", "netns", "exec"] and len(rest) > 4:
            rest = rest[4:]
        elif rest[0] == "env":
            rest = rest[1:]
            while rest and "=" in rest[0] and not rest[0].startswith("-"):
                rest = rest[1:]
            if rest and rest[0].startswith("-"):
                break  # env's own options: not used by Astara, not parsed here
        else:
            break
    return found


def find_tool(tool: str) -> str | None:
    """Where `tool` is in PATH, or None."""
    return shutil.which(tool)


def require_tools(argv: Sequence[str]) -> None:
    """Raise MissingTool for the first program of `argv` that is not installed."""
    for tool in programs(argv):
        if find_tool(tool) is None:
            raise MissingTool(tool)


def run(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    input_text: str | None = None,
    check: bool = True,
    timeout_s: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    full = in_netns(netns, argv)
    require_tools(full)
    with _running_lock:
        try:
            process = subprocess.Popen(
                full,
                stdin=subprocess.PIPE if input_text is not None else None,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except FileNotFoundError as error:  # removed since require_tools looked
            raise MissingTool(full[0]) from error
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
