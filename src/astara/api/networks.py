"""Neutron networks: `/v2.0/networks` (§3.1)."""

from __future__ import annotations

import uuid
from contextlib import closing
from datetime import datetime
from typing import Any

from orjson import Fragment
from sqlalchemy import ColumnElement, Select, String, cast, exists, func, literal, or_, select, true
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session, joinedload, selectinload

from astara.api import access, changes, dhcp, segments, sql_query, zones
from astara.api.attributes import (
    Attribute,
    Resource,
    bad_input,
    standard_attributes,
    to_bool,
    to_int,
    to_string,
)
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.api.settings import MIN_MTU, ApiSettings
from astara.db.models import ROUTER_GATEWAY, Network, Port, Subnet

IPV6_MIN_MTU = 1280  # RFC 8200


def _optional_int(name: str, value: Any) -> int | None:
    return None if value is None else to_int(name, value)


def _optional_string(name: str, value: Any) -> str | None:
    return None if value is None else to_string(segments.PHYSNET_MAX)(name, value)


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
        # net-mtu-writable: at most what the segment carries over the path MTU.
        Attribute("mtu", _optional_int, default=None),
        Attribute("port_security_enabled", to_bool, default=True, filter=False),
        Attribute(
            "availability_zone_hints",
            zones.names,
            default=[],
            allow_put=False,
            filter=False,
            sort=False,
        ),
        # Neutron's provider extension: set by admins on create, read by admins.
        *(
            Attribute(
                name,
                convert,
                default=None,
                admin_only=True,
                admin_visible=True,
                sort=False,
            )
            for name, convert in (
                (segments.NETWORK_TYPE, to_string(16)),
                (segments.PHYSICAL_NETWORK, _optional_string),
                (segments.SEGMENTATION_ID, _optional_int),
            )
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
        **segments.provider_view(network),
    }


def visible(network: Network, caller: Caller) -> bool:
    return (
        caller.is_admin
        or network.project_id == caller.project_id
        or network.shared
        or network.external
    )


def get(
    session: Session, caller: Caller, network_id: str, *, with_subnets: bool = False
) -> Network:
    """A network the caller sees; `with_subnets`: its subnets read with it,
    in the same statement (a port create reads them all)."""
    network = session.get(
        Network, network_id, options=[joinedload(Network.subnets)] if with_subnets else ()
    )
    if network is None or not visible(network, caller):
        raise NeutronError(404, "NetworkNotFound", f"Network {network_id} could not be found.")
    return network


def owned(session: Session, caller: Caller, network_id: str) -> Network:
    """A network the caller may change: its own, or any for an admin."""
    return access.changeable(get(session, caller, network_id), caller, "Network")


def visible_clause(caller: Caller) -> ColumnElement[bool]:
    """`visible` in SQL."""
    if caller.is_admin:
        return true()
    return or_(Network.project_id == caller.project_id, Network.shared, Network.external)


def _visible_rows(caller: Caller) -> Select[Network]:
    return select(Network).where(visible_clause(caller))


def _with_subnet(wanted: list[Any]) -> ColumnElement[bool]:
    return exists().where(Subnet.network_id == Network.id, Subnet.id.in_(wanted))


_views = sql_query.orm_views(view, selectinload(Network.subnets))


def _subnet_ids_json() -> Any:
    """A network's `subnets` (their ids, in `Network.subnets`' order) as
    JSON text, in PostgreSQL: what `view` shows, as orjson writes it."""

    def text(value: str) -> Any:
        return literal(value, String)

    ids = func.string_agg(
        cast(func.to_json(Subnet.id), String), aggregate_order_by(text(","), Subnet.created_at)
    )
    return (
        select(func.coalesce(text("[") + ids + text("]"), text("[]")))
        .where(Subnet.network_id == Network.id)
        .scalar_subquery()
    )


def listed(session: Session, statement: Select[Network]) -> list[dict[str, Any]]:
    """`view`s for a list's response: on PostgreSQL from the driver's rows
    (no ORM objects), in one statement, streamed (`sql_query.streamed`),
    the subnets' ids as JSON text the database wrote (`orjson.Fragment`);
    elsewhere `_views`."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return _views(session, statement)
    rows = sql_query.streamed(
        connection,
        statement.with_only_columns(
            Network.id,
            Network.project_id,
            Network.description,
            cast(Network.tags, String),
            sql_query.timestamp_text(Network.created_at),
            sql_query.timestamp_text(Network.updated_at),
            Network.revision_number,
            Network.name,
            Network.admin_state_up,
            Network.status,
            _subnet_ids_json(),
            Network.shared,
            Network.external,
            Network.mtu,
            Network.port_security_enabled,
            Network.network_type,
            Network.physical_network,
            Network.segmentation_id,
        ),
    )
    tags_view = sql_query.tags_view
    with sql_query.collector_paused(), closing(rows):
        return [
            {
                "id": network_id,
                "tenant_id": project_id,
                "project_id": project_id,
                "description": description,
                "tags": tags_view(tags),
                "created_at": created_at,
                "updated_at": updated_at,
                "revision_number": revision_number,
                "name": name,
                "admin_state_up": admin_state_up,
                "status": status,
                "subnets": Fragment(subnet_ids),
                "shared": shared,
                "router:external": external,
                "mtu": mtu,
                "port_security_enabled": port_security_enabled,
                "availability_zone_hints": (),
                "availability_zones": (),
                "ipv4_address_scope": None,
                "ipv6_address_scope": None,
                "l2_adjacency": True,
                "is_default": False,
                segments.NETWORK_TYPE: network_type,
                segments.PHYSICAL_NETWORK: physical_network,
                segments.SEGMENTATION_ID: segmentation_id,
            }
            for (
                network_id,
                project_id,
                description,
                tags,
                created_at,
                updated_at,
                revision_number,
                name,
                admin_state_up,
                status,
                subnet_ids,
                shared,
                external,
                mtu,
                port_security_enabled,
                network_type,
                physical_network,
                segmentation_id,
            ) in rows
        ]


LISTING = sql_query.Listing(
    resource=RESOURCE,
    model=Network,
    statement=_visible_rows,
    views=_views,
    listed=listed,
    columns={
        **sql_query.standard_columns(Network),
        "name": Network.name,
        "admin_state_up": Network.admin_state_up,
        "status": Network.status,
        "shared": Network.shared,
        "router:external": Network.external,
        "mtu": Network.mtu,
        "port_security_enabled": Network.port_security_enabled,
        segments.NETWORK_TYPE: Network.network_type,
        segments.PHYSICAL_NETWORK: Network.physical_network,
        segments.SEGMENTATION_ID: Network.segmentation_id,
    },
    filters={"subnets": _with_subnet},
)


def _check_mtu(mtu: int, maximum: int) -> None:
    if mtu > maximum:
        raise segments.invalid(f"Requested MTU is too big, maximum is {maximum}")
    if mtu < MIN_MTU:
        raise bad_input("mtu", f"'{mtu}' is smaller than the minimum of {MIN_MTU}")


def create(
    session: Session,
    caller: Caller,
    values: dict[str, Any],
    now: datetime,
    settings: ApiSettings | None = None,
) -> Network:
    """A network on a segment: a VNI allocated from the range unless an
    admin asked for a given one, or a flat physnet; its MTU what the segment
    carries (or a smaller one asked for)."""
    settings = settings or ApiSettings()
    if zones.check(session, values["availability_zone_hints"]):
        raise segments.invalid(
            "availability_zone_hints are not supported on networks: a network spans every"
            " host (its routers take hints)"
        )
    segment = segments.reserve(session, segments.requested(values), settings)
    maximum = settings.max_mtu(segment.network_type)
    if values["mtu"] is not None:
        _check_mtu(values["mtu"], maximum)
    network = Network(
        id=str(uuid.uuid4()),
        project_id=values["project_id"],
        name=values["name"],
        description=values["description"],
        admin_state_up=values["admin_state_up"],
        shared=values["shared"],
        external=values["router:external"],
        port_security_enabled=values["port_security_enabled"],
        mtu=values["mtu"] if values["mtu"] is not None else maximum,
        created_at=now,
        updated_at=now,
        revision_number=1,
    )
    segments.apply(network, segment)
    session.add(network)
    changes.record(session, "network", network, "create", now)
    return network


def update(
    session: Session,
    caller: Caller,
    network: Network,
    values: dict[str, Any],
    now: datetime,
    settings: ApiSettings | None = None,
) -> Network:
    settings = settings or ApiSettings()
    if any(name in values for name in segments.PROVIDER_ATTRIBUTES):
        raise segments.invalid("Plugin does not support updating provider attributes")
    if values.get("mtu") is None:
        values.pop("mtu", None)
    else:
        _check_mtu(values["mtu"], settings.max_mtu(network.network_type))
        if values["mtu"] < IPV6_MIN_MTU and any(s.ip_version == 6 for s in network.subnets):
            raise segments.invalid(
                f"network {network.id} has an IPv6 subnet: its MTU must be at least {IPV6_MIN_MTU}"
            )
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
