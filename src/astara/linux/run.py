"""Running commands, optionally inside a network namespace.

The one place (with `netlink`) where Astara touches the host. Every command
runs with a timeout and its failure carries the command and its stderr.

It also knows which of our child processes are its own: a process that is a
subreaper (the agent, `astara serve`) collects dead orphans by pid, and must
never collect a command that `run` is still waiting for, or `subprocess` gets
ECHILD and reports exit status 0 for a command that failed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence

from astara.linux import inside

# Pids of the commands `run` has started and not yet collected. A reaper
# collects nothing while a command is between its fork and its entry here
# (`_spawning`), so it never sees one of them unlisted; commands fork in
# parallel with each other (a fork and exec take milliseconds, tens of them
# on a busy host: serialized, they would queue every thread behind them).
_running: set[int] = set()
_running_lock = threading.Condition()
_spawning = 0
_reaping = 0  # reapers waiting: new forks let them go first


@contextlib.contextmanager
def _spawn() -> Iterator[None]:
    global _spawning
    with _running_lock:
        while _reaping:
            _running_lock.wait()
        _spawning += 1
    try:
        yield
    finally:
        with _running_lock:
            _spawning -= 1
            _running_lock.notify_all()


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


# Programs that need only the network namespace: they speak netlink and read
# /proc/sys, never /sys or /etc/netns. In a namespace they are forked from
# inside it rather than run through `ip netns exec` (see `run`).
NETNS_ONLY = frozenset({"nft", "conntrack", "dnsmasq", "radvd", "ip"})


def needs_mounts(argv: Sequence[str]) -> bool:
    """Whether `argv`, run in a namespace, needs `ip netns exec`'s mounts."""
    return not argv or argv[0] not in NETNS_ONLY


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
    mounts: bool | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` (in `netns`) to its end. `mounts`: through `ip netns exec`,
    which gives the command a mount namespace of its own with the
    namespace's /sys and /etc/netns/NAME bound over /etc (its resolv.conf);
    without, the command is forked by this thread from inside the namespace
    (`inside.entered`): one exec instead of two and no mount namespace to set
    up and tear down. By default, without for the programs that need only
    the network namespace (`NETNS_ONLY`)."""
    if mounts is None:
        mounts = needs_mounts(argv)
    full = in_netns(netns, argv) if mounts else list(argv)
    require_tools(full)
    entered = inside.entered(netns) if netns and not mounts else contextlib.nullcontext()
    with _spawn():
        try:
            with entered:
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
        except MissingTool:
            raise
        except FileNotFoundError:
            # The namespace is not there: what `ip netns exec` answers then.
            message = f'Cannot open network namespace "{netns}": No such file or directory\n'
            if check:
                raise CommandError(full, 1, "", message) from None
            return subprocess.CompletedProcess(full, 1, "", message)
        with _running_lock:
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
    global _reaping
    with _running_lock:
        _reaping += 1
        try:
            while _spawning:
                _running_lock.wait()
        finally:
            _reaping -= 1
            _running_lock.notify_all()
        if pid in _running:
            return False
        try:
            collected, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return False
    return collected == pid
