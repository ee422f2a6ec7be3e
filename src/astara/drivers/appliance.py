"""What every driver plans: an appliance's config and what it needs on the
host (`AppliancePlan`), and the pieces of a config that routers and DHCP
appliances build alike (a served subnet, the DHCP host entries)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.appliance.schema import ApplianceConfig, config_hash
from astara.db.models import IpAllocation, Port, Subnet


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


def subnet_entry(subnet: Subnet, mac: str, default_gateway: str | None) -> dict[str, Any]:
    """A subnet served on the interface `mac`: DHCP settings for IPv4, RA for
    an IPv6 SLAAC subnet. Clients get the subnet's gateway, or
    `default_gateway` when it has none (a router's own address; a DHCP
    appliance hands out none)."""
    entry: dict[str, Any] = {"cidr": subnet.cidr, "interface_mac": mac}
    if subnet.ip_version == 4:
        entry["gateway_ip"] = subnet.gateway_ip or default_gateway
        entry["enable_dhcp"] = subnet.enable_dhcp
        entry["dns_nameservers"] = list(subnet.dns_nameservers)
        entry["host_routes"] = list(subnet.host_routes)
    elif subnet.ipv6_ra_mode == "slaac":
        entry["ipv6_ra_mode"] = "slaac"
        entry["dns_nameservers"] = list(subnet.dns_nameservers)
    return entry


def dhcp_hosts(session: Session, subnet_ids: set[str], own_macs: set[str]) -> list[dict[str, str]]:
    """A static DHCP entry for every other port with an address on a DHCP subnet
    the appliance serves (by subnet id: overlapping CIDRs elsewhere are not its)."""
    if not subnet_ids:
        return []
    rows = session.execute(
        select(Port.mac_address, IpAllocation.ip_address)
        .join(IpAllocation, IpAllocation.port_id == Port.id)
        .where(IpAllocation.subnet_id.in_(subnet_ids))
        .order_by(IpAllocation.ip_address)
    ).all()
    hosts = []
    seen = set()
    for mac, address in rows:
        if mac in own_macs or mac in seen:
            continue
        seen.add(mac)
        hosts.append({"mac": mac, "ip_address": address, "hostname": hostname(address)})
    return hosts
