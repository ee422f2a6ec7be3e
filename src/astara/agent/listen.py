"""Where an agent listens and how a client reaches it: `unix:PATH` or `tcp:HOST:PORT`."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

_DNS_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*"
)


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


def parse_listen(value: str, tls: bool = False) -> Listen:
    """`unix:PATH` or `tcp:HOST:PORT`; a TCP listener off loopback only with
    `tls` (the agent then serves mutual TLS: see agent/tls.py)."""
    kind, _, rest = value.partition(":")
    if kind == "unix" and rest:
        return Listen(path=Path(rest))
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            host = host.strip("[]")
            if not tls and not _loopback(host):
                # Without TLS the API has no authentication: it controls the
                # host's namespaces as root, so it stays on this machine.
                raise ValueError(
                    f"{value!r}: a TCP listener off loopback needs TLS: join a deployment"
                    " first (--join, --token)"
                )
            return Listen(host=host, port=int(port))
    raise ValueError(f"{value!r}: expected unix:PATH or tcp:HOST:PORT")


RESERVED_NAMES = ("astara-controller",)  # pki.CONTROLLER_DNS_NAME: the controller's alone


def parse_advertise(value: str) -> tuple[str, int]:
    """ADDR:PORT where the controller reaches an agent (ADDR an IP address,
    IPv6 in brackets, or a DNS name): (ADDR without brackets, PORT)."""
    host, _, port = value.rpartition(":")
    bare = host.strip("[]")
    if not bare or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: expected ADDR:PORT")
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        if not _DNS_NAME.fullmatch(bare) or bare in RESERVED_NAMES:
            raise ValueError(f"{value!r}: ADDR must be an IP address or a DNS name") from None
        return bare, int(port)
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"{value!r}: ADDR must be an address the controller can reach")
    if address.version == 6 and not host.startswith("["):
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, [ADDR]:PORT")
    return bare, int(port)


def url_host(host: str) -> str:
    """`host` as it goes in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host
