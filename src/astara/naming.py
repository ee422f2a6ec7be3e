"""Names of the Linux objects Astara creates (pure).

Every namespace and link carries the host's prefix so that orphans can be found
and several agents (or test runs) can share a machine. Link names are derived
from ids, never from user-given names, and fit the kernel's 15-character limit.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

IFNAMSIZ = 15
PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,5}$")
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Interface names inside an appliance: role abbreviation + the MAC's 12 hex digits.
ROLE_ABBREVIATION = {"external": "ext", "internal": "int", "management": "mgt", "ha": "ha"}


def short_hash(*parts: str, length: int = 8) -> str:
    """A stable hex digest of the parts, used to fit ids into link names."""
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return digest[:length]


def mac_hex(mac: str) -> str:
    return mac.replace(":", "").lower()


@dataclass(frozen=True)
class Names:
    """Names for one host's objects under one prefix."""

    prefix: str = "ast"

    def __post_init__(self) -> None:
        if not PREFIX_PATTERN.fullmatch(self.prefix):
            raise ValueError(
                f"prefix {self.prefix!r} must be 1-6 characters of [a-z0-9], starting with a letter"
            )

    # Namespaces (names are paths, not link names: no 15-character limit).
    @property
    def fabric_netns(self) -> str:
        return f"{self.prefix}-fabric"

    def appliance_netns(self, appliance_id: str) -> str:
        return f"{self.prefix}-appliance-{appliance_id}"

    def owns_netns(self, netns: str) -> bool:
        return netns.startswith(f"{self.prefix}-")

    def is_infrastructure_netns(self, netns: str) -> bool:
        """The fabric's or an appliance's namespace: never a workload's."""
        return netns == self.fabric_netns or netns.startswith(f"{self.prefix}-appliance-")

    # Links in the fabric namespace.
    def bridge(self, network_id: str) -> str:
        return self._link("b", network_id)

    def vxlan(self, network_id: str) -> str:
        """The network's VXLAN device (made in the host's namespace, then
        moved beside the bridge)."""
        return self._link("v", network_id)

    def appliance_fabric_link(self, appliance_id: str, mac: str) -> str:
        return self._link("a", appliance_id, mac_hex(mac))

    def port_fabric_link(self, port_id: str) -> str:
        return self._link("p", port_id)

    def _link(self, kind: str, *parts: str) -> str:
        name = f"{self.prefix}{kind}{short_hash(*parts, length=IFNAMSIZ - len(self.prefix) - 1)}"
        assert len(name) <= IFNAMSIZ
        return name


def appliance_interface(role: str, mac: str) -> str:
    """The name of an appliance's interface inside its own namespace."""
    return f"{ROLE_ABBREVIATION[role]}{mac_hex(mac)}"
