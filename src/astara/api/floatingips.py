"""Neutron floating IPs: `/v2.0/floatingips` (§3.5).

A floating IP is allocated on an external network (a `network:floatingip`
port holds the address) and associated with a fixed IPv4 address of a port
only when a router joins that port's subnet to that external network.
"""

from __future__ import annotations

import ipaddress
import uuid
from contextlib import closing
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, cast, select
from sqlalchemy.orm import Session

from astara.api import access, changes, networks, ports, routers, sql_query
from astara.api.attributes import Attribute, Resource, bad_input, standard_attributes, to_any
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.db.models import FloatingIp, Network, Port, Router, RouterPort, Subnet

OWNER = "network:floatingip"

RESOURCE = Resource(
    "floatingips",
    "floatingip",
    (
        *standard_attributes(),
        Attribute("floating_network_id", allow_put=False),
        Attribute("floating_ip_address", to_any, default=None, allow_put=False, admin_only=True),
        Attribute("subnet_id", to_any, default=None, allow_put=False, filter=False, sort=False),
        Attribute("port_id", to_any, default=None),
        Attribute("fixed_ip_address", to_any, default=None),
        Attribute("router_id", allow_post=False, allow_put=False),
        Attribute("status", allow_post=False, allow_put=False),
    ),
)


def view(floating: FloatingIp) -> dict[str, Any]:
    return {
        **changes.standard_view(floating),
        "floating_network_id": floating.floating_network_id,
        "floating_ip_address": floating.floating_ip_address,
        "port_id": floating.fixed_port_id,
        "fixed_ip_address": floating.fixed_ip_address,
        "router_id": floating.router_id,
        "status": floating.status,
        "port_forwardings": [],
    }


def not_found(floating_id: str) -> NeutronError:
    return NeutronError(404, "FloatingIPNotFound", f"Floating IP {floating_id} could not be found")


def get(session: Session, caller: Caller, floating_id: str) -> FloatingIp:
    return access.project_row(session, caller, FloatingIp, floating_id, not_found)


owned = get


_views = sql_query.orm_views(view)


def listed(session: Session, statement: Select[FloatingIp]) -> list[dict[str, Any]]:
    """`view`s for a list's response: on PostgreSQL from the driver's rows
    (no ORM objects), streamed (`sql_query.streamed`), the times formatted
    and the tags given as text by the database; elsewhere `_views`."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return _views(session, statement)
    rows = sql_query.streamed(
        connection,
        statement.with_only_columns(
            FloatingIp.id,
            FloatingIp.project_id,
            FloatingIp.description,
            cast(FloatingIp.tags, String),
            sql_query.timestamp_text(FloatingIp.created_at),
            sql_query.timestamp_text(FloatingIp.updated_at),
            FloatingIp.revision_number,
            FloatingIp.floating_network_id,
            FloatingIp.floating_ip_address,
            FloatingIp.fixed_port_id,
            FloatingIp.fixed_ip_address,
            FloatingIp.router_id,
            FloatingIp.status,
        ),
    )
    tags_view = sql_query.tags_view
    with sql_query.collector_paused(), closing(rows):
        return [
            {
                "id": floating_id,
                "tenant_id": project_id,
                "project_id": project_id,
                "description": description,
                "tags": tags_view(tags),
                "created_at": created_at,
                "updated_at": updated_at,
                "revision_number": revision_number,
                "floating_network_id": network_id,
                "floating_ip_address": address,
                "port_id": port_id,
                "fixed_ip_address": fixed_ip_address,
                "router_id": router_id,
                "status": status,
                "port_forwardings": (),
            }
            for (
                floating_id,
                project_id,
                description,
                tags,
                created_at,
                updated_at,
                revision_number,
                network_id,
                address,
                port_id,
                fixed_ip_address,
                router_id,
                status,
            ) in rows
        ]


LISTING = sql_query.Listing(
    resource=RESOURCE,
    model=FloatingIp,
    statement=access.project_rows(FloatingIp),
    views=_views,
    listed=listed,
    columns={
        **sql_query.standard_columns(FloatingIp),
        "floating_network_id": FloatingIp.floating_network_id,
        "floating_ip_address": FloatingIp.floating_ip_address,
        "port_id": FloatingIp.fixed_port_id,
        "fixed_ip_address": FloatingIp.fixed_ip_address,
        "router_id": FloatingIp.router_id,
        "status": FloatingIp.status,
    },
)


def _associate(
    session: Session,
    caller: Caller,
    floating: FloatingIp,
    port_id: Any,
    fixed: Any,
    now: datetime,
) -> None:
    """Point the floating IP at a port's fixed IPv4, through the router that
    joins the port's subnet to the floating IP's network (§3.5)."""
    if port_id is None:
        if fixed is not None:
            raise NeutronError(
                400,
                "BadRequest",
                "Bad floatingip request: fixed_ip_address cannot be specified without a port_id.",
            )
        changes.mark_build(session, floating.router_id, now)
        floating.fixed_port_id = floating.fixed_ip_address = floating.router_id = None
        return
    port = ports.get(session, caller, str(port_id))
    if not caller.is_admin and port.project_id != caller.project_id:
        raise NeutronError(
            400,
            "BadRequest",
            "Bad floatingip request: Cannot process floating IP association with Port"
            f" {port.id}, since that port is owned by a different project.",
        )
    v4 = [a for a in port.fixed_ips if ipaddress.ip_address(a.ip_address).version == 4]
    if fixed is not None:
        chosen = next((a for a in v4 if a.ip_address == str(fixed)), None)
        if chosen is None:
            raise NeutronError(
                400,
                "BadRequest",
                f"Bad floatingip request: Port {port.id} does not have fixed ip {fixed}.",
            )
    elif not v4:
        raise NeutronError(
            400,
            "BadRequest",
            f"Bad floatingip request: Port {port.id} does not have any IPv4 address.",
        )
    elif len(v4) > 1:
        raise NeutronError(
            400,
            "BadRequest",
            f"Bad floatingip request: Port {port.id} has multiple fixed IPv4 addresses."
            " Must provide a specific IPv4 address when assigning a floating IP.",
        )
    else:
        chosen = v4[0]
    router = _router_between(session, chosen.subnet_id, floating.floating_network_id)
    if router is None:
        raise NeutronError(
            404,
            "ExternalGatewayForFloatingIPNotFound",
            f"External network {floating.floating_network_id} is not reachable from subnet"
            f" {chosen.subnet_id}.  "
            f"Therefore, cannot associate Port {port.id} with a Floating IP.",
        )
    taken = session.scalar(
        select(FloatingIp).where(
            FloatingIp.fixed_port_id == port.id,
            FloatingIp.fixed_ip_address == chosen.ip_address,
            FloatingIp.floating_network_id == floating.floating_network_id,
            FloatingIp.id != floating.id,
        )
    )
    if taken is not None:
        raise NeutronError(
            409,
            "FloatingIPPortAlreadyAssociated",
            f"Cannot associate floating IP {floating.floating_ip_address} ({floating.id})"
            f" with port {port.id} using fixed IP {chosen.ip_address}, as that fixed IP"
            " already has a floating IP on external "
            f"network {floating.floating_network_id}.",
        )
    changes.mark_build(session, floating.router_id, now)
    floating.fixed_port_id, floating.fixed_ip_address, floating.router_id = (
        port.id,
        chosen.ip_address,
        router.id,
    )
    changes.mark_build(session, router.id, now)


def _router_between(session: Session, subnet_id: str, external_network_id: str) -> Router | None:
    """A router with an interface on the subnet and its gateway on the network;
    the one holding the subnet's gateway IP wins when there are several."""
    candidates = []
    for router in session.scalars(select(Router).where(Router.gateway_port_id.is_not(None))):
        gateway = session.get(Port, router.gateway_port_id)
        if gateway is None or gateway.network_id != external_network_id:
            continue
        query = (
            select(Port)
            .join(RouterPort, RouterPort.port_id == Port.id)
            .where(RouterPort.router_id == router.id, RouterPort.port_type == routers.INTERFACE)
        )
        for interface in session.scalars(query):
            for allocation in interface.fixed_ips:
                if allocation.subnet_id == subnet_id:
                    candidates.append((allocation.ip_address, router))
    if not candidates:
        return None
    subnet = session.get(Subnet, subnet_id)
    gateway_ip = subnet.gateway_ip if subnet is not None else None
    candidates.sort(key=lambda candidate: candidate[0] != gateway_ip)
    return candidates[0][1]


def create(session: Session, caller: Caller, values: dict[str, Any], now: datetime) -> FloatingIp:
    network = session.get(Network, values["floating_network_id"])
    if network is None or not networks.visible(network, caller):
        raise NeutronError(
            404, "NetworkNotFound", f"Network {values['floating_network_id']} could not be found."
        )
    if not network.external:
        raise NeutronError(
            400,
            "BadRequest",
            f"Bad floatingip request: Network {network.id} is not a valid external network.",
        )
    v4 = [s for s in network.subnets if s.ip_version == 4]
    if values["subnet_id"] is not None:
        v4 = [s for s in v4 if s.id == values["subnet_id"]]
        if not v4:
            raise NeutronError(
                400,
                "BadRequest",
                f"Bad floatingip request: Subnet {values['subnet_id']} is not an IPv4 subnet"
                f" of network {network.id}.",
            )
    if not v4:
        raise NeutronError(
            400,
            "BadRequest",
            f"Bad floatingip request: Network {network.id} does not contain any IPv4 subnet.",
        )
    floating = FloatingIp(
        id=str(uuid.uuid4()),
        project_id=values["project_id"],
        description=values["description"],
        floating_network_id=network.id,
        status="DOWN",
        created_at=now,
        updated_at=now,
        revision_number=1,
    )
    holder = Port(
        id=str(uuid.uuid4()),
        project_id="",
        network_id=network.id,
        mac_address=ports.free_mac(session, network),
        device_id=floating.id,
        device_owner=OWNER,
        status="N/A",
        created_at=now,
        updated_at=now,
        revision_number=1,
    )
    wanted = values["floating_ip_address"]
    request = [{"ip_address": str(wanted)}] if wanted is not None else None
    if request is None:
        holder.fixed_ips = []
        for subnet in v4:
            try:
                chosen = ports.allocate(
                    session, network, holder.mac_address, [{"subnet_id": subnet.id}]
                )
            except NeutronError as full:
                if full.kind != ports.EXHAUSTED:
                    raise
                chosen = []  # this subnet is full: the next one
            if chosen:
                holder.fixed_ips = chosen
                break
        if not holder.fixed_ips:
            raise NeutronError(
                400,
                "ExternalIpAddressExhausted",
                f"Unable to find any IP address on external network {network.id}.",
            )
    else:
        try:
            ipaddress.IPv4Address(str(wanted))
        except ValueError:
            raise bad_input(
                "floating_ip_address", f"'{wanted}' is not a valid IPv4 address"
            ) from None
        holder.fixed_ips = ports.allocate(session, network, holder.mac_address, request)
    session.add(holder)
    session.flush()  # the port row first: the floating IP refers to it
    floating.floating_port_id = holder.id
    floating.floating_ip_address = holder.fixed_ips[0].ip_address
    session.add(floating)
    _associate(session, caller, floating, values["port_id"], values["fixed_ip_address"], now)
    changes.record(session, "floatingip", floating, "create", now)
    return floating


def update(
    session: Session, caller: Caller, floating: FloatingIp, values: dict[str, Any], now: datetime
) -> FloatingIp:
    if "port_id" in values:
        port_id, fixed = values.pop("port_id"), values.pop("fixed_ip_address", None)
        _associate(session, caller, floating, port_id, fixed, now)
    elif "fixed_ip_address" in values:
        fixed = values.pop("fixed_ip_address")
        _associate(session, caller, floating, floating.fixed_port_id, fixed, now)
    changes.update(session, "floatingip", floating, values, now)
    return floating


def delete(session: Session, caller: Caller, floating: FloatingIp, now: datetime) -> None:
    holder = session.get(Port, floating.floating_port_id)
    router_id = floating.router_id
    changes.mark_build(session, router_id, now)
    session.delete(floating)
    session.flush()
    if holder is not None:
        session.delete(holder)
    changes.record(session, "floatingip", floating, "delete", now, {"router_id": router_id})
