"""Throwaway coordination servers for tests, like `testing.postgres`: a real
etcd (v3, its HTTP grpc-gateway) on a free loopback port, or a real Redis
on a unix socket, each with its own directory under /tmp, started and
stopped by the test (no systemd), gone when stopped."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Protocol

import httpx

from astara.testing.net import free_ports, wait_until


class CoordinationServer(Protocol):
    def start(self) -> CoordinationServer: ...

    def url(self) -> str:
        """The tooz URL of this server (what `astara serve --coordination` takes)."""
        ...

    def stop(self) -> None: ...


class _Process:
    """A server process with its own directory and log; stopped by pid."""

    name = "server"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"astara-{self.name}-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _spawn(self, argv: list[str]) -> None:
        self._log = open(self.root / "log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.root
        )

    def log(self) -> str:
        path = self.root / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(30)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.root, ignore_errors=True)


class EtcdServer(_Process):
    """A one-member etcd cluster on 127.0.0.1 (client and peer ports free
    ones), data in its own directory."""

    name = "etcd"

    def __init__(self) -> None:
        if shutil.which("etcd") is None:
            raise RuntimeError("etcd is not installed (apt-get install etcd-server)")
        super().__init__()
        self.port, self.peer_port = free_ports(2)

    def start(self) -> EtcdServer:
        client = f"http://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self._spawn(
            [
                "etcd",
                "--name",
                "test",
                "--data-dir",
                str(self.root / "data"),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"test={peer}",
                "--log-level",
                "warn",
            ]
        )

        def answering() -> bool:
            self._alive()
            try:
                return httpx.get(f"{client}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answering, 30, 0.1, "etcd to answer")
        return self

    def url(self) -> str:
        return f"etcd3+http://127.0.0.1:{self.port}"


class RedisServer(_Process):
    """Redis on a unix socket in its own directory: no TCP listener, no
    persistence."""

    name = "redis"

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("Redis is not installed (apt-get install redis-server)")
        super().__init__()
        self.socket = self.root / "redis.sock"

    def start(self) -> RedisServer:
        self._spawn(
            [
                "redis-server",
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.root),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ]
        )

        def answering() -> bool:
            self._alive()
            if not self.socket.exists():
                return False
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(self.socket))
                    probe.sendall(b"PING\r\n")
                    return probe.recv(16).startswith(b"+PONG")
                except OSError:
                    return False

        wait_until(answering, 30, 0.1, "redis to answer")
        return self

    def url(self) -> str:
        return f"redis://{self.socket}"
