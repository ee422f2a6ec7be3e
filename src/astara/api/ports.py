"""Neutron ports: `/v2.0/ports` (§3.3), with fixed-IP allocation and MACs.

Allocation picks a random address among the first free ones (`ipam`) and
relies on the database's unique (subnet, address) and (network, MAC)
constraints: a request that loses a race gets an IntegrityError and the API
layer runs it again from the start, so two ports never share an address.
"""

from __future__ import annotations

import ipaddress
import json
import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

from orjson import Fragment
from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    String,
    any_,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql import Executable

from astara import ipam
from astara.api import access, changes, dhcp, networks, port_security, sql_query
from astara.api.attributes import (
    Attribute,
    Resource,
    bad_input,
    standard_attributes,
    to_any,
    to_bool,
    to_string,
)
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.api.query import FIXED_IP_KEYS
from astara.db.models import (
    DHCP,
    ROUTER_HA_INTERFACE,
    Base,
    FloatingIp,
    Host,
    IpAllocation,
    LoadBalancer,
    Network,
    Port,
    PortBinding,
    RouterPort,
    Subnet,
)
from astara.drivers import loadbalancer as lb_driver
from astara.model import rules

# A load balancer's VIP port (Octavia's owner name).
# (`device_owner` `Octavia`, `device_id` `lb-<load balancer id>`: the driver's words)
LB_OWNER = lb_driver.OWNER
SERVICE_OWNERS = (
    "network:router_interface",
    "network:router_gateway",
    "network:floatingip",
    ROUTER_HA_INTERFACE,
    LB_OWNER,
)
# Service ports whose addresses, owner and device change with their service
# only, never through the port API while it holds them: a load balancer's,
# and an HA router's members' on its HA network (`api.ha`).
PINNED_OWNERS = (LB_OWNER, ROUTER_HA_INTERFACE)
_random = random.SystemRandom()
# Random candidates checked per query, a few, then more: each costs the
# database an index lookup, and in a subnet a sixth full all 8 of the first
# query are taken about once in 1.7 million creates.
PROBES = (8, 64)
# MACs: 2**24 per network, so a few suffice until a network holds millions.
MAC_PROBES = 4


def _mac(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise bad_input(name, f"'{value}' is not a valid MAC address")
    try:
        return rules.mac_address(value)
    except ValueError as reason:
        raise bad_input(name, f"'{value}' {reason}") from None


def _device(name: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 255:
        raise bad_input(name, f"'{value}' is not a valid string")
    return value


RESOURCE = Resource(
    "ports",
    "port",
    (
        *standard_attributes(),
        Attribute("name", default=""),
        Attribute("network_id", allow_put=False),
        Attribute("admin_state_up", to_bool, default=True),
        Attribute("mac_address", _mac, default=None),
        Attribute("fixed_ips", to_any, default=None, sort=False),
        Attribute("device_id", _device, default=""),
        Attribute("device_owner", _device, default=""),
        Attribute("status", allow_post=False, allow_put=False),
        # Not given: the network's (§3.3).
        Attribute("port_security_enabled", to_bool, default=None),
        # Not given: the project's default group (`port_security`).
        Attribute(
            "security_groups",
            port_security.GROUPS,
            default=None,
            sort=False,
            filter_convert=to_string(),
        ),
        Attribute(
            "allowed_address_pairs",
            port_security.address_pairs,
            default=None,
            filter=False,
            sort=False,
        ),
        # Where `astara port plug` bound it; set by that command, not through Neutron's API.
        Attribute(
            "binding:host_id", allow_post=False, allow_put=False, admin_visible=True, sort=False
        ),
    ),
)


def _local_host(session: Session) -> str:
    """The local host's name: the agent `astara serve` runs, on a unix socket."""
    local = session.scalar(
        select(Host.name).where(Host.address.startswith("unix:")).order_by(Host.name).limit(1)
    )
    return local or ""


def host_id(session: Session, port_id: str) -> str:
    """`binding:host_id`: the host the port is plugged on; the local host
    for a binding that names none; "" while it is not plugged (Neutron's default)."""
    binding = session.get(PortBinding, port_id)
    if binding is None:
        return ""
    return binding.host if binding.host is not None else _local_host(session)


# What a create wrote of a new port's security, for its answer: the port is
# written by Core inserts (`insert_new`) and stays out of the session.
_CREATED: WeakKeyDictionary[Port, port_security.Security] = WeakKeyDictionary()


def view(port: Port) -> dict[str, Any]:
    session = Session.object_session(port)
    fixed_ips = [{"subnet_id": a.subnet_id, "ip_address": a.ip_address} for a in port.fixed_ips]
    if session is None:
        security = _CREATED.get(port) or port_security.Security([], [])
        groups, pairs = security.groups, security.pairs
    else:
        groups = port_security.groups_of(session, [port.id]).get(port.id, [])
        pairs = port_security.pairs_of(session, [port.id]).get(port.id, [])
    bound_to = host_id(session, port.id) if session is not None else ""
    return _view(port, fixed_ips, bound_to, sorted(groups), pairs)


def _view(
    port: Any,
    fixed_ips: list[dict[str, str]],
    bound_to: str,
    groups: list[str],
    pairs: list[dict[str, str]],
) -> dict[str, Any]:
    """A port's view from its row (an ORM object or a plain row)."""
    return {
        **changes.standard_view(port),
        "name": port.name,
        "network_id": port.network_id,
        "admin_state_up": port.admin_state_up,
        "mac_address": port.mac_address,
        "fixed_ips": fixed_ips,
        "device_id": port.device_id,
        "device_owner": port.device_owner,
        "status": port.status,
        "security_groups": groups,
        "port_security_enabled": port.port_security_enabled,
        "allowed_address_pairs": pairs,
        "extra_dhcp_opts": [],
        "binding:vnic_type": "normal",
        "binding:host_id": bound_to,
        "ip_allocation": "immediate",
    }


# What a list reads of each port (then its tags), in the order `views` unpacks.
_LISTED = (
    Port.id,
    Port.project_id,
    Port.description,
    Port.created_at,
    Port.updated_at,
    Port.revision_number,
    Port.name,
    Port.network_id,
    Port.admin_state_up,
    Port.mac_address,
    Port.device_id,
    Port.device_owner,
    Port.status,
    Port.port_security_enabled,
    PortBinding.port_id,
    PortBinding.host,
)


def _rows(connection: Connection, statement: Executable) -> Sequence[Any]:
    """The rows `statement` selects as plain tuples: on PostgreSQL straight
    from the driver (its values need no conversion: booleans, numbers and
    text come as they are), elsewhere through SQLAlchemy's result processing
    (SQLite's booleans and times are stored as numbers and text)."""
    result = connection.execute(statement)
    if connection.dialect.name == "postgresql":
        try:
            return result.cursor.fetchall()
        finally:
            result.close()
    return result.all()


def _time(column: Any, postgres: bool) -> Any:
    return sql_query.timestamp_text(column) if postgres else column


def views(session: Session, statement: Select[Port]) -> list[dict[str, Any]]:
    """`_views`, without cyclic garbage collection (`sql_query.collector_paused`)."""
    with sql_query.collector_paused():
        return _views(session, statement, encoded=False)


def listed(session: Session, statement: Select[Port]) -> list[dict[str, Any]]:
    """`views` for a list's response: on PostgreSQL each port's fixed IPs
    come in the ports' statement, as the JSON text the database built
    (`orjson.Fragment`), instead of a second statement and a dict per address."""
    with sql_query.collector_paused():
        return _views(session, statement, encoded=True)


def _fixed_ips_json() -> Any:
    """A port's `fixed_ips` as JSON text, in PostgreSQL: what `view` shows
    (in `position` order), as orjson writes it."""
    text, string = sql_query.sql_text, sql_query.json_string
    entry = (
        text('{"subnet_id":')
        + string(IpAllocation.subnet_id)
        + text(',"ip_address":')
        + string(IpAllocation.ip_address)
        + text("}")
    )
    return sql_query.json_array(entry, IpAllocation.position, IpAllocation.port_id == Port.id)


def _views(session: Session, statement: Select[Port], encoded: bool) -> list[dict[str, Any]]:
    """The views of the ports `statement` selects, in its order, from plain
    rows (no ORM objects: a list may hold 100,000 ports): the ports with
    their bindings, then their fixed IPs; the local host's name is read
    once, and only when a binding names none. On PostgreSQL and `encoded`
    (a list's response): one statement, streamed (`sql_query.streamed`),
    with the fixed IPs as JSON text and the host's name worked out in it.
    The tags come as the column's JSON text, decoded only when not empty
    (most are)."""
    # Through the connection: plain rows, without the ORM's result processing.
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    columns = list(_LISTED)
    columns[3:5] = [_time(Port.created_at, postgres), _time(Port.updated_at, postgres)]
    joined = statement.outerjoin(PortBinding, PortBinding.port_id == Port.id)
    found: list[dict[str, Any]] = []
    stamp = changes.timestamp
    if postgres and encoded:
        # One statement, streamed: the host's name and the fixed IPs' JSON in SQL.
        columns[-1] = _host_id()
        streamed = sql_query.streamed(
            connection,
            joined.with_only_columns(
                *columns,
                cast(Port.tags, String),
                _fixed_ips_json(),
                port_security.groups_json(),
                port_security.pairs_json(),
            ),
        )
        with closing(streamed):  # the cursor let go even if building fails
            _build(found, streamed, {}, _named, stamp, postgres, encoded=True)
        return found
    rows = _rows(
        connection,
        joined.with_only_columns(
            *columns, cast(Port.tags, String), literal(None), literal(None), literal(None)
        ),
    )
    if not rows:
        return []
    listed_ids = statement.with_only_columns(Port.id)
    groups = port_security.groups_of(session, listed_ids)
    pairs = port_security.pairs_of(session, listed_ids)
    fixed_ips: dict[str, list[dict[str, str]]] = {}
    addresses = _rows(
        connection,
        select(IpAllocation.port_id, IpAllocation.subnet_id, IpAllocation.ip_address)
        .where(IpAllocation.port_id.in_(statement.with_only_columns(Port.id)))
        .order_by(IpAllocation.port_id, IpAllocation.position),
    )
    for port_id, subnet_id, ip_address in addresses:
        held = fixed_ips.get(port_id)
        if held is None:
            fixed_ips[port_id] = [{"subnet_id": subnet_id, "ip_address": ip_address}]
        else:
            held.append({"subnet_id": subnet_id, "ip_address": ip_address})
    local: list[str] = []

    def bound_to(bound: Any, host: Any) -> str:
        if bound is None:
            return ""
        if host is not None:
            return str(host)
        if not local:
            local.append(_local_host(session))
        return local[0]

    _build(found, rows, fixed_ips, bound_to, stamp, postgres, security=(groups, pairs))
    return found


def _named(bound: Any, host: str) -> str:
    return host  # `_host_id`: the name, worked out in SQL


def _host_id() -> Any:
    """`binding:host_id` in SQL (as `host_id` gives it): "" for a port
    not plugged, else the binding's host or the local host's name."""
    local = (
        select(Host.name)
        .where(Host.address.startswith("unix:"))
        .order_by(Host.name)
        .limit(1)
        .scalar_subquery()
    )
    return case(
        (PortBinding.port_id.is_(None), literal("", String)),
        else_=func.coalesce(PortBinding.host, local, literal("", String)),
    )


def _build(
    found: list[dict[str, Any]],
    rows: Iterable[Any],
    fixed_ips: dict[str, list[dict[str, str]]],
    bound_to: Callable[[Any, Any], str],
    stamp: Callable[[Any], str],
    postgres: bool,
    encoded: bool = False,
    security: tuple[dict[str, list[str]], dict[str, list[dict[str, str]]]] = ({}, {}),
) -> None:
    """The views of `rows` appended to `found`. `encoded` (for a response
    alone): the fixed IPs are JSON text, the host's name is worked out, and
    the constant empty lists are one shared empty tuple (orjson writes it
    `[]`): fewer objects to make, and fewer for the garbage collector to
    track (a dict of atomic values and tuples is not). Otherwise the
    ports' groups and pairs come in `security`."""
    groups, pairs = security
    for (
        port_id,
        project_id,
        description,
        created_at,
        updated_at,
        revision_number,
        name,
        network_id,
        admin_state_up,
        mac_address,
        device_id,
        device_owner,
        status,
        port_security_enabled,
        bound,
        bound_host,
        tags,
        fixed_json,
        groups_json,
        pairs_json,
    ) in rows:
        found.append(
            {
                "id": port_id,
                "tenant_id": project_id,
                "project_id": project_id,
                "description": description,
                "tags": (
                    (() if encoded else [])
                    if tags is None or tags == "[]"
                    else sorted(json.loads(tags))
                ),
                "created_at": created_at if postgres else stamp(created_at),
                "updated_at": updated_at if postgres else stamp(updated_at),
                "revision_number": revision_number,
                "name": name,
                "network_id": network_id,
                "admin_state_up": admin_state_up,
                "mac_address": mac_address,
                "fixed_ips": (
                    fixed_ips.get(port_id, []) if fixed_json is None else Fragment(fixed_json)
                ),
                "device_id": device_id,
                "device_owner": device_owner,
                "status": status,
                "security_groups": (Fragment(groups_json) if encoded else groups.get(port_id, [])),
                "port_security_enabled": port_security_enabled,
                "allowed_address_pairs": (
                    Fragment(pairs_json) if encoded else pairs.get(port_id, [])
                ),
                "extra_dhcp_opts": () if encoded else [],
                "binding:vnic_type": "normal",
                "binding:host_id": bound_host if encoded else bound_to(bound, bound_host),
                "ip_allocation": "immediate",
            }
        )


def visible(port: Port, network: Network | None, caller: Caller) -> bool:
    return (
        caller.is_admin
        or port.project_id == caller.project_id
        or (network is not None and network.project_id == caller.project_id)
    )


def get(session: Session, caller: Caller, port_id: str) -> Port:
    port = session.get(Port, port_id)
    if port is None or not visible(port, session.get(Network, port.network_id), caller):
        raise NeutronError(404, "PortNotFound", f"Port {port_id} could not be found.")
    return port


def owned(session: Session, caller: Caller, port_id: str) -> Port:
    return access.changeable(get(session, caller, port_id), caller, "Port")


def _visible_rows(caller: Caller) -> Select[Port]:
    statement = select(Port)
    if caller.is_admin:
        return statement
    own_networks = select(Network.id).where(Network.project_id == caller.project_id)
    return statement.where(
        or_(
            Port.project_id == caller.project_id,
            sql_query.in_subquery(Port.network_id, own_networks),
        )
    )


def _with_fixed_ip(member: str) -> Callable[[list[Any]], ColumnElement[bool]]:
    """`fixed_ips.<member>`: some fixed IP of the port has one of the values."""
    column = getattr(IpAllocation, member)

    def clause(wanted: list[Any]) -> ColumnElement[bool]:
        return exists().where(IpAllocation.port_id == Port.id, column.in_(wanted))

    return clause


LISTING = sql_query.Listing(
    resource=RESOURCE,
    model=Port,
    statement=_visible_rows,
    views=views,
    listed=listed,
    columns={
        **sql_query.standard_columns(Port),
        "name": Port.name,
        "network_id": Port.network_id,
        "admin_state_up": Port.admin_state_up,
        "mac_address": Port.mac_address,
        "device_id": Port.device_id,
        "device_owner": Port.device_owner,
        "status": Port.status,
        "port_security_enabled": Port.port_security_enabled,
    },
    filters={
        **{f"fixed_ips.{member}": _with_fixed_ip(member) for member in FIXED_IP_KEYS},
        "security_groups": port_security.with_group,
    },
)


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _among(column: InstrumentedAttribute[str], postgres: bool) -> ColumnElement[bool]:
    """`column` is one of the `candidates` parameter's values: on PostgreSQL
    `= ANY(array)`, one parameter (an IN list is rendered anew, value by
    value, for each execution), elsewhere an IN list."""
    if postgres:
        return column == any_(bindparam("candidates", type_=ARRAY(String)))
    return column.in_(bindparam("candidates", expanding=True))


# Which of the candidates are taken: built once, by backend (see `_among`).
_TAKEN_ADDRESSES = {
    postgres: select(IpAllocation.ip_address).where(
        IpAllocation.subnet_id == bindparam("subnet_id"),
        _among(IpAllocation.ip_address, postgres),
    )
    for postgres in (False, True)
}
_TAKEN_MACS = {
    postgres: select(Port.mac_address).where(
        Port.network_id == bindparam("network_id"), _among(Port.mac_address, postgres)
    )
    for postgres in (False, True)
}


def _used(session: Session, subnet_id: str) -> set[ipam.IPAddress]:
    rows = session.scalars(
        select(IpAllocation.ip_address).where(IpAllocation.subnet_id == subnet_id)
    )
    return {ipaddress.ip_address(a) for a in rows}


def _free(session: Session, subnet: Subnet) -> ipam.IPAddress | None:
    """A free address: first a few random ones checked in one query (cheap
    however many ports the subnet has), then more, then, for a nearly full
    subnet, an exact scan of everything in use."""
    cidr = ipaddress.ip_network(subnet.cidr)
    pools = ipam.parse_pools(cidr, subnet.allocation_pools)
    size = sum(pool.size for pool in pools)
    for count in PROBES:
        probes = ipam.sample_addresses(pools, _random, count)
        taken = set(
            session.scalars(
                _TAKEN_ADDRESSES[_postgres(session)],
                {"subnet_id": subnet.id, "candidates": [str(a) for a in probes]},
            )
        )
        free = [a for a in probes if str(a) not in taken]
        if free:
            return _random.choice(free)
        if size <= count:  # that draw was every address of the pools
            return None
    return ipam.choose_address(pools, _used(session, subnet.id), _random)


def auto_address(subnet: Subnet) -> bool:
    """SLAAC and DHCPv6-stateless subnets: every port's address is its EUI-64."""
    return subnet.ip_version == 6 and (subnet.ipv6_address_mode or subnet.ipv6_ra_mode) in (
        "slaac",
        "dhcpv6-stateless",
    )


def has_free(session: Session, subnet: Subnet) -> bool:
    return _free(session, subnet) is not None


EXHAUSTED = "IpAddressGenerationFailure"


def _exhausted(network: Network) -> NeutronError:
    return NeutronError(
        409,
        EXHAUSTED,
        f"No more IP addresses available on network {network.id}.",
    )


def allocate(
    session: Session,
    network: Network,
    mac: str,
    requested: Any,
    kept: list[IpAllocation] | None = None,
) -> list[IpAllocation]:
    """The port's fixed IPs: Neutron's defaults when nothing is asked, else
    exactly the requested entries (`kept` are a port's current allocations)."""
    subnets = sorted(network.subnets, key=lambda s: s.created_at)
    by_id = {s.id: s for s in subnets}
    if requested is None:
        chosen: list[tuple[Subnet, ipam.IPAddress]] = []
        for subnet in (s for s in subnets if s.ip_version == 4):
            address = _free(session, subnet)
            if address is not None:
                chosen.append((subnet, address))
                break
        else:
            if any(s.ip_version == 4 for s in subnets):
                raise _exhausted(network)
        stateful = [s for s in subnets if s.ip_version == 6 and not auto_address(s)]
        for subnet in stateful:
            address = _free(session, subnet)
            if address is not None:
                chosen.append((subnet, address))
                break
        else:
            if stateful:
                raise _exhausted(network)
        for subnet in (s for s in subnets if s.ip_version == 6 and auto_address(s)):
            chosen.append((subnet, ipam.eui64(ipaddress.IPv6Network(subnet.cidr), mac)))
        return [_allocation(s, a, i) for i, (s, a) in enumerate(chosen)]
    if not isinstance(requested, list):
        raise bad_input("fixed_ips", f"'{requested}' is not a list")
    current = {(a.subnet_id, a.ip_address): a for a in (kept or [])}
    allocations: list[IpAllocation] = []
    seen: set[str] = set()
    for index, entry in enumerate(requested):
        if (
            not isinstance(entry, dict)
            or not set(entry) <= {"subnet_id", "ip_address"}
            or not entry
        ):
            raise bad_input("fixed_ips", f"'{entry}' is not a subnet_id and/or ip_address")
        subnet_id, text = entry.get("subnet_id"), entry.get("ip_address")
        for key, value in (("subnet_id", subnet_id), ("ip_address", text)):
            if value is not None and not isinstance(value, str):
                raise bad_input("fixed_ips", f"{key} '{value}' is not a string")
        if subnet_id is not None and subnet_id not in by_id:
            if session.get(Subnet, subnet_id) is None:
                raise NeutronError(404, "SubnetNotFound", f"Subnet {subnet_id} could not be found.")
            raise bad_input("fixed_ips", f"subnet {subnet_id} is not on network {network.id}")
        address = None
        if text is not None:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                raise bad_input("fixed_ips", f"'{text}' is not a valid IP address") from None
            holder = next((s for s in subnets if address in ipaddress.ip_network(s.cidr)), None)
            if holder is None or (subnet_id is not None and holder.id != subnet_id):
                raise NeutronError(
                    400,
                    "InvalidIpForNetwork",
                    f"IP address {text} is not a valid IP for any of the subnets"
                    " on the specified network.",
                )
            subnet_id = holder.id
            cidr = ipaddress.ip_network(holder.cidr)
            if (
                cidr.version == 4
                and cidr.prefixlen <= 30
                and address in (cidr.network_address, cidr.broadcast_address)
            ):
                raise NeutronError(
                    400,
                    "InvalidIpForSubnet",
                    f"IP address {text} is not a valid IP for the specified subnet.",
                )
        assert subnet_id is not None
        subnet = by_id[subnet_id]
        if address is None:
            existing = next((a for (s, _), a in current.items() if s == subnet_id), None)
            if existing is not None:
                address = ipaddress.ip_address(existing.ip_address)
            elif auto_address(subnet):
                address = ipam.eui64(ipaddress.IPv6Network(subnet.cidr), mac)
            else:
                address = _free(session, subnet)
                if address is None:
                    raise _exhausted(network)
        elif (subnet_id, str(address)) not in current and address in _used(session, subnet_id):
            raise NeutronError(
                409,
                "IpAddressAlreadyAllocated",
                f"IP address {address} already allocated in subnet {subnet_id}",
            )
        if str(address) in seen:
            raise bad_input("fixed_ips", f"Duplicate IP address '{address}'")
        seen.add(str(address))
        allocations.append(_allocation(subnet, address, index))
    return allocations


def _allocation(subnet: Subnet, address: ipam.IPAddress, position: int) -> IpAllocation:
    return IpAllocation(
        subnet_id=subnet.id,
        network_id=subnet.network_id,
        ip_address=str(address),
        position=position,
    )


def free_mac(session: Session, network: Network) -> str:
    """A MAC no port on the network has: random ones, checked in one query."""
    for _ in range(8):
        macs = {ipam.generate_mac(_random) for _ in range(MAC_PROBES)}
        taken = set(
            session.scalars(
                _TAKEN_MACS[_postgres(session)],
                {"network_id": network.id, "candidates": sorted(macs)},
            )
        )
        if macs - taken:
            return sorted(macs - taken)[0]
    raise NeutronError(
        409,
        "MacAddressGenerationFailure",
        f"Unable to generate unique mac on network {network.id}.",
    )


def _check_mac(session: Session, network: Network, mac: str, port_id: str | None = None) -> None:
    holder = session.scalar(
        select(Port.id).where(Port.network_id == network.id, Port.mac_address == mac)
    )
    if holder is not None and holder != port_id:
        raise NeutronError(
            409,
            "MacAddressInUse",
            f"Unable to complete operation for network {network.id}."
            f" The mac address {mac} is in use.",
        )


def _may_choose(caller: Caller, network: Network, values: dict[str, Any], action: str) -> None:
    """Only an admin or the network's owner picks a port's MAC or address on
    it (on a shared network, a chosen gateway IP would block its owner), or
    makes it a `network:*` port, which security groups do not apply to
    (Neutron's `network_device` policy, §3.3)."""
    if caller.is_admin:
        return
    if values.get("device_owner") == LB_OWNER:
        # A load balancer's ports are made by the load balancer: a port that
        # said it was one would join another project's appliance.
        raise access.forbidden(f"rule:{action}_port:device_owner")
    if network.project_id == caller.project_id:
        return
    owner = values.get("device_owner")
    if isinstance(owner, str) and owner.startswith("network:"):
        raise access.forbidden(f"rule:{action}_port:device_owner")
    if values.get("mac_address") is not None:
        raise access.forbidden(f"rule:{action}_port:mac_address")
    requested = values.get("fixed_ips")
    if isinstance(requested, list) and any(
        isinstance(entry, dict) and entry.get("ip_address") is not None for entry in requested
    ):
        raise access.forbidden(f"rule:{action}_port:fixed_ips:ip_address")


def _not_the_servers_own(values: dict[str, Any], current: str | None = None) -> None:
    """A network's DHCP port is made and removed by the server alone
    (`api.dhcp`): no caller makes a port one, or one into another kind; that
    would dodge the port quota and could stand in for the network's DHCP."""
    owner = values.get("device_owner")
    if owner is not None and (owner == DHCP) != (current == DHCP):
        raise NeutronError(
            403,
            "PolicyNotAuthorized",
            f"(rule:device_owner) is disallowed by policy: {DHCP} ports are the server's own",
        )


def create(session: Session, caller: Caller, values: dict[str, Any], now: datetime) -> Port:
    _not_the_servers_own(values)
    network = networks.get(session, caller, values["network_id"], with_subnets=True)
    if not caller.is_admin and network.project_id != caller.project_id and not network.shared:
        raise NeutronError(404, "NetworkNotFound", f"Network {network.id} could not be found.")
    _may_choose(caller, network, values, "create")
    mac = values["mac_address"]
    if mac is None:
        mac = free_mac(session, network)
    else:
        _check_mac(session, network, mac)
    port = Port(
        id=str(uuid.uuid4()),
        project_id=values["project_id"],
        network_id=network.id,
        name=values["name"],
        description=values["description"],
        admin_state_up=values["admin_state_up"],
        mac_address=mac,
        device_id=values["device_id"],
        device_owner=values["device_owner"],
        port_security_enabled=(
            network.port_security_enabled
            if values["port_security_enabled"] is None
            else values["port_security_enabled"]
        ),
        status="DOWN",
        created_at=now,
        updated_at=now,
        revision_number=1,
        tags=[],
    )
    port.fixed_ips = allocate(session, network, mac, values["fixed_ips"])
    security = port_security.for_new_port(session, port, values)
    insert_new(session, port)
    port_security.write(session, port.id, security)
    _CREATED[port] = security
    changes.record(session, "port", port, "create", now)
    dhcp.sync(session, network.id, now)
    return port


# Core inserts into the tables, built once (see `insert_new`).
_INSERT_PORT = insert(Base.metadata.tables[Port.__tablename__])
_INSERT_ADDRESSES = insert(Base.metadata.tables[IpAllocation.__tablename__])
_PORT_COLUMNS = tuple(column.key for column in Port.__table__.columns)
_ADDRESS_COLUMNS = tuple(column.key for column in IpAllocation.__table__.columns)


def insert_new(session: Session, port: Port) -> None:
    """Write a new port and its fixed IPs (`port` with every column set, not
    in the session) by two Core inserts, at once: the unit of work's
    bookkeeping was most of a create's cost. `port` stays out of the
    session, a plain record of what was written, for the answer."""
    session.execute(_INSERT_PORT, {key: getattr(port, key) for key in _PORT_COLUMNS})
    if port.fixed_ips:
        session.execute(
            _INSERT_ADDRESSES,
            [
                {key: getattr(allocation, key) for key in _ADDRESS_COLUMNS} | {"port_id": port.id}
                for allocation in port.fixed_ips
            ],
        )


def update(
    session: Session, caller: Caller, port: Port, values: dict[str, Any], now: datetime
) -> Port:
    _not_the_servers_own(values, port.device_owner)
    network = session.get(Network, port.network_id)
    assert network is not None
    _may_choose(caller, network, values, "update")
    if port.device_owner in PINNED_OWNERS and _in_service(session, port):
        for name in ("fixed_ips", "device_owner", "device_id"):
            if name in values and values[name] != getattr(port, name, None):
                raise NeutronError(
                    409,
                    "UnsupportedPortDeviceOwner",
                    f"Operation {name} update is not supported for port {port.id}"
                    f" with device_owner {port.device_owner}.",
                )
    if "mac_address" in values:
        if port.device_owner in SERVICE_OWNERS:
            raise NeutronError(
                409,
                "UnsupportedPortDeviceOwner",
                f"Operation mac_address update is not supported for port {port.id}"
                f" with device_owner {port.device_owner}.",
            )
        if values["mac_address"] is None:
            raise bad_input("mac_address", "None is not a valid MAC address")
        _check_mac(session, network, values["mac_address"], port.id)
        port.mac_address = values.pop("mac_address")
    if "fixed_ips" in values:
        wanted = allocate(
            session, network, port.mac_address, values.pop("fixed_ips"), list(port.fixed_ips)
        )
        keeps = {a.ip_address for a in wanted}
        for floating in session.scalars(
            select(FloatingIp).where(FloatingIp.fixed_port_id == port.id)
        ):
            if floating.fixed_ip_address not in keeps:
                raise NeutronError(
                    400,
                    "BadRequest",
                    f"Bad port request: fixed IP {floating.fixed_ip_address} of port {port.id}"
                    f" is used by floating IP {floating.id}; disassociate it first.",
                )
        port.fixed_ips = []
        session.flush()  # release what is dropped before claiming the new set
        port.fixed_ips = wanted
    port_security.update(session, port, values)
    changes.update(session, "port", port, values, now)
    dhcp.sync(session, port.network_id, now)
    return port


def _in_service(session: Session, port: Port) -> bool:
    """A router's (an HA router's member's too), floating IP's or load
    balancer's port while that router, floating IP or load balancer holds it."""
    if port.device_owner == LB_OWNER:  # its VIP port, or one on a member subnet
        balancer_id = lb_driver.balancer_id(port.device_id) or ""
        held = select(LoadBalancer.id).where(LoadBalancer.id == balancer_id)
    elif port.device_owner == "network:floatingip":
        held = select(FloatingIp.id).where(FloatingIp.floating_port_id == port.id)
    else:
        held = select(RouterPort.router_id).where(RouterPort.port_id == port.id)
    return session.scalar(held) is not None


def delete(session: Session, caller: Caller, port: Port, now: datetime) -> None:
    if port.device_owner in SERVICE_OWNERS and _in_service(session, port):
        raise NeutronError(
            409,
            "ServicePortInUse",
            f"Port {port.id} cannot be deleted directly via the port API:"
            f" has device owner {port.device_owner}.",
        )
    remove(session, port, now)


def remove(session: Session, port: Port, now: datetime) -> None:
    """The port gone (checked by the caller: an API delete, or the service
    that made it letting it go)."""
    # A floating IP pointing at the port lets go of it (§3.3), and its router
    # must stop translating to the address, which another port may get next.
    for floating in session.scalars(select(FloatingIp).where(FloatingIp.fixed_port_id == port.id)):
        changes.mark_build(session, floating.router_id, now)
        changes.update(
            session,
            "floatingip",
            floating,
            {"fixed_port_id": None, "fixed_ip_address": None, "router_id": None},
            now,
        )
    session.delete(port)
    changes.record(session, "port", port, "delete", now, {"network_id": port.network_id})
    dhcp.sync(session, port.network_id, now)
