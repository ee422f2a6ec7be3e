"""Links and addresses through netlink (pyroute2).

Callers open one handle per namespace (`with netns(name) as ns:`) for a whole
operation and pass it down: opening a handle costs milliseconds, reusing it
nothing. Handles are not shared between threads.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from astara.linux.nssocket import socket_in
from astara.linux.rtnetlink import (
    IF_OPER_UNKNOWN,
    IF_OPER_UP,
    IFF_UP,
    IFINFO,
    IFLA_ADDRESS,
    IFLA_EXT_MASK,
    IFLA_IFNAME,
    IFLA_MASTER,
    IFLA_MTU,
    IFLA_OPERSTATE,
    IFLA_STATS64,
    NETLINK_ROUTE,
    NLM_F_ACK,
    NLMSG_ERROR,
    RTEXT_FILTER_SKIP_STATS,
    RTM_GETLINK,
    RTM_SETLINK,
    U32,
    attribute,
    attributes,
    counters,
    error_code,
    messages,
    request,
)

ENODEV = 19
ENOENT = 2
EEXIST = 17
EADDRNOTAVAIL = 99
IFA_F_PERMANENT = 0x80
VXLAN_PORT = 4789
# The all-zero MAC in a VXLAN device's forwarding database: where frames with
# no learned destination (broadcast, unknown unicast, multicast) are flooded.
FLOOD_MAC = "00:00:00:00:00:00"

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Requests:
    """The two requests every apply makes most of (a link's index by name,
    and setting a link's master, MTU and state), sent as plain netlink
    messages on a socket of their own: a request through pyroute2 costs
    about a millisecond of Python, this a few microseconds. Errors are
    pyroute2's NetlinkError, as through the handle."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sequence = 0

    def link_index(self, name: str) -> int | None:
        payload = self._get_link(name, stats=False)
        return None if payload is None else int(IFINFO.unpack_from(payload)[2])

    def link_state(self, name: str) -> LinkState | None:
        payload = self._get_link(name, stats=True)
        if payload is None:
            return None
        flags = IFINFO.unpack_from(payload)[3]
        found = dict(attributes(payload, IFINFO.size))
        operstate = found.get(IFLA_OPERSTATE, b"\0")[0]
        master = found.get(IFLA_MASTER)
        return LinkState(
            name=found.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(),
            mac=":".join(f"{b:02x}" for b in found.get(IFLA_ADDRESS, b"")),
            mtu=U32.unpack(found[IFLA_MTU])[0],
            up=operstate in (IF_OPER_UP, IF_OPER_UNKNOWN) or bool(flags & IFF_UP),
            master=U32.unpack(master)[0] if master else None,
            counters=counters(found.get(IFLA_STATS64, b"")),
        )

    def _get_link(self, name: str, stats: bool) -> bytes | None:
        body = IFINFO.pack(0, 0, 0, 0, 0)
        body += attribute(IFLA_IFNAME, name.encode() + b"\0")
        if not stats:
            body += attribute(IFLA_EXT_MASK, U32.pack(RTEXT_FILTER_SKIP_STATS))
        try:
            return self._request(RTM_GETLINK, 0, body)
        except NetlinkError as error:
            if error.code in (ENODEV, ENOENT):
                return None
            raise

    def set_link(
        self,
        index: int,
        *,
        master: int | None = None,
        mtu: int | None = None,
        up: bool | None = None,
    ) -> None:
        change = IFF_UP if up is not None else 0
        body = IFINFO.pack(0, 0, index, IFF_UP if up else 0, change)
        if mtu is not None:
            body += attribute(IFLA_MTU, U32.pack(mtu))
        if master is not None:
            body += attribute(IFLA_MASTER, U32.pack(master))
        self._request(RTM_SETLINK, NLM_F_ACK, body)

    def _request(self, kind: int, flags: int, body: bytes) -> bytes | None:
        """Send one request; its answer's payload (None for an acknowledgement)."""
        self.sequence += 1
        self.sock.send(request(kind, flags, self.sequence, body))
        while True:
            for answer, sequence, payload in messages(self.sock.recv(65536)):
                if sequence == self.sequence:
                    if answer != NLMSG_ERROR:
                        return payload
                    code = error_code(payload)
                    if code:
                        raise NetlinkError(code)
                    return None


class Handle:
    """A netlink handle in one namespace: `requests` for the most frequent
    requests (see `Requests`), and everything else of pyroute2's IPRoute,
    which is set up on first use only (about 2 ms of Python: an observation
    that only reads links never pays it). Both sockets are made when the
    handle is, inside the namespace."""

    def __init__(self, route_socket: socket.socket, plain_socket: socket.socket) -> None:
        self.requests = Requests(plain_socket)
        self._route_socket = route_socket
        self._iproute: Any = None

    def __getattr__(self, name: str) -> Any:
        # Only for what the handle itself lacks: pyroute2's methods.
        if self._iproute is None:
            self._iproute = IPRoute(use_socket=self._route_socket)
        return getattr(self._iproute, name)

    def close(self) -> None:
        if self._iproute is not None:
            self._iproute.close()


def _socket_in(name: str) -> socket.socket:
    try:
        return socket_in(name, socket.SOCK_DGRAM, NETLINK_ROUTE)[0]
    except OSError as error:
        if error.errno == errno.EINVAL:
            # The name is there but no namespace is bound to it: one being
            # made or removed (`ip netns del` unmounts, then unlinks).
            raise FileNotFoundError(errno.ENOENT, f"namespace {name} is not there") from error
        raise


@contextmanager
def netns(name: str) -> Iterator[Any]:
    """A handle in an existing namespace (never creates one: a missing
    namespace is FileNotFoundError, not an empty new one). Its sockets are
    made inside the namespace by this thread (`nssocket`), not by a forked
    helper as pyroute2's `NetNS` does; like every handle, it is this thread's
    only."""
    route_socket = _socket_in(name)
    try:
        plain_socket = _socket_in(name)
    except BaseException:
        route_socket.close()
        raise
    handle = Handle(route_socket, plain_socket)
    try:
        yield handle
    finally:
        handle.close()
        route_socket.close()
        plain_socket.close()


@contextmanager
def own_netns() -> Iterator[Any]:
    """A handle in the namespace this process runs in (the host's: where the
    underlay address and the host's NICs live)."""
    handle = IPRoute()
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
    requests = getattr(ns, "requests", None)
    if isinstance(requests, Requests):
        return requests.link_index(name)
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
    """The link named `name`, read in one request; None if it is missing."""
    requests = getattr(ns, "requests", None)
    if isinstance(requests, Requests):
        return requests.link_state(name)
    found = _get_link(ns, name)
    return _link_state(found) if found is not None else None


def _get_link(ns: Any, name: str) -> Any:
    """The kernel's message for the link named `name`, or None."""
    try:
        found = ns.link("get", ifname=name)
    except NetlinkError as error:
        if error.code in (ENODEV, ENOENT):
            return None
        raise
    return found[0] if found else None


def link_states(ns: Any, prefix: str | tuple[str, ...]) -> dict[str, LinkState]:
    """Every link whose name starts with `prefix`, by name, from one dump
    (for a namespace of a few links: an appliance's)."""
    found = {}
    for message in ns.get_links():
        name = message.get("ifname")
        if name and str(name).startswith(prefix):
            found[str(name)] = _link_state(message)
    return found


def _link_state(link: Any) -> LinkState:
    stats = link.get("stats64") or {}
    return LinkState(
        name=str(link.get("ifname")),
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
        if index is None:
            raise RuntimeError(f"bridge {name} vanished as it was made")
    _set(ns, index, mtu=mtu, state="up")


def _set(ns: Any, index: int, **settings: Any) -> None:
    """Set a link's `master`, `mtu` and/or `state` ("up", "down"), or
    anything else pyroute2 knows (through it)."""
    requests = getattr(ns, "requests", None)
    if isinstance(requests, Requests) and set(settings) <= {"master", "mtu", "state"}:
        state = settings.get("state")
        requests.set_link(
            index,
            master=settings.get("master"),
            mtu=settings.get("mtu"),
            up=None if state is None else state == "up",
        )
    else:
        ns.link("set", index=index, **settings)


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
    on_wire: bool | None = True,
) -> bool:
    """A veth pair from the bridge (in `fabric`) into `peer_netns`, the peer
    named and addressed as asked. Returns True if the pair was (re)created.
    Each link is looked up once: a new pair costs eight requests.
    `on_wire` False: the fabric end down (the peer has no carrier); None:
    down if made now, else left as it is (someone else decides)."""
    bridge_index = link_index(fabric, bridge)
    if bridge_index is None:
        raise RuntimeError(f"bridge {bridge} is missing")
    fabric_index = link_index(fabric, fabric_name)
    peer_state = link_state(peer, peer_name)
    peer_index = link_index(peer, peer_name) if peer_state is not None else None
    created = False
    if fabric_index is None or peer_state is None or peer_state.mac != mac:
        if fabric_index is not None:
            fabric.link("del", index=fabric_index)
        if peer_index is not None:
            with tolerate(ENODEV):
                peer.link("del", index=peer_index)
        fabric.link(
            "add",
            ifname=fabric_name,
            kind="veth",
            mtu=mtu,
            peer={"ifname": peer_name, "net_ns_fd": peer_netns, "address": mac, "mtu": mtu},
        )
        fabric_index = link_index(fabric, fabric_name)
        peer_index = link_index(peer, peer_name)
        created = True
    if fabric_index is None or peer_index is None:
        raise RuntimeError(f"veth {fabric_name} / {peer_name} vanished as it was made")
    state = {True: "up", False: "down", None: "down" if created else None}[on_wire]
    if state is None:
        _set(fabric, fabric_index, master=bridge_index, mtu=mtu)
    else:
        _set(fabric, fabric_index, master=bridge_index, mtu=mtu, state=state)
    _set(peer, peer_index, mtu=mtu, state="up")
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


NUD_PERMANENT = 0x80


def pin_neighbour(ns: Any, link: str, address: str, mac: str) -> bool:
    """A permanent neighbour entry (`ip neigh replace ADDRESS lladdr MAC dev
    LINK nud permanent`); True if one was added or changed."""
    index = link_index(ns, link)
    if index is None:
        raise RuntimeError(f"link {link} is missing")
    for entry in ns.get_neighbours(dst=address, ifindex=index):
        if entry.get("lladdr") == mac and entry.get("state") == NUD_PERMANENT:
            return False
    ns.neigh("replace", ifindex=index, dst=address, lladdr=mac, state=NUD_PERMANENT)
    return True


NUD_INCOMPLETE, NUD_FAILED = 0x01, 0x20


def forget_unresolved(ns: Any, link: str) -> int:
    """Delete the link's neighbour entries still being resolved or given
    up on (INCOMPLETE, FAILED): the next packet resolves its neighbour
    afresh, instead of waiting for the kernel's next retry (a second
    apart). How many went."""
    index = link_index(ns, link)
    if index is None:
        return 0
    gone = 0
    for entry in ns.get_neighbours(ifindex=index):
        if entry.get("state", 0) & (NUD_INCOMPLETE | NUD_FAILED):
            with tolerate(ENOENT):
                ns.neigh("del", ifindex=index, dst=entry.get_attr("NDA_DST"))
                gone += 1
    return gone


def sync_addresses(
    ns: Any,
    link: str,
    desired: Iterable[Interface],
    families: tuple[int, ...] = (4, 6),
    kept: Iterable[Interface] = (),
) -> tuple[int, int]:
    """Make the link's permanent global addresses of `families` exactly
    `desired`; dynamic (SLAAC) addresses and `kept` (another's to manage)
    are left alone. (added, removed)."""
    index = link_index(ns, link)
    if index is None:
        raise RuntimeError(f"link {link} is missing")
    want = {a for a in desired if a.version in families}
    have = {a for a in addresses(ns, link, permanent_only=True) if a.version in families}
    have -= set(kept)
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


def set_link(ns: Any, name: str, **settings: Any) -> None:
    index = link_index(ns, name)
    if index is None:
        raise RuntimeError(f"link {name} is missing")
    _set(ns, index, **settings)


def enslave(ns: Any, name: str, bridge: str, mtu: int | None = None) -> None:
    """Attach `name` to `bridge` and set it up (and its MTU, if given)."""
    bridge_index = link_index(ns, bridge)
    if bridge_index is None:
        raise RuntimeError(f"bridge {bridge} is missing")
    settings: dict[str, Any] = {"master": bridge_index, "state": "up"}
    if mtu is not None:
        settings["mtu"] = mtu
    set_link(ns, name, **settings)


def bridge_members(ns: Any, bridge: str) -> list[str]:
    """The links enslaved to `bridge`, by name. The kernel filters the dump
    (IFLA_MASTER in the request): only the members come back to be decoded,
    not every link of the namespace, so the cost follows the bridge's size,
    not the number of networks beside it."""
    index = link_index(ns, bridge)
    if index is None:
        return []
    # `dump_filter` given, pyroute2 puts the other keywords in the request
    # (without it, it dumps everything and filters here). The check on
    # `master` stays for a kernel that would ignore the attribute.
    members = ns.link("dump", master=index, dump_filter=_every_message)
    return sorted(str(link.get("ifname")) for link in members if link.get("master") == index)


def _every_message(_: Any) -> bool:
    return True


def move_link(ns: Any, name: str, target_netns: str | None) -> None:
    """Move a link from `ns` into the namespace named `target_netns`, or, with
    None, into this process's own namespace (the host's)."""
    if target_netns is None:
        # By pid: the handle may run in a helper process, so /proc/self is not ours.
        set_link(ns, name, net_ns_pid=os.getpid())
    else:
        set_link(ns, name, net_ns_fd=target_netns)


@dataclass(frozen=True)
class VxlanState:
    vni: int
    local: Address | None
    port: int
    learning: bool


def vxlan_state(ns: Any, name: str) -> VxlanState | None:
    """The VXLAN settings of link `name`; None if it is missing or no VXLAN."""
    index = link_index(ns, name)
    if index is None:
        return None
    info = ns.get_links(index)[0].get("linkinfo")
    if info is None or info.get("kind") != "vxlan":
        return None
    data = info.get("data")
    local = data.get("vxlan_local") or data.get("vxlan_local6")
    return VxlanState(
        vni=int(data.get("vxlan_id")),
        local=ipaddress.ip_address(local) if local else None,
        port=int(data.get("vxlan_port") or 0),
        learning=bool(data.get("vxlan_learning")),
    )


def create_vxlan(ns: Any, name: str, vni: int, local: Address, mtu: int) -> None:
    """A VXLAN device in `ns` (whose namespace its UDP socket stays in, even
    once the device is moved): VNI `vni`, source `local`, IANA port 4789,
    MAC learning on, flooding only to the remotes added to its FDB."""
    family = "vxlan_local" if local.version == 4 else "vxlan_local6"
    ns.link(
        "add",
        ifname=name,
        kind="vxlan",
        vxlan_id=vni,
        vxlan_port=VXLAN_PORT,
        vxlan_learning=1,
        mtu=mtu,
        **{family: str(local)},
    )


def _fdb_entries(ns: Any, index: int) -> list[tuple[str, Address]]:
    """(MAC, remote) of the device's FDB entries that point at a remote."""
    found = []
    for entry in ns.fdb("dump", ifindex=index):
        if entry.get("ifindex") != index:
            continue
        dst = entry.get("dst")
        if dst:
            found.append((str(entry.get("lladdr")), ipaddress.ip_address(dst)))
    return found


def flood_remotes(ns: Any, name: str) -> set[Address]:
    """The remotes a VXLAN device floods to (its all-zero FDB entries)."""
    index = link_index(ns, name)
    if index is None:
        return set()
    return {dst for mac, dst in _fdb_entries(ns, index) if mac == FLOOD_MAC}


def sync_flood_remotes(ns: Any, name: str, remotes: Iterable[Address]) -> tuple[int, int]:
    """Make the device's flood list exactly `remotes` (`bridge fdb append
    00:00:00:00:00:00 dev NAME dst REMOTE` for each); entries learned behind
    a removed remote go too, so nothing is sent there any more. (added, removed)."""
    index = link_index(ns, name)
    if index is None:
        raise RuntimeError(f"link {name} is missing")
    entries = _fdb_entries(ns, index)
    want = set(remotes)
    have = {dst for mac, dst in entries if mac == FLOOD_MAC}
    gone = have - want
    for mac, dst in entries:
        if dst in gone:
            with tolerate(ENOENT):
                ns.fdb("del", ifindex=index, lladdr=mac, dst=str(dst))
    for dst in sorted(want - have, key=lambda a: (a.version, int(a))):
        with tolerate(EEXIST):
            ns.fdb("append", ifindex=index, lladdr=FLOOD_MAC, dst=str(dst))
    return len(want - have), len(gone)
