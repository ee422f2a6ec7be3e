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
from dataclasses import dataclass

from astara.linux.netlink import LinkState
from astara.linux.nssocket import socket_in
from astara.linux.rtnetlink import (
    IFF_UP,
    IFINFO,
    IFLA_ADDRESS,
    IFLA_IFNAME,
    IFLA_MASTER,
    IFLA_MTU,
    IFLA_STATS64,
    NLM_F_DUMP,
    NLMSG_DONE,
    NLMSG_ERROR,
    RTM_GETLINK,
    RTM_NEWLINK,
    U32,
    attribute,
    attributes,
    counters,
    error_code,
    messages,
    request,
)


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
        sock.send(request(RTM_GETLINK, NLM_F_DUMP, 1, IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)))
        found: dict[str, Link] = {}
        while True:
            for kind, _, message in messages(sock.recv(1 << 16)):
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
        body = IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attribute(
            IFLA_IFNAME, name.encode() + b"\0"
        )
        sock.send(request(RTM_GETLINK, 0, 1, body))
        for kind, _, message in messages(sock.recv(1 << 16)):
            if kind == NLMSG_ERROR:
                if error_code(message) in (errno.ENODEV, errno.ENOENT):
                    return None
                _raise(message, f"link {name} in {netns}")
            if kind == RTM_NEWLINK:
                return _link(message)
        return None
    finally:
        sock.close()


def _raise(message: bytes, what: str) -> None:
    code = error_code(message)
    raise OSError(code, f"{what}: {os.strerror(code)}")


def _link(message: bytes) -> Link:
    _, _, index, flags, _ = IFINFO.unpack_from(message)
    name, mac, mtu, master = "", "", 0, None
    found: dict[str, int] = {}
    for kind, value in attributes(message, IFINFO.size):
        if kind == IFLA_IFNAME:
            name = value.split(b"\0", 1)[0].decode()
        elif kind == IFLA_ADDRESS:
            mac = ":".join(f"{b:02x}" for b in value)
        elif kind == IFLA_MTU:
            (mtu,) = U32.unpack_from(value)
        elif kind == IFLA_MASTER:
            (master,) = U32.unpack_from(value)
        elif kind == IFLA_STATS64:
            found = counters(value)
    return Link(index, LinkState(name, mac, mtu, bool(flags & IFF_UP), master, found))
