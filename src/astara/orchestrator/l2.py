"""The orchestrator's L2 work on the agent: the segments routers and
workloads need (with a cache of what the agent has, so a segment is PUT once),
workload ports plugged as their bindings say, and segments nothing uses
removed. A port, segment or binding that fails is logged, its port DOWN, and
the others proceed."""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from astara.agent.client import AgentClient, AgentError
from astara.db.models import DHCP, Network, Port, PortBinding, RouterPort, Subnet
from astara.drivers.appliance import ipv6_mode
from astara.model.fabric import PortSpec

log = logging.getLogger(__name__)


class L2:
    def __init__(
        self, sessions: sessionmaker[Session], agent: AgentClient, stopping: threading.Event
    ) -> None:
        self.sessions, self.agent, self.stopping = sessions, agent, stopping
        self._lock = threading.Lock()  # guards the segment cache
        self._pass_lock = threading.Lock()  # one pass at a time (the worker's or cleanup's)
        self._segments: dict[str, tuple[int, bool]] = {}  # segments known on the agent

    def reconcile(self) -> list[str]:
        """Plug bound ports, unplug the rest, and remove segments nothing uses;
        what was removed. One pass at a time (the `l2` key's worker's or
        `cleanup`'s); a port, segment or binding that fails is logged (a
        port's status says DOWN) and the others proceed."""
        with self._pass_lock:
            return self._reconcile()

    def _reconcile(self) -> list[str]:
        removed: list[str] = []
        # The agent first: a segment pushed after this listing is never
        # mistaken for an unused one below.
        segments = self.agent.networks(observe=False)
        with self._lock:
            present = {s["id"] for s in segments}
            for network_id in set(self._segments) - present:
                del self._segments[network_id]  # gone behind our back
        statuses: dict[str, str] = {}
        with self.sessions.begin() as session:
            specs: dict[str, dict[str, Any]] = {}
            for binding, port, network in _bound_ports(session):
                try:
                    specs[port.id] = _port_spec(session, binding, port, network)
                except ValueError as error:  # pydantic's ValidationError included
                    # Nothing valid to plug: unplugged below, and DOWN.
                    log.warning("port %s: its binding cannot be plugged: %s", port.id, error)
                    statuses[port.id] = "DOWN"
            networks = _networks(
                session,
                select(Port.network_id).join(PortBinding, PortBinding.port_id == Port.id),
            )
            needed = set(networks) | set(
                session.scalars(
                    select(Port.network_id).join(RouterPort, RouterPort.port_id == Port.id)
                )
            )
            needed.update(session.scalars(select(Port.network_id).where(Port.device_owner == DHCP)))
        for network_id, (mtu, external) in sorted(networks.items()):
            if self.stopping.is_set():
                return removed
            try:
                self.ensure_network(network_id, mtu, external)
            except AgentError as error:  # its ports fail below, and are DOWN
                log.warning("segment %s failed: %s", network_id, error)
        plugged = {p["id"]: p for p in self.agent.ports()}
        for port_id in sorted(set(plugged) - set(specs)):
            if self.stopping.is_set():
                return removed
            log.info("unplugging port %s", port_id)
            try:
                self.agent.delete_port(port_id)
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
                    self.agent.put_port(port_id, spec)
                statuses[port_id] = "ACTIVE"
            except AgentError as error:
                log.warning("plugging port %s failed: %s", port_id, error)
                statuses[port_id] = "DOWN"
        with self.sessions.begin() as session:
            for port_id, status in statuses.items():
                session.execute(
                    update(Port)
                    .where(Port.id == port_id, Port.status != status)
                    .values(status=status)
                )
            # Ports neither bound nor a router's are DOWN: nothing on the host
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
        for segment in segments:
            if segment["id"] in needed:
                continue
            if self.stopping.is_set():
                return removed
            try:
                self.forget_segments([segment["id"]])
                self.agent.delete_network(segment["id"])
                removed.append(f"network {segment['id']}")
            except AgentError as error:
                if error.status_code != 409:  # 409: still in use, the next pass
                    log.warning("removing segment %s failed: %s", segment["id"], error)
        return removed

    def ensure_network(self, network_id: str, mtu: int, external: bool) -> None:
        """PUT the segment unless this orchestrator already did with the same
        spec (a PUT takes the agent's exclusive L2 lock, which applies wait for)."""
        with self._lock:
            if self._segments.get(network_id) == (mtu, external):
                return
        try:
            self.agent.put_network(network_id, mtu=mtu, external=external)
        except AgentError as error:
            if error.status_code != 409:  # an MTU change under attachments: keep it
                raise
            return
        with self._lock:
            self._segments[network_id] = (mtu, external)

    def forget_segments(self, network_ids: Iterable[str] | None) -> None:
        """After a failure, ask the agent again rather than trust the cache."""
        with self._lock:
            if network_ids is None:
                self._segments.clear()
            for network_id in network_ids or ():
                self._segments.pop(network_id, None)


def _networks(session: Session, ids: Any) -> dict[str, tuple[int, bool]]:
    return {
        n.id: (n.mtu, n.external)
        for n in session.scalars(select(Network).where(Network.id.in_(ids)))
    }


def _bound_ports(session: Session) -> list[tuple[PortBinding, Port, Network]]:
    rows = session.execute(
        select(PortBinding, Port, Network)
        .join(Port, Port.id == PortBinding.port_id)
        .join(Network, Network.id == Port.network_id)
        .order_by(PortBinding.port_id)
    ).all()
    return [(binding, port, network) for binding, port, network in rows]


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
