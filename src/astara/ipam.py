"""IP address management, the way Neutron does it (pure: no I/O, no clock).

Subnet CIDRs, default gateways and allocation pools, pool validation, which
addresses are free, EUI-64 (SLAAC) addresses and MAC generation. Errors carry
Neutron's exception type and HTTP status, so the API layer only forwards them.
Randomness is a parameter: callers pass the random source.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Neutron's base MAC: OpenStack's OUI, the last three octets random.
BASE_MAC = "fa:16:3e"
# The reference IPAM picks among the first free addresses, not always the
# first one, so that concurrent requests rarely race for the same address.
CANDIDATES = 1000


class IpamError(ValueError):
    """An IPAM refusal in Neutron's terms: exception type, HTTP status, message."""

    def __init__(self, kind: str, message: str, status: int = 400) -> None:
        self.kind = kind
        self.status = status
        super().__init__(message)


@dataclass(frozen=True, order=True)
class Pool:
    """An inclusive range of addresses: Neutron's `{"start", "end"}`."""

    start: IPAddress
    end: IPAddress

    @property
    def size(self) -> int:
        return int(self.end) - int(self.start) + 1

    def __contains__(self, address: object) -> bool:
        return (
            isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
            and address.version == self.start.version
            and int(self.start) <= int(address) <= int(self.end)
        )

    def overlaps(self, other: Pool) -> bool:
        return int(self.start) <= int(other.end) and int(other.start) <= int(self.end)

    def as_dict(self) -> dict[str, str]:
        return {"start": str(self.start), "end": str(self.end)}


def parse_cidr(text: str, ip_version: int) -> IPNetwork:
    """A subnet CIDR as Neutron accepts it, stored as its network address."""
    if "/" not in text:
        raise IpamError(
            "InvalidInput", f"Invalid input for cidr. Reason: '{text}' is not a valid IP subnet."
        )
    try:
        interface = ipaddress.ip_interface(text)
    except ValueError:
        raise IpamError(
            "InvalidInput", f"Invalid input for cidr. Reason: '{text}' is not a valid IP subnet."
        ) from None
    network = interface.network
    if network.version != ip_version:
        raise IpamError(
            "InvalidInput",
            f"Invalid input for operation: cidr '{text}' does not match"
            f" the ip_version '{ip_version}'.",
        )
    if network.prefixlen == 0:
        raise IpamError(
            "InvalidInput",
            "Invalid input for cidr. Reason: 0 is not allowed as CIDR prefix length.",
        )
    return network


def check_dhcp_cidr(cidr: IPNetwork, enable_dhcp: bool) -> None:
    """Ranges no tenant subnet may have (§3.2): `::/n` never; with DHCP,
    none too small to serve, and none multicast, loopback or from 0.0.0.0."""
    if cidr.version == 6 and int(cidr.network_address) == 0:
        raise IpamError("InvalidInput", f"Invalid input for cidr. Reason: {cidr} is not allowed.")
    if not enable_dhcp:
        return
    longest = 30 if cidr.version == 4 else 126
    if cidr.prefixlen > longest:
        raise IpamError(
            "InvalidInput",
            f"Invalid input for cidr. Reason: a DHCP-enabled subnet needs a prefix of"
            f" /{longest} or shorter, not /{cidr.prefixlen}.",
        )
    kind = (
        "multicast"
        if cidr.is_multicast
        else "loopback"
        if cidr.is_loopback
        else "unspecified"
        if cidr.version == 4 and int(cidr.network_address) == 0
        else None
    )
    if kind is not None:
        raise IpamError(
            "InvalidInput", f"Invalid input for cidr. Reason: {cidr} is a {kind} range."
        )


def usable_range(cidr: IPNetwork) -> tuple[IPAddress, IPAddress]:
    """The first and last addresses hosts may have: IPv4 without the network
    and broadcast addresses (unless /31 or /32), IPv6 without the network
    (subnet-router anycast) address."""
    first, last = cidr.network_address, cidr.broadcast_address
    if cidr.version == 4:
        if cidr.prefixlen <= 30:
            return first + 1, last - 1
        return first, last
    if cidr.prefixlen == 128:
        return first, last
    return first + 1, last


def default_gateway(cidr: IPNetwork) -> IPAddress:
    """IPv4: the first host (`.1`); IPv6: the subnet-router anycast address
    (the network address), as Neutron defaults them."""
    if cidr.version == 4:
        return usable_range(cidr)[0]
    return cidr.network_address


def validate_gateway(cidr: IPNetwork, gateway: IPAddress) -> None:
    if gateway.version != cidr.version:
        raise IpamError(
            "InvalidInput",
            f"Invalid input for gateway_ip. Reason: '{gateway}' is not a valid"
            f" IPv{cidr.version} address.",
        )
    if (
        cidr.version == 4
        and cidr.prefixlen <= 30
        and gateway in (cidr.network_address, cidr.broadcast_address)
    ):
        raise IpamError("InvalidInput", f"Gateway is not valid on subnet {cidr}.")


def default_pools(cidr: IPNetwork, gateway: IPAddress | None) -> list[Pool]:
    """The whole usable range, split around the gateway if it falls inside."""
    first, last = usable_range(cidr)
    if gateway is None or gateway not in Pool(first, last):
        return [Pool(first, last)]
    pools = []
    if int(gateway) > int(first):
        pools.append(Pool(first, gateway - 1))
    if int(gateway) < int(last):
        pools.append(Pool(gateway + 1, last))
    return pools


def parse_pools(cidr: IPNetwork, pools: Iterable[dict[str, str]]) -> list[Pool]:
    parsed = []
    for pool in pools:
        try:
            start, end = ipaddress.ip_address(pool["start"]), ipaddress.ip_address(pool["end"])
        except (KeyError, TypeError, ValueError):
            raise IpamError(
                "InvalidAllocationPool", f"The allocation pool {pool} is not valid."
            ) from None
        if start.version != cidr.version or end.version != cidr.version or int(start) > int(end):
            raise IpamError(
                "InvalidAllocationPool", f"The allocation pool {start}-{end} is not valid."
            )
        parsed.append(Pool(start, end))
    return parsed


def validate_pools(cidr: IPNetwork, pools: list[Pool], gateway: IPAddress | None) -> None:
    """Neutron's pool rules: inside the usable range, no overlaps, and not
    around the gateway."""
    first, last = usable_range(cidr)
    for pool in pools:
        if int(pool.start) < int(first) or int(pool.end) > int(last):
            raise IpamError(
                "OutOfBoundsAllocationPool",
                f"The allocation pool {pool.start}-{pool.end} spans beyond the subnet cidr {cidr}.",
            )
    ordered = sorted(pools)
    for before, after in itertools.pairwise(ordered):
        if before.overlaps(after):
            raise IpamError(
                "OverlappingAllocationPools",
                f"Found overlapping allocation pools: {before.start}-{before.end} and "
                f"{after.start}-{after.end} for subnet {cidr}.",
                409,
            )
    if gateway is not None:
        for pool in pools:
            if gateway in pool:
                raise IpamError(
                    "GatewayConflictWithAllocationPools",
                    f"Gateway ip {gateway} conflicts with allocation pool {pool.start}-{pool.end}.",
                    409,
                )


def free_addresses(
    pools: Iterable[Pool], used: set[IPAddress], limit: int = CANDIDATES
) -> Iterator[IPAddress]:
    """Free addresses in pool order, at most `limit` of them."""
    found = 0
    for pool in sorted(pools):
        for value in range(int(pool.start), int(pool.end) + 1):
            address = (
                ipaddress.IPv4Address(value)
                if pool.start.version == 4
                else ipaddress.IPv6Address(value)
            )
            if address not in used:
                yield address
                found += 1
                if found >= limit:
                    return


def sample_addresses(pools: Iterable[Pool], rng: random.Random, count: int) -> list[IPAddress]:
    """Up to `count` distinct addresses drawn at random from the pools (all of
    them when the pools hold fewer)."""
    ordered = sorted(pools)
    total = sum(p.size for p in ordered)
    if total == 0:
        return []
    # randrange, not sample: an IPv6 pool holds more than a range() may count.
    offsets = (
        range(total) if total <= count else sorted({rng.randrange(total) for _ in range(count)})
    )
    chosen = []
    for offset in offsets:
        for pool in ordered:
            if offset < pool.size:
                chosen.append(pool.start + offset)
                break
            offset -= pool.size
    return chosen


def choose_address(
    pools: Iterable[Pool], used: set[IPAddress], rng: random.Random
) -> IPAddress | None:
    """One free address, picked at random among the first free ones; None if
    the pools are exhausted."""
    candidates = list(free_addresses(pools, used))
    return rng.choice(candidates) if candidates else None


def eui64(cidr: IPNetwork, mac: str) -> ipaddress.IPv6Address:
    """The SLAAC address a host with `mac` forms in a /64."""
    if cidr.version != 6 or cidr.prefixlen != 64:
        raise IpamError("InvalidInput", f"EUI-64 addresses need an IPv6 /64, not {cidr}")
    octets = bytearray(bytes.fromhex(mac.replace(":", "")))
    octets[0] ^= 0x02
    interface_id = int.from_bytes(bytes(octets[:3]) + b"\xff\xfe" + bytes(octets[3:]), "big")
    return ipaddress.IPv6Address(int(cidr.network_address) + interface_id)


def generate_mac(rng: random.Random, base: str = BASE_MAC) -> str:
    """A MAC under Neutron's base prefix with random remaining octets."""
    octets = base.split(":")
    free = 6 - len(octets)
    drawn = rng.getrandbits(8 * free)  # one draw (a system call for SystemRandom)
    octets += [f"{(drawn >> (8 * i)) & 0xFF:02x}" for i in range(free)]
    return ":".join(octets)
