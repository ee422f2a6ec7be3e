"""The orchestrator's L2 work on every host: the segments its appliances and
workloads need, workload ports plugged as their bindings say, and segments
nothing uses removed. A port, segment or host that fails is logged, its
ports DOWN, and the others proceed.

What a host needs is what runs there: the networks of the ports bound to
it (`binding:host_id`; none means the local host) and of the appliances
placed on it (a router's ports, a DHCP appliance's network). A network's
segment on a host says how it reaches the other hosts that need it: a
`vxlan` network floods only to their underlay addresses (head-end
replication), so a host with nothing on a network sees none of its
traffic; a `flat` one is bridged to the host's interface for its physnet.
A host without an underlay address (the single-host default) keeps every
`vxlan` network on its own bridge.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import literal, select, update
from sqlalchemy.orm import Session, sessionmaker

from astara.agent.client import AgentError
from astara.db.models import (
    DHCP,
    HA_MEMBERS,
    ApplianceState,
    Network,
    Port,
    PortBinding,
    RouterPort,
    Subnet,
    dhcp_appliance_id,
    dhcp_network_id,
    ha_member,
)
from astara.drivers import loadbalancer as lb_driver
from astara.drivers.appliance import ipv6_mode
from astara.drivers.loadbalancer import OWNER as LB_OWNER
from astara.drivers.loadbalancer import PREFIX as LB_PREFIX
from astara.model.fabric import AddressSetSpec, NetworkSpec, PortSpec, SecurityGroupSpec
from astara.orchestrator.hosts import Hosts, infos
from astara.orchestrator.placement import HostInfo
from astara.orchestrator.security import SecurityView, security_view

log = logging.getLogger(__name__)


class CannotCarry(Exception):
    """A host lacks what a network needs there (an interface for its physnet)."""


@dataclass(frozen=True)
class Segment:
    """A network as every host carries it."""

    network_id: str
    mtu: int
    external: bool
    network_type: str
    physical_network: str | None
    segmentation_id: int | None


@dataclass
class FabricView:
    """One read of the database: the hosts, what each needs, and the ports
    to plug on each."""

    hosts: dict[str, HostInfo]
    segments: dict[str, Segment]
    needs: dict[str, set[str]] = field(default_factory=dict)  # host → network ids
    ports: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # host → specs
    statuses: dict[str, str] = field(default_factory=dict)  # port id → status
    security: SecurityView = field(default_factory=SecurityView)

    def spec(self, host: str, network_id: str) -> dict[str, Any] | None:
        """The agent's network spec for `network_id` on `host`; None when
        the host cannot carry it (a flat network on a physnet it lacks)."""
        segment = self.segments[network_id]
        spec: dict[str, Any] = {"mtu": segment.mtu, "external": segment.external}
        here = self.hosts[host]
        if segment.network_type == "flat":
            if segment.physical_network not in here.physnets:
                return None
            spec["segment"] = {"type": "flat", "physnet": segment.physical_network}
        elif here.underlay_address and segment.segmentation_id is not None:
            remotes = sorted(
                {
                    str(other.underlay_address)
                    for name, other in self.hosts.items()
                    if name != host
                    and other.alive
                    and other.underlay_address
                    and network_id in self.needs.get(name, ())
                }
            )
            spec["segment"] = {
                "type": "vxlan",
                "vni": segment.segmentation_id,
                "remotes": remotes,
            }
        return spec


class L2:
    def __init__(
        self, sessions: sessionmaker[Session], hosts: Hosts, stopping: threading.Event
    ) -> None:
        self.sessions, self.hosts, self.stopping = sessions, hosts, stopping
        self._lock = threading.Lock()  # guards the segment cache
        self._pass_lock = threading.Lock()  # one pass at a time (the worker's or cleanup's)
        # (host, network) → the spec last PUT there
        self._segments: dict[tuple[str, str], dict[str, Any]] = {}
        # (host, network) → an MTU the host could not take yet (attachments)
        self._mtu_kept: dict[tuple[str, str], int] = {}

    # --- the whole pass -----------------------------------------------------------------

    def reconcile(self) -> list[str]:
        """Plug bound ports, unplug the rest, and remove segments nothing
        uses, on every live host; what was removed. One pass at a time (the
        `l2` key's worker's or `cleanup`'s)."""
        with self._pass_lock:
            removed: list[str] = []
            with self.sessions.begin() as session:
                view = fabric_view(session, self.hosts.local)
            for name, host in sorted(view.hosts.items()):
                if self.stopping.is_set():
                    break
                if not host.alive:
                    continue  # nothing known; its ports keep their status
                try:
                    removed += self._reconcile_host(host, view)
                except (AgentError, httpx.HTTPError) as error:
                    log.warning("host %s: L2 pass failed: %s", name, error)
                    self.forget_segments(None, name)
                    for port_id in view.ports.get(name, {}):
                        view.statuses[port_id] = "DOWN"
            self._write_statuses(view)
            return removed

    def _reconcile_host(self, host: HostInfo, view: FabricView) -> list[str]:
        removed: list[str] = []
        agent = self.hosts.client(host)
        # The agent first: a segment pushed after this listing is never
        # mistaken for an unused one below.
        segments = agent.networks(observe=False)
        with self._lock:
            present = {s["id"] for s in segments}
            for key in [k for k in self._segments if k[0] == host.name and k[1] not in present]:
                del self._segments[key]  # gone behind our back
        needed = view.needs.get(host.name, set())
        specs = view.ports.get(host.name, {})
        stored = {s["id"]: s for s in segments}
        for network_id in sorted(needed):
            if self.stopping.is_set():
                return removed
            try:
                # Against what the agent holds, not the cache: a push's
                # segment computed before a later change never sticks.
                self.ensure_network(host, network_id, view, stored.get(network_id, {}))
            except (AgentError, CannotCarry) as error:  # its ports fail below, and are DOWN
                log.warning("host %s: segment %s failed: %s", host.name, network_id, error)
        wanted_groups = view.security.groups_of(specs)
        wanted_sets = view.security.sets_of(wanted_groups)
        # The sets first (the groups' rules name them), then the groups.
        # One that fails is logged: its ports stay closed to what it would
        # allow, and the other groups, sets and ports go on.
        held_sets = {s.pop("id"): s for s in agent.address_sets()}
        for set_id, set_spec in wanted_sets.items():
            if held_sets.get(set_id) != _normal_of(AddressSetSpec, set_spec):
                _logged(agent.put_address_set, set_id, set_spec)
        held_groups = {g.pop("id"): g for g in agent.security_groups()}
        for group_id, group_spec in wanted_groups.items():
            if held_groups.get(group_id) != _normal_of(SecurityGroupSpec, group_spec):
                _logged(agent.put_security_group, group_id, group_spec)
        plugged = {p["id"]: p for p in agent.ports()}
        for port_id in sorted(set(plugged) - set(specs)):
            if self.stopping.is_set():
                return removed
            log.info("host %s: unplugging port %s", host.name, port_id)
            try:
                agent.delete_port(port_id)
            except AgentError as error:
                if error.status_code != 404:  # gone already: nothing to say
                    log.warning("unplugging port %s failed: %s", port_id, error)
                    continue
            removed.append(f"port {port_id}")
        for port_id, spec in sorted(specs.items()):
            if self.stopping.is_set():
                return removed
            current = plugged.get(port_id)
            try:
                if current is None or current["spec"] != spec or not current.get("present"):
                    agent.put_port(port_id, spec)
                view.statuses[port_id] = "ACTIVE"
            except AgentError as error:
                log.warning("plugging port %s failed: %s", port_id, error)
                view.statuses[port_id] = "DOWN"
        # What no port here needs any more: the groups, then the sets.
        for group_id in sorted(set(held_groups) - set(wanted_groups)):
            if _logged(agent.delete_security_group, group_id):
                removed.append(f"security group {group_id}")
        for set_id in sorted(set(held_sets) - set(wanted_sets)):
            if _logged(agent.delete_address_set, set_id):
                removed.append(f"address set {set_id}")
        for segment in segments:
            if segment["id"] in needed:
                continue
            if self.stopping.is_set():
                return removed
            try:
                self.forget_segments([segment["id"]], host.name)
                agent.delete_network(segment["id"])
                removed.append(f"network {segment['id']}")
            except AgentError as error:
                if error.status_code != 409:  # 409: still in use, the next pass
                    log.warning("removing segment %s failed: %s", segment["id"], error)
        return removed

    def _write_statuses(self, view: FabricView) -> None:
        with self.sessions.begin() as session:
            for port_id, status in view.statuses.items():
                session.execute(
                    update(Port)
                    .where(Port.id == port_id, Port.status != status)
                    .values(status=status)
                )
            # Ports neither bound nor a router's are DOWN: nothing on a host
            # carries them. (A network's DHCP port follows its appliance.)
            session.execute(
                update(Port)
                .where(
                    Port.status != "DOWN",
                    Port.id.not_in(select(PortBinding.port_id)),
                    Port.id.not_in(select(RouterPort.port_id)),
                    Port.device_owner.not_in(("network:floatingip", DHCP)),
                )
                .values(status="DOWN")
            )

    # --- one appliance's networks -------------------------------------------------------

    def sync_networks(self, network_ids: Collection[str], host: str) -> bool:
        """Before an appliance is pushed to `host`: its networks' segments on
        every live host that needs them (its own, whose placement is
        recorded, and the others, whose flood lists now include it). A
        failure on `host` is raised (the push cannot work without them); on
        another host it is logged, and the L2 pass repairs it. Whether a
        flood list was PUT (on a host with an underlay address: the caller
        then has the L2 pass run: it re-reads everything and compares with
        what the agents hold, so a flood list computed here before a
        placement changed is corrected at once). A host without an underlay
        floods nowhere: nothing its segments hold changes with placements,
        and the pass (which reads every port and segment) is left to the
        events that concern it and the resync, so a push costs what changed."""
        if not network_ids:
            return False
        with self.sessions.begin() as session:
            view = fabric_view(session, self.hosts.local, network_ids)
        changed = False
        for name, needed in sorted(view.needs.items(), key=lambda item: item[0] != host):
            other = view.hosts[name]
            if not other.alive:
                continue
            for network_id in sorted(needed & set(network_ids)):
                try:
                    put = self.ensure_network(other, network_id, view)
                    changed |= put and bool(other.underlay_address)
                except (AgentError, CannotCarry, httpx.HTTPError) as error:
                    if name == host:
                        raise
                    log.warning("host %s: segment %s failed: %s", name, network_id, error)
                    self.forget_segments([network_id], name)
                    if isinstance(error, httpx.HTTPError):
                        break  # it does not answer: not once per network
        return changed

    def ensure_network(
        self,
        host: HostInfo,
        network_id: str,
        view: FabricView,
        current: dict[str, Any] | None = None,
    ) -> bool:
        """PUT the segment unless the host has it already: as `current` (what
        the agent listed, `{}` for nothing) says, or else as the cache of
        what was PUT says (a PUT takes the agent's exclusive L2 lock, which
        applies wait for). Whether it was PUT."""
        spec = view.spec(host.name, network_id)
        if spec is None:
            raise CannotCarry(
                f"host {host.name} has no interface for physnet "
                f"{view.segments[network_id].physical_network} (network {network_id})"
            )
        key = (host.name, network_id)
        if current is not None:
            held, wanted = _normal(current) if current else None, _normal(spec)
            if held is not None and held == wanted:
                with self._lock:
                    self._segments[key] = spec
                return False
            with self._lock:
                kept = self._mtu_kept.get(key)
            if held is not None and kept == spec["mtu"] and {**held, "mtu": kept} == wanted:
                return False  # only the MTU differs, and the host cannot change it yet
        else:
            with self._lock:
                if self._segments.get(key) == spec:
                    return False
        client = self.hosts.client(host)
        try:
            client.put_network(network_id, **spec)
        except AgentError as error:
            if error.status_code != 409 or "MTU" not in str(error.body):
                raise
            # An MTU change under attachments (a network from before path
            # MTUs, lowered to the VXLAN maximum): the segment still changes
            # (flood lists), at the MTU the host has until nothing is plugged.
            seen = client.request("GET", f"/v1/networks/{network_id}", ok=(200,))
            client.put_network(network_id, **{**spec, "mtu": seen.get("mtu") or spec["mtu"]})
            with self._lock:
                self._mtu_kept[key] = spec["mtu"]
        with self._lock:
            self._segments[key] = spec
        return True

    def forget_segments(self, network_ids: Iterable[str] | None, host: str | None = None) -> None:
        """After a failure, ask the agent again rather than trust the cache."""
        with self._lock:
            for key in list(self._segments):
                if (host is None or key[0] == host) and (
                    network_ids is None or key[1] in network_ids
                ):
                    del self._segments[key]


def _logged(call: Any, *args: Any) -> bool:
    """`call(*args)`; False (and a warning) if the agent refused it."""
    try:
        call(*args)
    except AgentError as error:
        log.warning("%s%s failed: %s", call.__name__, args[:1], error)
        return False
    return True


def _normal_of(model: type[AddressSetSpec] | type[SecurityGroupSpec], spec: dict[str, Any]) -> Any:
    """`spec` as the agent holds and lists it (so equal ones compare equal)."""
    return model.model_validate(spec).model_dump(mode="json")


def _normal(spec: dict[str, Any]) -> dict[str, Any] | None:
    """A network spec in the agent's normal form (so equal ones compare
    equal); None if it is not one (it then differs from any)."""
    fields = {k: spec[k] for k in ("mtu", "external", "segment") if k in spec}
    try:
        normal: dict[str, Any] = NetworkSpec.model_validate(fields).model_dump(mode="json")
    except ValueError:
        return None
    return normal


def fabric_view(
    session: Session, local: str | None, only: Collection[str] | None = None
) -> FabricView:
    """What every host needs (only `only`'s networks, when given) and the
    ports to plug on each (all of them, unless `only` is given)."""
    hosts = infos(session)
    needs: dict[str, set[str]] = {}

    def need(host: str | None, network_id: str) -> None:
        if host is not None and host in hosts:
            needs.setdefault(host, set()).add(network_id)

    def restrict(query: Any, column: Any) -> Any:
        return query if only is None else query.where(column.in_(only))

    bindings = session.execute(
        restrict(
            select(PortBinding, Port, Network)
            .join(Port, Port.id == PortBinding.port_id)
            .join(Network, Network.id == Port.network_id)
            .order_by(PortBinding.port_id),
            Port.network_id,
        )
    ).all()
    ports: dict[str, dict[str, dict[str, Any]]] = {}
    statuses: dict[str, str] = {}
    for binding, port, network in bindings:
        host = binding.host or local
        if host is None or host not in hosts:
            log.warning("port %s: bound to host %s, which is not known", port.id, host)
            statuses[port.id] = "DOWN"
            continue
        need(host, port.network_id)
        if only is not None:
            continue
        try:
            ports.setdefault(host, {})[port.id] = _port_spec(session, binding, port, network)
        except ValueError as error:  # pydantic's ValidationError included
            # Nothing valid to plug: unplugged, and DOWN.
            log.warning("port %s: its binding cannot be plugged: %s", port.id, error)
            statuses[port.id] = "DOWN"
    if only is not None:
        # Only the appliances on these networks (a push's networks): what a
        # push costs grows with what it touches, not with every appliance.
        # Each (host, network) once: every router of a cloud is on its
        # external network, and a push read all of their rows (10,000 at
        # 10,000 routers) to learn the few hosts they are on.
        # A router's appliance, or an HA router's members (`ha0-<id>`, `ha1-<id>`).
        runs_router = ApplianceState.appliance_id.in_(
            [RouterPort.router_id, *(literal(m) + RouterPort.router_id for m in HA_MEMBERS)]
        )
        for host, on_network in session.execute(
            select(ApplianceState.host, Port.network_id)
            .join(RouterPort, runs_router)
            .join(Port, Port.id == RouterPort.port_id)
            .where(ApplianceState.host.is_not(None), Port.network_id.in_(only))
            .distinct()
        ).all():
            need(host, on_network)
        for appliance_id, host in session.execute(
            select(ApplianceState.appliance_id, ApplianceState.host).where(
                ApplianceState.host.is_not(None),
                ApplianceState.appliance_id.in_([dhcp_appliance_id(n) for n in only]),
            )
        ).all():
            served = dhcp_network_id(appliance_id)
            if served is not None:
                need(host, served)
        # A load balancer's appliance is on the networks of its ports (its
        # VIP's, its member subnets'): their device_id is its id.
        for host, on_network in session.execute(
            select(ApplianceState.host, Port.network_id)
            .join(Port, Port.device_id == ApplianceState.appliance_id)
            .where(
                ApplianceState.host.is_not(None),
                ApplianceState.appliance_id.startswith(LB_PREFIX),
                Port.device_owner == LB_OWNER,
                Port.network_id.in_(only),
            )
            .distinct()
        ).all():
            need(host, on_network)
        return _view(session, hosts, needs, {}, statuses)
    security = _with_security(session, ports, statuses)
    placed = session.execute(
        select(ApplianceState.appliance_id, ApplianceState.host).where(
            ApplianceState.host.is_not(None)
        )
    ).all()
    routers: dict[str, set[str]] = {}  # router → the hosts of its appliance or members
    balancers: dict[str, str] = {}
    for appliance_id, host in placed:
        network_id = dhcp_network_id(appliance_id)
        balancer_id = lb_driver.balancer_id(appliance_id)
        if balancer_id is not None:
            balancers[balancer_id] = str(host)
        elif network_id is None:
            router_id, _ = ha_member(appliance_id) or (appliance_id, 0)
            routers.setdefault(router_id, set()).add(str(host))
        elif only is None or network_id in only:
            need(host, network_id)
    if balancers:
        # A load balancer's appliance is on the networks of its ports.
        for device_id, network_id in session.execute(
            select(Port.device_id, Port.network_id).where(
                Port.device_owner == LB_OWNER,
                Port.device_id.in_([LB_PREFIX + b for b in balancers]),
            )
        ).all():
            balancer_id = lb_driver.balancer_id(device_id)
            if balancer_id in balancers and (only is None or network_id in only):
                need(balancers[balancer_id], network_id)
    if routers:
        rows = session.execute(
            restrict(
                select(RouterPort.router_id, Port.network_id)
                .join(Port, Port.id == RouterPort.port_id)
                .where(RouterPort.router_id.in_(routers)),
                Port.network_id,
            )
        ).all()
        for router_id, network_id in rows:
            for host in routers[router_id]:
                need(host, network_id)
    found = _view(session, hosts, needs, ports, statuses)
    found.security = security
    return found


def _with_security(
    session: Session, ports: dict[str, dict[str, dict[str, Any]]], statuses: dict[str, str]
) -> SecurityView:
    """The bound ports' security, each in its spec (the agent's normal form);
    a port whose security cannot be expressed is unplugged and DOWN."""
    security = security_view(session, [p for specs in ports.values() for p in specs])
    for specs in ports.values():
        for port_id in list(specs):
            try:
                specs[port_id] = PortSpec.model_validate(
                    {**specs[port_id], "security": security.ports.get(port_id)}
                ).model_dump(mode="json")
            except ValueError as error:
                log.warning("port %s: its security cannot be applied: %s", port_id, error)
                del specs[port_id]
                statuses[port_id] = "DOWN"
    return security


def _view(
    session: Session,
    hosts: dict[str, HostInfo],
    needs: dict[str, set[str]],
    ports: dict[str, dict[str, dict[str, Any]]],
    statuses: dict[str, str],
) -> FabricView:
    """The view, with the segments of the networks needed."""
    wanted = set().union(*needs.values()) if needs else set()
    segments = {
        n.id: Segment(
            n.id, n.mtu, n.external, n.network_type, n.physical_network, n.segmentation_id
        )
        for n in session.scalars(select(Network).where(Network.id.in_(wanted)))
    }
    return FabricView(hosts, segments, needs, ports, statuses)


def _port_spec(
    session: Session, binding: PortBinding, port: Port, network: Network
) -> dict[str, Any]:
    """The agent's port spec for a bound port: its MAC, its fixed IPs, a
    default route through each IPv4 subnet's gateway, its network's MTU.
    A binding with DHCP takes IPv4 by DHCP and, on a network with IPv6
    subnets in a router-advertised mode, IPv6 as the mode says: SLAAC for
    slaac and dhcpv6-stateless, DHCPv6 for the two DHCPv6 modes (the agent's
    client then reads the RAs' flags itself), instead of a static address.
    ValueError (pydantic's ValidationError is one) when none can be made."""
    addresses: list[str] = []
    routes: list[dict[str, str]] = []
    slaac = dhcpv6 = False
    for allocation in port.fixed_ips:
        subnet = session.get(Subnet, allocation.subnet_id)
        if subnet is None:
            raise ValueError(f"subnet {allocation.subnet_id} is gone")
        prefix = ipaddress.ip_network(subnet.cidr).prefixlen
        if subnet.ip_version == 4 and binding.dhcp:
            continue
        mode = ipv6_mode(subnet)
        if mode is not None and binding.dhcp:
            slaac |= mode.autonomous
            dhcpv6 |= mode.dhcpv6
            continue
        addresses.append(f"{allocation.ip_address}/{prefix}")
        if subnet.gateway_ip and not routes_have_default(routes, subnet.ip_version):
            default = "0.0.0.0/0" if subnet.ip_version == 4 else "::/0"
            routes.append({"destination": default, "nexthop": subnet.gateway_ip})
    if dhcpv6:
        # The DHCPv6 client owns the port's IPv6 addresses and default route.
        addresses = [a for a in addresses if ipaddress.ip_interface(a).version == 4]
        routes = [r for r in routes if r["destination"] != "::/0"]
    spec = PortSpec.model_validate(
        {
            "network_id": port.network_id,
            "mac": port.mac_address,
            "netns": binding.netns,
            "ifname": binding.ifname,
            "addresses": addresses,
            "routes": routes,
            "dhcp": binding.dhcp,
            "slaac": slaac,
            "dhcpv6": dhcpv6,
            "mtu": network.mtu,
        }
    )
    # In the agent's own normal form, so that equal specs compare equal.
    spec_json: dict[str, Any] = spec.model_dump(mode="json")
    return spec_json


def routes_have_default(routes: list[dict[str, str]], version: int) -> bool:
    default = "0.0.0.0/0" if version == 4 else "::/0"
    return any(r["destination"] == default for r in routes)
