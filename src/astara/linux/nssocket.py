"""Sockets made inside a network namespace, without a helper process.

A socket belongs to the namespace it was created in, whatever thread uses it
afterwards. The calling thread enters the namespace (setns affects only that
thread), creates the socket and comes back before anything else runs on it:
tens of microseconds, where a forked helper (pyroute2's `NetNS`) costs
milliseconds. Nothing here holds a namespace open once the socket is closed.
"""

from __future__ import annotations

import socket

from astara.linux.inside import entered


def socket_in(
    netns: str, kind: int, protocol: int, family: int = socket.AF_NETLINK
) -> tuple[socket.socket, int]:
    """A socket (`family`, `kind`, `protocol`) inside the namespace named
    `netns`, and the namespace's inode (which identifies it while it lives).
    FileNotFoundError if the namespace does not exist; never creates one."""
    with entered(netns) as inode:
        return socket.socket(family, kind, protocol), inode
