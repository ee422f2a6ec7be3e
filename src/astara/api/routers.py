"""Neutron routers: `/v2.0/routers` (§3.4) with their external gateway (§4.3),
extra routes (§4.4), the interface actions (§4.1, §4.2) and `ha` (Neutron's
`l3-ha`: admins set and see it; its network and ports are `api.ha`'s)."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, or_, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.orm import Session, selectinload

from astara.api import changes, dhcp, ha, networks, ports, sql_query, subnets, zones
from astara.api.attributes import (
    Attribute,
    Resource,
    bad_input,
    standard_attributes,
    to_any,
    to_bool,
)
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.api.settings import ApiSettings
from astara.db.models import (
    HA_MEMBERS,
    ROUTER_GATEWAY,
    ROUTER_INTERFACE,
    FloatingIp,
    IpAllocation,
    Network,
    Port,
    Router,
    RouterPort,
    Subnet,
    ha_member_id,
)
from astara.model import rules

GATEWAY = ROUTER_GATEWAY
INTERFACE = ROUTER_INTERFACE
BUILD = changes.BUILD


def _ha(name: str, value: Any) -> bool | None:
    """neutron-lib's `convert_to_boolean_if_not_none`: null is not given
    (the deployment's default on create, no change on update)."""
    return None if value is None else to_bool(name, value)


RESOURCE = Resource(
    "routers",
    "router",
    (
        *standard_attributes(),
        Attribute("name", default=""),
        Attribute("admin_state_up", to_bool, default=True),
        Attribute("status", allow_post=False, allow_put=False, filter=False),
        Attribute("external_gateway_info", to_any, default=None, filter=False, sort=False),
        Attribute("routes", to_any, allow_post=False, filter=False, sort=False),
        # router_availability_zone: where its appliance may be placed (not updatable).
        Attribute(
            "availability_zone_hints",
            zones.names,
            default=[],
            allow_put=False,
            filter=False,
            sort=False,
        ),
        # l3-ha: set and read by admins only (Neutron's `create_router:ha`,
        # `update_router:ha`, `get_router:ha` policies).
        Attribute(
            "ha",
            _ha,
            default=None,
            admin_only=True,
            admin_visible=True,
            sort=False,
            filter_convert=to_bool,
        ),
    ),
)


def _ports(session: Session, router: Router, port_type: str) -> list[Port]:
    query = (
        select(Port)
        .join(RouterPort, RouterPort.port_id == Port.id)
        .where(RouterPort.router_id == router.id, RouterPort.port_type == port_type)
    )
    return list(session.scalars(query))


def appliance_ids(router: Router) -> list[str]:
    """The ids of the router's appliances: its own, or its HA members'."""
    if router.ha:
        return [ha_member_id(router.id, slot) for slot in range(len(HA_MEMBERS))]
    return [router.id]


def _zones(placed: dict[str, list[str]], router: Router) -> list[str]:
    """Where the router runs: the zones of its appliances' hosts."""
    return sorted({zone for i in appliance_ids(router) for zone in placed.get(i, [])})


def view(router: Router) -> dict[str, Any]:
    session = Session.object_session(router)
    assert session is not None
    gateway = session.get(Port, router.gateway_port_id) if router.gateway_port_id else None
    placed = zones.of_appliances(session, appliance_ids(router))
    return _view(router, gateway, _zones(placed, router))


def _view(router: Router, gateway: Port | None, availability_zones: list[str]) -> dict[str, Any]:
    info = None
    if gateway is not None:
        info = {
            "network_id": gateway.network_id,
            "enable_snat": router.enable_snat,
            "external_fixed_ips": [
                {"subnet_id": a.subnet_id, "ip_address": a.ip_address} for a in gateway.fixed_ips
            ],
        }
    return {
        **changes.standard_view(router),
        "name": router.name,
        "admin_state_up": router.admin_state_up,
        "status": router.status,
        "external_gateway_info": info,
        "routes": router.routes,
        "availability_zone_hints": list(router.availability_zone_hints or []),
        "availability_zones": availability_zones,
        "ha": router.ha,
    }


def views(session: Session, statement: Select[Router]) -> list[dict[str, Any]]:
    """The views of the routers `statement` selects, loaded with their
    gateway ports and those ports' fixed IPs, and their appliances' zones in
    one statement per `zones.CHUNK` routers."""
    rows = session.scalars(
        statement.options(selectinload(Router.gateway_port).selectinload(Port.fixed_ips))
    ).all()
    placed = zones.of_appliances(session, [i for r in rows for i in appliance_ids(r)])
    return [_view(r, r.gateway_port, _zones(placed, r)) for r in rows]


def get(session: Session, caller: Caller, router_id: str) -> Router:
    router = session.get(Router, router_id)
    if router is None or not (caller.is_admin or router.project_id == caller.project_id):
        raise NeutronError(404, "RouterNotFound", f"Router {router_id} could not be found")
    return router


owned = get  # routers are visible to their owner (and admins) only


def _visible_rows(caller: Caller) -> Select[Router]:
    statement = select(Router)
    if caller.is_admin:
        return statement
    return statement.where(Router.project_id == caller.project_id)


LISTING = sql_query.Listing(
    resource=RESOURCE,
    model=Router,
    statement=_visible_rows,
    views=views,
    columns={
        **sql_query.standard_columns(Router),
        "name": Router.name,
        "admin_state_up": Router.admin_state_up,
        "status": Router.status,
        "ha": Router.ha,
    },
)


def _router_subnets(
    session: Session, router: Router, interfaces_only: bool = False
) -> list[Subnet]:
    """Subnets the router is connected to: its interfaces' and its gateway
    network's, in one statement (not a read per address: a router with 100
    interfaces cost 100 reads for each interface added)."""
    on_interfaces = (
        select(IpAllocation.subnet_id)
        .join(RouterPort, RouterPort.port_id == IpAllocation.port_id)
        .where(RouterPort.router_id == router.id, RouterPort.port_type == INTERFACE)
    )
    connected: ColumnElement[bool] = Subnet.id.in_(on_interfaces)
    if router.gateway_port_id and not interfaces_only:
        gateway_network = (
            select(Port.network_id).where(Port.id == router.gateway_port_id).scalar_subquery()
        )
        connected = or_(connected, Subnet.network_id == gateway_network)
    return list(session.scalars(select(Subnet).where(connected)))


def _set_gateway(
    session: Session, caller: Caller, router: Router, info: Any, now: datetime
) -> None:
    if info is not None and not isinstance(info, dict):
        raise bad_input("external_gateway_info", f"'{info}' is not a dictionary")
    info = info or {}
    unknown = set(info) - {"network_id", "enable_snat", "external_fixed_ips"}
    if unknown:
        raise bad_input(
            "external_gateway_info", f"Unrecognized attribute(s) '{', '.join(sorted(unknown))}'"
        )
    if not caller.is_admin and ("enable_snat" in info or "external_fixed_ips" in info):
        raise NeutronError(
            403,
            "PolicyNotAuthorized",
            "(rule:update_router:external_gateway_info) is disallowed by policy",
        )
    current = session.get(Port, router.gateway_port_id) if router.gateway_port_id else None
    wanted = info.get("network_id")
    if current is not None and (wanted is None or wanted != current.network_id):
        _refuse_if_floating(session, router, current.network_id)
        _remove_port(session, router, current)
        router.gateway_port_id = None
        session.flush()
    router.enable_snat = to_bool("enable_snat", info.get("enable_snat", True))
    if wanted is None:
        return
    network = networks.get(session, caller, str(wanted))
    if not network.external:
        raise NeutronError(
            400,
            "BadRequest",
            f"Bad router request: Network {network.id} is not an external network.",
        )
    _refuse_overlap(session, router, list(network.subnets), interfaces_only=True)
    if current is not None and current.network_id == wanted:
        if "external_fixed_ips" in info:
            replacement = ports.allocate(
                session,
                network,
                current.mac_address,
                info["external_fixed_ips"],
                list(current.fixed_ips),
            )
            current.fixed_ips = []
            session.flush()
            current.fixed_ips = replacement
        return
    gateway = _service_port(session, network, router, GATEWAY, project_id="", now=now)
    gateway.fixed_ips = ports.allocate(
        session, network, gateway.mac_address, info.get("external_fixed_ips")
    )
    if not any(ipaddress.ip_address(a.ip_address).version == 4 for a in gateway.fixed_ips):
        raise NeutronError(
            400,
            "ExternalIpAddressExhausted",
            f"Unable to find any IP address on external network {network.id}.",
        )
    _refuse_unservable(
        [
            (a.ip_address, s.cidr)
            for a in gateway.fixed_ips
            if (s := session.get(Subnet, a.subnet_id)) is not None
        ]
    )
    for allocation in gateway.fixed_ips:
        subnet = session.get(Subnet, allocation.subnet_id)
        if subnet is not None and allocation.ip_address == subnet.gateway_ip:
            raise NeutronError(
                400,
                "BadRequest",
                f"Bad router request: External IP {allocation.ip_address}"
                " is the same as the gateway IP.",
            )
    session.flush()
    router.gateway_port_id = gateway.id


def _refuse_overlap(
    session: Session, router: Router, new_subnets: list[Subnet], interfaces_only: bool = False
) -> None:
    """A router joins no subnet twice and no two overlapping CIDRs (§4.1, §4.3),
    and an HA router none that holds what its members keep (`ha.refuse_reserved`)."""
    if router.ha:
        ha.refuse_reserved(session, router, new_subnets)
    connected = _router_subnets(session, router, interfaces_only) if new_subnets else []
    for new in new_subnets:
        for existing in connected:
            if existing.id == new.id:
                raise NeutronError(
                    400,
                    "BadRequest",
                    f"Bad router request: Router already has a port on subnet {new.id}.",
                )
            if ipaddress.ip_network(existing.cidr).overlaps(ipaddress.ip_network(new.cidr)):
                raise NeutronError(
                    400,
                    "BadRequest",
                    f"Bad router request: Cidr {new.cidr} of subnet {new.id} overlaps"
                    f" with cidr {existing.cidr} of subnet {existing.id}.",
                )


def _service_port(
    session: Session, network: Network, router: Router, owner: str, project_id: str, now: datetime
) -> Port:
    port = Port(
        id=str(uuid.uuid4()),
        project_id=project_id,
        network_id=network.id,
        mac_address=ports.free_mac(session, network),
        device_id=router.id,
        device_owner=owner,
        status="DOWN",
        created_at=now,
        updated_at=now,
        revision_number=1,
        fixed_ips=[],  # new: nothing to load when the caller sets them
    )
    session.add(port)
    session.add(RouterPort(router_id=router.id, port_id=port.id, port_type=owner))
    return port


def _refuse_if_floating(session: Session, router: Router, network_id: str) -> None:
    used = session.scalar(select(FloatingIp.id).where(FloatingIp.router_id == router.id))
    if used is not None:
        raise NeutronError(
            409,
            "RouterExternalGatewayInUseByFloatingIp",
            f"Gateway cannot be updated for router {router.id}, since a gateway to external"
            f" network {network_id} is required by one or more floating IPs.",
        )


def _remove_port(session: Session, router: Router, port: Port) -> None:
    session.execute(sql_delete(RouterPort).where(RouterPort.port_id == port.id))
    session.delete(port)


def _own_addresses(
    session: Session, router: Router
) -> tuple[list[rules.IPNetwork], set[rules.IPAddress]]:
    """The networks the router's own addresses put it on, and those addresses:
    what its appliance is connected to, not every subnet of its networks."""
    connected: list[rules.IPNetwork] = []
    own: set[rules.IPAddress] = set()
    for kind in (INTERFACE, GATEWAY):
        for port in _ports(session, router, kind):
            for allocation in port.fixed_ips:
                subnet = session.get(Subnet, allocation.subnet_id)
                if subnet is None:
                    continue
                prefix = ipaddress.ip_network(subnet.cidr).prefixlen
                interface = ipaddress.ip_interface(f"{allocation.ip_address}/{prefix}")
                connected.append(interface.network)
                own.add(interface.ip)
    return connected, own


def _routes(session: Session, router: Router, value: Any) -> list[dict[str, str]]:
    """Extra routes (§4.4), held to the rule the appliance applies
    (`model.rules.route_problems`), so an accepted route is a served one."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_input("routes", f"'{value}' is not a list")
    specs = []
    for route in value:
        if not isinstance(route, dict) or set(route) != {"destination", "nexthop"}:
            raise bad_input("routes", f"'{route}' is not a destination and nexthop")
        try:
            destination = ipaddress.ip_network(route["destination"])
            nexthop = ipaddress.ip_address(route["nexthop"])
        except (TypeError, ValueError):
            raise bad_input("routes", f"'{route}' is not a valid route") from None
        specs.append(rules.RouteSpec(destination, nexthop))
    connected, own = _own_addresses(session, router)
    for problem in rules.route_problems(specs, connected, own):
        if problem.field == "nexthop" and specs[problem.index].nexthop in own:
            reason = "the nexthop is used by router"
        elif problem.field == "nexthop":
            reason = "the nexthop is not connected with router"
        else:
            reason = problem.message
        raise NeutronError(400, "InvalidRoutes", f"Invalid format for routes: {value}, {reason}")
    return [{"destination": str(r.destination), "nexthop": str(r.nexthop)} for r in specs]


def _refuse_routes_left_unserved(session: Session, router: Router) -> None:
    """After a change of the router's own addresses (its gateway, an
    interface), its extra routes must still hold by the same rule (a next
    hop still connected, a destination still not a subnet it is on): else
    the change is refused, as removing an interface a route needs is."""
    if not router.routes:
        return
    session.flush()
    connected, own = _own_addresses(session, router)
    specs = [
        rules.RouteSpec(ipaddress.ip_network(r["destination"]), ipaddress.ip_address(r["nexthop"]))
        for r in router.routes
    ]
    for problem in rules.route_problems(specs, connected, own):
        route = router.routes[problem.index]
        raise NeutronError(
            409,
            "RouterInUseByRoute",
            f"Router {router.id}'s route to {route['destination']} via {route['nexthop']}"
            f" would no longer hold ({problem.message}): change the routes first.",
        )


def _refuse_unservable(addresses: list[tuple[str, str]]) -> None:
    """A router's address must be one an interface can hold (shared rule:
    `model.rules.host_address_problem`): no multicast, loopback or
    link-local subnet reaches a router."""
    for address, cidr in addresses:
        network = ipaddress.ip_network(cidr)
        ip = ipaddress.ip_address(address)
        problem = (
            f"{address} is outside {cidr}"
            if ip not in network
            else rules.host_address_problem(ip, network)
        )
        if problem is not None:
            raise NeutronError(
                400, "BadRequest", f"Bad router request: {problem}: a router cannot hold it."
            )


def create(
    session: Session,
    caller: Caller,
    values: dict[str, Any],
    now: datetime,
    settings: ApiSettings | None = None,
) -> Router:
    """A router; HA (`ha`, or the deployment's `ha_default` when not given)
    only with two hosts to run it, and with its HA ports made at once."""
    settings = settings or ApiSettings()
    hints = zones.check(session, values["availability_zone_hints"])
    is_ha = settings.ha_default if values.get("ha") is None else bool(values["ha"])
    if is_ha:
        ha.refuse_too_few_hosts(session, hints)
    router = Router(
        id=str(uuid.uuid4()),
        project_id=values["project_id"],
        name=values["name"],
        description=values["description"],
        admin_state_up=values["admin_state_up"],
        created_at=now,
        updated_at=now,
        revision_number=1,
        routes=[],
        availability_zone_hints=hints,
        ha=is_ha,
    )
    session.add(router)
    session.flush()
    if values["external_gateway_info"]:
        _set_gateway(session, caller, router, values["external_gateway_info"], now)
    if is_ha:
        ha.make_ha(session, router, settings, now)
    changes.record(session, "router", router, "create", now)
    return router


def _change_ha(
    session: Session, router: Router, values: dict[str, Any], settings: ApiSettings, now: datetime
) -> bool:
    """Apply a PUT's `ha` (popped from `values`); whether it changed. Only a
    router that is, or in the same request becomes, administratively down
    changes it (Neutron's `_validate_migration`, on the desired state); the
    same value, or null, is no change."""
    wanted = values.pop("ha", None)
    if wanted is None or wanted == router.ha:
        return False
    if values.get("admin_state_up", router.admin_state_up):
        raise NeutronError(
            400,
            "BadRequest",
            "Bad router request: Cannot change HA attribute of active routers. Please set"
            " router admin_state_up to False prior to upgrade.",
        )
    if wanted:
        ha.refuse_too_few_hosts(session, list(router.availability_zone_hints or []))
        router.ha = True
        ha.make_ha(session, router, settings, now)
        ha.refuse_reserved(session, router, _router_subnets(session, router))
    else:
        ha.unmake_ha(session, router, now)
        router.ha = False
    return True


def update(
    session: Session,
    caller: Caller,
    router: Router,
    values: dict[str, Any],
    now: datetime,
    settings: ApiSettings | None = None,
) -> Router:
    settings = settings or ApiSettings()
    ha_changed = _change_ha(session, router, values, settings, now)
    if ha_changed or {"external_gateway_info", "routes", "admin_state_up"} & set(values):
        router.status = BUILD
    gateway_changed = "external_gateway_info" in values
    if gateway_changed:
        _set_gateway(session, caller, router, values.pop("external_gateway_info"), now)
    if "routes" in values:
        router.routes = _routes(session, router, values.pop("routes"))
    elif gateway_changed:
        _refuse_routes_left_unserved(session, router)
    changes.update(session, "router", router, values, now)
    return router


def delete(session: Session, caller: Caller, router: Router, now: datetime) -> None:
    interfaces = _ports(session, router, INTERFACE)
    if interfaces:
        raise NeutronError(
            409,
            "RouterInUse",
            f"Router {router.id} has ports still attached: {', '.join(p.id for p in interfaces)}",
        )
    for gateway in _ports(session, router, GATEWAY):
        _refuse_if_floating(session, router, gateway.network_id)
        _remove_port(session, router, gateway)
    if router.ha:
        ha.unmake_ha(session, router, now)
    session.delete(router)
    changes.record(session, "router", router, "delete", now)


def _interface_body(body: Any) -> tuple[str | None, str | None]:
    if not isinstance(body, dict):
        raise NeutronError(400, "HTTPBadRequest", "Body contains invalid data")
    subnet_id, port_id = body.get("subnet_id"), body.get("port_id")
    if subnet_id is None and port_id is None:
        raise NeutronError(
            400, "BadRequest", "Bad router request: Either subnet_id or port_id must be specified."
        )
    return subnet_id, port_id


def _interface_info(router: Router, port: Port) -> dict[str, Any]:
    subnet_ids = [a.subnet_id for a in port.fixed_ips]
    return {
        "id": router.id,
        "tenant_id": router.project_id,
        "project_id": router.project_id,
        "port_id": port.id,
        "network_id": port.network_id,
        "subnet_id": subnet_ids[-1] if subnet_ids else None,
        "subnet_ids": subnet_ids,
    }


def add_interface(
    session: Session, caller: Caller, router_id: str, body: Any, now: datetime
) -> dict[str, Any]:
    router = get(session, caller, router_id)
    subnet_id, port_id = _interface_body(body)
    if subnet_id is not None and port_id is not None:
        raise NeutronError(
            400, "BadRequest", "Bad router request: Cannot specify both subnet-id and port-id."
        )
    if port_id is not None:
        port = ports.get(session, caller, str(port_id))
        if port.device_id:
            raise NeutronError(
                409,
                "PortInUse",
                f"Unable to complete operation on port {port.id} for network {port.network_id}. "
                f"Port already has an attached device {port.device_id}.",
            )
        if not port.fixed_ips:
            raise NeutronError(
                400,
                "BadRequest",
                "Bad router request: Router port must have at least one fixed IP.",
            )
        new_subnets = [session.get(Subnet, a.subnet_id) for a in port.fixed_ips]
        if sum(1 for s in new_subnets if s is not None and s.ip_version == 4) > 1:
            raise NeutronError(
                400,
                "BadRequest",
                "Bad router request: Cannot have multiple IPv4 subnets on router port.",
            )
    else:
        subnet = subnets.get(session, caller, str(subnet_id))
        network = session.get(Network, subnet.network_id)
        if (
            not caller.is_admin
            and subnet.project_id != caller.project_id
            and not (network is not None and network.shared)
        ):
            raise NeutronError(
                400,
                "BadRequest",
                f"Bad router request: Cannot add interface to router {router.id}: subnet"
                f" {subnet.id} belongs to another project and is not shared.",
            )
        if subnet.gateway_ip is None:
            raise NeutronError(
                400,
                "BadRequest",
                "Bad router request: Subnet for router interface must have a gateway IP.",
            )
        if subnet.ip_version == 6 and subnet.ipv6_address_mode and not subnet.ipv6_ra_mode:
            raise NeutronError(
                400,
                "BadRequest",
                f"Bad router request: IPv6 subnet {subnet.id} configured to receive RAs from"
                " an external router cannot be added to Neutron Router.",
            )
        new_subnets = [subnet]
    _refuse_overlap(session, router, [s for s in new_subnets if s is not None])
    if port_id is not None:
        _refuse_unservable(
            [
                (a.ip_address, s.cidr)
                for a in port.fixed_ips
                if (s := session.get(Subnet, a.subnet_id)) is not None
            ]
        )
    else:
        assert subnet.gateway_ip is not None
        _refuse_unservable([(subnet.gateway_ip, subnet.cidr)])
    if port_id is not None:
        port.device_id, port.device_owner = router.id, INTERFACE
        session.add(RouterPort(router_id=router.id, port_id=port.id, port_type=INTERFACE))
    else:
        network = session.get(Network, subnet.network_id)
        assert network is not None and subnet.gateway_ip is not None
        taken = session.scalar(
            select(IpAllocation.port_id).where(
                IpAllocation.subnet_id == subnet.id, IpAllocation.ip_address == subnet.gateway_ip
            )
        )
        if taken is not None:
            raise NeutronError(
                409,
                "IpAddressAlreadyAllocated",
                f"IP address {subnet.gateway_ip} already allocated in subnet {subnet.id}",
            )
        # Neutron's rule (§4.1): an IPv6 subnet joins the router's IPv6 port on
        # the same network, if it has one; every IPv4 subnet gets a port of its own.
        shared = _ipv6_interface(session, router, network.id) if subnet.ip_version == 6 else None
        allocation = IpAllocation(
            subnet_id=subnet.id,
            network_id=network.id,
            ip_address=subnet.gateway_ip,
            position=len(shared.fixed_ips) if shared is not None else 0,
        )
        if shared is not None:
            port = shared
            port.fixed_ips.append(allocation)
            changes.update(session, "port", port, {}, now)
        else:
            port = _service_port(
                session, network, router, INTERFACE, project_id=router.project_id, now=now
            )
            port.fixed_ips = [allocation]
    session.flush()
    _refuse_routes_left_unserved(session, router)
    router.status = BUILD
    changes.record(session, "router", router, "add_interface", now)
    dhcp.sync(session, port.network_id, now)
    return _interface_info(router, port)


def remove_interface(
    session: Session, caller: Caller, router_id: str, body: Any, now: datetime
) -> dict[str, Any]:
    """Remove an interface by port (the whole port) or by subnet (that subnet's
    address: the port goes with its last one, §4.2)."""
    router = get(session, caller, router_id)
    subnet_id, port_id = _interface_body(body)
    interfaces = _ports(session, router, INTERFACE)
    if port_id is not None:
        port = next((p for p in interfaces if p.id == port_id), None)
        if port is None:
            raise NeutronError(
                404,
                "RouterInterfaceNotFound",
                f"Router {router.id} does not have an interface with id {port_id}",
            )
        if subnet_id is not None and subnet_id not in {a.subnet_id for a in port.fixed_ips}:
            raise NeutronError(
                400,
                "SubnetMismatchForPort",
                f"Subnet on port {port.id} does not match the requested subnet {subnet_id}.",
            )
        removed_ids = [a.subnet_id for a in port.fixed_ips]
    else:
        port = next(
            (p for p in interfaces if subnet_id in {a.subnet_id for a in p.fixed_ips}), None
        )
        if port is None:
            raise NeutronError(
                404,
                "RouterInterfaceNotFoundForSubnet",
                f"Router {router.id} has no interface on subnet {subnet_id}",
            )
        removed_ids = [str(subnet_id)]
    _refuse_if_needed(session, router, removed_ids)
    info = _interface_info(router, port)
    kept = [a for a in port.fixed_ips if a.subnet_id not in removed_ids]
    if kept:  # a multi-prefix IPv6 port loses one prefix and stays
        info["subnet_id"], info["subnet_ids"] = removed_ids[-1], removed_ids
        port.fixed_ips = kept
        changes.update(session, "port", port, {}, now)
    else:
        _remove_port(session, router, port)
    router.status = BUILD
    changes.record(session, "router", router, "remove_interface", now)
    dhcp.sync(session, info["network_id"], now)
    return info


def _refuse_if_needed(session: Session, router: Router, subnet_ids: list[str]) -> None:
    """An interface's subnets stay while an extra route's next hop or a
    floating IP's fixed address is in them (§4.2)."""
    removed = [
        ipaddress.ip_network(s.cidr)
        for s in (session.get(Subnet, subnet_id) for subnet_id in subnet_ids)
        if s
    ]
    for route in router.routes:
        if any(ipaddress.ip_address(route["nexthop"]) in cidr for cidr in removed):
            raise NeutronError(
                409,
                "RouterInterfaceInUseByRoute",
                f"Router interface for subnet {subnet_ids[0]} on router {router.id} cannot be"
                " deleted, as it is required by one or more routes.",
            )
    for floating in session.scalars(select(FloatingIp).where(FloatingIp.router_id == router.id)):
        holder = session.get(Port, floating.fixed_port_id) if floating.fixed_port_id else None
        if holder is not None and any(
            a.subnet_id in subnet_ids and a.ip_address == floating.fixed_ip_address
            for a in holder.fixed_ips
        ):
            raise NeutronError(
                409,
                "RouterInterfaceInUseByFloatingIP",
                f"Router interface for subnet {subnet_ids[0]} on router {router.id} cannot be"
                " deleted, as it is required by one or more floating IPs.",
            )


def _ipv6_interface(session: Session, router: Router, network_id: str) -> Port | None:
    """The router's interface port on `network_id` that holds IPv6 addresses."""
    return next(
        (
            p
            for p in _ports(session, router, INTERFACE)
            if p.network_id == network_id
            and any(ipaddress.ip_address(a.ip_address).version == 6 for a in p.fixed_ips)
        ),
        None,
    )
