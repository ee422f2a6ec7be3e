"""Gratuitous ARP (and IPv6's unsolicited neighbour advertisement): tell a
link's neighbours which MAC now answers for addresses.

A floating IP that is added or moves must be announced, or upstream routers
keep sending its traffic to the old MAC until their cache expires. One raw
socket per announcement batch sends one frame per address: thousands of
floating IPs are announced in milliseconds, not thousands of `arping` runs.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
from collections.abc import Iterable

from astara.linux.nssocket import socket_in

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
MIN_FRAME = 60  # Ethernet minimum without the FCS


def garp_frame(mac: str, address: ipaddress.IPv4Address) -> bytes:
    """An ARP request for our own address (RFC 5227 announcement)."""
    sender = bytes.fromhex(mac.replace(":", ""))
    ip = address.packed
    ethernet = BROADCAST + sender + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + sender + ip + b"\x00" * 6 + ip
    return (ethernet + arp).ljust(MIN_FRAME, b"\x00")


def _packet_socket(netns: str, ifname: str) -> socket.socket:
    """A raw packet socket inside `netns` (made by this thread, which enters
    the namespace and comes back: `nssocket`), bound to `ifname` to send.
    Protocol 0: it receives nothing, so the kernel has no receive hook to
    register and remove again (each waits for an RCU grace period, tens of
    milliseconds)."""
    sock, _ = socket_in(netns, socket.SOCK_RAW, 0, socket.AF_PACKET)
    try:
        sock.bind((ifname, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def _close_later(sock: socket.socket) -> None:
    """Close a packet socket off the caller's path: the kernel waits for an
    RCU grace period on closing one (tens of milliseconds), which an apply's
    answer need not wait for. The frames were sent already."""
    threading.Thread(target=sock.close, name="garp-close", daemon=True).start()


def announce(
    netns: str, ifname: str, mac: str, addresses: Iterable[ipaddress.IPv4Address], repeat: int = 1
) -> int:
    """Send gratuitous ARPs for `addresses` out of `ifname`; returns frames sent."""
    return _send(netns, ifname, [garp_frame(mac, a) for a in addresses], repeat)


def _send(netns: str, ifname: str, frames: list[bytes], repeat: int) -> int:
    if not frames:
        return 0
    sock = _packet_socket(netns, ifname)
    sent = 0
    try:
        for _ in range(repeat):
            for frame in frames:
                sock.send(frame)
                sent += 1
    finally:
        _close_later(sock)
    return sent


ETH_P_IPV6 = 0x86DD
ALL_NODES = ipaddress.IPv6Address("ff02::1")
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
ICMPV6 = 58
NEIGHBOR_ADVERT = 136
# Router and Override set, Solicited not: an unsolicited advertisement that
# replaces what neighbours cached (RFC 4861 §7.2.6).
NA_FLAGS = 0xA0000000
TARGET_LLADDR = 2


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def na_frame(mac: str, address: ipaddress.IPv6Address) -> bytes:
    """An unsolicited neighbour advertisement of our own address to all nodes,
    from that address, with our MAC as the target's link-layer address."""
    sender = bytes.fromhex(mac.replace(":", ""))
    icmp = struct.pack("!BBHI", NEIGHBOR_ADVERT, 0, 0, NA_FLAGS) + address.packed
    icmp += struct.pack("!BB", TARGET_LLADDR, 1) + sender
    pseudo = address.packed + ALL_NODES.packed + struct.pack("!I3xB", len(icmp), ICMPV6)
    icmp = icmp[:2] + struct.pack("!H", checksum(pseudo + icmp)) + icmp[4:]
    header = struct.pack("!IHBB", 6 << 28, len(icmp), ICMPV6, 255)
    ipv6 = header + address.packed + ALL_NODES.packed
    return ALL_NODES_MAC + sender + struct.pack("!H", ETH_P_IPV6) + ipv6 + icmp


def advertise(
    netns: str, ifname: str, mac: str, addresses: Iterable[ipaddress.IPv6Address], repeat: int = 1
) -> int:
    """Send unsolicited neighbour advertisements for `addresses` out of
    `ifname` (IPv6's gratuitous ARP); returns frames sent."""
    return _send(netns, ifname, [na_frame(mac, a) for a in addresses], repeat)
