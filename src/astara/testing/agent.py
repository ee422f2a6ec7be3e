"""Run a real `astara-agent` process for a test or benchmark, and remove
everything it made (even when the test fails)."""

from __future__ import annotations

import os
import secrets
import signal
import string
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from astara.agent.client import AgentClient
from astara.linux import cleanup


def unique_prefix(lead: str = "t") -> str:
    """A fresh 6-character prefix, so runs never collide with each other."""
    alphabet = string.ascii_lowercase + string.digits
    return lead + "".join(secrets.choice(alphabet) for _ in range(6 - len(lead)))


class AgentProcess:
    """`astara-agent` on a unix socket in `state_dir`, under `prefix`."""

    def __init__(self, state_dir: Path, prefix: str | None = None) -> None:
        self.state_dir = state_dir
        self.prefix = prefix or unique_prefix()
        self.socket = state_dir / "agent.sock"
        self.listen = f"unix:{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None
        self.client: AgentClient | None = None

    def start(self, timeout_s: float = 30.0) -> AgentClient:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / "agent.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [
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
                "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        client = AgentClient(self.listen)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
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
        self.client = client
        return client

    def stop(self) -> None:
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

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def remove_everything(self) -> dict[str, list[str]]:
        self.stop()
        return cleanup.remove_all(self.prefix)

    def __enter__(self) -> AgentProcess:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove_everything()
