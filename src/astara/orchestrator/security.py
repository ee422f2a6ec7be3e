"""What the fabric must enforce for the bound ports, read from the tenant
API's tables: each port's security (`PortSecurity`: its groups, the MACs and
addresses it may send from), each group's rules as the agent takes them
(`SecurityGroupSpec`), and the address sets those rules name.

A rule's remote group is the set `g-<group id>` (the fixed IPs and allowed
address pairs of every port in that group, wherever it runs); its remote
address group is `a-<address group id>`. A host holds the groups of the
ports plugged on it and the sets their rules name: adding a port to a group
changes that set on each host that holds it, and nothing else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.db.models import (
    AddressGroupAddress,
    AllowedAddressPair,
    IpAllocation,
    Port,
    PortSecurityGroup,
    SecurityGroup,
    SecurityGroupRule,
)
from astara.model import security_rules


def group_set(group_id: str) -> str:
    return f"g-{group_id}"


def address_group_set(address_group_id: str) -> str:
    return f"a-{address_group_id}"


@dataclass
class SecurityView:
    """The bound ports' security (None: unfiltered), and the groups and sets
    they need, in the agent's JSON form."""

    ports: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    sets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def groups_of(self, port_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        wanted = {
            g
            for p in port_ids
            for g in ((self.ports.get(p) or {}).get("groups") or [])
            if g in self.groups
        }
        return {g: self.groups[g] for g in sorted(wanted)}

    def sets_of(self, groups: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        wanted = {
            r["remote_set"] for g in groups.values() for r in g["rules"] if r.get("remote_set")
        }
        return {s: self.sets[s] for s in sorted(wanted) if s in self.sets}


def _host(address: str) -> str:
    found = ipaddress.ip_address(address)
    return f"{found}/{found.max_prefixlen}"


def security_view(session: Session, port_ids: Collection[str]) -> SecurityView:
    """The security of `port_ids` (bound workload ports), with their groups'
    rules and the members of every set those rules name."""
    view = SecurityView()
    if not port_ids:
        return view
    ports = {p.id: p for p in session.scalars(select(Port).where(Port.id.in_(port_ids)))}
    bindings: dict[str, list[str]] = {}
    for port_id, group_id in session.execute(
        select(PortSecurityGroup.port_id, PortSecurityGroup.security_group_id)
        .where(PortSecurityGroup.port_id.in_(port_ids))
        .order_by(PortSecurityGroup.port_id, PortSecurityGroup.security_group_id)
    ):
        bindings.setdefault(port_id, []).append(group_id)
    addresses = _addresses(session, port_ids)
    group_ids = {g for found in bindings.values() for g in found}
    stateful = dict(
        session.execute(
            select(SecurityGroup.id, SecurityGroup.stateful).where(SecurityGroup.id.in_(group_ids))
        ).all()
    )
    for port_id, port in sorted(ports.items()):
        # Bound: a workload, filtered whatever its owner says (a `network:*`
        # owner has no groups in the API, so such a port passes little).
        if not port.port_security_enabled:
            view.ports[port_id] = None
            continue
        groups = bindings.get(port_id, [])
        view.ports[port_id] = {
            "groups": groups,
            "allowed": [{"mac": mac, "ip": ip} for mac, ip in addresses.get(port_id, [])],
            "stateful": all(stateful.get(g, True) for g in groups),
        }
    rules = session.scalars(
        select(SecurityGroupRule)
        .where(SecurityGroupRule.security_group_id.in_(group_ids))
        .order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)
    ).all()
    for group_id in sorted(group_ids):
        view.groups[group_id] = {"rules": []}
    remote_groups: set[str] = set()
    address_groups: set[str] = set()
    for rule in rules:
        spec: dict[str, Any] = {
            "direction": rule.direction,
            "ethertype": rule.ethertype,
            "protocol": security_rules.number_of(rule.protocol),
            "port_range_min": rule.port_range_min,
            "port_range_max": rule.port_range_max,
        }
        if rule.remote_ip_prefix is not None:
            spec["remote_prefix"] = security_rules.normalized_cidr(rule.remote_ip_prefix)
        elif rule.remote_group_id is not None:
            spec["remote_set"] = group_set(rule.remote_group_id)
            remote_groups.add(rule.remote_group_id)
        elif rule.remote_address_group_id is not None:
            spec["remote_set"] = address_group_set(rule.remote_address_group_id)
            address_groups.add(rule.remote_address_group_id)
        view.groups[rule.security_group_id]["rules"].append(spec)
    view.sets.update(_group_members(session, remote_groups))
    for group_id in address_groups:
        view.sets[address_group_set(group_id)] = {"addresses": []}
    for group_id, address in session.execute(
        select(AddressGroupAddress.address_group_id, AddressGroupAddress.address).where(
            AddressGroupAddress.address_group_id.in_(address_groups)
        )
    ):
        view.sets[address_group_set(group_id)]["addresses"].append(
            str(ipaddress.ip_network(address, strict=False))
        )
    return view


def _addresses(session: Session, port_ids: Collection[str]) -> dict[str, list[tuple[str, str]]]:
    """Each port's (MAC, prefix) it may send from: its fixed IPs, its pairs."""
    found: dict[str, list[tuple[str, str]]] = {}
    for port_id, mac, address in session.execute(
        select(IpAllocation.port_id, Port.mac_address, IpAllocation.ip_address)
        .join(Port, Port.id == IpAllocation.port_id)
        .where(IpAllocation.port_id.in_(port_ids))
        .order_by(IpAllocation.port_id, IpAllocation.position)
    ):
        found.setdefault(port_id, []).append((mac, _host(address)))
    for port_id, mac, address in session.execute(
        select(
            AllowedAddressPair.port_id,
            AllowedAddressPair.mac_address,
            AllowedAddressPair.ip_address,
        )
        .where(AllowedAddressPair.port_id.in_(port_ids))
        .order_by(AllowedAddressPair.port_id, AllowedAddressPair.position)
    ):
        found.setdefault(port_id, []).append(
            (mac, str(ipaddress.ip_network(address, strict=False)))
        )
    return found


def _group_members(session: Session, group_ids: Collection[str]) -> dict[str, dict[str, Any]]:
    """The set of each group: the addresses of every port bound to it."""
    members: dict[str, set[str]] = {group_set(g): set() for g in group_ids}
    if not group_ids:
        return {}
    for group_id, address in session.execute(
        select(PortSecurityGroup.security_group_id, IpAllocation.ip_address)
        .join(IpAllocation, IpAllocation.port_id == PortSecurityGroup.port_id)
        .where(PortSecurityGroup.security_group_id.in_(group_ids))
    ):
        members[group_set(group_id)].add(_host(address))
    for group_id, address in session.execute(
        select(PortSecurityGroup.security_group_id, AllowedAddressPair.ip_address)
        .join(AllowedAddressPair, AllowedAddressPair.port_id == PortSecurityGroup.port_id)
        .where(PortSecurityGroup.security_group_id.in_(group_ids))
    ):
        members[group_set(group_id)].add(str(ipaddress.ip_network(address, strict=False)))
    return {name: {"addresses": sorted(found)} for name, found in members.items()}
