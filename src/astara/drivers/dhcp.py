"""The DHCP driver: a network's DHCP port → its DHCP appliance's config.

Where no router serves a DHCP subnet, the network's DHCP port (see
`astara.api.dhcp`) stands for an appliance of kind "dhcp": one internal
interface with the port's MAC and addresses, the subnets the port is on
(their gateway handed out as it is, or none), a DHCP host entry for every
other port with an address on them, and nothing routed (`forwarding` false).
No DHCP port: no appliance. Read-only, like the router driver.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy.orm import Session

from astara.appliance.schema import METADATA_ADDRESS, ApplianceConfig
from astara.db.models import dhcp_appliance_id
from astara.drivers.appliance import (
    AppliancePlan,
    NetworkNeed,
    dhcp_hosts,
    leased_by_dhcp,
    metadata_hosts,
    serves_hosts,
    subnet_entry,
)
from astara.drivers.reads import Reads


def plan(session: Session, network_id: str, reads: Reads | None = None) -> AppliancePlan:
    """The network's DHCP appliance plan; `reads`: where its rows come from
    (a `Batch` read for many at once; default: a statement each)."""
    reads = reads if reads is not None else Reads(session)
    appliance_id = dhcp_appliance_id(network_id)
    network = reads.network(network_id)
    port = reads.dhcp_port(network_id) if network is not None else None
    if network is None or port is None or not port.fixed_ips:
        return AppliancePlan(appliance_id, None)
    result = AppliancePlan(
        appliance_id,
        None,
        networks={network.id: NetworkNeed(network.mtu, network.external)},
        ports=[port.id],
    )
    subnet_rows = reads.subnets({a.subnet_id for a in port.fixed_ips})
    addresses: list[str] = []
    subnets: list[dict[str, Any]] = []
    served: set[str] = set()
    inside: set[str] = set()  # the IPv4 subnets: their instances' metadata
    for allocation in port.fixed_ips:
        subnet = subnet_rows[allocation.subnet_id]
        prefix = ipaddress.ip_network(subnet.cidr).prefixlen
        addresses.append(f"{allocation.ip_address}/{prefix}")
        if subnet.ip_version == 4:
            inside.add(subnet.id)
        if leased_by_dhcp(subnet):
            entry = subnet_entry(subnet, port.mac_address, None)
            if subnet.ip_version == 4:
                _metadata_route(entry, allocation.ip_address)
            subnets.append(entry)
            if serves_hosts(subnet):  # hosts get their addresses (not only options) here
                served.add(subnet.id)
    config = {
        "schema_version": 1,
        "kind": "dhcp",
        "forwarding": False,
        "interfaces": [
            {
                "mac": port.mac_address,
                "network_id": network.id,
                "role": "internal",
                "addresses": addresses,
                "mtu": network.mtu,
            }
        ],
        "subnets": subnets,
        "dhcp_hosts": dhcp_hosts(reads.host_rows(served), {port.mac_address}),
        "metadata_hosts": metadata_hosts(reads.instance_rows(inside)),
    }
    result.config = ApplianceConfig.model_validate(config)
    return result


def _metadata_route(entry: dict[str, Any], address: str) -> None:
    """Hosts on a network no router joins reach the metadata service through
    the DHCP appliance: a host route to 169.254.169.254 by it (DHCP option
    121), as Neutron's DHCP agent gives isolated networks."""
    destination = f"{METADATA_ADDRESS}/32"
    if not any(str(r["destination"]) == destination for r in entry["host_routes"]):
        entry["host_routes"].append({"destination": destination, "nexthop": address})
