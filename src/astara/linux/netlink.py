"""Links and addresses through netlink (pyroute2).

Callers open one handle per namespace (`with netns(name) as ns:`) for a whole
operation and pass it down: opening a handle costs milliseconds, reusing it
nothing. Handles are not shared between threads.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyroute2 import NetNS
from pyroute2.netlink.exceptions import NetlinkError

ENODEV = 19
EEXIST = 17
EADDRNOTAVAIL = 99
IFA_F_PERMANENT = 0x80

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@contextmanager
def netns(name: str) -> Iterator[Any]:
    """A handle in an existing namespace (never creates one: a missing
    namespace is an error, not an empty new one)."""
    handle = NetNS(name, flags=0)
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


def ensure_bridge(ns: Any, name: str, mtu: int) -> None:
    index = link_index(ns, name)
    if index is None:
        ns.link("add", ifname=name, kind="bridge", br_forward_delay=0, br_mcast_snooping=0, mtu=mtu)
        index = link_index(ns, name)
    ns.link("set", index=index, mtu=mtu, state="up")


def delete_link(ns: Any, name: str) -> bool:
    index = link_index(ns, name)
    if index is None:
        return False
    with tolerate(ENODEV):
        ns.link("del", index=index)
    return True


def links_with_prefix(ns: Any, prefix: str | tuple[str, ...]) -> list[str]:
    return [
        str(name)
        for link in ns.get_links()
        if (name := link.get("ifname")) and str(name).startswith(prefix)
    ]


def ensure_veth(
    *,
    fabric: Any,
    fabric_name: str,
    bridge: str,
    peer: Any,
    peer_netns: str,
    peer_name: str,
    mac: str,
    mtu: int,
) -> bool:
    """A veth pair from the bridge (in `fabric`) into `peer_netns`, the peer
    named and addressed as asked. Returns True if the pair was (re)created."""
    bridge_index = link_index(fabric, bridge)
    if bridge_index is None:
        raise RuntimeError(f"bridge {bridge} is missing")
    fabric_index = link_index(fabric, fabric_name)
    peer_state = link_state(peer, peer_name)
    created = False
    if fabric_index is None or peer_state is None or peer_state.mac != mac:
        if fabric_index is not None:
            fabric.link("del", index=fabric_index)
        delete_link(peer, peer_name)
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
    peer.link("set", index=link_index(peer, peer_name), mtu=mtu, state="up")
    return created


def addresses(ns: Any, link: str, permanent_only: bool = False) -> set[Interface]:
    """The link's addresses except link-local ones; with `permanent_only`, only
    those configured by hand (not SLAAC's, which carry a lifetime)."""
    index = link_index(ns, link)
    if index is None:
        return set()
    found: set[Interface] = set()
    for message in ns.get_addr(index=index):
        address = message.get("address")
        if address is None:
            continue
        flags = message.get("flags") or message["flags"]
        if permanent_only and not flags & IFA_F_PERMANENT:
            continue
        interface = ipaddress.ip_interface(f"{address}/{message['prefixlen']}")
        if not (interface.version == 6 and interface.ip.is_link_local):
            found.add(interface)
    return found


def sync_addresses(
    ns: Any, link: str, desired: Iterable[Interface], families: tuple[int, ...] = (4, 6)
) -> tuple[int, int]:
    """Make the link's permanent global addresses of `families` exactly
    `desired`; dynamic (SLAAC) addresses are left alone. (added, removed)."""
    index = link_index(ns, link)
    if index is None:
        raise RuntimeError(f"link {link} is missing")
    want = {a for a in desired if a.version in families}
    have = {a for a in addresses(ns, link, permanent_only=True) if a.version in families}
    for address in sorted(have - want, key=str):
        with tolerate(EADDRNOTAVAIL):
            ns.addr(
                "del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
            )
    for address in sorted(want - have, key=lambda a: (a.version, a.network.prefixlen, int(a.ip))):
        with tolerate(EEXIST):
            ns.addr(
                "add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
            )
    return len(want - have), len(have - want)
