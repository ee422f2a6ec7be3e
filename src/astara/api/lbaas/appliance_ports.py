"""A load balancer's ports, made through the Neutron API's own port create
(its address allocation, checks, quota and DHCP bookkeeping), owned by the
load balancer's project, `device_owner` `Octavia`, `device_id` its
appliance's id (`lb-<id>`): service ports while it exists.

- The VIP port (`octavia-lb-<id>`), unless the tenant gave one.
- One port on each member subnet off the VIP's network (Octavia plugs its
  amphora into each), named `octavia-lb-<id>-member-<subnet id>`: the
  appliance reaches those members directly, not through a router. Made with
  the first member on the subnet, removed with the last. Without port
  security: the appliance only answers its VIP, and the members' groups
  filter what it sends them.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.api import ports
from astara.api import quotas as neutron_quotas
from astara.api.attributes import prepare_body
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.api.lbaas import errors
from astara.db.models import LoadBalancer, Member, Pool, Port, Subnet
from astara.drivers import loadbalancer as lb_driver

OWNER = ports.LB_OWNER


def vip_name(balancer_id: str) -> str:
    return f"octavia-lb-{balancer_id}"


def member_name(balancer_id: str, subnet_id: str) -> str:
    return f"octavia-lb-{balancer_id}-member-{subnet_id}"


def make(
    session: Session,
    caller: Caller,
    project_id: str,
    balancer_id: str,
    subnet: Subnet,
    address: str | None,
    now: datetime,
    name: str | None = None,
) -> Port:
    """A port of the load balancer on `subnet` (its VIP port unless `name`
    says otherwise: then a member-side port, without port security)."""
    fixed: dict[str, Any] = {"subnet_id": subnet.id}
    if address is not None:
        fixed["ip_address"] = address
    port: dict[str, Any] = {
        "network_id": subnet.network_id,
        "name": name or vip_name(balancer_id),
        "device_owner": OWNER,
        "device_id": lb_driver.appliance_id(balancer_id),
        "fixed_ips": [fixed],
        "project_id": project_id,
    }
    if name is not None:
        port["port_security_enabled"] = False
    values = prepare_body(
        ports.RESOURCE,
        {"port": port},
        method="POST",
        project_id=project_id,
        is_admin=True,  # made by the service, for the project
    )
    # Made by the service (an `Octavia` port is the service's to make), for
    # the project, on a subnet the caller was checked to see.
    service = Caller(project_id=project_id, project_name=caller.project_name, is_admin=True)
    try:
        neutron_quotas.check(session, "port", project_id)
        return ports.create(session, service, values, now)
    except NeutronError as error:
        raise errors.OctaviaError(
            error.status if error.status < 500 else 500, error.message
        ) from None


def _member_ports(session: Session, balancer: LoadBalancer) -> dict[str, Port]:
    """The member-side ports it has, by their subnet."""
    found = {}
    for port in lb_driver.member_ports(session, balancer):
        for allocation in port.fixed_ips[:1]:
            found[allocation.subnet_id] = port
    return found


def sync_members(session: Session, caller: Caller, balancer: LoadBalancer, now: datetime) -> None:
    """A port on each member subnet off the VIP's network, and no other."""
    subnet_ids = set(
        session.scalars(
            select(Member.subnet_id)
            .join(Pool, Pool.id == Member.pool_id)
            .where(Pool.load_balancer_id == balancer.id, Member.subnet_id.is_not(None))
        )
    )
    wanted = {
        subnet.id: subnet
        for subnet in session.scalars(select(Subnet).where(Subnet.id.in_(subnet_ids)))
        if subnet.network_id != balancer.vip_network_id
    }
    _disjoint(session, balancer, list(wanted.values()))
    held = _member_ports(session, balancer)
    for subnet_id, port in held.items():
        if subnet_id not in wanted:
            ports.remove(session, port, now)
    for subnet_id, subnet in sorted(wanted.items()):
        if subnet_id not in held:
            name = member_name(balancer.id, subnet_id)
            make(session, caller, balancer.project_id, balancer.id, subnet, None, now, name)


def _disjoint(session: Session, balancer: LoadBalancer, subnets: list[Subnet]) -> None:
    """Member subnets the appliance gets a port on must not overlap its VIP
    subnet or each other: two routes to one prefix in its namespace."""
    vip = session.get(Subnet, balancer.vip_subnet_id)
    seen = [(vip.id, ipaddress.ip_network(vip.cidr))] if vip is not None else []
    for subnet in sorted(subnets, key=lambda s: s.id):
        cidr = ipaddress.ip_network(subnet.cidr)
        for other_id, other in seen:
            if cidr.version == other.version and cidr.overlaps(other):
                raise errors.validation(
                    f"Member subnet {subnet.id} ({cidr}) overlaps subnet {other_id} ({other})"
                    " of this load balancer's appliance."
                )
        seen.append((subnet.id, cidr))


def remove_members(session: Session, balancer: LoadBalancer, now: datetime) -> None:
    for port in lb_driver.member_ports(session, balancer):
        ports.remove(session, port, now)
