"""The fabric's contracts (pure): the desired state of an L2 segment and of a
workload port, and the rules for the names a port is plugged under.

The tenant API validates a port binding with the same rules the agent applies,
without importing anything that talks to the kernel.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from astara.appliance.schema import Identifier, IPInterface, IPNetwork, MacAddress, Route
from astara.naming import Names

# No '.': sysctl keys (net.ipv6.conf.<ifname>.…) use it as a separator.
_IFNAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,14}")
_NETNS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_ifname(value: str) -> str:
    if not _IFNAME.fullmatch(value):
        raise ValueError("must be 1-15 letters, digits, '_' or '-', starting with a letter")
    if value == "lo":
        raise ValueError("lo is the namespace's loopback")
    return value


def check_netns_name(value: str) -> str:
    if not _NETNS.fullmatch(value):
        raise ValueError("must be 1-128 letters, digits, '_', '.' or '-'")
    return value


def check_workload_netns(names: Names, netns: str) -> str:
    """A workload's namespace: under the agent's prefix, and neither the
    fabric's nor an appliance's."""
    if not names.owns_netns(netns):
        raise ValueError(f"netns {netns!r} must start with the agent's prefix {names.prefix}-")
    if names.is_infrastructure_netns(netns):
        raise ValueError(f"netns {netns!r} belongs to the fabric or an appliance")
    return netns


VNI_MAX = 2**24 - 1
_PHYSNET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")

UnderlayAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def check_physnet(value: str) -> str:
    if not _PHYSNET.fullmatch(value):
        raise ValueError("must be 1-64 letters, digits, '_', '.', ':' or '-'")
    return value


class SegmentSpec(BaseModel):
    """How a network's bridge reaches beyond this host: `local` (a bridge
    only), `vxlan` (a VXLAN device with `vni`, flooding to `remotes`, the
    other hosts' underlay addresses) or `flat` (the host's interface for the
    provider network `physnet`, enslaved to the bridge)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["local", "vxlan", "flat"] = "local"
    vni: int | None = Field(default=None, ge=1, le=VNI_MAX, description="VXLAN network identifier")
    physnet: Annotated[str, AfterValidator(check_physnet)] | None = Field(
        default=None, description="Provider network name (the agent's --physnet NAME=IFACE)"
    )
    remotes: list[UnderlayAddress] = Field(
        default_factory=list,
        description="vxlan: the underlay addresses of the other hosts on this network"
        " (head-end replication list)",
    )

    @model_validator(mode="after")
    def _fields_of_the_type(self) -> SegmentSpec:
        if self.type == "vxlan":
            if self.vni is None:
                raise ValueError("a vxlan segment needs a vni (1-16777215)")
            if self.physnet is not None:
                raise ValueError("a vxlan segment has no physnet")
        elif self.type == "flat":
            if self.physnet is None:
                raise ValueError("a flat segment needs a physnet")
            if self.vni is not None or self.remotes:
                raise ValueError("a flat segment has no vni and no remotes")
        elif self.vni is not None or self.physnet is not None or self.remotes:
            raise ValueError("a local segment has no vni, physnet or remotes")
        if len(set(self.remotes)) != len(self.remotes):
            raise ValueError("remotes must be unique")
        return self


class NetworkSpec(BaseModel):
    """Desired state of an L2 segment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mtu: int = Field(default=1500, ge=1280, le=9000)
    external: bool = Field(default=False, description="A provider network routers use as gateway")
    segment: SegmentSpec = Field(
        default_factory=SegmentSpec, description="How the bridge reaches other hosts"
    )


# --- port security: what a port may send, and which traffic reaches it --------------


class AllowedAddress(BaseModel):
    """A source a port may send from: its MAC with one of its addresses (a
    fixed IP as a host prefix, or an allowed address pair's CIDR)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mac: MacAddress
    ip: IPNetwork


class PortSecurity(BaseModel):
    """A port's filtering: anti-spoofing by `allowed`, and the rules of its
    `groups` (security groups the agent holds), which allow traffic; the
    rest is dropped. Stateful: replies to allowed traffic pass."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: list[Identifier] = Field(default_factory=list)
    allowed: list[AllowedAddress] = Field(default_factory=list)
    stateful: bool = True


class SecurityRuleSpec(BaseModel):
    """One allow rule of a security group, as the fabric enforces it: the
    protocol by number; a port range (or ICMP type and code); the remote as
    a prefix or an address set the agent holds (a remote group's members, an
    address group's CIDRs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    direction: Literal["ingress", "egress"]
    ethertype: Literal["IPv4", "IPv6"]
    protocol: int | None = Field(default=None, ge=0, le=255)
    port_range_min: int | None = Field(default=None, ge=0, le=65535)
    port_range_max: int | None = Field(default=None, ge=0, le=65535)
    remote_prefix: IPNetwork | None = None
    remote_set: Identifier | None = None

    @model_validator(mode="after")
    def _one_remote_of_its_family(self) -> SecurityRuleSpec:
        if self.remote_prefix is not None and self.remote_set is not None:
            raise ValueError("a rule has a remote prefix or a remote set, not both")
        if self.remote_prefix is not None and (self.remote_prefix.version == 4) != (
            self.ethertype == "IPv4"
        ):
            raise ValueError(f"remote_prefix {self.remote_prefix} is not {self.ethertype}")
        return self


class SecurityGroupSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[SecurityRuleSpec] = Field(default_factory=list)


class AddressSetSpec(BaseModel):
    """A named set of prefixes, shared by every rule that names it: a change
    of its members is a change of set elements, not of rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    addresses: list[IPNetwork] = Field(default_factory=list)


class PortSpec(BaseModel):
    """Desired state of a workload port."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    network_id: Identifier
    mac: MacAddress
    netns: Annotated[str, AfterValidator(check_netns_name)] = Field(
        description="Namespace to plug into (under the agent's prefix); created if missing"
    )
    ifname: Annotated[str, AfterValidator(check_ifname)] = "eth0"
    addresses: list[IPInterface] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    dhcp: bool = Field(default=False, description="Take IPv4 address and routes by DHCP")
    slaac: bool = Field(default=False, description="Take IPv6 addresses from router advertisements")
    dhcpv6: bool = Field(
        default=False,
        description=(
            "Take IPv6 as the router advertisements say (dhcpcd): a leased address where they"
            " set the managed flag, DHCPv6 options (DNS servers) where they set the other flag,"
            " and SLAAC addresses too if `slaac`"
        ),
    )
    mtu: int | None = Field(default=None, ge=1280, le=9000)
    security: PortSecurity | None = Field(
        default=None, description="Anti-spoofing and security groups; none: unfiltered"
    )

    @model_validator(mode="after")
    def _dhcpv6_owns_ipv6_addresses(self) -> PortSpec:
        # dhcpcd adds and removes the IPv6 addresses: a static one beside them
        # would be neither kept nor removed reliably.
        static = [str(a) for a in self.addresses if a.version == 6]
        if self.dhcpv6 and static:
            raise ValueError(
                f"addresses: {', '.join(static)} given with dhcpv6, which brings the IPv6 addresses"
            )
        return self

    @model_validator(mode="after")
    def _next_hops_on_link(self) -> PortSpec:
        # With static addresses only, a next hop must be on one of them, or the
        # kernel refuses the route; DHCP brings its own routes.
        for index, route in enumerate(self.routes):
            if route.destination.version != route.nexthop.version:
                raise ValueError(f"routes[{index}]: destination and nexthop differ in IP version")
            if not any(route.nexthop in address.network for address in self.addresses):
                raise ValueError(
                    f"routes[{index}]: nexthop {route.nexthop} is on none of the port's addresses"
                )
        return self
