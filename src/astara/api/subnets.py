"""Neutron subnets: `/v2.0/subnets` (§3.2), with IPAM from `astara.ipam`."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session, contains_eager

from astara import ipam
from astara.api import access, changes, dhcp, networks, ports, sql_query
from astara.api.attributes import (
    Attribute,
    Resource,
    bad_input,
    standard_attributes,
    to_any,
    to_bool,
    to_int,
)
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.db.models import (
    DHCP,
    FLOATING_IP,
    ROUTER_GATEWAY,
    ROUTER_INTERFACE,
    IpAllocation,
    Network,
    Port,
    Subnet,
)
from astara.model import rules

RA_MODES = ("slaac", "dhcpv6-stateful", "dhcpv6-stateless")
DEFAULT_GATEWAY = object()  # gateway_ip not given: the subnet's first address
MAX_DNS_NAMESERVERS = 5
MAX_HOST_ROUTES = 20


def _mode(name: str, value: Any) -> str | None:
    if value is None or value in RA_MODES:
        return value  # type: ignore[no-any-return]
    raise bad_input(name, f"'{value}' is not in {list(RA_MODES)}")


def _optional_string(name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise bad_input(name, f"'{value}' is not a valid string")


RESOURCE = Resource(
    "subnets",
    "subnet",
    (
        *standard_attributes(),
        Attribute("name", default=""),
        Attribute("network_id", allow_put=False),
        Attribute("ip_version", to_int, allow_put=False),
        Attribute("cidr", to_any, allow_put=False),
        Attribute("gateway_ip", _optional_string, default=DEFAULT_GATEWAY),
        Attribute("enable_dhcp", to_bool, default=True),
        Attribute("allocation_pools", to_any, default=None, filter=False, sort=False),
        Attribute("dns_nameservers", to_any, default=[], filter=False, sort=False),
        Attribute("host_routes", to_any, default=[], filter=False, sort=False),
        Attribute("ipv6_ra_mode", _mode, default=None, allow_put=False),
        Attribute("ipv6_address_mode", _mode, default=None, allow_put=False),
        Attribute("subnetpool_id", _optional_string, default=None, allow_put=False),
    ),
)


def view(subnet: Subnet) -> dict[str, Any]:
    return {
        **changes.standard_view(subnet),
        "name": subnet.name,
        "network_id": subnet.network_id,
        "ip_version": subnet.ip_version,
        "cidr": subnet.cidr,
        "gateway_ip": subnet.gateway_ip,
        "enable_dhcp": subnet.enable_dhcp,
        "allocation_pools": subnet.allocation_pools,
        "dns_nameservers": subnet.dns_nameservers,
        "host_routes": subnet.host_routes,
        "ipv6_ra_mode": subnet.ipv6_ra_mode,
        "ipv6_address_mode": subnet.ipv6_address_mode,
        "subnetpool_id": None,
        "service_types": [],
        "router:external": subnet.network.external,
    }


def visible(subnet: Subnet, caller: Caller) -> bool:
    return subnet.project_id == caller.project_id or networks.visible(subnet.network, caller)


def get(session: Session, caller: Caller, subnet_id: str) -> Subnet:
    subnet = session.get(Subnet, subnet_id)
    if subnet is None or not visible(subnet, caller):
        raise NeutronError(404, "SubnetNotFound", f"Subnet {subnet_id} could not be found.")
    return subnet


def owned(session: Session, caller: Caller, subnet_id: str) -> Subnet:
    return access.changeable(get(session, caller, subnet_id), caller, "Subnet")


def _visible_rows(caller: Caller) -> Select[Subnet]:
    statement = select(Subnet).join(Subnet.network)
    if caller.is_admin:
        return statement
    return statement.where(
        or_(Subnet.project_id == caller.project_id, networks.visible_clause(caller))
    )


LISTING = sql_query.Listing(
    resource=RESOURCE,
    model=Subnet,
    statement=_visible_rows,
    views=sql_query.orm_views(view, contains_eager(Subnet.network)),
    columns={
        **sql_query.standard_columns(Subnet),
        "name": Subnet.name,
        "network_id": Subnet.network_id,
        "ip_version": Subnet.ip_version,
        "cidr": Subnet.cidr,
        "gateway_ip": Subnet.gateway_ip,
        "enable_dhcp": Subnet.enable_dhcp,
        "ipv6_ra_mode": Subnet.ipv6_ra_mode,
        "ipv6_address_mode": Subnet.ipv6_address_mode,
    },
)


def _ip(name: str, value: Any, version: int) -> ipam.IPAddress:
    try:
        address = ipaddress.ip_address(value)
    except (TypeError, ValueError):
        raise bad_input(name, f"'{value}' is not a valid IP address") from None
    if address.version != version:
        raise bad_input(name, f"'{value}' is not a valid IPv{version} address")
    return address


def _nameservers(value: Any, version: int) -> list[str]:
    if not isinstance(value, list):
        raise bad_input("dns_nameservers", f"'{value}' is not a list")
    if len(value) > MAX_DNS_NAMESERVERS:
        raise NeutronError(
            400,
            "DNSNameServersExhausted",
            "Unable to complete operation for subnet. The number of DNS nameservers"
            f" exceeds the limit {MAX_DNS_NAMESERVERS}.",
        )
    servers = [str(_ip("dns_nameservers", v, version)) for v in value]
    if len(set(servers)) != len(servers):
        raise bad_input("dns_nameservers", "Duplicate nameserver")
    return servers


def _host_routes(value: Any, version: int) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise bad_input("host_routes", f"'{value}' is not a list")
    if len(value) > MAX_HOST_ROUTES:
        raise NeutronError(
            400,
            "HostRoutesExhausted",
            "Unable to complete operation for subnet. The number of host routes"
            f" exceeds the limit {MAX_HOST_ROUTES}.",
        )
    routes = []
    for route in value:
        if not isinstance(route, dict) or set(route) != {"destination", "nexthop"}:
            raise bad_input("host_routes", f"'{route}' is not a destination and nexthop")
        try:
            destination = ipaddress.ip_network(route["destination"])
        except (TypeError, ValueError):
            raise bad_input(
                "host_routes", f"'{route['destination']}' is not a valid IP subnet"
            ) from None
        if destination.version != version:
            raise bad_input("host_routes", f"'{destination}' is not an IPv{version} subnet")
        nexthop = _ip("host_routes", route["nexthop"], version)
        routes.append({"destination": str(destination), "nexthop": str(nexthop)})
    if len({r["destination"] for r in routes}) != len(routes):
        raise bad_input("host_routes", "Duplicate hostroute")
    return routes


def _ra_modes(
    values: dict[str, Any], version: int, enable_dhcp: bool, cidr: ipam.IPNetwork
) -> None:
    ra, address = values.get("ipv6_ra_mode"), values.get("ipv6_address_mode")
    if ra is None and address is None:
        return
    if version == 4:
        raise bad_input(
            "ipv6_ra_mode", "ipv6_ra_mode or ipv6_address_mode cannot be set when ip_version is 4"
        )
    if ra is not None and address is not None and ra != address:
        raise bad_input(
            "ipv6_ra_mode",
            f"ipv6_ra_mode set to '{ra}' with ipv6_address_mode set to '{address}' is not valid",
        )
    if not enable_dhcp:
        raise bad_input(
            "enable_dhcp",
            "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False",
        )
    problem = rules.ipv6_mode_prefix_problem(str(ra or address), cidr.prefixlen)
    if problem is not None:
        raise bad_input("cidr", problem)


def create(session: Session, caller: Caller, values: dict[str, Any], now: datetime) -> Subnet:
    network = networks.get(session, caller, values["network_id"])
    if not caller.is_admin and network.project_id != caller.project_id and not network.shared:
        raise NeutronError(404, "NetworkNotFound", f"Network {network.id} could not be found.")
    version = values["ip_version"]
    if version not in (4, 6):
        raise bad_input("ip_version", f"{version} is not in [4, 6]")
    try:
        cidr = ipam.parse_cidr(str(values["cidr"]), version)
        ipam.check_dhcp_cidr(cidr, values["enable_dhcp"])
    except ipam.IpamError as error:
        raise NeutronError(error.status, error.kind, str(error)) from None
    for other in network.subnets:
        if ipaddress.ip_network(other.cidr).overlaps(cidr):
            raise NeutronError(
                400,
                "InvalidInput",
                f"Invalid input for operation: Requested subnet with cidr: {cidr} for network: "
                f"{network.id} overlaps with another subnet.",
            )
    gateway_given = values["gateway_ip"]
    gateway = (
        ipam.default_gateway(cidr)
        if gateway_given is DEFAULT_GATEWAY
        else (None if gateway_given is None else _ip("gateway_ip", gateway_given, version))
    )
    try:
        if gateway is not None:
            ipam.validate_gateway(cidr, gateway)
        if values["allocation_pools"] is None:
            pools = ipam.default_pools(cidr, gateway)
        else:
            if not isinstance(values["allocation_pools"], list):
                raise bad_input("allocation_pools", "must be a list of {start, end}")
            pools = ipam.parse_pools(cidr, values["allocation_pools"])
            ipam.validate_pools(cidr, pools, gateway)
    except ipam.IpamError as error:
        raise NeutronError(error.status, error.kind, str(error)) from None
    _ra_modes(values, version, values["enable_dhcp"], cidr)
    subnet = Subnet(
        id=str(uuid.uuid4()),
        project_id=values["project_id"],
        network_id=network.id,
        name=values["name"],
        description=values["description"],
        ip_version=version,
        cidr=str(cidr),
        gateway_ip=str(gateway) if gateway is not None else None,
        enable_dhcp=values["enable_dhcp"],
        ipv6_ra_mode=values["ipv6_ra_mode"],
        ipv6_address_mode=values["ipv6_address_mode"],
        allocation_pools=[p.as_dict() for p in pools],
        dns_nameservers=_nameservers(values["dns_nameservers"], version),
        host_routes=_host_routes(values["host_routes"], version),
        created_at=now,
        updated_at=now,
        revision_number=1,
    )
    session.add(subnet)
    network.revision_number += 1  # a new subnet is a change of its network
    network.updated_at = now
    if ports.auto_address(subnet):
        _address_existing_ports(session, network, subnet, now)
        dhcp.sync(session, network.id, now)  # its workloads may need DHCPv6 (stateless)
    changes.record(session, "subnet", subnet, "create", now)
    return subnet


def _address_existing_ports(
    session: Session, network: Network, subnet: Subnet, now: datetime
) -> None:
    """A new auto-address subnet gives the network's ports their EUI-64
    address on it (§3.2); a router interface joins a subnet only through
    add_router_interface, and a floating IP's port holds its address only."""
    cidr = ipaddress.IPv6Network(subnet.cidr)
    for port in session.scalars(
        select(Port).where(Port.network_id == network.id).order_by(Port.id)
    ):
        if port.device_owner in (ROUTER_INTERFACE, FLOATING_IP, DHCP):
            continue  # a DHCP port's addresses are `dhcp.sync`'s to choose
        port.fixed_ips.append(
            IpAllocation(
                subnet_id=subnet.id,
                network_id=network.id,
                ip_address=str(ipam.eui64(cidr, port.mac_address)),
                position=len(port.fixed_ips),
            )
        )
        _changed_port(session, port, now)


def update(
    session: Session, caller: Caller, subnet: Subnet, values: dict[str, Any], now: datetime
) -> Subnet:
    version = subnet.ip_version
    cidr = ipaddress.ip_network(subnet.cidr)
    if "dns_nameservers" in values:
        subnet.dns_nameservers = _nameservers(values.pop("dns_nameservers"), version)
    if "host_routes" in values:
        subnet.host_routes = _host_routes(values.pop("host_routes"), version)
    gateway = ipaddress.ip_address(subnet.gateway_ip) if subnet.gateway_ip else None
    if "gateway_ip" in values:
        given = values.pop("gateway_ip")
        gateway = None if given is None else _ip("gateway_ip", given, version)
    old_gateway = subnet.gateway_ip
    if old_gateway is not None and old_gateway != (str(gateway) if gateway else None):
        holder = session.scalar(
            select(IpAllocation.port_id)
            .join(Port, Port.id == IpAllocation.port_id)
            .where(
                IpAllocation.subnet_id == subnet.id,
                IpAllocation.ip_address == old_gateway,
                Port.device_owner == ROUTER_INTERFACE,
            )
        )
        if holder is not None:
            raise NeutronError(
                409,
                "GatewayIpInUse",
                f"Current gateway ip {old_gateway} already in use by port {holder}."
                " Unable to update.",
            )
    pools = ipam.parse_pools(cidr, subnet.allocation_pools)
    if "allocation_pools" in values:
        given_pools = values.pop("allocation_pools")
        if not isinstance(given_pools, list):
            raise bad_input("allocation_pools", "must be a list of {start, end}")
        try:
            pools = ipam.parse_pools(cidr, given_pools)
        except ipam.IpamError as error:
            raise NeutronError(error.status, error.kind, str(error)) from None
    try:
        if gateway is not None:
            ipam.validate_gateway(cidr, gateway)
        ipam.validate_pools(cidr, pools, gateway)
        if values.get("enable_dhcp"):
            ipam.check_dhcp_cidr(cidr, True)
    except ipam.IpamError as error:
        raise NeutronError(error.status, error.kind, str(error)) from None
    if (
        "enable_dhcp" in values
        and not values["enable_dhcp"]
        and (subnet.ipv6_ra_mode or subnet.ipv6_address_mode)
    ):
        raise bad_input("enable_dhcp", "Cannot disable enable_dhcp with ipv6 attributes set")
    subnet.gateway_ip = str(gateway) if gateway is not None else None
    subnet.allocation_pools = [p.as_dict() for p in pools]
    changes.update(session, "subnet", subnet, values, now)
    dhcp.sync(session, subnet.network_id, now)
    return subnet


def _ports_on(session: Session, subnet: Subnet) -> list[Port]:
    return list(
        session.scalars(
            select(Port)
            .join(IpAllocation, IpAllocation.port_id == Port.id)
            .where(IpAllocation.subnet_id == subnet.id)
            .order_by(Port.id)
        )
    )


def _changed_port(session: Session, port: Port, now: datetime) -> None:
    """A port's addresses changed under it: its revision and event, and its
    router's appliance (a gateway's addresses are the router's) is rebuilt."""
    changes.update(session, "port", port, {}, now)
    if port.device_owner == ROUTER_GATEWAY:
        changes.mark_build(session, port.device_id, now)


def delete(session: Session, caller: Caller, subnet: Subnet, now: datetime) -> None:
    """Refused while ports have addresses on it, except an auto-address subnet
    (SLAAC, DHCPv6-stateless), which only a router interface holds: its
    addresses are taken from the other ports instead (§3.2)."""
    dhcp.sync(session, subnet.network_id, now, leaving=[subnet.id])
    holders = _ports_on(session, subnet)
    if ports.auto_address(subnet):
        holders_in_use = [p for p in holders if p.device_owner == ROUTER_INTERFACE]
    else:
        holders_in_use = holders
    if holders_in_use:
        raise NeutronError(
            409,
            "SubnetInUse",
            f"Unable to complete operation on subnet {subnet.id}: One or more ports have an IP "
            "allocation from this subnet.",
        )
    for port in holders:
        port.fixed_ips = [a for a in port.fixed_ips if a.subnet_id != subnet.id]
        _changed_port(session, port, now)
    session.flush()
    network = subnet.network
    session.delete(subnet)
    network.revision_number += 1
    network.updated_at = now
    changes.record(session, "subnet", subnet, "delete", now, {"network_id": subnet.network_id})
