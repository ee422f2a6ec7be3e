"""The load balancer driver: an Octavia load balancer's rows → its
appliance's config (`lb-<id>`, kind "loadbalancer").

One interface, the VIP port, with the VIP's address on its subnet; a
default route through that subnet's gateway (members on other subnets, and
clients from anywhere, are reached through the tenant's router); nothing
forwarded. The loadbalancer section lists what haproxy serves: enabled
listeners and their pools, members and monitors, without what is being
deleted (PENDING_DELETE). A listener's L7 policies are those haproxy runs
as Octavia's template does: enabled ones with at least one enabled rule, a
redirect to a pool only while that pool is served and enabled. Read-only,
like the other drivers.

The VIP port's security groups (the load balancer's own, `api.lbaas.
vip_group`, and any of a port the tenant gave) are enforced by the
appliance on what reaches the VIP.

A port on each member subnet off the VIP's network is an interface of
its own (Octavia plugs its amphora into each): those members are reached
directly. Members elsewhere are reached through the VIP subnet's gateway.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from astara.appliance.schema import ApplianceConfig
from astara.db.models import (
    HealthMonitor,
    L7Policy,
    L7Rule,
    Listener,
    LoadBalancer,
    Member,
    Network,
    Pool,
    Port,
    Subnet,
)
from astara.drivers.appliance import AppliancePlan, NetworkNeed
from astara.model import l7_rules
from astara.orchestrator.security import security_view

PREFIX = "lb-"
OWNER = "Octavia"  # its ports' device_owner (`api.ports.LB_OWNER`)
GONE = ("PENDING_DELETE", "DELETED")


def appliance_id(balancer_id: str) -> str:
    return PREFIX + balancer_id


def balancer_id(appliance_id: str) -> str | None:
    """The load balancer an appliance id stands for, or None."""
    return appliance_id.removeprefix(PREFIX) if appliance_id.startswith(PREFIX) else None


def plan(session: Session, balancer: LoadBalancer) -> AppliancePlan:
    result = AppliancePlan(appliance_id(balancer.id), None)
    if balancer.provisioning_status in GONE or balancer.vip_port_id is None:
        return result  # being removed: no appliance
    port = session.get(Port, balancer.vip_port_id, options=[selectinload(Port.fixed_ips)])
    subnet = session.get(Subnet, balancer.vip_subnet_id)
    network = session.get(Network, balancer.vip_network_id)
    if port is None or subnet is None or network is None:
        return result
    result.ports = [port.id]
    result.networks[network.id] = NetworkNeed(network.mtu, network.external)
    prefix = ipaddress.ip_network(subnet.cidr).prefixlen
    routes = []
    if subnet.gateway_ip and subnet.gateway_ip != balancer.vip_address:
        default = "0.0.0.0/0" if subnet.ip_version == 4 else "::/0"
        routes.append({"destination": default, "nexthop": subnet.gateway_ip})
    interfaces = [
        {
            "mac": port.mac_address,
            "network_id": network.id,
            "role": "internal",
            "addresses": [f"{balancer.vip_address}/{prefix}"],
            "mtu": network.mtu,
        }
    ]
    for member_port, member_network, addresses in _member_ports(session, balancer):
        result.ports.append(member_port.id)
        result.networks[member_network.id] = NetworkNeed(
            member_network.mtu, member_network.external
        )
        interfaces.append(
            {
                "mac": member_port.mac_address,
                "network_id": member_network.id,
                "role": "internal",
                "addresses": addresses,
                "mtu": member_network.mtu,
            }
        )
    config = {
        "schema_version": 1,
        "kind": "loadbalancer",
        "forwarding": False,
        "interfaces": interfaces,
        "routes": routes,
        "loadbalancer": {**_section(session, balancer), **_vip_security(session, port.id)},
    }
    result.config = ApplianceConfig.model_validate(config)
    return result


def member_ports(session: Session, balancer: LoadBalancer) -> list[Port]:
    """Its ports on member subnets (`api.lbaas.appliance_ports`): its own
    ports but the VIP's. A load balancer's ports are those of its project
    with `device_owner` `Octavia` and its appliance's id as `device_id`
    (only the service may give a port that owner: `api.ports`)."""
    return list(
        session.scalars(
            select(Port)
            .where(
                Port.device_id == appliance_id(balancer.id),
                Port.device_owner == OWNER,
                Port.project_id == balancer.project_id,
                Port.id != balancer.vip_port_id,
            )
            .options(selectinload(Port.fixed_ips))
            .order_by(Port.network_id, Port.id)
        )
    )


def _member_ports(
    session: Session, balancer: LoadBalancer
) -> list[tuple[Port, Network, list[str]]]:
    """Its member-side ports, each with its network and its addresses
    (with their subnets' prefixes)."""
    found = []
    for port in member_ports(session, balancer):
        network = session.get(Network, port.network_id)
        addresses = []
        for allocation in port.fixed_ips:
            subnet = session.get(Subnet, allocation.subnet_id)
            if subnet is not None:
                prefix = ipaddress.ip_network(subnet.cidr).prefixlen
                addresses.append(f"{allocation.ip_address}/{prefix}")
        if network is not None and addresses:
            found.append((port, network, addresses))
    return found


def _section(session: Session, balancer: LoadBalancer) -> dict[str, Any]:
    listeners = session.scalars(
        select(Listener)
        .where(Listener.load_balancer_id == balancer.id, Listener.provisioning_status.not_in(GONE))
        .order_by(Listener.protocol_port, Listener.id)
    ).all()
    pools = session.scalars(
        select(Pool)
        .where(Pool.load_balancer_id == balancer.id, Pool.provisioning_status.not_in(GONE))
        .order_by(Pool.created_at, Pool.id)
    ).all()
    pool_ids = [p.id for p in pools]
    monitors = {
        m.pool_id: m
        for m in session.scalars(
            select(HealthMonitor).where(
                HealthMonitor.pool_id.in_(pool_ids), HealthMonitor.provisioning_status.not_in(GONE)
            )
        )
    }
    members: dict[str, list[Member]] = {p: [] for p in pool_ids}
    for member in session.scalars(
        select(Member)
        .where(Member.pool_id.in_(pool_ids), Member.provisioning_status.not_in(GONE))
        .order_by(Member.created_at, Member.id)
    ):
        members[member.pool_id].append(member)
    served = {p.id for p in pools}
    enabled_pools = {p.id for p in pools if p.admin_state_up}
    policies = _l7policies(session, [listener.id for listener in listeners], enabled_pools)
    return {
        "vip": balancer.vip_address,
        "enabled": balancer.admin_state_up,
        "listeners": [
            {
                "id": listener.id,
                "protocol": listener.protocol,
                "port": listener.protocol_port,
                "enabled": listener.admin_state_up,
                "connection_limit": listener.connection_limit,
                "default_pool": listener.default_pool_id
                if listener.default_pool_id in served
                else None,
                "insert_headers": sorted(
                    k for k, v in (listener.insert_headers or {}).items() if v.lower() == "true"
                ),
                "timeout_client_data_ms": listener.timeout_client_data,
                "timeout_member_connect_ms": listener.timeout_member_connect,
                "timeout_member_data_ms": listener.timeout_member_data,
                "timeout_tcp_inspect_ms": listener.timeout_tcp_inspect,
                "allowed_cidrs": listener.allowed_cidrs or [],
                "l7policies": policies.get(listener.id, []),
            }
            for listener in listeners
        ],
        "pools": [_pool(pool, members[pool.id], monitors.get(pool.id)) for pool in pools],
    }


def _l7policies(
    session: Session, listener_ids: list[str], enabled_pools: set[str]
) -> dict[str, list[dict[str, Any]]]:
    """Each listener's L7 policies haproxy runs, in position order."""
    found: dict[str, list[dict[str, Any]]] = {}
    policies = session.scalars(
        select(L7Policy)
        .where(
            L7Policy.listener_id.in_(listener_ids),
            L7Policy.admin_state_up.is_(True),
            L7Policy.provisioning_status.not_in(GONE),
        )
        .order_by(L7Policy.listener_id, L7Policy.position, L7Policy.id)
    ).all()
    rules: dict[str, list[L7Rule]] = {p.id: [] for p in policies}
    for rule in session.scalars(
        select(L7Rule)
        .where(
            L7Rule.l7policy_id.in_(list(rules)),
            L7Rule.admin_state_up.is_(True),
            L7Rule.provisioning_status.not_in(GONE),
        )
        .order_by(L7Rule.created_at, L7Rule.id)
    ):
        rules[rule.l7policy_id].append(rule)
    for policy in policies:
        if not rules[policy.id]:
            continue  # no rule: never matches (Octavia renders none)
        if policy.action == "REDIRECT_TO_POOL" and policy.redirect_pool_id not in enabled_pools:
            continue
        redirect = policy.action in ("REDIRECT_TO_URL", "REDIRECT_PREFIX")
        found.setdefault(policy.listener_id, []).append(
            {
                "id": policy.id,
                "action": policy.action,
                "rules": [
                    {
                        "id": rule.id,
                        "type": rule.type,
                        "compare_type": rule.compare_type,
                        "key": rule.key if rule.type in l7_rules.KEYED else None,
                        "value": l7_rules.literal(rule.compare_type, rule.value),
                        "invert": rule.invert,
                    }
                    for rule in rules[policy.id]
                ],
                "redirect_pool": policy.redirect_pool_id
                if policy.action == "REDIRECT_TO_POOL"
                else None,
                "redirect_url": policy.redirect_url if policy.action == "REDIRECT_TO_URL" else None,
                "redirect_prefix": policy.redirect_prefix
                if policy.action == "REDIRECT_PREFIX"
                else None,
                "redirect_http_code": (policy.redirect_http_code or 302) if redirect else None,
            }
        )
    return found


def _vip_security(session: Session, port_id: str) -> dict[str, Any]:
    """The VIP port's groups' ingress rules (None: port security off), a
    remote group's or address group's members one prefix each: the
    appliance drops what none of them allows before haproxy sees it; and
    whether they are stateful (all of them: the fabric's rule)."""
    view = security_view(session, [port_id])
    spec = view.ports.get(port_id)
    if spec is None:
        return {"vip_security": None}
    found: dict[str, dict[str, Any]] = {}
    for group_id in spec["groups"]:
        for rule in view.groups.get(group_id, {}).get("rules", []):
            if rule["direction"] != "ingress":
                continue
            shown = {k: v for k, v in rule.items() if k not in ("direction", "remote_set")}
            remotes: list[str | None] = [shown.pop("remote_prefix", None)]
            if rule.get("remote_set"):
                addresses = view.sets.get(rule["remote_set"], {}).get("addresses", [])
                version = "6" if rule["ethertype"] == "IPv6" else "4"
                remotes = [a for a in addresses if (":" in a) == (version == "6")]
            for remote in remotes:
                one = {**shown, "remote_prefix": remote}
                found[json.dumps(one, sort_keys=True)] = one
    return {
        "vip_security": [found[key] for key in sorted(found)],
        "vip_stateful": spec["stateful"],
    }


def _pool(pool: Pool, members: list[Member], monitor: HealthMonitor | None) -> dict[str, Any]:
    persistence = pool.session_persistence or {}
    return {
        "id": pool.id,
        "protocol": pool.protocol,
        "algorithm": pool.lb_algorithm,
        "persistence": persistence.get("type"),
        "cookie_name": persistence.get("cookie_name"),
        "enabled": pool.admin_state_up,
        "members": [
            {
                "id": m.id,
                "address": m.address,
                "port": m.protocol_port,
                "weight": m.weight,
                "backup": m.backup,
                "enabled": m.admin_state_up,
                "monitor_address": m.monitor_address,
                "monitor_port": m.monitor_port,
            }
            for m in members
        ],
        "monitor": None
        if monitor is None
        else {
            "type": monitor.type,
            "delay_s": max(1, monitor.delay),  # haproxy checks need an interval
            "timeout_s": max(1, monitor.timeout),
            "rise": monitor.max_retries,
            "fall": monitor.max_retries_down,
            "http_method": monitor.http_method,
            "url_path": monitor.url_path,
            "expected_codes": monitor.expected_codes,
            "http_version": monitor.http_version,
            "domain_name": monitor.domain_name,
            "enabled": monitor.admin_state_up,
        },
    }
