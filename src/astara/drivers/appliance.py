"""What every driver plans: an appliance's config and what it needs on the
host (`AppliancePlan`), and the pieces of a config that routers and DHCP
appliances build alike (a served subnet, the DHCP host entries)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from astara.appliance.schema import ApplianceConfig, Ipv6RaMode, config_hash, header_safe
from astara.db.models import Subnet


@dataclass(frozen=True)
class NetworkNeed:
    mtu: int
    external: bool


@dataclass
class AppliancePlan:
    """What one appliance needs on the host; `config` None: no appliance.
    `ports` are the appliance's own Neutron ports (a router's, or the
    network's DHCP port), whose statuses follow it."""

    appliance_id: str
    config: ApplianceConfig | None
    networks: dict[str, NetworkNeed] = field(default_factory=dict)
    ports: list[str] = field(default_factory=list)

    @property
    def digest(self) -> str | None:
        return config_hash(self.config) if self.config is not None else None


def hostname(address: str) -> str:
    """Neutron's DHCP host name: host-10-0-0-5, host-2001-db8--5."""
    return "host-" + address.replace(".", "-").replace(":", "-")


def ipv6_mode(subnet: Subnet) -> Ipv6RaMode | None:
    """How hosts on an IPv6 subnet get addresses. The API keeps the two
    Neutron attributes equal when both are set; the router sends the RAs
    either way."""
    mode = subnet.ipv6_address_mode or subnet.ipv6_ra_mode
    return Ipv6RaMode(mode) if subnet.ip_version == 6 and mode else None


def serves_hosts(subnet: Subnet) -> bool:
    """Whether addresses are leased to the subnet's ports: IPv4 with DHCP,
    IPv6 with DHCPv6-stateful."""
    if subnet.ip_version == 4:
        return subnet.enable_dhcp
    return ipv6_mode(subnet) is Ipv6RaMode.dhcpv6_stateful


def leased_by_dhcp(subnet: Subnet) -> bool:
    """Whether a DHCP server serves the subnet's hosts: IPv4 with DHCP, IPv6
    with DHCPv6 (stateful: addresses; stateless: options such as DNS). Never
    a link-local IPv6 subnet: no appliance address can be on it (the kernel
    makes each interface's own, see `model.rules.host_address_problem`)."""
    if subnet.ip_version == 4:
        return subnet.enable_dhcp
    mode = ipv6_mode(subnet)
    return mode is not None and mode.dhcpv6 and not ipaddress.ip_network(subnet.cidr).is_link_local


def subnet_entry(subnet: Subnet, mac: str, default_gateway: str | None) -> dict[str, Any]:
    """A subnet served on the interface `mac`: DHCP settings for IPv4, RA (and
    DHCPv6) for IPv6 by its mode. Clients get the subnet's gateway, or
    `default_gateway` when it has none (a router's own address; a DHCP
    appliance hands out none)."""
    entry: dict[str, Any] = {"cidr": subnet.cidr, "interface_mac": mac}
    if subnet.ip_version == 4:
        gateway = subnet.gateway_ip or default_gateway
        entry["gateway_ip"] = gateway
        entry["enable_dhcp"] = subnet.enable_dhcp
        entry["dns_nameservers"] = list(subnet.dns_nameservers)
        entry["host_routes"] = list(subnet.host_routes)
        if gateway is not None and ipaddress.ip_address(gateway) not in ipaddress.ip_network(
            subnet.cidr
        ):
            # A gateway outside the subnet is reached on-link (RFC 3442's
            # 0.0.0.0 next hop), as Neutron's DHCP tells hosts.
            entry["host_routes"].insert(0, {"destination": f"{gateway}/32", "nexthop": "0.0.0.0"})
    elif (mode := ipv6_mode(subnet)) is not None:
        # Hosts learn the default route from the RAs, not from a gateway_ip.
        entry["ipv6_ra_mode"] = mode.value
        entry["enable_dhcp"] = mode.dhcpv6
        entry["dns_nameservers"] = list(subnet.dns_nameservers)
    return entry


def dhcp_hosts(rows: Sequence[tuple[str, str]], own_macs: set[str]) -> list[dict[str, str]]:
    """A static DHCP entry for every other port with an address on a subnet the
    appliance leases addresses on (IPv4 DHCP, DHCPv6-stateful), one per port
    and IP version (by subnet id: overlapping CIDRs elsewhere are not its):
    from those subnets' (MAC, address) rows, by address (`Reads.host_rows`)."""
    hosts = []
    seen = set()
    for mac, address in rows:
        version = ipaddress.ip_address(address).version
        if mac in own_macs or (mac, version) in seen:
            continue
        seen.add((mac, version))
        hosts.append({"mac": mac, "ip_address": address, "hostname": hostname(address)})
    return hosts


def metadata_hosts(rows: Sequence[tuple[str, str, str]]) -> list[dict[str, str]]:
    """The instances the metadata service answers for: from instance rows
    (`Reads.instance_rows`, by address), their IPv4 addresses, each once. A
    device id no HTTP header can carry as it is names no instance Nova has."""
    hosts = []
    seen = set()
    for address, device_id, project_id in rows:
        if ":" in address or address in seen:
            continue
        if not (header_safe(device_id) and header_safe(project_id)):
            continue
        seen.add(address)
        hosts.append({"ip_address": address, "instance_id": device_id, "project_id": project_id})
    return hosts
