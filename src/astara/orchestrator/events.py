"""Which work an outbox event wakes: the appliances it may change (routers',
and networks' DHCP appliances), and whether it may change workload plugs or
leave an L2 segment unused. Events only wake; the resync catches anything an
event misses."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.db.models import (
    DHCP,
    ApplianceState,
    FloatingIp,
    Host,
    LoadBalancer,
    OutboxEvent,
    Port,
    PortSecurityGroup,
    Router,
    RouterPort,
    SecurityGroupRule,
    Subnet,
    dhcp_appliance_id,
    dhcp_network_id,
    ha_member,
)
from astara.drivers import loadbalancer as lb_driver
from astara.orchestrator import appliances

# What workload ports' filtering follows, and no appliance: the L2 pass's alone.
SECURITY = ("security_group", "security_group_rule", "address_group")
# Firewall changes mark the routers that enforce them (a router event each),
# so their own events wake nothing; a load balancer's objects' changes come
# with one of the load balancer itself.
FIREWALL = ("firewall_group", "firewall_policy", "firewall_rule")
LOAD_BALANCER_PARTS = ("listener", "pool", "member", "healthmonitor", "l7policy", "l7rule")


def touches_l2(event: OutboxEvent) -> bool:
    """Events that can change plugs or leave a segment unused: any port change,
    and what detaches a router from a network. (Segments in use are pushed
    with their router; the resync catches anything else.)"""
    if event.resource_type in ("port", "host", *SECURITY):
        return True
    if event.resource_type == "network":
        return event.action == "delete"
    if event.resource_type == "router":
        return event.action in ("delete", "remove_interface", "update")
    return False


def affected(session: Session, event: OutboxEvent) -> set[str]:
    """`appliances_affected`, with an HA router's members for the router."""
    found = appliances_affected(session, event)
    routers = found - {a for a in found if not _may_be_router(a)}
    return found | appliances.router_appliances(session, routers) if routers else found


def _may_be_router(appliance_id: str) -> bool:
    return (
        dhcp_network_id(appliance_id) is None
        and lb_driver.balancer_id(appliance_id) is None
        and ha_member(appliance_id) is None
    )


def appliances_affected(session: Session, event: OutboxEvent) -> set[str]:
    """The appliances an event may change: the router itself; the routers on
    a network, a subnet's or a port's network, and that network's DHCP
    appliance; a floating IP's router. When the object is gone already, what
    the event's detail says it was on (`network_id` for a subnet or port,
    `router_id` for a floating IP); without that, every appliance of its
    project (the resync catches anything this misses)."""
    kind, object_id = event.resource_type, event.resource_id
    detail = event.detail if isinstance(event.detail, dict) else {}
    if kind in SECURITY:
        # Workload ports' filtering is the L2 pass's; a load balancer enforces
        # its VIP port's groups itself (a group's change, or a member of a
        # group one of its rules names as remote).
        return _balancers_filtering_by(session, kind, object_id, detail)
    if kind in FIREWALL or kind in LOAD_BALANCER_PARTS:
        return set()
    if kind == "loadbalancer":
        return {lb_driver.appliance_id(object_id)}
    if kind == "router":
        return {object_id}
    if kind == "host":
        # Drained, undrained or removed: what runs there may move, and what
        # nobody could place may go there now.
        name = detail.get("name") or session.scalar(select(Host.name).where(Host.id == object_id))
        return set(
            session.scalars(
                select(ApplianceState.appliance_id).where(
                    (ApplianceState.host == name) | ApplianceState.host.is_(None)
                )
            )
        )
    network_id: str | None = None
    if kind == "network":
        network_id = object_id
    elif kind == "subnet":
        network_id = session.scalar(select(Subnet.network_id).where(Subnet.id == object_id))
    elif kind == "port":
        port = session.get(Port, object_id)
        network_id = port.network_id if port is not None else None
        if port is not None and port.device_owner == lb_driver.OWNER:
            # A load balancer's own port: its appliance, and its network's.
            return {port.device_id} | affected_network(session, network_id)
        if port is not None:
            # Its groups, and what they name as remote, may be a VIP's filter.
            found = _balancers_filtering_by(session, "port", object_id, detail)
            if found:
                return found | affected_network(session, network_id)
    elif kind == "floatingip":
        floating = session.get(FloatingIp, object_id)
        if floating is not None:
            return {floating.router_id} if floating.router_id else set()
        if "router_id" in detail:  # the router it was on when deleted (None: none)
            router_id = detail["router_id"]
            return {router_id} if isinstance(router_id, str) else set()
    if network_id is None and isinstance(detail.get("network_id"), str):
        network_id = detail["network_id"]
    if network_id is not None:
        return affected_network(session, network_id)
    project = event.project_id
    found = set(session.scalars(select(Router.id).where(Router.project_id == project)))
    found.update(
        session.scalars(
            select(ApplianceState.appliance_id).where(ApplianceState.project_id == project)
        )
    )
    found.update(
        session.scalars(
            select(Port.device_id).where(Port.device_owner == DHCP, Port.project_id == project)
        )
    )
    return found


def affected_network(session: Session, network_id: str | None) -> set[str]:
    """The routers on a network, and its DHCP appliance (woken whether or
    not it has one: one no longer wanted is removed, and one never wanted
    costs two queries)."""
    if network_id is None:
        return set()
    found = set(
        session.scalars(
            select(RouterPort.router_id)
            .join(Port, Port.id == RouterPort.port_id)
            .where(Port.network_id == network_id)
        )
    )
    found.add(dhcp_appliance_id(network_id))
    return found


def _balancers_filtering_by(
    session: Session, kind: str, object_id: str, detail: dict[str, Any]
) -> set[str]:
    """The load balancers whose VIP filter a change may alter: those whose
    VIP port is in the changed group (a rule's group), or in a group with a
    rule naming it as remote; for a port, those of the groups it is in."""
    if kind == "security_group_rule":
        rule = session.get(SecurityGroupRule, object_id)
        group_id = rule.security_group_id if rule is not None else detail.get("security_group_id")
        groups = {group_id} if isinstance(group_id, str) else set()
    elif kind == "port":
        groups = set(
            session.scalars(
                select(PortSecurityGroup.security_group_id).where(
                    PortSecurityGroup.port_id == object_id
                )
            )
        )
    elif kind == "security_group":
        groups = {object_id}
    else:  # an address group: the groups whose rules name it
        groups = set(
            session.scalars(
                select(SecurityGroupRule.security_group_id).where(
                    SecurityGroupRule.remote_address_group_id == object_id
                )
            )
        )
    if not groups:
        return set()
    naming = select(SecurityGroupRule.security_group_id).where(
        SecurityGroupRule.remote_group_id.in_(groups)
    )
    filtering = groups | set(session.scalars(naming))
    found = session.scalars(
        select(LoadBalancer.id)
        .join(PortSecurityGroup, PortSecurityGroup.port_id == LoadBalancer.vip_port_id)
        .where(PortSecurityGroup.security_group_id.in_(filtering))
    )
    return {lb_driver.appliance_id(i) for i in found}
