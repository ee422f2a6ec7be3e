"""The router driver: a router's database rows → its appliance config.

The config holds an interface for the gateway port and one per router
interface port, the subnets behind them (DHCP and RA settings), a DHCP host
entry for every other port with an address on those subnets, the default
route through the external subnet's gateway plus the router's extra routes,
SNAT and the floating IPs. `networks` lists the L2 segments the appliance
needs on the agent. Read-only: one consistent snapshot, no side effects.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.appliance.schema import ApplianceConfig, Ipv6RaMode, config_hash
from astara.db.models import (
    ROUTER_GATEWAY,
    FloatingIp,
    IpAllocation,
    Network,
    Port,
    Router,
    RouterPort,
    Subnet,
)


@dataclass(frozen=True)
class NetworkNeed:
    mtu: int
    external: bool


@dataclass
class RouterPlan:
    """What one router needs on the host; `config` None: no appliance (no ports)."""

    router_id: str
    config: ApplianceConfig | None
    networks: dict[str, NetworkNeed] = field(default_factory=dict)
    ports: list[str] = field(default_factory=list)  # the router's own ports

    @property
    def digest(self) -> str | None:
        return config_hash(self.config) if self.config is not None else None


def hostname(address: str) -> str:
    """Neutron's DHCP host name: host-10-0-0-5, host-2001-db8--5."""
    return "host-" + address.replace(".", "-").replace(":", "-")


def plan(session: Session, router: Router) -> RouterPlan:
    attached = session.execute(
        select(Port, RouterPort.port_type)
        .join(RouterPort, RouterPort.port_id == Port.id)
        .where(RouterPort.router_id == router.id)
        .order_by(RouterPort.port_type, Port.id)
    ).all()
    result = RouterPlan(router.id, None, ports=[p.id for p, _ in attached])
    if not attached or not router.admin_state_up:
        return result  # nothing to run: no ports, or administratively down
    network_ids = {port.network_id for port, _ in attached}
    networks = {
        n.id: n for n in session.scalars(select(Network).where(Network.id.in_(network_ids)))
    }
    subnet_ids = {a.subnet_id for port, _ in attached for a in port.fixed_ips}
    subnet_rows = {
        s.id: s for s in session.scalars(select(Subnet).where(Subnet.id.in_(subnet_ids)))
    }
    interfaces: list[dict[str, Any]] = []
    subnets: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    defaults: dict[int, dict[str, Any]] = {}  # IP version → the gateway's default route
    own_macs = set()
    dhcp_subnets: set[str] = set()
    for port, port_type in attached:
        network = networks[port.network_id]
        external = port_type == ROUTER_GATEWAY
        result.networks[network.id] = NetworkNeed(network.mtu, network.external)
        own_macs.add(port.mac_address)
        addresses = []
        for allocation in port.fixed_ips:
            subnet = subnet_rows[allocation.subnet_id]
            prefix = ipaddress.ip_network(subnet.cidr).prefixlen
            addresses.append(f"{allocation.ip_address}/{prefix}")
            if external:
                if subnet.gateway_ip:
                    defaults.setdefault(subnet.ip_version, _default_route(subnet))
                continue
            subnets.append(_subnet(subnet, port.mac_address, allocation.ip_address))
            if _serves_hosts(subnet):
                dhcp_subnets.add(subnet.id)
        interfaces.append(
            {
                "mac": port.mac_address,
                "network_id": network.id,
                "role": "external" if external else "internal",
                "addresses": addresses,
                "mtu": network.mtu,
            }
        )
    extra = [{"destination": r["destination"], "nexthop": r["nexthop"]} for r in router.routes]
    # An extra default route replaces the gateway's (as Neutron's agent applies
    # extra routes after the gateway); otherwise one default per family.
    overridden = {r["destination"] for r in extra}
    own = {a.split("/")[0] for interface in interfaces for a in interface["addresses"]}
    routes += [
        d
        for d in defaults.values()
        # A gateway that is the router's own address is no way out (an odd
        # off-subnet gateway on another of its subnets): no default then.
        if d["destination"] not in overridden and d["nexthop"] not in own
    ]
    routes += extra
    gateway = any(t == ROUTER_GATEWAY for _, t in attached)
    config = {
        "schema_version": 1,
        "kind": "router",
        "interfaces": interfaces,
        "subnets": subnets,
        "dhcp_hosts": _dhcp_hosts(session, dhcp_subnets, own_macs),
        "routes": routes,
        "snat": {"enabled": bool(gateway and router.enable_snat)},
        "floating_ips": _floating_ips(session, router) if gateway else [],
    }
    result.config = ApplianceConfig.model_validate(config)
    return result


def _default_route(subnet: Subnet) -> dict[str, Any]:
    """The default route through an external subnet's gateway; on-link when
    the gateway lies outside the subnet (Neutron accepts that)."""
    assert subnet.gateway_ip is not None
    route: dict[str, Any] = {
        "destination": "0.0.0.0/0" if subnet.ip_version == 4 else "::/0",
        "nexthop": subnet.gateway_ip,
    }
    if ipaddress.ip_address(subnet.gateway_ip) not in ipaddress.ip_network(subnet.cidr):
        route["onlink"] = True
    return route


def ipv6_mode(subnet: Subnet) -> Ipv6RaMode | None:
    """How hosts on an IPv6 subnet get addresses. The API keeps the two
    Neutron attributes equal when both are set; the router sends the RAs
    either way."""
    mode = subnet.ipv6_address_mode or subnet.ipv6_ra_mode
    return Ipv6RaMode(mode) if subnet.ip_version == 6 and mode else None


def _serves_hosts(subnet: Subnet) -> bool:
    """Whether the router leases addresses to the subnet's ports: IPv4 with
    DHCP, IPv6 with DHCPv6-stateful."""
    if subnet.ip_version == 4:
        return subnet.enable_dhcp
    return ipv6_mode(subnet) is Ipv6RaMode.dhcpv6_stateful


def _subnet(subnet: Subnet, mac: str, router_address: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"cidr": subnet.cidr, "interface_mac": mac}
    if subnet.ip_version == 4:
        # Hosts on the subnet route through the router's own address on it.
        entry["gateway_ip"] = subnet.gateway_ip or router_address
        entry["enable_dhcp"] = subnet.enable_dhcp
        entry["dns_nameservers"] = list(subnet.dns_nameservers)
        entry["host_routes"] = list(subnet.host_routes)
        gateway = entry["gateway_ip"]
        if ipaddress.ip_address(gateway) not in ipaddress.ip_network(subnet.cidr):
            # A gateway outside the subnet is reached on-link (RFC 3442's
            # 0.0.0.0 next hop), as Neutron's DHCP tells hosts.
            entry["host_routes"].insert(0, {"destination": f"{gateway}/32", "nexthop": "0.0.0.0"})
    elif (mode := ipv6_mode(subnet)) is not None:
        # Hosts learn the default route from the RAs, not from a gateway_ip.
        entry["ipv6_ra_mode"] = mode.value
        entry["enable_dhcp"] = mode.dhcpv6
        entry["dns_nameservers"] = list(subnet.dns_nameservers)
    return entry


def _dhcp_hosts(session: Session, subnet_ids: set[str], own_macs: set[str]) -> list[dict[str, str]]:
    """A static DHCP entry for every other port with an address on a subnet
    this router leases addresses on (IPv4 DHCP, DHCPv6-stateful), one per port
    and IP version (by subnet id: overlapping CIDRs elsewhere are not ours)."""
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
        version = ipaddress.ip_address(address).version
        if mac in own_macs or (mac, version) in seen:
            continue
        seen.add((mac, version))
        hosts.append({"mac": mac, "ip_address": address, "hostname": hostname(address)})
    return hosts


def _floating_ips(session: Session, router: Router) -> list[dict[str, str]]:
    rows = session.scalars(
        select(FloatingIp)
        .where(FloatingIp.router_id == router.id, FloatingIp.fixed_ip_address.is_not(None))
        .order_by(FloatingIp.floating_ip_address)
    )
    return [
        {"floating_ip": f.floating_ip_address, "fixed_ip": f.fixed_ip_address or ""} for f in rows
    ]
