"""This thread, for a moment, inside a network namespace.

`setns` moves only the calling thread; what it does meanwhile (open a
socket, write under /proc/sys/net, create a namespace, fork a command)
belongs to the namespace entered, and the thread comes back before anything
else runs on it. Microseconds, where a forked helper (`ip netns exec`, a
Python child) costs milliseconds. Nothing here holds a namespace open once
the block ends.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NETNS_DIR = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
THREAD_NETNS = "/proc/thread-self/ns/net"


@contextmanager
def entered(netns: str) -> Iterator[int]:
    """Run the block in the namespace named `netns` (this thread only);
    yields the namespace's inode. FileNotFoundError if it does not exist."""
    target = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        inode = os.fstat(target).st_ino
        with _switched(lambda: _setns(target, netns)):
            yield inode
    finally:
        os.close(target)


def create(netns: str) -> None:
    """Make a new namespace named `netns`, as `ip netns add` does, without a
    child process: this thread unshares into a new namespace, binds it to
    /var/run/netns/NAME and comes back. FileExistsError if the name is taken."""
    libc = _libc()
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    directory = bytes(NETNS_DIR)
    # As iproute2: the directory is a shared mount point, so that namespaces
    # bound under it are seen from every mount namespace.
    made_mount_point = False
    while libc.mount(b"", directory, b"none", MS_SHARED | MS_REC, None) != 0:
        if made_mount_point or libc.mount(directory, directory, b"none", MS_BIND | MS_REC, None):
            code = ctypes.get_errno()
            raise OSError(code, f"making {NETNS_DIR} a shared mount point: {os.strerror(code)}")
        made_mount_point = True
    path = NETNS_DIR / netns
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    try:
        with _switched(lambda: _unshare(netns)):
            if libc.mount(THREAD_NETNS.encode(), bytes(path), b"none", MS_BIND, None) != 0:
                code = ctypes.get_errno()
                raise OSError(code, f"binding namespace {netns}: {os.strerror(code)}")
    except BaseException:
        path.unlink(missing_ok=True)
        raise


@contextmanager
def _switched(enter: object) -> Iterator[None]:
    own = os.open(THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert callable(enter)
        enter()
        try:
            yield
        finally:
            if _libc().setns(own, CLONE_NEWNET) != 0:
                # This thread would go on in the wrong namespace: nothing may.
                os.abort()
    finally:
        os.close(own)


def _setns(fd: int, netns: str) -> None:
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        if code == errno.EINVAL:
            # The name is there but no namespace is bound to it: one being
            # made or removed (`ip netns del` unmounts, then unlinks).
            raise FileNotFoundError(errno.ENOENT, f"namespace {netns} is not there")
        raise OSError(code, f"setns into {netns}: {os.strerror(code)}")


def _unshare(netns: str) -> None:
    if _libc().unshare(CLONE_NEWNET) != 0:
        code = ctypes.get_errno() or errno.EPERM
        raise OSError(code, f"creating namespace {netns}: {os.strerror(code)}")


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)
