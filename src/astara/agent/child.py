"""A local `astara-agent` as a child process on a unix socket: what
`astara serve` runs by default, and what tests and benchmarks start."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from astara.agent.client import AgentClient
from astara.linux.process import reap_orphans

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies, even by SIGKILL,
    so a crashed `astara serve` never leaves its agent running on."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class AgentChild:
    """`astara-agent` on `state_dir/agent.sock`, its state in `state_dir/agent`."""

    def __init__(
        self,
        state_dir: Path,
        prefix: str,
        *,
        log_level: str = "warning",
        die_with_parent: bool = False,
        operators_group: str | None = None,
        env: dict[str, str] | None = None,
        netns: str | None = None,
        args: Sequence[str] = (),
    ) -> None:
        """`operators_group`: NAME or GID whose members may use the socket
        besides root; `env`: the agent's environment (default: ours);
        `netns`: the network namespace to run it in (a simulated host);
        `args`: more options (`--underlay-address`, `--physnet`, …)."""
        self.netns = netns
        self.args = list(args)
        self.state_dir = state_dir
        self.prefix = prefix
        self.socket = state_dir / "agent.sock"
        self.listen = f"unix:{self.socket}"
        self.log_level = log_level
        self.die_with_parent = die_with_parent
        self.operators_group = operators_group
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.client: AgentClient | None = None
        self._stopping = False
        # Held while deciding to restart and spawning, so that `stop` either
        # comes first (no restart) or finds the restarted process and stops it.
        self._spawning = threading.Lock()

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "agent.pid"

    def _previous(self) -> list[int]:
        """Live agents on our state dir: left by a crashed parent, finishing
        their last requests after their SIGTERM (zombies do not count)."""
        state = str(self.state_dir / "agent").encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if b"astara.agent" in cmdline and state in cmdline and stat[0] not in ("Z", "X"):
                found.append(int(entry.name))
        return found

    def _wait_for_previous(self, timeout_s: float = 30.0) -> None:
        """Let an earlier agent on this state dir finish, then make sure it is
        gone: two agents must never touch one appliance."""
        deadline = time.monotonic() + timeout_s
        while self._previous() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self._previous():
            log.warning("astara-agent %d did not stop; killing it", pid)
            os.kill(pid, signal.SIGKILL)

    def start(self, timeout_s: float = 30.0) -> AgentClient:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._wait_for_previous()
        process = self._spawn()
        client = AgentClient(self.listen)
        self._wait_healthy(process, client, timeout_s)
        self.client = client
        return client

    def _spawn(self) -> subprocess.Popen[bytes]:
        log = open(self.state_dir / "agent.log", "ab")  # noqa: SIM115 - lives as long as the process
        # nsenter, not `ip netns exec`: only the network namespace changes. In
        # a mount namespace of its own (what `ip netns exec` makes) the
        # namespaces the agent creates would not be visible to anyone else.
        enter = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []
        process = subprocess.Popen(
            [
                *enter,
                sys.executable,
                "-m",
                "astara.agent",
                "--listen",
                self.listen,
                "--state-dir",
                str(self.state_dir / "agent"),
                "--prefix",
                self.prefix,
                "--log-level",
                self.log_level,
                *(
                    ["--operators-group", self.operators_group]
                    if self.operators_group is not None
                    else []
                ),
                *self.args,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
            # Its own session: a Ctrl-C meant for the parent's terminal must not
            # reach it. The parent stops it last, after everything that calls it.
            start_new_session=True,
        )
        log.close()
        self.process = process
        self.pid_file.write_text(str(process.pid))
        return process

    def _wait_healthy(
        self, process: subprocess.Popen[bytes], client: AgentClient, timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"astara-agent exited: {(self.state_dir / 'agent.log').read_text()[-2000:]}"
                )
            try:
                client.health()
                break
            except (OSError, httpx.TransportError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def supervise(self, interval_s: float = 1.0) -> None:
        """In the background: restart the agent if it dies (its appliances keep
        running; the new one adopts them), and reap the daemons a dead agent
        left to us (`astara serve` is their subreaper)."""

        def loop() -> None:
            # This thread must not end before the agent is stopped: it forks
            # the restarted agents, and PR_SET_PDEATHSIG fires when the forking
            # *thread* exits, not the process, so its end would SIGTERM a
            # healthy agent. Hence no error ends it either (EMFILE, a full disk,
            # an agent answering errors): it is logged and tried again after
            # `interval_s`.
            while not (self._stopping and self.process is None):
                time.sleep(interval_s)
                try:
                    self._supervise_once()
                except Exception:
                    log.exception("supervising astara-agent failed; trying again")

        threading.Thread(target=loop, name="agent-supervisor", daemon=True).start()

    def _supervise_once(self) -> None:
        process, client = self.process, self.client
        if process is None or client is None:
            return
        reap_orphans({process.pid})
        if process.poll() is None:
            return
        with self._spawning:
            if self._stopping:
                return
            log.warning("astara-agent exited (%s); starting it again", process.returncode)
            restarted = self._spawn()
        try:
            self._wait_healthy(restarted, client, 30)
        except (RuntimeError, OSError, httpx.TransportError):
            log.exception("the restarted agent is not healthy yet")

    def stop_supervising(self) -> None:
        """From now on a dead agent stays dead: the first step of a shutdown,
        so that nothing that ends the agent on the way is mistaken for a crash."""
        with self._spawning:
            self._stopping = True

    def stop(self) -> None:
        self.stop_supervising()
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
