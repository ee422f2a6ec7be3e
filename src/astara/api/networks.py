"""Neutron networks: `/v2.0/networks` (§3.1)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.api import access, changes, dhcp, zones
from astara.api.attributes import Attribute, Resource, standard_attributes, to_bool, to_int
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.db.models import ROUTER_GATEWAY, Network, Port

RESOURCE = Resource(
    "networks",
    "network",
    (
        *standard_attributes(),
        Attribute("name", default=""),
        Attribute("admin_state_up", to_bool, default=True),
        Attribute("status", allow_post=False, allow_put=False),
        Attribute("subnets", allow_post=False, allow_put=False, sort=False),
        Attribute("shared", to_bool, default=False, admin_only=True),
        Attribute("router:external", to_bool, default=False, admin_only=True),
        Attribute("mtu", to_int, allow_post=False, allow_put=False),
        Attribute("port_security_enabled", to_bool, default=True, filter=False),
        Attribute(
            "availability_zone_hints",
            zones.hints,
            default=[],
            allow_put=False,
            filter=False,
            sort=False,
        ),
    ),
)


def view(network: Network) -> dict[str, Any]:
    return {
        **changes.standard_view(network),
        "name": network.name,
        "admin_state_up": network.admin_state_up,
        "status": network.status,
        "subnets": [s.id for s in network.subnets],
        "shared": network.shared,
        "router:external": network.external,
        "mtu": network.mtu,
        "port_security_enabled": network.port_security_enabled,
        "availability_zone_hints": [],
        "availability_zones": [],
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "l2_adjacency": True,
        "is_default": False,
    }


def visible(network: Network, caller: Caller) -> bool:
    return (
        caller.is_admin
        or network.project_id == caller.project_id
        or network.shared
        or network.external
    )


def get(session: Session, caller: Caller, network_id: str) -> Network:
    network = session.get(Network, network_id)
    if network is None or not visible(network, caller):
        raise NeutronError(404, "NetworkNotFound", f"Network {network_id} could not be found.")
    return network


def owned(session: Session, caller: Caller, network_id: str) -> Network:
    """A network the caller may change: its own, or any for an admin."""
    return access.changeable(get(session, caller, network_id), caller, "Network")


def listing(session: Session, caller: Caller) -> list[dict[str, Any]]:
    return [view(n) for n in session.scalars(select(Network)) if visible(n, caller)]


def create(session: Session, caller: Caller, values: dict[str, Any], now: datetime) -> Network:
    network = Network(
        id=str(uuid.uuid4()),
        project_id=values["project_id"],
        name=values["name"],
        description=values["description"],
        admin_state_up=values["admin_state_up"],
        shared=values["shared"],
        external=values["router:external"],
        port_security_enabled=values["port_security_enabled"],
        created_at=now,
        updated_at=now,
        revision_number=1,
    )
    session.add(network)
    changes.record(session, "network", network, "create", now)
    return network


def update(
    session: Session, caller: Caller, network: Network, values: dict[str, Any], now: datetime
) -> Network:
    if values.get("router:external") is False and network.external:
        gateways = session.scalar(
            select(Port.id).where(
                Port.network_id == network.id, Port.device_owner == ROUTER_GATEWAY
            )
        )
        if gateways is not None:
            raise NeutronError(
                409,
                "ExternalNetworkInUse",
                f"External network {network.id} cannot be updated to be made non-external,"
                " since it has existing gateway ports.",
            )
    if values.get("shared") is False and network.shared:
        others = session.scalar(
            select(Port.id).where(
                Port.network_id == network.id,
                Port.project_id != network.project_id,
                Port.project_id != "",  # the server's own ports (gateways, floating IPs)
            )
        )
        if others is not None:
            raise NeutronError(
                409,
                "InvalidSharedSetting",
                f"Unable to reconfigure sharing settings for network {network.id}."
                " Multiple projects are using it.",
            )
    changes.update(
        session, "network", network, values, now, columns={"router:external": "external"}
    )
    return network


def delete(session: Session, caller: Caller, network: Network, now: datetime) -> None:
    dhcp.sync(session, network.id, now, leaving=[s.id for s in network.subnets])
    ports = session.scalars(select(Port.id).where(Port.network_id == network.id)).all()
    if ports:
        raise NeutronError(
            409,
            "NetworkInUse",
            f"Unable to complete operation on network {network.id}. There are one or more ports "
            f"still in use on the network, id for these ports is: {', '.join(ports)}.",
        )
    for subnet in list(network.subnets):
        session.delete(subnet)
    session.delete(network)
    changes.record(session, "network", network, "delete", now)
