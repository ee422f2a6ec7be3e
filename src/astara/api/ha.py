"""HA routers (Neutron's `l3-ha`): the hidden network that joins an HA
router's two members, their ports on it, and how many hosts HA needs.

An HA router (`Router.ha`) runs as two appliances, its members `ha0-<id>`
and `ha1-<id>` (`db.models.HA_MEMBERS`), on two hosts; the orchestrator
places them and records each one's role. They speak VRRP to each other over
their project's HA network, as Neutron's L3 agents do over theirs:

- one per project (`HaNetwork`), made in the transaction of the first router
  that needs it (created HA, or turned HA), removed in the transaction that
  takes its last port away (Neutron's `safe_delete_ha_network`: a port an
  admin added keeps it);
- owned by no project (`project_id` ""): no tenant sees it, its subnet or
  its ports, and no project's quota counts them; admins see it all, named
  `HA network project <project id>` (Neutron's names since 2026.1);
- made through the API's own network, subnet and port operations, so it is
  a tenant network like any other (VXLAN with a VNI from the range, the
  MTU that follows from the path MTU) and its rows and events are those any
  network, subnet and port would have;
- one IPv4 subnet, `ApiSettings.ha_network_cidr` (the same range in every
  project: each HA network is a segment of its own), no DHCP, no gateway;
- two ports per HA router (`ROUTER_HA_INTERFACE`, `device_id` the router, a
  `RouterPort` of it): service ports, which the port API neither deletes
  nor re-points (`api.ports`). Member 0's is the one with the lower
  address, so each member keeps its port for the router's life.

Two first HA routers of a project at once both insert its `HaNetwork` row;
the loser runs again (`http.races`) and finds the network. The row is
locked before a port is added or the network removed, so a router created
while the project's last other HA router goes never joins a network being
deleted.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime

from sqlalchemy import delete as sql_delete
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from astara.api import networks, ports, subnets
from astara.api.attributes import prepare_body
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.api.settings import ApiSettings
from astara.appliance.schema import HA_ROLE_ADDRESS
from astara.db.models import (
    HA_MEMBERS,
    HA_NETWORK_NAME,
    HA_PORT_NAME,
    HA_SUBNET_NAME,
    ROUTER_HA_INTERFACE,
    HaNetwork,
    Host,
    IpAllocation,
    Network,
    Port,
    Router,
    RouterPort,
    Subnet,
    ha_port_order,
)
from astara.orchestrator.hosts import info as host_info
from astara.orchestrator.placement import candidates

# Two members, on two hosts: with fewer, a router called HA would not be.
MIN_HOSTS = len(HA_MEMBERS)
# The service itself: what it makes belongs to no project (project_id "").
SERVICE = Caller(project_id="", project_name="", is_admin=True)


def ha_network(session: Session, project_id: str) -> Network | None:
    """The project's HA network, if it has one."""
    row = session.get(HaNetwork, project_id)
    return session.get(Network, row.network_id) if row is not None else None


def member_ports(session: Session, router_id: str) -> list[Port]:
    """The router's ports on its HA network, member 0's first: ordered by
    their IPv4 address (numerically), which never changes while the router
    is HA. [] for a router that is not HA."""
    found = session.scalars(
        select(Port)
        .join(RouterPort, RouterPort.port_id == Port.id)
        .where(RouterPort.router_id == router_id, RouterPort.port_type == ROUTER_HA_INTERFACE)
        .options(selectinload(Port.fixed_ips))
    ).all()
    return sorted(found, key=ha_port_order)


def available_hosts(session: Session, hints: list[str]) -> int:
    """How many hosts could take one of a router's appliances: alive, not
    drained, in one of `hints` (any zone without), and reaching the others'
    tenant networks (the orchestrator's own rule, `placement.candidates`).
    The local host of a single-host deployment counts as one."""
    hosts = [host_info(row) for row in session.scalars(select(Host))]
    return len(candidates(hosts, hints=hints))


def refuse_too_few_hosts(session: Session, hints: list[str]) -> None:
    """409 unless two hosts could take the router's members.

    Neutron removed this check in Ocata ("HA routers no longer require a
    minimal number of L3 agents"): it makes the router and schedules both
    halves wherever it can, one agent included. Astara refuses instead, with
    the error Neutron had (`HANotEnoughAvailableAgents`, a 409 here rather
    than its 500): a router called HA that runs on one host is not, and the
    caller should know at once rather than at the first host failure."""
    available = available_hosts(session, hints)
    if available < MIN_HOSTS:
        raise NeutronError(
            409,
            "HANotEnoughAvailableAgents",
            "Not enough l3 agents available to ensure HA. Minimum required"
            f" {MIN_HOSTS}, available {available}.",
        )


def _locked_network(session: Session, project_id: str) -> Network | None:
    """The project's HA network, its `HaNetwork` row locked until commit."""
    row = session.scalar(
        select(HaNetwork).where(HaNetwork.project_id == project_id).with_for_update()
    )
    return session.get(Network, row.network_id) if row is not None else None


def _make_network(
    session: Session, project_id: str, settings: ApiSettings, now: datetime
) -> Network:
    """The project's HA network, as Neutron makes it (its subnet apart)."""
    values = prepare_body(
        networks.RESOURCE,
        {
            "network": {
                "name": HA_NETWORK_NAME % project_id,
                "project_id": "",
                "admin_state_up": True,
                "shared": False,
            }
        },
        method="POST",
        project_id="",
        is_admin=True,
    )
    network = networks.create(session, SERVICE, values, now, settings)
    session.add(HaNetwork(project_id=project_id, network_id=network.id))
    return network


def _ha_subnet(
    session: Session, network: Network, project_id: str, settings: ApiSettings, now: datetime
) -> Subnet:
    """The HA network's IPv4 subnet, made if it has none (a new network; or
    one whose subnet an admin deleted while no router used it)."""
    found = [s for s in network.subnets if s.ip_version == 4]
    if found:
        return min(found, key=lambda s: (s.created_at, s.id))
    values = prepare_body(
        subnets.RESOURCE,
        {
            "subnet": {
                "name": HA_SUBNET_NAME % project_id,
                "project_id": "",
                "network_id": network.id,
                "ip_version": 4,
                "cidr": settings.ha_network_cidr,
                "enable_dhcp": False,
                "gateway_ip": None,
            }
        },
        method="POST",
        project_id="",
        is_admin=True,
    )
    subnet = subnets.create(session, SERVICE, values, now)
    session.flush()
    # The subnet was added by its network_id: the network's list, read
    # before by the subnet's checks, is read again by the ports' allocation.
    session.expire(network, ["subnets"])
    return subnet


def refuse_reserved(session: Session, router: Router, subnets: list[Subnet]) -> None:
    """400 if one of `subnets` (to be, or already, on the HA router) holds
    an address its members keep for themselves: its HA subnet, or the
    address keepalived holds while a member is active. Its members could
    not route it (their appliance refuses the config)."""
    reserved = [ipaddress.ip_network(HA_ROLE_ADDRESS.network)]
    reserved += [
        ipaddress.ip_network(cidr)
        for cidr in session.scalars(
            select(Subnet.cidr)
            .join(IpAllocation, IpAllocation.subnet_id == Subnet.id)
            .join(RouterPort, RouterPort.port_id == IpAllocation.port_id)
            .where(RouterPort.router_id == router.id, RouterPort.port_type == ROUTER_HA_INTERFACE)
            .distinct()
        )
    ]
    for subnet in subnets:
        cidr = ipaddress.ip_network(subnet.cidr)
        taken = next((r for r in reserved if r.version == cidr.version and r.overlaps(cidr)), None)
        if taken is not None:
            raise NeutronError(
                400,
                "BadRequest",
                f"Bad router request: Cidr {subnet.cidr} of subnet {subnet.id} overlaps"
                f" with {taken}, which HA routers keep for themselves.",
            )


def make_ha(session: Session, router: Router, settings: ApiSettings, now: datetime) -> list[Port]:
    """Give `router` (in the session, flushed) its members' ports on its
    project's HA network, making the network first if the project has none;
    the ports, member 0's first."""
    project_id = router.project_id
    network = _locked_network(session, project_id)
    if network is None:
        network = _make_network(session, project_id, settings, now)
    subnet = _ha_subnet(session, network, project_id, settings, now)
    missing = len(HA_MEMBERS) - len(member_ports(session, router.id))
    for _ in range(missing):
        values = prepare_body(
            ports.RESOURCE,
            {
                "port": {
                    "name": HA_PORT_NAME % project_id,
                    "project_id": "",
                    "network_id": network.id,
                    "device_owner": ROUTER_HA_INTERFACE,
                    "device_id": router.id,
                    "fixed_ips": [{"subnet_id": subnet.id}],
                }
            },
            method="POST",
            project_id="",
            is_admin=True,
        )
        port = ports.create(session, SERVICE, values, now)
        session.add(RouterPort(router_id=router.id, port_id=port.id, port_type=ROUTER_HA_INTERFACE))
    session.flush()
    return member_ports(session, router.id)


def unmake_ha(session: Session, router: Router, now: datetime) -> None:
    """Take `router`'s members' ports away, and its project's HA network
    (subnet, network, `HaNetwork` row) with them when no port is left on it."""
    network = _locked_network(session, router.project_id)
    for port in member_ports(session, router.id):
        session.execute(sql_delete(RouterPort).where(RouterPort.port_id == port.id))
        ports.remove(session, port, now)
    if network is None:
        return
    session.flush()
    left = session.scalar(select(Port.id).where(Port.network_id == network.id).limit(1))
    if left is not None:
        return
    session.execute(sql_delete(HaNetwork).where(HaNetwork.project_id == router.project_id))
    networks.delete(session, SERVICE, network, now)
