"""A network's DHCP port: DHCP where no router serves it.

DHCP is served by router appliances on the subnets their interfaces are on.
A subnet with `enable_dhcp` that no router interface is on (an isolated or a
provider network) is served as Neutron's DHCP agent serves every network: by
an appliance of its own (kind "dhcp", see `astara.drivers.dhcp`), whose
Neutron port is the network's DHCP port — device_owner `network:dhcp`,
device_id `dhcp-<network id>` (the appliance's id), the network's project.

The rule, kept by `sync` alone: the DHCP port has one fixed IP on each
subnet of the network that

- has `enable_dhcp` (IPv4) or a DHCPv6 mode (IPv6),
- has no router interface on it (a router serves it then), and
- has a workload on it: a port whose device_owner does not start with
  `network:` holds an address on it;

and the port exists exactly while it has at least one. So a network gets a
DHCP appliance only while it has someone to serve, never transiently while
it is being set up (a network, a subnet, then a router interface: the usual
order creates none). Consequences, as in Neutron: the DHCP port never blocks
a subnet's or a network's delete (the subnet's workloads block it anyway;
`sync` lets go of what is leaving first), it is not counted in quotas
(`quotas.used`), and the network's project sees it among its ports.

`sync` is called, in the transaction of the change, by every operation that
can change the answer: subnet create/update/delete, port create/update/
delete, router add/remove interface, network delete. Its own port changes
are recorded like any other (revision, outbox event), which wakes the
network's DHCP appliance in the orchestrator.

IPv6: DHCPv6 subnets (`dhcpv6-stateful`, `dhcpv6-stateless`) are served
the same way (the appliance's router advertisements carry the managed or
other-config flag and say it is no default router); a SLAAC-only subnet has
nothing to lease, and without a router nothing to route, so it is not.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from datetime import datetime
from typing import cast

from sqlalchemy import ColumnElement, String, bindparam, exists, literal, select
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.sql import Executable

from astara.api import changes, ports
from astara.db.models import (
    DHCP,
    ROUTER_INTERFACE,
    IpAllocation,
    Network,
    Port,
    Subnet,
    dhcp_appliance_id,
)
from astara.drivers.appliance import leased_by_dhcp

log = logging.getLogger(__name__)


def _owner(kind: str) -> ColumnElement[str]:
    """A device owner written into the statement, not bound: PostgreSQL plans
    a prepared statement once for any parameters, and only a constant lets
    its statistics say that few ports are router interfaces or DHCP ports
    (bound, the planner scanned every port of the network, under the
    network's lock, on every port create: 3 ms at 10,000 ports)."""
    return literal(kind, literal_execute=True)


def dhcp_port(session: Session, network_id: str) -> Port | None:
    return session.scalar(
        select(Port).where(
            Port.network_id == network_id,
            Port.device_owner == DHCP,
            Port.device_id == dhcp_appliance_id(network_id),
        )
    )


def _current_dhcp_port(session: Session, network_id: str) -> Port | None:
    """The DHCP port with its fixed IPs as committed now (one statement): read
    under the network's lock, what another transaction committed counts."""
    return (
        session.scalars(
            select(Port)
            .where(
                Port.network_id == network_id,
                Port.device_owner == DHCP,
                Port.device_id == dhcp_appliance_id(network_id),
            )
            .options(joinedload(Port.fixed_ips))
            .execution_options(populate_existing=True)
        )
        .unique()
        .first()
    )


def needed_subnets(
    session: Session, network_id: str, leaving: Collection[str] = ()
) -> list[Subnet]:
    """The network's subnets its DHCP port must be on (see the module's rule),
    oldest first; `leaving` are subnets about to go (never needed). One
    statement: each rule's test is an EXISTS that stops at its first row,
    however many ports the subnet has."""
    on_subnet = IpAllocation.subnet_id == Subnet.id
    # A port's fixed IPs are on its network's subnets: the network's router
    # interfaces (an index away, and few) are the only ports to look at.
    served = (
        exists()
        .where(
            Port.network_id == network_id,
            Port.device_owner == _owner(ROUTER_INTERFACE),
            IpAllocation.port_id == Port.id,
            on_subnet,
        )
        .label("served")
    )
    with_workloads = (
        exists()
        .where(
            on_subnet,
            Port.id == IpAllocation.port_id,
            Port.device_owner.not_like(_owner("network:%")),
        )
        .label("with_workloads")
    )
    rows = session.execute(
        select(Subnet, served, with_workloads)
        .where(Subnet.network_id == network_id, Subnet.enable_dhcp.is_(True))
        .order_by(Subnet.created_at, Subnet.id)
    )
    return [
        subnet
        for subnet, is_served, has_workloads in rows
        if subnet.id not in leaving and leased_by_dhcp(subnet) and not is_served and has_workloads
    ]


# The network's row, locked (see `sync`): built once, compiled once.
_LOCK = (
    select(Network.id).where(Network.id == bindparam("network_id")).with_for_update(key_share=True)
)


def _judgement() -> Executable:
    """Whether the network has a DHCP port, and each of its subnets (none:
    one row of NULLs) with what the rule asks of it: the subnet's kind, a
    router interface on it (`served`), a workload on it, and whether the
    DHCP port holds an address on it. One statement, built once."""
    network_id = bindparam("network_id", type_=String)
    dhcp_ports = select(Port.id).where(
        Port.network_id == network_id,
        Port.device_owner == _owner(DHCP),
        Port.device_id == bindparam("device_id"),
    )
    on_subnet = IpAllocation.subnet_id == Subnet.id
    served = exists().where(
        Port.network_id == network_id,
        Port.device_owner == _owner(ROUTER_INTERFACE),
        IpAllocation.port_id == Port.id,
        on_subnet,
    )
    with_workloads = exists().where(
        on_subnet, Port.id == IpAllocation.port_id, Port.device_owner.not_like(_owner("network:%"))
    )
    held = exists().where(on_subnet, IpAllocation.port_id.in_(dhcp_ports.scalar_subquery()))
    return (
        select(
            exists(dhcp_ports).label("has_port"),
            Subnet.id,
            Subnet.ip_version,
            Subnet.cidr,
            Subnet.enable_dhcp,
            Subnet.ipv6_address_mode,
            Subnet.ipv6_ra_mode,
            served.label("served"),
            with_workloads.label("with_workloads"),
            held.label("held"),
        )
        .select_from(Network)
        .outerjoin(Subnet, Subnet.network_id == Network.id)
        .where(Network.id == network_id)
    )


_JUDGEMENT = _judgement()


def _right_already(session: Session, network_id: str, leaving: Collection[str]) -> bool:
    """Whether the DHCP port is what the rule says already (absent where no
    subnet needs it; holding exactly the needed subnets' addresses
    otherwise), read in one statement of plain rows: the common case of
    every change that calls `sync`. (False: let the full judgement decide.)"""
    rows = session.execute(
        _JUDGEMENT, {"network_id": network_id, "device_id": dhcp_appliance_id(network_id)}
    ).all()
    has_port = bool(rows[0].has_port) if rows else False
    needed = {
        row.id
        for row in rows
        if row.id is not None
        and row.enable_dhcp
        and row.id not in leaving
        and leased_by_dhcp(cast(Subnet, row))  # the columns it reads
        and not row.served
        and row.with_workloads
    }
    held = {row.id for row in rows if row.id is not None and row.held}
    if not has_port:
        return not needed
    return bool(needed) and held == needed


def sync(session: Session, network_id: str, now: datetime, leaving: Collection[str] = ()) -> None:
    """Make the network's DHCP port what the module's rule says: created,
    given or relieved of fixed IPs, or deleted. `leaving`: subnets being
    deleted by the caller (their DHCP allocation goes first, so it never
    blocks the delete). May raise IpAddressGenerationFailure (409) when a
    subnet that needs serving has no address left for the DHCP port."""
    session.flush()  # the caller's change is what is judged
    # Decide under the network's row lock (a row lock on PostgreSQL, the write
    # lock on SQLite), always: two changes of one network judged apart (a first
    # workload, a router joining its subnet) would each miss the other's and
    # leave two DHCP servers, or one serving nobody.
    # FOR NO KEY UPDATE: the writes that refer to the network (a port, its
    # fixed IPs) hold its key-share lock until they commit, and FOR UPDATE
    # waits for those: two creates on one network would each hold theirs and
    # wait for the other's (a deadlock). The judges still wait for each other.
    # The lock is a statement of its own: what is read after it sees every
    # change committed before it was granted (PostgreSQL's read committed).
    if session.execute(_LOCK, {"network_id": network_id}).first() is None:
        return
    if _right_already(session, network_id, leaving):
        return
    network = session.get(Network, network_id, populate_existing=True)
    if network is None:
        return
    port = _current_dhcp_port(session, network_id)
    wanted = needed_subnets(session, network_id, leaving)
    # A full subnet has no address for the DHCP port: it goes unserved (said
    # in the log) rather than failing the caller's change (a router leaving it).
    held = {a.subnet_id for a in port.fixed_ips} if port is not None else set()
    servable = [s for s in wanted if s.id in held or ports.has_free(session, s)]
    for subnet in wanted:
        if subnet not in servable:
            log.warning("subnet %s needs DHCP and has no address left for it", subnet.id)
    if not servable:
        if port is not None:
            session.delete(port)
            changes.record(session, "port", port, "delete", now, {"network_id": network_id})
            session.flush()
        return
    # The caller may have added a subnet behind the relationship's back.
    session.expire(network, ["subnets"])
    kept = list(port.fixed_ips) if port is not None else []
    if port is not None and held == {s.id for s in servable}:
        return  # right already
    mac = port.mac_address if port is not None else ports.free_mac(session, network)
    allocations = ports.allocate(
        session, network, mac, [{"subnet_id": s.id} for s in servable], kept
    )
    if port is None:
        port = Port(
            id=str(uuid.uuid4()),
            project_id=network.project_id,
            network_id=network.id,
            name="",
            mac_address=mac,
            device_id=dhcp_appliance_id(network.id),
            device_owner=DHCP,
            status="DOWN",
            created_at=now,
            updated_at=now,
            revision_number=1,
        )
        port.fixed_ips = allocations
        session.add(port)
        changes.record(session, "port", port, "create", now)
    else:
        port.fixed_ips = []
        session.flush()  # release what is dropped before claiming the new set
        port.fixed_ips = allocations
        changes.update(session, "port", port, {}, now)
    session.flush()
