"""Where an agent listens and how a client reaches it: `unix:PATH` or `tcp:HOST:PORT`."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Listen:
    path: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0

    @property
    def base_url(self) -> str:
        return "http://agent" if self.path is not None else f"http://{self.host}:{self.port}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(value: str) -> Listen:
    kind, _, rest = value.partition(":")
    if kind == "unix" and rest:
        return Listen(path=Path(rest))
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            host = host.strip("[]")
            if not _loopback(host):
                # The API has no authentication or TLS yet: it controls the
                # host's namespaces as root, so it stays on this machine.
                raise ValueError(
                    f"{value!r}: TCP listeners must be on loopback until the agent API has TLS"
                )
            return Listen(host=host, port=int(port))
    raise ValueError(f"{value!r}: expected unix:PATH or tcp:HOST:PORT")
