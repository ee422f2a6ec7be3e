"""The deployment-wide settings the tenant API applies (`astara serve`
options): the VNI range tenant networks' segments come from, the path MTU
of the underlay, from which every network's MTU follows, and what HA
routers get: whether a router is HA when its creator does not say, and the
range of each project's HA network (pure)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from astara.appliance.schema import HA_ROLE_ADDRESS, METADATA_ADDRESS

# VXLAN's 24-bit network identifier (RFC 7348): 0 is not used.
MIN_VNI = 1
MAX_VNI = 2**24 - 1
# What VXLAN over IPv4 adds to every frame: outer IPv4 (20) + UDP (8) +
# VXLAN (8) + inner Ethernet (14). Neutron subtracts the same 50.
VXLAN_OVERHEAD = 50
# The smallest MTU IPv4 allows (RFC 791); IPv6 needs 1280, checked by its own rule.
MIN_MTU = 68
# Neutron's `l3_ha_net_cidr` default: link-local, so it never collides with
# a tenant's addresses (each project's HA network is a segment of its own).
HA_NETWORK_CIDR = "169.254.192.0/18"
# An HA network needs an address for each of a router's two members.
HA_LONGEST_PREFIX = 30


@dataclass(frozen=True)
class ApiSettings:
    """`vni_min`..`vni_max`: where tenant networks' VNIs are allocated from;
    `path_mtu`: the underlay's MTU (a flat network's, and a VXLAN network's
    plus the encapsulation); `ha_default`: whether a router created without
    `ha` is HA (Neutron's `l3_ha`); `ha_network_cidr`: the subnet of every
    project's HA network (Neutron's `l3_ha_net_cidr`)."""

    vni_min: int = 1
    vni_max: int = 65535
    path_mtu: int = 1500
    ha_default: bool = False
    ha_network_cidr: str = HA_NETWORK_CIDR

    def __post_init__(self) -> None:
        if not MIN_VNI <= self.vni_min <= self.vni_max <= MAX_VNI:
            raise ValueError(
                f"VNI range {self.vni_min}:{self.vni_max}: expected MIN:MAX with"
                f" {MIN_VNI} <= MIN <= MAX <= {MAX_VNI}"
            )
        if self.path_mtu - VXLAN_OVERHEAD < MIN_MTU:
            raise ValueError(
                f"path MTU {self.path_mtu}: at least {MIN_MTU + VXLAN_OVERHEAD} (VXLAN adds"
                f" {VXLAN_OVERHEAD} bytes)"
            )
        check_ha_network_cidr(self.ha_network_cidr)

    def max_mtu(self, network_type: str) -> int:
        """The largest MTU a network of this type can carry over the underlay."""
        return self.path_mtu - VXLAN_OVERHEAD if network_type == "vxlan" else self.path_mtu


def parse_vni_range(text: str) -> tuple[int, int]:
    """`MIN:MAX` (e.g. `1:65535`) as two integers; ValueError otherwise."""
    low, sep, high = text.partition(":")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ValueError(f"{text!r}: expected MIN:MAX, e.g. 1:65535")
    return int(low), int(high)


def check_ha_network_cidr(text: str) -> None:
    """An IPv4 network address with its prefix (Neutron's rule for
    `l3_ha_net_cidr`: `HANetworkCIDRNotValid` otherwise), with room for a
    router's two members; ValueError otherwise."""
    problem = f"HA network CIDR {text!r}: expected an IPv4 network address and prefix"
    if "/" not in text:
        raise ValueError(f"{problem}, e.g. {HA_NETWORK_CIDR}")
    try:
        network = ipaddress.ip_network(text)  # strict: host bits set is an error
    except ValueError:
        raise ValueError(f"{problem}, e.g. {HA_NETWORK_CIDR}") from None
    if network.version != 4:
        raise ValueError(f"{problem} (the HA subnet is IPv4, as Neutron's)")
    for kept in (HA_ROLE_ADDRESS.ip, METADATA_ADDRESS):
        if kept in network:
            raise ValueError(
                f"{problem} that leaves out {kept} (an HA member's role address, the"
                " metadata address)"
            )
    if network.prefixlen > HA_LONGEST_PREFIX:
        raise ValueError(
            f"{problem} of /{HA_LONGEST_PREFIX} or shorter (two addresses for a router's members)"
        )
