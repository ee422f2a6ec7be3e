"""Rules about input that both doors use: the tenant API (which answers a
Neutron 400) and the appliance config schema (which answers a field error).
A rule lives here once, so that whatever the API accepts the appliance can
serve, and a router never reaches ERROR over input the API let in.

Each rule raises ValueError with a reason a person can act on, or returns
the problems it found; callers wrap them in their own error shape.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAC = re.compile(r"([0-9a-f]{2}[:-]){5}[0-9a-f]{2}")


def mac_address(value: str) -> str:
    """A port's or interface's MAC: six hex octets (':' or '-'), normalised to
    lower case with ':'; a unicast address (a multicast MAC on a port breaks
    ARP for everyone on the network), never all zeros."""
    mac = value.lower()
    if not _MAC.fullmatch(mac) or len({mac[2], mac[5], mac[8], mac[11], mac[14]}) != 1:
        raise ValueError("must be a MAC address like fa:16:3e:00:00:01")
    mac = mac.replace("-", ":")
    if int(mac[:2], 16) & 1:
        raise ValueError("must be a unicast MAC address (the first octet even)")
    if mac == "00:00:00:00:00:00":
        raise ValueError("must not be all zeros")
    return mac


_ADDRESS_TEXT = re.compile(r"[0-9A-Fa-f.:]{2,45}")
_LENGTH_TEXT = re.compile(r"[0-9]{1,3}")


def prefix(value: object, network: bool = False) -> str:
    """An address or CIDR typed by a tenant, as the fabric will use it:
    `address/length` (a plain address a host prefix), the address written
    canonically, its host bits kept unless `network`. Only an address and a
    decimal length: no IPv6 scope (`%...`), no netmask spelling, nothing a
    ruleset could not take as it is."""
    if not isinstance(value, str):
        raise ValueError(f"'{value}' is not a valid IP address or CIDR")
    address_text, slash, length_text = value.partition("/")
    if not _ADDRESS_TEXT.fullmatch(address_text) or (
        slash and not _LENGTH_TEXT.fullmatch(length_text)
    ):
        raise ValueError(f"'{value}' is not a valid IP address or CIDR")
    try:
        address = ipaddress.ip_address(address_text)
        found = ipaddress.ip_network(
            f"{address}/{length_text or address.max_prefixlen}", strict=False
        )
    except ValueError:
        raise ValueError(f"'{value}' is not a valid IP address or CIDR") from None
    return str(found) if network else f"{address}/{found.prefixlen}"


def host_address_problem(address: IPAddress, network: IPNetwork) -> str | None:
    """Why `address` cannot be an interface's own address on `network`, or
    None. IPv6's all-zero interface identifier is the subnet-router anycast
    address, which Neutron gives a router as its default gateway: allowed."""
    if address.is_multicast or address.is_loopback or address.is_unspecified:
        return f"{address} is not a unicast host address"
    if address.version == 6 and address.is_link_local:
        return f"{address} is link-local; the kernel makes each interface's own"
    if isinstance(network, ipaddress.IPv4Network) and network.num_addresses > 2:
        if address == network.network_address:
            return f"{address} is the network address of {network}"
        if address == network.broadcast_address:
            return f"{address} is the broadcast address of {network}"
    return None


DHCPV6_MIN_PREFIXLEN = 64  # dnsmasq refuses a DHCPv6 range in a shorter prefix


def ipv6_mode_prefix_problem(mode: str, prefixlen: int) -> str | None:
    """Why an IPv6 subnet of this prefix length cannot be served in `mode`
    (slaac, dhcpv6-stateless, dhcpv6-stateful), or None."""
    if mode in ("slaac", "dhcpv6-stateless") and prefixlen != 64:
        return f"Prefix length {prefixlen} is not valid for {mode}, which needs a /64 (SLAAC)"
    if mode == "dhcpv6-stateful" and prefixlen < DHCPV6_MIN_PREFIXLEN:
        return (
            f"Prefix length {prefixlen} is not valid for {mode},"
            f" which needs a prefix length of at least {DHCPV6_MIN_PREFIXLEN}"
        )
    return None


@dataclass(frozen=True)
class RouteProblem:
    index: int
    field: str | None  # "destination", "nexthop", or None for the route as a whole
    message: str
    kind: str = "value_error"  # the schema's error type; "value_error.duplicate" for repeats


@dataclass(frozen=True)
class RouteSpec:
    destination: IPNetwork
    nexthop: IPAddress
    onlink: bool = False  # reached directly on the external link, outside its subnets


def route_problems(
    routes: Sequence[RouteSpec], connected: Sequence[IPNetwork], own: set[IPAddress]
) -> list[RouteProblem]:
    """A router's routes: one per destination, never to a subnet it is
    connected to (that would replace the kernel's own route), each through a
    next hop on a connected subnet (or explicitly on-link) that is not one of
    the router's own addresses."""
    problems: list[RouteProblem] = []
    seen: set[IPNetwork] = set()
    for index, route in enumerate(routes):
        if route.destination.version != route.nexthop.version:
            problems.append(
                RouteProblem(index, None, "destination and nexthop differ in IP version")
            )
            continue
        if route.destination in seen:
            problems.append(
                RouteProblem(
                    index,
                    "destination",
                    f"duplicate route to {route.destination}",
                    "value_error.duplicate",
                )
            )
        seen.add(route.destination)
        if route.destination in connected:
            problems.append(
                RouteProblem(index, "destination", f"{route.destination} is a connected subnet")
            )
        if not route.onlink and not any(route.nexthop in network for network in connected):
            problems.append(
                RouteProblem(
                    index, "nexthop", f"nexthop {route.nexthop} is on no connected network"
                )
            )
        elif route.nexthop in own:
            problems.append(
                RouteProblem(
                    index, "nexthop", f"nexthop {route.nexthop} is the appliance's own address"
                )
            )
    return problems
