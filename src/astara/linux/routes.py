"""Routes Astara owns, synced by diff with iproute2 (JSON to read, one batch to write).

Astara marks its routes `proto static`; kernel, RA and DHCP routes are never
touched. Reads and writes go through `ip -j` and `ip -batch` rather than
pyroute2 because routers carry one local route per floating IP: pyroute2 0.9
dumps every table and filters in Python (about a second for 10,000 routes),
and acknowledges each request separately, while iproute2 filters in the
kernel and sends a batch in one process (see docs/performance.md).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from astara.linux.run import run

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, order=True)
class Route:
    """A unicast route via a next hop, or a `local` route answering for an
    address on a device (how floating IPs are answered: ARP replies come for
    local routes just as for addresses, at a fraction of the cost)."""

    destination: Network
    nexthop: Address | None = None
    device: str | None = None
    kind: str = "unicast"

    @staticmethod
    def via(destination: Network, nexthop: Address) -> Route:
        return Route(destination, nexthop=nexthop)

    @staticmethod
    def local(address: Address, device: str) -> Route:
        return Route(ipaddress.ip_network(address), device=device, kind="local")

    def key(self) -> tuple[object, ...]:
        # A unicast route is the same route whatever device the kernel picked.
        device = self.device if self.kind == "local" else None
        return (self.kind, str(self.destination), str(self.nexthop), device)

    def command(self, verb: str, table: str) -> str:
        parts = ["route", verb]
        if self.kind != "unicast":
            parts.append(self.kind)
        parts.append(str(self.destination))
        if self.nexthop is not None:
            parts += ["via", str(self.nexthop)]
        if self.device is not None:
            parts += ["dev", self.device]
        return " ".join([*parts, "proto", "static", "table", table])


def _parse(entry: dict[str, Any], family: int) -> Route:
    dst = entry["dst"]
    if dst == "default":
        dst = "0.0.0.0/0" if family == 4 else "::/0"
    gateway = entry.get("gateway")
    return Route(
        destination=ipaddress.ip_network(dst),
        nexthop=ipaddress.ip_address(gateway) if gateway else None,
        device=entry.get("dev"),
        kind=entry.get("type", "unicast"),
    )


def current(netns: str, table: str) -> list[Route]:
    """Astara's routes in `table` of `netns`, both families."""
    found = []
    for family in (4, 6):
        result = run(
            [
                "ip",
                "-n",
                netns,
                f"-{family}",
                "-j",
                "route",
                "show",
                "table",
                table,
                "proto",
                "static",
            ]
        )
        found += [_parse(entry, family) for entry in json.loads(result.stdout or "[]")]
    return found


def sync(netns: str, table: str, desired: Iterable[Route]) -> tuple[int, int]:
    """Make Astara's routes in `table` exactly `desired`, in one batch; (set, removed)."""
    want = {route.key(): route for route in desired}
    have = {route.key(): route for route in current(netns, table)}
    commands = [have[k].command("del", table) for k in sorted(have.keys() - want.keys(), key=str)]
    # `replace` also moves a destination to a new next hop in place.
    added = sorted(want.keys() - have.keys(), key=str)
    commands += [want[k].command("replace", table) for k in added]
    if commands:
        run(["ip", "-n", netns, "-batch", "-"], input_text="\n".join(commands) + "\n")
    return len(added), len(have.keys() - want.keys())
