"""The rows a plan reads (`drivers.router`, `drivers.dhcp`): one appliance's,
statement by statement (`Reads`), or many appliances' at once (`Batch`), so
that a restarted orchestrator plans every appliance in a few statements. The
drivers build a plan from either the same way, so both give the same config
(and the same digest) for the same rows.

Order matters to the digest: where a plan's statement orders its rows, the
batch's statement orders them the same way, and an appliance's share of
them keeps that order."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session, selectinload

from astara.api import dhcp
from astara.db.models import (
    DHCP,
    FirewallGroup,
    FirewallGroupPort,
    FirewallPolicyRule,
    FirewallRule,
    FloatingIp,
    IpAllocation,
    Network,
    Port,
    Router,
    RouterPort,
    Subnet,
    dhcp_appliance_id,
)

CHUNK = 1000  # ids in one statement's IN list
ONE_STATEMENT = 20_000  # host rows are read in one ordered statement up to this many subnets

HostRow = tuple[str, str]  # (MAC, IP address) of a port with an address on a served subnet
# (IP address, device_id, project_id) of an instance's port: one with a
# device and not the service's own (`network:*`), which metadata answers for.
InstanceRow = tuple[str, str, str]
FloatingRow = tuple[str, str | None]  # (floating IP, fixed IP)


@dataclass(frozen=True)
class FirewallRead:
    """The firewall group of some router ports, with the enabled rules of
    its policies in order. `enforced`: it has a policy (one without any is
    INACTIVE, and filters nothing, as Neutron's)."""

    group_id: str
    admin_state_up: bool
    enforced: bool
    ingress: tuple[FirewallRule, ...]
    egress: tuple[FirewallRule, ...]


class Reads:
    """One appliance's rows, a statement each."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def attached(self, router_id: str) -> Sequence[tuple[Port, str]]:
        """A router's ports (their fixed IPs loaded) and their types, by type then id."""
        return [
            (port, port_type)
            for port, port_type in self.session.execute(
                select(Port, RouterPort.port_type)
                .join(RouterPort, RouterPort.port_id == Port.id)
                .where(RouterPort.router_id == router_id)
                .order_by(RouterPort.port_type, Port.id)
                .options(selectinload(Port.fixed_ips))
            ).all()
        ]

    def networks(self, ids: Collection[str]) -> dict[str, Network]:
        return {n.id: n for n in self.session.scalars(select(Network).where(Network.id.in_(ids)))}

    def network(self, network_id: str) -> Network | None:
        return self.session.get(Network, network_id)

    def subnets(self, ids: Collection[str]) -> dict[str, Subnet]:
        return {s.id: s for s in self.session.scalars(select(Subnet).where(Subnet.id.in_(ids)))}

    def host_rows(self, subnet_ids: Collection[str]) -> list[HostRow]:
        """Every port's address on these subnets, by address."""
        if not subnet_ids:
            return []
        return [
            (mac, address)
            for mac, address in self.session.execute(
                select(Port.mac_address, IpAllocation.ip_address)
                .join(IpAllocation, IpAllocation.port_id == Port.id)
                .where(IpAllocation.subnet_id.in_(subnet_ids))
                .order_by(IpAllocation.ip_address)
            ).all()
        ]

    def instance_rows(self, subnet_ids: Collection[str]) -> list[InstanceRow]:
        """Every instance port's address on these subnets, by address."""
        if not subnet_ids:
            return []
        return [
            (address, device_id, project_id)
            for address, device_id, project_id in self.session.execute(
                select(IpAllocation.ip_address, Port.device_id, Port.project_id)
                .join(IpAllocation, IpAllocation.port_id == Port.id)
                .where(IpAllocation.subnet_id.in_(subnet_ids), *_instance_ports())
                .order_by(IpAllocation.ip_address)
            ).all()
        ]

    def floating_ips(self, router_id: str) -> list[FloatingRow]:
        """A router's associated floating IPs, by floating address."""
        return [
            (f.floating_ip_address, f.fixed_ip_address)
            for f in self.session.scalars(
                select(FloatingIp)
                .where(FloatingIp.router_id == router_id, FloatingIp.fixed_ip_address.is_not(None))
                .order_by(FloatingIp.floating_ip_address)
            )
        ]

    def dhcp_port(self, network_id: str) -> Port | None:
        """The network's DHCP port (`astara.api.dhcp`)."""
        return dhcp.dhcp_port(self.session, network_id)

    def firewalls(self, port_ids: Collection[str]) -> dict[str, FirewallRead]:
        """The firewall group of each of these ports that has one (three
        statements: groups, their policies' enabled rules)."""
        found: dict[str, FirewallRead] = {}
        groups: dict[str, tuple[FirewallGroup, list[str]]] = {}
        for chunk in chunks(port_ids):
            for port_id, group in self.session.execute(
                select(FirewallGroupPort.port_id, FirewallGroup)
                .join(FirewallGroup, FirewallGroup.id == FirewallGroupPort.firewall_group_id)
                .where(FirewallGroupPort.port_id.in_(chunk))
            ):
                groups.setdefault(group.id, (group, []))[1].append(port_id)
        policy_ids = {
            p
            for group, _ in groups.values()
            for p in (group.ingress_firewall_policy_id, group.egress_firewall_policy_id)
            if p is not None
        }
        rules: dict[str, list[FirewallRule]] = defaultdict(list)
        for chunk in chunks(policy_ids):
            for policy_id, rule in self.session.execute(
                select(FirewallPolicyRule.firewall_policy_id, FirewallRule)
                .join(FirewallRule, FirewallRule.id == FirewallPolicyRule.firewall_rule_id)
                .where(FirewallPolicyRule.firewall_policy_id.in_(chunk), FirewallRule.enabled)
                .order_by(FirewallPolicyRule.firewall_policy_id, FirewallPolicyRule.position)
            ):
                rules[policy_id].append(rule)
        for group, ports in groups.values():
            read = FirewallRead(
                group.id,
                group.admin_state_up,
                bool(group.ingress_firewall_policy_id or group.egress_firewall_policy_id),
                tuple(rules.get(group.ingress_firewall_policy_id or "", ())),
                tuple(rules.get(group.egress_firewall_policy_id or "", ())),
            )
            found.update((port_id, read) for port_id in ports)
        return found


class Batch(Reads):
    """Many appliances' rows, read at once (`load`): about ten statements for
    any number of routers and networks, in the session's one transaction.
    What was not loaded is read as `Reads` does."""

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.routers: dict[str, Router] = {}
        self._attached: dict[str, list[tuple[Port, str]]] = {}
        self._networks: dict[str, Network] = {}
        self._subnets: dict[str, Subnet] = {}
        self._dhcp_ports: dict[str, Port | None] = {}
        self._floating: dict[str, list[FloatingRow]] = {}
        self._firewalls: dict[str, FirewallRead] = {}
        self._firewall_ports: set[str] = set()
        # Host rows by subnet, each with its place in one statement's order;
        # the instance rows among them (the same statement).
        self._hosts: dict[str, list[tuple[int, HostRow]]] | None = None
        self._instances: dict[str, list[tuple[int, InstanceRow]]] = {}

    def load(self, router_ids: Collection[str], network_ids: Collection[str]) -> Batch:
        """Read what planning these routers and these networks' DHCP
        appliances takes."""
        session = self.session
        for chunk in chunks(router_ids):
            self.routers.update(
                (r.id, r) for r in session.scalars(select(Router).where(Router.id.in_(chunk)))
            )
            self._attached.update((router_id, []) for router_id in chunk)
            for port, router_id, port_type in session.execute(
                select(Port, RouterPort.router_id, RouterPort.port_type)
                .join(RouterPort, RouterPort.port_id == Port.id)
                .where(RouterPort.router_id.in_(chunk))
                .order_by(RouterPort.port_type, Port.id)
                .options(selectinload(Port.fixed_ips))
            ):
                self._attached[router_id].append((port, port_type))
            self._floating.update((router_id, []) for router_id in chunk)
            for owner, floating, fixed in session.execute(
                select(
                    FloatingIp.router_id,
                    FloatingIp.floating_ip_address,
                    FloatingIp.fixed_ip_address,
                )
                .where(FloatingIp.router_id.in_(chunk), FloatingIp.fixed_ip_address.is_not(None))
                .order_by(FloatingIp.floating_ip_address)
            ):
                self._floating[str(owner)].append((floating, fixed))
        by_network: dict[str, list[Port]] = defaultdict(list)
        for chunk in chunks([dhcp_appliance_id(n) for n in network_ids]):
            for port in session.scalars(
                select(Port)
                .where(Port.device_owner == DHCP, Port.device_id.in_(chunk))
                .options(selectinload(Port.fixed_ips))
            ):
                if port.device_id == dhcp_appliance_id(port.network_id):
                    by_network[port.network_id].append(port)
        for network_id in network_ids:
            found = by_network.get(network_id, [])
            if len(found) <= 1:  # several: which one `dhcp_port` reads is its statement's choice
                self._dhcp_ports[network_id] = found[0] if found else None
        ports = [p for rows in self._attached.values() for p, _ in rows]
        self._firewall_ports = {p.id for p in ports}
        self._firewalls = super().firewalls(self._firewall_ports)
        ports += [p for p in self._dhcp_ports.values() if p is not None]
        wanted_networks = {p.network_id for p in ports} | set(network_ids)
        for chunk in chunks(wanted_networks):
            self._networks.update(super().networks(chunk))
        for chunk in chunks({a.subnet_id for p in ports for a in p.fixed_ips}):
            self._subnets.update(super().subnets(chunk))
        return self

    def attached(self, router_id: str) -> Sequence[tuple[Port, str]]:
        found = self._attached.get(router_id)
        return found if found is not None else super().attached(router_id)

    def networks(self, ids: Collection[str]) -> dict[str, Network]:
        missing = [i for i in ids if i not in self._networks]
        if missing:
            self._networks.update(super().networks(missing))
        return {i: self._networks[i] for i in ids if i in self._networks}

    def network(self, network_id: str) -> Network | None:
        return self.networks([network_id]).get(network_id)

    def subnets(self, ids: Collection[str]) -> dict[str, Subnet]:
        missing = [i for i in ids if i not in self._subnets]
        if missing:
            self._subnets.update(super().subnets(missing))
        return {i: self._subnets[i] for i in ids if i in self._subnets}

    def host_rows(self, subnet_ids: Collection[str]) -> list[HostRow]:
        if not subnet_ids:
            return []
        if self._hosts is None:
            self._hosts = self._load_hosts()
        if any(s not in self._hosts for s in subnet_ids):
            return super().host_rows(subnet_ids)
        ranked = sorted(row for s in set(subnet_ids) for row in self._hosts[s])
        return [row for _, row in ranked]

    def _load_hosts(self) -> dict[str, list[tuple[int, HostRow]]]:
        """The host rows of every subnet loaded, in one statement ordered as
        `Reads.host_rows` orders them (the database's order of addresses)."""
        served = {s.id for s in self._subnets.values()}
        instance = and_(*_instance_ports())
        query = (
            select(
                Port.mac_address,
                IpAllocation.ip_address,
                IpAllocation.subnet_id,
                Port.device_id,
                Port.project_id,
                instance,
            )
            .join(IpAllocation, IpAllocation.port_id == Port.id)
            .order_by(IpAllocation.ip_address)
        )
        if len(served) <= ONE_STATEMENT:
            query = query.where(IpAllocation.subnet_id.in_(served))
        hosts: dict[str, list[tuple[int, HostRow]]] = {s: [] for s in served}
        self._instances = {s: [] for s in served}
        for rank, (mac, address, subnet_id, device, project, is_instance) in enumerate(
            self.session.execute(query)
        ):
            if subnet_id in hosts:
                hosts[subnet_id].append((rank, (mac, address)))
                if is_instance:
                    self._instances[subnet_id].append((rank, (address, device, project)))
        return hosts

    def instance_rows(self, subnet_ids: Collection[str]) -> list[InstanceRow]:
        if not subnet_ids:
            return []
        if self._hosts is None:
            self._hosts = self._load_hosts()
        if any(s not in self._instances for s in subnet_ids):
            return super().instance_rows(subnet_ids)
        ranked = sorted(row for s in set(subnet_ids) for row in self._instances[s])
        return [row for _, row in ranked]

    def floating_ips(self, router_id: str) -> list[FloatingRow]:
        found = self._floating.get(router_id)
        return found if found is not None else super().floating_ips(router_id)

    def firewalls(self, port_ids: Collection[str]) -> dict[str, FirewallRead]:
        if not set(port_ids) <= self._firewall_ports:
            return super().firewalls(port_ids)
        return {p: self._firewalls[p] for p in port_ids if p in self._firewalls}

    def dhcp_port(self, network_id: str) -> Port | None:
        if network_id in self._dhcp_ports:
            return self._dhcp_ports[network_id]
        return super().dhcp_port(network_id)


def _instance_ports() -> tuple[ColumnElement[bool], ...]:
    """An instance's port: it has a device, and is not one of the service's
    own (a router's, a DHCP appliance's, a floating IP's)."""
    return (Port.device_id != "", ~Port.device_owner.startswith("network:"))


def chunks(ids: Iterable[str]) -> Iterable[list[str]]:
    """Ids in sorted slices of `CHUNK`, for IN lists."""
    ordered = sorted(ids)
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]
