"""Gratuitous ARP: tell a link's neighbours which MAC now answers for addresses.

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

from pyroute2.netns import setns

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
    """A raw socket bound to `ifname` inside `netns`, opened from a thread of
    its own: setns changes only the calling thread, which then ends."""
    result: list[socket.socket | BaseException] = []

    def open_in_netns() -> None:
        try:
            setns(netns, flags=0)
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
            sock.bind((ifname, 0))
            result.append(sock)
        except BaseException as error:  # re-raised in the caller's thread
            result.append(error)

    thread = threading.Thread(target=open_in_netns, name=f"garp-{netns}")
    thread.start()
    thread.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def announce(
    netns: str, ifname: str, mac: str, addresses: Iterable[ipaddress.IPv4Address], repeat: int = 1
) -> int:
    """Send gratuitous ARPs for `addresses` out of `ifname`; returns frames sent."""
    frames = [garp_frame(mac, a) for a in addresses]
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
        sock.close()
    return sent
