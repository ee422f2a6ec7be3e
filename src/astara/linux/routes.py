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
    local routes just as for addresses, at a fraction of the cost).

    Fields are the kernel's own text (`10.0.0.0/24`, `2001:db8::1`), so routes
    read back compare without parsing: a router may carry 10,000 of them."""

    destination: str
    nexthop: str | None = None
    # Only for local routes and on-link next hops: other unicast routes go
    # where the kernel finds the next hop.
    device: str | None = None
    kind: str = "unicast"
    onlink: bool = False  # the next hop is on `device`'s link, outside its subnets

    @staticmethod
    def via(destination: Network, nexthop: Address, onlink_device: str | None = None) -> Route:
        return Route(
            str(destination),
            nexthop=str(nexthop),
            device=onlink_device,
            onlink=onlink_device is not None,
        )

    @staticmethod
    def local(address: Address, device: str) -> Route:
        return Route(f"{address}/{address.max_prefixlen}", device=device, kind="local")

    def command(self, verb: str, table: str) -> str:
        parts = ["route", verb]
        if self.kind != "unicast":
            parts.append(self.kind)
        parts.append(self.destination)
        if self.nexthop is not None:
            parts += ["via", self.nexthop]
        if self.device is not None:
            parts += ["dev", self.device]
        if self.onlink:
            parts.append("onlink")
        return " ".join([*parts, "proto", "static", "table", table])


def _parse(entry: dict[str, Any], family: int) -> Route:
    host = "/32" if family == 4 else "/128"
    destination = entry["dst"]
    if destination == "default":
        destination = "0.0.0.0/0" if family == 4 else "::/0"
    elif "/" not in destination:
        destination += host
    kind = entry.get("type", "unicast")
    onlink = "onlink" in entry.get("flags", [])
    return Route(
        destination=destination,
        nexthop=entry.get("gateway"),
        device=entry.get("dev") if kind == "local" or onlink else None,
        kind=kind,
        onlink=onlink,
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
    want = set(desired)
    have = set(current(netns, table))
    removed, added = sorted(have - want), sorted(want - have)
    # Deletions first; `replace` then also moves a destination to a new next hop.
    commands = [r.command("del", table) for r in removed]
    commands += [r.command("replace", table) for r in added]
    if commands:
        run(["ip", "-n", netns, "-batch", "-"], input_text="\n".join(commands) + "\n")
    return len(added), len(removed)


def change(netns: str, table: str, added: Iterable[Route], removed: Iterable[Route]) -> None:
    """Remove and add these routes of `table`, in one batch, without reading
    the table: a route to remove that is missing fails the batch
    (CommandError), as drift must be repaired by `sync`."""
    commands = [r.command("del", table) for r in removed]
    commands += [r.command("replace", table) for r in added]
    if commands:
        run(["ip", "-n", netns, "-batch", "-"], input_text="\n".join(commands) + "\n")
