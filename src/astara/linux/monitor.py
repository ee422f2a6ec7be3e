"""Being told when a namespace changes (the edge): netlink event sockets held
inside a namespace, the namespace directory through inotify, a process's
exit through a pidfd, and netlink handles made without a helper process.

Every one of these is a file descriptor that `select.epoll` can wait on, so
one thread can watch a thousand namespaces.

A socket is made inside a namespace by a short-lived thread that enters it
(`setns` changes the namespace of the calling thread only) and then ends: no
thread that outlives the call ever runs in another namespace. The socket
stays in the namespace it was made in, and keeps that namespace alive even
after `ip netns del` removed its name: whoever holds one must let go when the
name goes (`NamespaceDirectory` tells).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
import struct
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from inotify_simple import INotify
from inotify_simple import flags as inotify_flags
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
)

from astara.linux import nssocket
from astara.linux.netns import NETNS_DIR

NETLINK_ROUTE = 0
IFLA_IFNAME = 3
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
IFINFOMSG_SIZE = 16
RTATTR_HEADER = struct.Struct("=HH")  # length, type

# Links, addresses and routes of both families: what an appliance is made of.
EVERYTHING = (
    RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
)
LINKS = RTMGRP_LINK
# A namespace shared by many (the fabric) sees bursts: room for them, so
# that an overflow (which makes every appliance suspect) stays rare.
LARGE_BUFFER_BYTES = 4 * 1024 * 1024


class Aspect(StrEnum):
    """What a change touched, so that a check reads only what may differ."""

    namespace = "namespace"
    link = "link"
    address = "address"
    route = "route"
    daemon = "daemon"
    lost = "lost"  # events were dropped (the socket overflowed): anything may differ


_ASPECT = {
    RTM_NEWLINK: Aspect.link,
    RTM_DELLINK: Aspect.link,
    RTM_NEWADDR: Aspect.address,
    RTM_DELADDR: Aspect.address,
    RTM_NEWROUTE: Aspect.route,
    RTM_DELROUTE: Aspect.route,
}


@dataclass(frozen=True)
class Change:
    """One netlink notification: what it touched and, for a link, its name."""

    aspect: Aspect
    removed: bool
    ifname: str | None = None


def netns_path(namespace: str) -> Path:
    return NETNS_DIR / namespace


def identity(namespace: str) -> tuple[int, int] | None:
    """The namespace now behind the name (device and inode of its nsfs
    file), or None if there is no such name: tells a namespace deleted and
    made again from the one a socket was opened in."""
    try:
        found = os.stat(netns_path(namespace))
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def socket_in(namespace: str, kind: int = socket.SOCK_RAW, groups: int = 0) -> socket.socket:
    """A netlink route socket inside `namespace` (made as `nssocket` makes
    every socket in a namespace), bound to multicast `groups`, non-blocking
    and close-on-exec. FileNotFoundError if the namespace is gone; OSError
    if the name is not (yet) a namespace."""
    sock, _ = nssocket.socket_in(
        namespace, kind | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK, NETLINK_ROUTE
    )
    try:
        sock.bind((0, groups))
    except OSError:
        sock.close()
        raise
    return sock


def parse(data: bytes) -> list[Change]:
    """The link, address and route notifications in one datagram."""
    changes = []
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size:
            break
        aspect = _ASPECT.get(kind)
        if aspect is not None:
            body = offset + NLMSG_HEADER.size
            ifname = (
                _attribute(data, body + IFINFOMSG_SIZE, offset + length, IFLA_IFNAME)
                if aspect is Aspect.link
                else None
            )
            removed = kind in (RTM_DELLINK, RTM_DELADDR, RTM_DELROUTE)
            changes.append(Change(aspect, removed, ifname))
        offset += (length + 3) & ~3
    return changes


def _attribute(data: bytes, start: int, end: int, wanted: int) -> str | None:
    offset = start
    while offset + RTATTR_HEADER.size <= end:
        length, kind = RTATTR_HEADER.unpack_from(data, offset)
        if length < RTATTR_HEADER.size:
            return None
        if kind == wanted:
            value = data[offset + RTATTR_HEADER.size : offset + length]
            return value.split(b"\0", 1)[0].decode(errors="replace")
        offset += (length + 3) & ~3
    return None


class EventSocket:
    """Netlink notifications of one namespace: links, and with `groups`
    addresses and routes too."""

    def __init__(self, namespace: str, groups: int = EVERYTHING, buffer_bytes: int = 0) -> None:
        self.namespace = namespace
        # Read before the socket: a namespace made again in between is then
        # seen as a different one, never the other way round.
        self.identity = identity(namespace)
        if self.identity is None:
            raise FileNotFoundError(errno.ENOENT, "no such namespace", namespace)
        self.socket = socket_in(namespace, socket.SOCK_RAW, groups)
        if buffer_bytes:
            with contextlib.suppress(OSError):  # SO_RCVBUFFORCE needs CAP_NET_ADMIN
                self.socket.setsockopt(socket.SOL_SOCKET, 33, buffer_bytes)  # SO_RCVBUFFORCE

    def fileno(self) -> int:
        return self.socket.fileno()

    def read(self) -> tuple[list[Change], bool]:
        """Every notification queued now, and whether some were lost (the
        socket's buffer overflowed)."""
        changes: list[Change] = []
        lost = False
        while True:
            try:
                data = self.socket.recv(1 << 16)
            except BlockingIOError:
                return changes, lost
            except OSError as error:
                if error.errno == errno.ENOBUFS:
                    lost = True
                    continue
                raise
            if not data:
                return changes, lost
            changes += parse(data)

    def close(self) -> None:
        self.socket.close()


class NamespaceDirectory:
    """Names appearing in and leaving the namespace directory (`ip netns
    add` / `del`, or pyroute2's): the only sign that a namespace whose
    socket we hold lost its name."""

    def __init__(self, directory: Path = NETNS_DIR) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.inotify = INotify(nonblocking=True)
        mask = (
            inotify_flags.CREATE
            | inotify_flags.DELETE
            | inotify_flags.MOVED_FROM
            | inotify_flags.MOVED_TO
        )
        self.inotify.add_watch(str(directory), mask)

    def fileno(self) -> int:
        return int(self.inotify.fileno())

    def read(self) -> list[tuple[str, bool]]:
        """(name, whether it appeared) for each change queued now, in order."""
        changes = []
        gone = inotify_flags.DELETE | inotify_flags.MOVED_FROM
        try:
            events = self.inotify.read(timeout=0)
        except BlockingIOError:
            return []
        for event in events:
            if event.name:
                changes.append((str(event.name), not event.mask & gone))
        return changes

    def close(self) -> None:
        self.inotify.close()


def exit_fd(pid: int) -> int | None:
    """A descriptor that becomes readable when process `pid` exits (a
    pidfd), or None if it is gone already."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def raise_open_files_limit(wanted: int) -> int:
    """Raise the soft limit of open files towards `wanted` (at most the hard
    limit): a watch holds one socket per namespace. The limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft
