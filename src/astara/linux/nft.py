"""nftables: check and load rulesets with the real `nft`, and read a
namespace's nftables generation id (the "nft genid") through netlink.

A few commands (a floating IP's elements) are also run through libnftables,
the library `nft` itself is made of, in the calling thread entered into the
namespace: the same parser and the same one transaction, without starting
two processes (`ip netns exec`, then `nft`), which cost more than the
commands on a busy host.
"""

from __future__ import annotations

import ctypes
import functools
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from astara.linux.inside import entered
from astara.linux.nssocket import socket_in
from astara.linux.run import run

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETGEN = 16
NFT_MSG_NEWGEN = 15
NFTA_GEN_ID = 1
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_ATTRIBUTE = struct.Struct("=HH")  # nlattr: length, type


class GenidUnavailable(OSError):
    """The kernel did not tell the namespace's nftables generation."""


def check(text: str, netns: str) -> None:
    """Raise CommandError if `nft -c` refuses the ruleset (nothing changes)."""
    run(["nft", "-c", "-f", "-"], netns=netns, input_text=text)


def load(text: str, netns: str) -> None:
    """Apply the ruleset in one transaction: all of it or none of it."""
    run(["nft", "-f", "-"], netns=netns, input_text=text)


class NftRefused(RuntimeError):
    """libnftables refused the commands (nothing changed: one transaction)."""


def run_commands(text: str, netns: str) -> None:
    """Run `text` as `nft -f` would, in one transaction, through libnftables
    in this thread (entered into `netns` for the call, and back); through
    `nft -f` if the library cannot be loaded. Raises NftRefused (or
    CommandError), with nft's own message, if refused."""
    library = _libnftables()
    if library is None:
        load(text, netns)
        return
    with entered(netns):
        # The context (and its netlink socket) is made and freed in the
        # namespace: nothing of it outlives the call.
        context = library.nft_ctx_new(0)
        try:
            library.nft_ctx_buffer_error(context)
            status = library.nft_run_cmd_from_buffer(context, text.encode())
            error = library.nft_ctx_get_error_buffer(context) or b""
        finally:
            library.nft_ctx_free(context)
    if status != 0:
        raise NftRefused(f"nft refused in {netns}: {error.decode(errors='replace').strip()}")


@functools.cache
def _libnftables() -> ctypes.CDLL | None:
    try:
        library = ctypes.CDLL("libnftables.so.1")
    except OSError:
        return None
    library.nft_ctx_new.restype = ctypes.c_void_p
    library.nft_ctx_new.argtypes = [ctypes.c_uint32]
    library.nft_ctx_free.argtypes = [ctypes.c_void_p]
    library.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    library.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    library.nft_run_cmd_from_buffer.restype = ctypes.c_int
    library.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    library.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    return library


def list_table(family: str, table: str, netns: str) -> str:
    result = run(["nft", "list", "table", family, table], netns=netns, check=False)
    return result.stdout if result.returncode == 0 else ""


SO_NETNS_COOKIE = 71  # linux/asm-generic/socket.h (5.14+)


def genid(netns: str) -> tuple[int, int]:
    """(namespace, generation): the namespace's cookie (SO_NETNS_COOKIE,
    never reused while the machine runs, unlike its inode) and its nftables
    generation id (NFT_MSG_GETGEN), which every nftables commit in that
    namespace moves, by anyone. Equal pairs read at two moments: nothing was
    committed in between. Raises GenidUnavailable (or FileNotFoundError for
    a missing namespace). Costs a socket and one message, no process."""
    with _netfilter_socket(netns) as (sock, cookie):
        nfgenmsg = struct.pack("!BBH", socket.AF_UNSPEC, 0, 0)
        kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN
        sock.send(_HEADER.pack(_HEADER.size + len(nfgenmsg), kind, NLM_F_REQUEST, 1, 0) + nfgenmsg)
        reply = sock.recv(65536)
    return cookie, _parse_genid(reply)


def _parse_genid(reply: bytes) -> int:
    if len(reply) < _HEADER.size:
        raise GenidUnavailable("short reply to NFT_MSG_GETGEN")
    length, kind, _, _, _ = _HEADER.unpack_from(reply)
    if kind == NLMSG_ERROR:
        (error,) = struct.unpack_from("=i", reply, _HEADER.size)
        raise GenidUnavailable(-error, f"NFT_MSG_GETGEN: {os.strerror(-error)}")
    if kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
        raise GenidUnavailable(f"unexpected reply {kind} to NFT_MSG_GETGEN")
    offset = _HEADER.size + 4  # after the nfgenmsg
    while offset + _ATTRIBUTE.size <= min(length, len(reply)):
        size, attribute = _ATTRIBUTE.unpack_from(reply, offset)
        if size < _ATTRIBUTE.size:
            break
        if attribute & 0x3FFF == NFTA_GEN_ID:
            (value,) = struct.unpack_from("!I", reply, offset + _ATTRIBUTE.size)
            return int(value)
        offset += (size + 3) & ~3
    raise GenidUnavailable("no NFTA_GEN_ID in the reply to NFT_MSG_GETGEN")


@contextmanager
def _netfilter_socket(netns: str) -> Iterator[tuple[socket.socket, int]]:
    """A NETLINK_NETFILTER socket inside `netns` and the namespace's cookie;
    closed at the end, so it never keeps a deleted namespace alive."""
    sock, _ = socket_in(netns, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.settimeout(5.0)
        try:
            (cookie,) = struct.unpack("=Q", sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))
        except OSError as error:
            raise GenidUnavailable(f"SO_NETNS_COOKIE: {error}") from error
        yield sock, int(cookie)
    finally:
        sock.close()
