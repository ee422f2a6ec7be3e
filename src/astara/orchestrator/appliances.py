"""What an appliance id stands for: a router's appliance (the router's id),
or a network's DHCP appliance (`dhcp-<network id>`, while the network has a
DHCP port, see `astara.api.dhcp`). The reconciler's keys are these ids."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.api.dhcp import dhcp_port
from astara.db.models import DHCP, ApplianceState, Port, Router, dhcp_network_id
from astara.drivers import dhcp as dhcp_driver
from astara.drivers import router as router_driver
from astara.drivers.appliance import AppliancePlan


def kind(appliance_id: str) -> str:
    """ "router" or "dhcp" (`ApplianceState.kind`)."""
    return "router" if dhcp_network_id(appliance_id) is None else "dhcp"


def subject(session: Session, appliance_id: str) -> tuple[str, Callable[[], AppliancePlan]] | None:
    """What an appliance is for, while it is wanted: its project and how to
    plan it. A router while it exists in the API (it may need no appliance:
    no ports, or down); a network's DHCP appliance while the network has a
    DHCP port. None: gone (its appliance, if any, is removed, then its
    record)."""
    network_id = dhcp_network_id(appliance_id)
    if network_id is None:
        router = session.get(Router, appliance_id)
        if router is None:
            return None
        return router.project_id, partial(router_driver.plan, session, router)
    port = dhcp_port(session, network_id)
    if port is None:
        return None
    return port.project_id, partial(dhcp_driver.plan, session, network_id)


def known(session: Session) -> set[str]:
    """Every appliance the database accounts for: routers, networks with a
    DHCP port, and the records of those not removed yet."""
    found = set(session.scalars(select(Router.id)))
    found.update(session.scalars(select(ApplianceState.appliance_id)))
    found.update(session.scalars(select(Port.device_id).where(Port.device_owner == DHCP)))
    return found
