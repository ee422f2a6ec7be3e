"""Routes Astara owns, synced by diff with iproute2 (JSON to read, one batch to write).

Astara marks its routes `proto static`; kernel, RA and DHCP routes are never
touched. Reads and writes go through `ip -j` and `ip -batch` rather than
pyroute2 because routers carry one local route per floating IP: pyroute2 0.9
dumps every table and filters in Python (about a second for 10,000 routes),
and acknowledges each request separately, while iproute2 filters in the
kernel and sends a batch in one process (see docs/performance.md).
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from astara.linux.nssocket import socket_in
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


# --- a few local routes over netlink, without starting `ip` ----------------------------

RTM_NEWROUTE, RTM_DELROUTE = 24, 25
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
RT_TABLE_LOCAL, RTPROT_STATIC, RTN_LOCAL = 255, 4, 2
RT_SCOPE_HOST, RT_SCOPE_NOWHERE = 254, 255
RTA_DST, RTA_OIF = 1, 4
SIOCGIFINDEX = 0x8933
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_RTMSG = struct.Struct(
    "=BBBBBBBBI"
)  # family, dst_len, src_len, tos, table, protocol, scope, type, flags


def change_local(netns: str, device: str, added: Iterable[str], removed: Iterable[str]) -> None:
    """Remove and add (replace) the local routes of these IPv4 addresses on
    `device` in the local table, as `ip route del|replace local A/32 dev
    DEVICE proto static table local` would (the same route, read back alike),
    one netlink request each on one socket made in `netns`: for the few
    routes of a floating IP delta, where starting `ip` costs more than the
    kernel's work. Raises OSError (ESRCH: a route to remove is missing)."""
    requests = [(RTM_DELROUTE, address) for address in removed]
    requests += [(RTM_NEWROUTE, address) for address in added]
    if not requests:
        return
    probe, _ = socket_in(netns, socket.SOCK_DGRAM, 0, socket.AF_INET)
    try:
        request = struct.pack("16si", device.encode(), 0)
        index = struct.unpack("16si", fcntl.ioctl(probe.fileno(), SIOCGIFINDEX, request))[1]
    finally:
        probe.close()
    sock, _ = socket_in(netns, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.settimeout(5.0)
        for sequence, (kind, address) in enumerate(requests, start=1):
            flags = NLM_F_REQUEST | NLM_F_ACK
            scope = RT_SCOPE_NOWHERE  # a deletion matches any scope, as `ip` asks
            if kind == RTM_NEWROUTE:
                flags |= NLM_F_CREATE | NLM_F_REPLACE
                scope = RT_SCOPE_HOST
            body = _RTMSG.pack(
                socket.AF_INET, 32, 0, 0, RT_TABLE_LOCAL, RTPROT_STATIC, scope, RTN_LOCAL, 0
            )
            body += _attribute(RTA_DST, ipaddress.IPv4Address(address).packed)
            body += _attribute(RTA_OIF, struct.pack("=I", index))
            sock.send(_HEADER.pack(_HEADER.size + len(body), kind, flags, sequence, 0) + body)
            _acknowledged(sock.recv(65536), f"{address} on {device} in {netns}")
    finally:
        sock.close()


def _attribute(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * ((4 - length % 4) % 4)


def _acknowledged(reply: bytes, what: str) -> None:
    if len(reply) < _HEADER.size + 4:
        raise OSError(f"short netlink reply for the local route of {what}")
    _, kind, _, _, _ = _HEADER.unpack_from(reply)
    if kind != NLMSG_ERROR:
        raise OSError(f"unexpected netlink reply {kind} for the local route of {what}")
    (error,) = struct.unpack_from("=i", reply, _HEADER.size)
    if error:
        raise OSError(-error, f"local route of {what}: {os.strerror(-error)}")
