"""The router driver: a router's database rows → its appliance config.

The config holds an interface for the gateway port and one per router
interface port, the subnets behind them (DHCP and RA settings), a DHCP host
entry for every other port with an address on those subnets, the default
route through the external subnet's gateway plus the router's extra routes,
SNAT and the floating IPs. `networks` lists the L2 segments the appliance
needs on the agent. Read-only: one consistent snapshot, no side effects.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from astara.appliance.schema import DEFAULT_ADVERT_MS, ApplianceConfig
from astara.db.models import (
    ROUTER_GATEWAY,
    ROUTER_HA_INTERFACE,
    FirewallRule,
    Port,
    Router,
    Subnet,
    ha_member_id,
    ha_port_order,
)
from astara.drivers.appliance import (
    AppliancePlan,
    NetworkNeed,
    dhcp_hosts,
    metadata_hosts,
    serves_hosts,
    subnet_entry,
)
from astara.drivers.reads import FirewallRead, Reads
from astara.model import rules


def plan(
    session: Session,
    router: Router,
    reads: Reads | None = None,
    member: int | None = None,
    advert_interval_ms: int = DEFAULT_ADVERT_MS,
) -> AppliancePlan:
    """The router's appliance plan; `reads`: where its rows come from (a
    `Batch` read for many routers at once; default: a statement each).
    An HA router has no appliance of its own: its members (`member` 0 and
    1) do, each the router's config with its own HA port and its peer's."""
    reads = reads if reads is not None else Reads(session)
    everything = reads.attached(router.id)
    attached = [(port, kind) for port, kind in everything if kind != ROUTER_HA_INTERFACE]
    links = sorted(
        (port for port, kind in everything if kind == ROUTER_HA_INTERFACE), key=ha_port_order
    )
    appliance_id = router.id if member is None else ha_member_id(router.id, member)
    result = AppliancePlan(appliance_id, None, ports=[p.id for p, _ in attached])
    if (member is not None) != router.ha or not attached:
        return result  # nothing to run (here: an HA router's runs in its members)
    if member is not None and len(links) != 2:
        return result  # its HA ports are being made or removed
    # Administratively down: the appliance stays, its ports wired and its
    # subnets' DHCP and RAs served (a DHCP server is no router: Neutron's
    # keeps serving too), but it forwards, translates and routes nothing.
    up = router.admin_state_up
    network_ids = {port.network_id for port, _ in attached}
    networks = reads.networks(network_ids)
    subnet_rows = reads.subnets({a.subnet_id for port, _ in attached for a in port.fixed_ips})
    interfaces: list[dict[str, Any]] = []
    subnets: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    defaults: dict[int, dict[str, Any]] = {}  # IP version → the gateway's default route
    own_macs = set()
    dhcp_subnets: set[str] = set()
    inside: set[str] = set()  # the internal IPv4 subnets: their instances' metadata
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
            subnets.append(subnet_entry(subnet, port.mac_address, allocation.ip_address))
            if subnet.ip_version == 4:
                inside.add(subnet.id)
            if serves_hosts(subnet):
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
        "dhcp_hosts": dhcp_hosts(reads.host_rows(dhcp_subnets), own_macs),
        "routes": routes if up else [],
        "snat": {"enabled": bool(up and gateway and router.enable_snat)},
        "floating_ips": [
            {"floating_ip": floating, "fixed_ip": fixed or ""}
            for floating, fixed in reads.floating_ips(router.id)
        ]
        if up and gateway
        else [],
        "forwarding": up,
        "firewalls": _firewalls(reads, attached),
        "metadata_hosts": metadata_hosts(reads.instance_rows(inside)),
    }
    if member is not None:
        mine, peer = links[member], links[1 - member]
        result.ports.append(mine.id)
        ha_network = reads.networks({mine.network_id})[mine.network_id]
        result.networks[ha_network.id] = NetworkNeed(ha_network.mtu, ha_network.external)
        ha_subnets = reads.subnets({a.subnet_id for a in mine.fixed_ips})
        interfaces.append(
            {
                "mac": mine.mac_address,
                "network_id": ha_network.id,
                "role": "ha",
                "addresses": [
                    f"{a.ip_address}/{ipaddress.ip_network(ha_subnets[a.subnet_id].cidr).prefixlen}"
                    for a in mine.fixed_ips
                ],
                "mtu": ha_network.mtu,
            }
        )
        config["ha"] = {
            "interface_mac": mine.mac_address,
            "peer_address": min(a.ip_address for a in peer.fixed_ips),
            "peer_mac": peer.mac_address,
            "virtual_router_id": virtual_router_id(router.id),
            "advert_interval_ms": advert_interval_ms,
        }
    result.config = ApplianceConfig.model_validate(config)
    return result


def virtual_router_id(router_id: str) -> int:
    """The VRRP id of an HA router's instance: any value serves (its members
    speak unicast to each other only), so none is allocated, and there is no
    limit of 254 HA routers per project as in Neutron; one derived from the
    router's id tells the pairs apart in a capture of the HA network."""
    return 1 + int(hashlib.sha256(router_id.encode()).hexdigest(), 16) % 255


def _firewalls(reads: Reads, attached: Sequence[tuple[Port, str]]) -> list[dict[str, Any]]:
    """The firewall groups with a policy on the router's interfaces, by group id."""
    macs = {port.id: port.mac_address for port, kind in attached if kind != ROUTER_GATEWAY}
    groups: dict[str, tuple[FirewallRead, list[str]]] = {}
    for port_id, read in reads.firewalls(sorted(macs)).items():
        if read.enforced:
            groups.setdefault(read.group_id, (read, []))[1].append(macs[port_id])
    return [
        {
            "id": group_id,
            "interfaces": sorted(interfaces),
            "enabled": read.admin_state_up,
            "ingress": [_firewall_rule(r) for r in read.ingress],
            "egress": [_firewall_rule(r) for r in read.egress],
        }
        for group_id, (read, interfaces) in sorted(groups.items())
    ]


def _firewall_rule(rule: FirewallRule) -> dict[str, Any]:
    def network(value: str | None) -> str | None:
        return rules.prefix(value, network=True) if value is not None else None

    def ports(low: int | None, high: int | None) -> dict[str, int] | None:
        return None if low is None or high is None else {"min": low, "max": high}

    return {
        "action": rule.action,
        "ip_version": rule.ip_version,
        "protocol": rule.protocol,
        "source": network(rule.source_ip_address),
        "destination": network(rule.destination_ip_address),
        "source_ports": ports(rule.source_port_min, rule.source_port_max),
        "destination_ports": ports(rule.destination_port_min, rule.destination_port_max),
    }


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
