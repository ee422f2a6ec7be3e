"""A live `astara serve` for tests and benchmarks, on a free local port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from astara.testing.net import wait_until

BIN = Path(sys.executable).parent


class Server:
    """`astara serve` in `state_dir`. Without `prefix` it serves the API only
    (no agent, no orchestrator); with one it runs everything, its local agent
    making only objects under that prefix."""

    def __init__(self, state_dir: Path, prefix: str | None = None, *extra: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.state_dir = state_dir
        self.prefix = prefix
        self.extra = extra
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        roles = (
            ["--agent", "none", "--no-orchestrate"]
            if self.prefix is None
            else ["--prefix", self.prefix, "--log-level", "info"]
        )
        return [
            str(BIN / "astara"),
            "serve",
            "--state-dir",
            str(self.state_dir),
            "--listen",
            f"127.0.0.1:{self.port}",
            *roles,
            *self.extra,
        ]

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / "serve.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def answering() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"astara serve exited: {self.log()[-3000:]}")
            try:
                return httpx.get(self.url, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answering, 60, 0.1, "astara serve to answer")

    def log(self) -> str:
        path = self.state_dir / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(30)
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

    def env(self) -> dict[str, str]:
        return {**os.environ, "OS_CLIENT_CONFIG_FILE": str(self.state_dir / "clouds.yaml")}
