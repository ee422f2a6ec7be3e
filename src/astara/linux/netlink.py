"""Links, addresses and routes through netlink (pyroute2), by namespace.

Each function opens one netlink socket in the namespace, does its work and
closes it: safe from any thread, nothing held between calls.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyroute2 import NetNS
from pyroute2.netlink.exceptions import NetlinkError

RTPROT_STATIC = 4  # routes Astara adds; kernel and RA routes are left alone
MAIN_TABLE = 254
ENODEV = 19
EEXIST = 17
EADDRNOTAVAIL = 99
ESRCH = 3

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@contextmanager
def netns(name: str) -> Iterator[Any]:
    handle = NetNS(name)
    try:
        yield handle
    finally:
        handle.close()


@contextmanager
def tolerate(code: int) -> Iterator[None]:
    """Ignore one netlink error: the state asked for is already there."""
    try:
        yield
    except NetlinkError as error:
        if error.code != code:
            raise


def link_index(ns: Any, name: str) -> int | None:
    found = ns.link_lookup(ifname=name)
    return int(found[0]) if found else None


@dataclass(frozen=True)
class LinkState:
    name: str
    mac: str
    mtu: int
    up: bool
    master: int | None
    counters: dict[str, int]


def link_state(ns: Any, name: str) -> LinkState | None:
    index = link_index(ns, name)
    if index is None:
        return None
    link = ns.get_links(index)[0]
    stats = link.get("stats64") or {}
    return LinkState(
        name=name,
        mac=str(link.get("address")),
        mtu=int(link.get("mtu")),
        up=link.get("operstate") in ("UP", "UNKNOWN") or bool(link["flags"] & 1),
        master=link.get("master"),
        counters={
            k: int(stats[k])
            for k in (
                "rx_packets",
                "tx_packets",
                "rx_bytes",
                "tx_bytes",
                "rx_dropped",
                "tx_dropped",
            )
            if k in stats
        },
    )


def ensure_bridge(netns_name: str, name: str, mtu: int) -> None:
    with netns(netns_name) as ns:
        index = link_index(ns, name)
        if index is None:
            ns.link(
                "add",
                ifname=name,
                kind="bridge",
                br_forward_delay=0,
                br_mcast_snooping=0,
                mtu=mtu,
            )
            index = link_index(ns, name)
        ns.link("set", index=index, mtu=mtu, state="up")


def delete_link(netns_name: str, name: str) -> bool:
    with netns(netns_name) as ns:
        index = link_index(ns, name)
        if index is None:
            return False
        with tolerate(ENODEV):
            ns.link("del", index=index)
        return True


def links_with_prefix(netns_name: str, prefix: str | tuple[str, ...]) -> list[str]:
    with netns(netns_name) as ns:
        return [
            str(name)
            for link in ns.get_links()
            if (name := link.get("ifname")) and str(name).startswith(prefix)
        ]


def ensure_veth(
    *,
    fabric_netns: str,
    fabric_name: str,
    bridge: str,
    peer_netns: str,
    peer_name: str,
    mac: str,
    mtu: int,
) -> bool:
    """A veth pair from the bridge into `peer_netns`, the peer named and
    addressed as asked. Returns True if the pair was (re)created."""
    with netns(fabric_netns) as fabric, netns(peer_netns) as peer:
        bridge_index = link_index(fabric, bridge)
        if bridge_index is None:
            raise RuntimeError(f"bridge {bridge} is missing in {fabric_netns}")
        fabric_index = link_index(fabric, fabric_name)
        peer_state = link_state(peer, peer_name)
        created = False
        if fabric_index is None or peer_state is None or peer_state.mac != mac:
            if fabric_index is not None:
                fabric.link("del", index=fabric_index)
            if peer_state is not None:
                stale = link_index(peer, peer_name)
                if stale is not None:
                    peer.link("del", index=stale)
            fabric.link(
                "add",
                ifname=fabric_name,
                kind="veth",
                mtu=mtu,
                peer={"ifname": peer_name, "net_ns_fd": peer_netns, "address": mac, "mtu": mtu},
            )
            fabric_index = link_index(fabric, fabric_name)
            created = True
        fabric.link("set", index=fabric_index, master=bridge_index, mtu=mtu, state="up")
        peer_index = link_index(peer, peer_name)
        peer.link("set", index=peer_index, mtu=mtu, state="up")
        return created


def _is_link_local(address: Interface) -> bool:
    return address.version == 6 and address.ip.is_link_local


IFA_F_PERMANENT = 0x80


def addresses(ns: Any, index: int, permanent_only: bool = False) -> set[Interface]:
    """The link's addresses except link-local ones; with `permanent_only`, only
    those configured by hand (not SLAAC's, which carry a lifetime)."""
    found: set[Interface] = set()
    for message in ns.get_addr(index=index):
        address = message.get("address")
        if address is None:
            continue
        flags = message.get("flags") or message["flags"]
        if permanent_only and not flags & IFA_F_PERMANENT:
            continue
        interface = ipaddress.ip_interface(f"{address}/{message['prefixlen']}")
        if not _is_link_local(interface):
            found.add(interface)
    return found


def link_addresses(netns_name: str, link: str) -> list[str]:
    with netns(netns_name) as ns:
        index = link_index(ns, link)
        if index is None:
            return []
        return sorted(str(a) for a in addresses(ns, index))


def sync_addresses(
    netns_name: str, link: str, desired: Iterable[Interface], families: tuple[int, ...] = (4, 6)
) -> tuple[int, int]:
    """Make the link's permanent global addresses of `families` exactly
    `desired`; dynamic (SLAAC) addresses are left alone. (added, removed)."""
    want = {a for a in desired if a.version in families}
    with netns(netns_name) as ns:
        index = link_index(ns, link)
        if index is None:
            raise RuntimeError(f"link {link} is missing in {netns_name}")
        have = {a for a in addresses(ns, index, permanent_only=True) if a.version in families}
        removed = have - want
        added = want - have
        for address in sorted(removed, key=str):
            with tolerate(EADDRNOTAVAIL):
                ns.addr(
                    "del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
                )
        for address in sorted(added, key=lambda a: (a.version, a.network.prefixlen, int(a.ip))):
            with tolerate(EEXIST):
                ns.addr(
                    "add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
                )
        return len(added), len(removed)


def sync_routes(netns_name: str, desired: dict[Network, Address]) -> tuple[int, int]:
    """Make Astara's static routes in the main table exactly `desired`
    (destination → next hop); routes of other origins are left alone."""
    with netns(netns_name) as ns:
        have: dict[Network, Address] = {}
        for family in (2, 10):
            for route in ns.get_routes(family=family, table=MAIN_TABLE):
                if route["proto"] != RTPROT_STATIC:
                    continue
                dst = route.get("dst") or ("0.0.0.0" if family == 2 else "::")
                network = ipaddress.ip_network(f"{dst}/{route['dst_len']}")
                gateway = route.get("gateway")
                if gateway is not None:
                    have[network] = ipaddress.ip_address(gateway)
        removed = [d for d in have if d not in desired]
        changed = [d for d, hop in desired.items() if have.get(d) != hop]
        for destination in removed:
            with tolerate(ESRCH):
                ns.route("del", dst=str(destination), table=MAIN_TABLE, proto=RTPROT_STATIC)
        for destination in changed:
            ns.route(
                "replace",
                dst=str(destination),
                gateway=str(desired[destination]),
                table=MAIN_TABLE,
                proto=RTPROT_STATIC,
            )
        return len(changed), len(removed)
