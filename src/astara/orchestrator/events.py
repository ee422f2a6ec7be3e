"""Which work an outbox event wakes: the appliances it may change (routers',
and networks' DHCP appliances), and whether it may change workload plugs or
leave an L2 segment unused. Events only wake; the resync catches anything an
event misses."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.db.models import (
    DHCP,
    ApplianceState,
    FloatingIp,
    Host,
    OutboxEvent,
    Port,
    Router,
    RouterPort,
    Subnet,
    dhcp_appliance_id,
)
from astara.drivers import loadbalancer as lb_driver

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
    """The appliances an event may change: the router itself; the routers on
    a network, a subnet's or a port's network, and that network's DHCP
    appliance; a floating IP's router. When the object is gone already, what
    the event's detail says it was on (`network_id` for a subnet or port,
    `router_id` for a floating IP); without that, every appliance of its
    project (the resync catches anything this misses)."""
    kind, object_id = event.resource_type, event.resource_id
    detail = event.detail if isinstance(event.detail, dict) else {}
    if kind in SECURITY or kind in FIREWALL or kind in LOAD_BALANCER_PARTS:
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
        network_id = session.scalar(select(Port.network_id).where(Port.id == object_id))
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
        found = set(
            session.scalars(
                select(RouterPort.router_id)
                .join(Port, Port.id == RouterPort.port_id)
                .where(Port.network_id == network_id)
            )
        )
        # Woken whether or not it has one: a DHCP appliance no longer wanted
        # is removed, and one never wanted costs two queries.
        found.add(dhcp_appliance_id(network_id))
        return found
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
