"""Sockets made inside a network namespace, without a helper process.

A socket belongs to the namespace it was created in, whatever thread uses it
afterwards. The calling thread enters the namespace (setns affects only that
thread), creates the socket and comes back before anything else runs on it:
tens of microseconds, where a forked helper (pyroute2's `NetNS`) costs
milliseconds. Nothing here holds a namespace open once the socket is closed.
"""

from __future__ import annotations

import ctypes
import functools
import os
import socket
from pathlib import Path

NETNS_DIR = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000


def socket_in(
    netns: str, kind: int, protocol: int, family: int = socket.AF_NETLINK
) -> tuple[socket.socket, int]:
    """A socket (`family`, `kind`, `protocol`) inside the namespace named
    `netns`, and the namespace's inode (which identifies it while it lives).
    FileNotFoundError if the namespace does not exist; never creates one."""
    libc = _libc()
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            inode = os.fstat(target).st_ino
            if libc.setns(target, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"setns into {netns}: {os.strerror(errno)}")
            try:
                made = socket.socket(family, kind, protocol)
            finally:
                if libc.setns(own, CLONE_NEWNET) != 0:
                    # This thread would go on in the wrong namespace: nothing may.
                    os.abort()
        finally:
            os.close(target)
    finally:
        os.close(own)
    return made, inode


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)
