"""What an appliance id stands for: a router's appliance (the router's id),
an HA router's two members (`ha0-<router id>`, `ha1-<router id>`), a
network's DHCP appliance (`dhcp-<network id>`, while the network has a DHCP
port, see `astara.api.dhcp`), or a load balancer's (`lb-<id>`). The
reconciler's keys are these ids."""

from __future__ import annotations

from collections.abc import Callable, Collection
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.api.dhcp import dhcp_port
from astara.appliance.schema import DEFAULT_ADVERT_MS
from astara.db.models import (
    DHCP,
    ApplianceState,
    LoadBalancer,
    Port,
    Router,
    dhcp_network_id,
    ha_member,
    ha_member_id,
)
from astara.drivers import dhcp as dhcp_driver
from astara.drivers import loadbalancer as lb_driver
from astara.drivers import router as router_driver
from astara.drivers.appliance import AppliancePlan


def kind(appliance_id: str) -> str:
    """ "router", "dhcp" or "loadbalancer" (`ApplianceState.kind`)."""
    if lb_driver.balancer_id(appliance_id) is not None:
        return "loadbalancer"
    return "router" if dhcp_network_id(appliance_id) is None else "dhcp"


def subject(
    session: Session, appliance_id: str, advert_interval_ms: int = DEFAULT_ADVERT_MS
) -> tuple[str, Callable[[], AppliancePlan]] | None:
    """What an appliance is for, while it is wanted: its project and how to
    plan it. A router while it exists in the API (it may need no appliance:
    no ports, or down); a network's DHCP appliance while the network has a
    DHCP port. None: gone (its appliance, if any, is removed, then its
    record)."""
    balancer_id = lb_driver.balancer_id(appliance_id)
    if balancer_id is not None:
        balancer = session.get(LoadBalancer, balancer_id)
        if balancer is None:
            return None
        return balancer.project_id, partial(lb_driver.plan, session, balancer)
    network_id = dhcp_network_id(appliance_id)
    if network_id is None:
        router_id, slot = ha_member(appliance_id) or (appliance_id, None)
        router = session.get(Router, router_id)
        if router is None:
            return None
        return router.project_id, partial(
            router_driver.plan,
            session,
            router,
            member=slot,
            advert_interval_ms=advert_interval_ms,
        )
    port = dhcp_port(session, network_id)
    if port is None:
        return None
    return port.project_id, partial(dhcp_driver.plan, session, network_id)


def known(session: Session) -> set[str]:
    """Every appliance the database accounts for: routers, networks with a
    DHCP port, load balancers, and the records of those not removed yet."""
    found = set(session.scalars(select(Router.id)))
    found.update(
        ha_member_id(router_id, slot)
        for router_id in session.scalars(select(Router.id).where(Router.ha))
        for slot in (0, 1)
    )
    found.update(session.scalars(select(ApplianceState.appliance_id)))
    found.update(session.scalars(select(Port.device_id).where(Port.device_owner == DHCP)))
    found.update(lb_driver.appliance_id(i) for i in session.scalars(select(LoadBalancer.id)))
    return found


def zone_hints(session: Session, appliance_id: str) -> list[str]:
    """The zones its appliance may be placed in (any when empty): a router's
    `availability_zone_hints`, a load balancer's `availability_zone`."""
    balancer_id = lb_driver.balancer_id(appliance_id)
    if balancer_id is not None:
        balancer = session.get(LoadBalancer, balancer_id)
        zone = balancer.availability_zone if balancer is not None else None
        return [zone] if zone else []
    router_id, _ = ha_member(appliance_id) or (appliance_id, None)
    router = session.get(Router, router_id)
    return list(router.availability_zone_hints) if router is not None else []


def router_appliances(session: Session, router_ids: Collection[str]) -> set[str]:
    """The appliances of these routers: each router's own id, and its HA
    members' for those that are HA or were (their members are removed)."""
    members = {ha_member_id(r, slot) for r in router_ids for slot in (0, 1)}
    found = set(router_ids)
    found.update(
        ha_member_id(router_id, slot)
        for router_id in session.scalars(
            select(Router.id).where(Router.id.in_(router_ids), Router.ha)
        )
        for slot in (0, 1)
    )
    found.update(
        session.scalars(
            select(ApplianceState.appliance_id).where(ApplianceState.appliance_id.in_(members))
        )
    )
    return found


def ha_slot(appliance_id: str) -> int | None:
    """0 or 1 for an HA router's member, else None."""
    member = ha_member(appliance_id)
    return member[1] if member is not None else None


def sibling(appliance_id: str) -> str | None:
    """The other member of an HA router's pair, or None."""
    member = ha_member(appliance_id)
    return ha_member_id(member[0], 1 - member[1]) if member is not None else None
