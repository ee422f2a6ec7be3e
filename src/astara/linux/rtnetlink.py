"""rtnetlink's wire format, as far as Astara speaks it without pyroute2: the
message and attribute headers, the link constants and the link counters.

One place for what `netlink.Requests` (a link's index and settings, in an
apply) and `rtlink` (every link of a namespace, in an observation) encode
and decode; each keeps its own socket and its own requests.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

NETLINK_ROUTE = 0

# Message types and flags (linux/netlink.h, linux/rtnetlink.h).
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
RTM_NEWLINK, RTM_GETLINK, RTM_SETLINK = 16, 18, 19

# Links (linux/if_link.h, linux/if.h).
IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_OPERSTATE, IFLA_STATS64, IFLA_EXT_MASK = 16, 23, 29
IF_OPER_UNKNOWN, IF_OPER_UP = 0, 6
RTEXT_FILTER_SKIP_STATS = 1 << 3

HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
ATTRIBUTE = struct.Struct("=HH")  # rtattr: length, type
U32 = struct.Struct("=I")
ERROR = struct.Struct("=i")  # nlmsgerr's error code (negative errno)

# struct rtnl_link_stats64: its first eight counters (u64 each), and those
# an observation reports.
STATS64 = struct.Struct("=8Q")
STATS64_NAMES = (
    "rx_packets",
    "tx_packets",
    "rx_bytes",
    "tx_bytes",
    "rx_errors",
    "tx_errors",
    "rx_dropped",
    "tx_dropped",
)
COUNTERS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped")


def attribute(kind: int, value: bytes) -> bytes:
    """One rtattr, padded to four bytes."""
    length = ATTRIBUTE.size + len(value)
    return ATTRIBUTE.pack(length, kind) + value + b"\0" * (-length % 4)


def attributes(payload: bytes, offset: int) -> Iterator[tuple[int, bytes]]:
    """(type without its flag bits, value) of each rtattr from `offset` on."""
    while offset + ATTRIBUTE.size <= len(payload):
        length, kind = ATTRIBUTE.unpack_from(payload, offset)
        if length < ATTRIBUTE.size:
            return
        yield kind & 0x3FFF, payload[offset + ATTRIBUTE.size : offset + length]
        offset += (length + 3) & ~3


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, sequence, payload) of each message in one datagram."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind, _, sequence, _ = HEADER.unpack_from(data, offset)
        if length < HEADER.size:
            return
        yield kind, sequence, data[offset + HEADER.size : offset + length]
        offset += (length + 3) & ~3


def request(kind: int, flags: int, sequence: int, body: bytes) -> bytes:
    """A message to the kernel: header and body."""
    return HEADER.pack(HEADER.size + len(body), kind, NLM_F_REQUEST | flags, sequence, 0) + body


def error_code(payload: bytes) -> int:
    """The errno of an NLMSG_ERROR's payload (0: an acknowledgement)."""
    return -int(ERROR.unpack_from(payload)[0])


def counters(stats64: bytes) -> dict[str, int]:
    """The counters an observation reports, from an IFLA_STATS64 value
    (none if it is short)."""
    if len(stats64) < STATS64.size:
        return {}
    every = dict(zip(STATS64_NAMES, STATS64.unpack_from(stats64), strict=True))
    return {name: every[name] for name in COUNTERS}
