"""Links read over a raw rtnetlink socket, decoding only what an observation
needs (name, index, MAC, MTU, up, master, a few counters).

An observation of an appliance (an unchanged PUT's cheap look, the answer to
a PUT or a GET) reads a handful of links; through pyroute2 each reply is
decoded in full in Python, a millisecond or more apiece, more than the rest
of the look. Here one socket made inside the namespace (`nssocket`) sends
RTM_GETLINK and reads a few attributes: tens of microseconds.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

from astara.linux.netlink import LinkState
from astara.linux.nssocket import socket_in

RTM_NEWLINK, RTM_GETLINK = 16, 18
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_STATS64, IFLA_EXT_MASK = 23, 29
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_ATTRIBUTE = struct.Struct("=HH")
_STATS64 = struct.Struct("=8Q")  # the first eight counters of rtnl_link_stats64
_COUNTERS = (
    "rx_packets",
    "tx_packets",
    "rx_bytes",
    "tx_bytes",
    "rx_errors",
    "tx_errors",
    "rx_dropped",
    "tx_dropped",
)
_KEPT = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped")


@dataclass(frozen=True)
class Link:
    index: int
    state: LinkState


def links(netns: str) -> dict[str, Link]:
    """Every link of the namespace, by name, from one dump (for a namespace
    of a few links: an appliance's)."""
    sock, _ = socket_in(netns, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.settimeout(5.0)
        request = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        sock.send(
            _HEADER.pack(_HEADER.size + len(request), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
            + request
        )
        found: dict[str, Link] = {}
        while True:
            for kind, message in _messages(sock.recv(1 << 16)):
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    _raise(message, f"links of {netns}")
                if kind == RTM_NEWLINK:
                    link = _link(message)
                    found[link.state.name] = link
    finally:
        sock.close()


def link(netns: str, name: str) -> Link | None:
    """The link named `name` (the kernel finds it by name); None if missing."""
    sock, _ = socket_in(netns, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.settimeout(5.0)
        request = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attribute(
            IFLA_IFNAME, name.encode() + b"\0"
        )
        sock.send(
            _HEADER.pack(_HEADER.size + len(request), RTM_GETLINK, NLM_F_REQUEST, 1, 0) + request
        )
        for kind, message in _messages(sock.recv(1 << 16)):
            if kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", message)
                if -code in (errno.ENODEV, errno.ENOENT):
                    return None
                _raise(message, f"link {name} in {netns}")
            if kind == RTM_NEWLINK:
                return _link(message)
        return None
    finally:
        sock.close()


def _messages(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            break
        out.append((kind, data[offset + _HEADER.size : offset + length]))
        offset += (length + 3) & ~3
    return out


def _raise(message: bytes, what: str) -> None:
    (code,) = struct.unpack_from("=i", message)
    raise OSError(-code, f"{what}: {os.strerror(-code)}")


def _link(message: bytes) -> Link:
    _, _, index, flags, _ = _IFINFO.unpack_from(message)
    name, mac, mtu, master = "", "", 0, None
    counters: dict[str, int] = {}
    offset = _IFINFO.size
    while offset + _ATTRIBUTE.size <= len(message):
        size, kind = _ATTRIBUTE.unpack_from(message, offset)
        if size < _ATTRIBUTE.size:
            break
        value = message[offset + _ATTRIBUTE.size : offset + size]
        kind &= 0x3FFF
        if kind == IFLA_IFNAME:
            name = value.split(b"\0", 1)[0].decode()
        elif kind == IFLA_ADDRESS:
            mac = ":".join(f"{b:02x}" for b in value)
        elif kind == IFLA_MTU:
            (mtu,) = struct.unpack_from("=I", value)
        elif kind == IFLA_MASTER:
            (master,) = struct.unpack_from("=I", value)
        elif kind == IFLA_STATS64 and len(value) >= _STATS64.size:
            every = dict(zip(_COUNTERS, _STATS64.unpack_from(value), strict=True))
            counters = {k: every[k] for k in _KEPT}
        offset += (size + 3) & ~3
    return Link(index, LinkState(name, mac, mtu, bool(flags & IFF_UP), master, counters))


def _attribute(kind: int, value: bytes) -> bytes:
    length = _ATTRIBUTE.size + len(value)
    return _ATTRIBUTE.pack(length, kind) + value + b"\0" * ((4 - length % 4) % 4)
