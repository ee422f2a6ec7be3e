"""The deployment-wide settings the tenant API applies (`astara serve`
options): the VNI range tenant networks' segments come from, and the path
MTU of the underlay, from which every network's MTU follows (pure)."""

from __future__ import annotations

from dataclasses import dataclass

# VXLAN's 24-bit network identifier (RFC 7348): 0 is not used.
MIN_VNI = 1
MAX_VNI = 2**24 - 1
# What VXLAN over IPv4 adds to every frame: outer IPv4 (20) + UDP (8) +
# VXLAN (8) + inner Ethernet (14). Neutron subtracts the same 50.
VXLAN_OVERHEAD = 50
# The smallest MTU IPv4 allows (RFC 791); IPv6 needs 1280, checked by its own rule.
MIN_MTU = 68


@dataclass(frozen=True)
class ApiSettings:
    """`vni_min`..`vni_max`: where tenant networks' VNIs are allocated from;
    `path_mtu`: the underlay's MTU (a flat network's, and a VXLAN network's
    plus the encapsulation)."""

    vni_min: int = 1
    vni_max: int = 65535
    path_mtu: int = 1500

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

    def max_mtu(self, network_type: str) -> int:
        """The largest MTU a network of this type can carry over the underlay."""
        return self.path_mtu - VXLAN_OVERHEAD if network_type == "vxlan" else self.path_mtu


def parse_vni_range(text: str) -> tuple[int, int]:
    """`MIN:MAX` (e.g. `1:65535`) as two integers; ValueError otherwise."""
    low, sep, high = text.partition(":")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ValueError(f"{text!r}: expected MIN:MAX, e.g. 1:65535")
    return int(low), int(high)
