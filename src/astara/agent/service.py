"""The agent's operations on networks, ports and appliances.

The HTTP layer (`server.py`) only translates: it calls these methods and maps
their errors (`NotFound`, `Conflict`, `Invalid`) to status codes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astara import __version__
from astara.agent.locks import SharedLock
from astara.agent.store import JsonStore
from astara.appliance import checks
from astara.appliance.apply import ApplianceManager, ApplyResult, NetworkInfo
from astara.appliance.schema import ApplianceConfig
from astara.fabric import networks as fabric_networks
from astara.fabric import ports as fabric_ports
from astara.fabric.ports import PortError, PortPaths
from astara.linux import netns
from astara.linux.cleanup import default_run_dir
from astara.linux.run import MissingTool, find_tool
from astara.model.fabric import NetworkSpec, PortSpec
from astara.naming import Names

log = logging.getLogger(__name__)

# What every change of the L2 fabric (networks, ports) runs.
FABRIC_TOOLS = ["ip", "sysctl"]


class NotFound(LookupError):
    pass


class Conflict(RuntimeError):
    pass


class Invalid(ValueError):
    pass


@dataclass
class AgentSettings:
    state_dir: Path
    prefix: str = "ast"
    run_dir: Path | None = None

    @property
    def runtime_dir(self) -> Path:
        return self.run_dir or default_run_dir(self.prefix)


@dataclass(frozen=True)
class PortRecord:
    spec: PortSpec
    created: dict[str, bool]  # what the agent made for it and must undo


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.names = Names(settings.prefix)
        self.store = JsonStore(settings.state_dir)
        self.appliances = ApplianceManager(
            self.names, settings.state_dir, settings.runtime_dir, self.network_info
        )
        # Guards the L2 segments (networks) and the ports plugged into them.
        # Network and port changes hold it exclusively; appliances hold it
        # shared (a network cannot vanish under an apply) plus a lock of
        # their own each (in ApplianceManager), so they apply in parallel.
        self.l2_lock = SharedLock()
        # Each tool's version, probed once per path it is found at.
        self._tools: dict[str, checks.Found] = {}

    def start(self) -> None:
        """Take stock of the tools, then bring the fabric back after a restart
        (or a host reboot). A missing tool does not stop the agent: its health
        says what is missing, and what needs it is refused."""
        absent = [name for name, found in self.tools().items() if found is None]
        for name in absent:
            log.error("%s is not installed: needed for %s", name, checks.TOOLS[name].purpose)
        with self.l2_lock.exclusive():
            for network_id in self.store.ids("networks"):
                try:
                    fabric_networks.ensure_network(self.names, network_id, self.network(network_id))
                except MissingTool as error:
                    log.error("network %s not restored: %s", network_id, error)

    def tools(self) -> dict[str, checks.Found | None]:
        """Every tool the agent runs: where it is and its version, or None."""
        found: dict[str, checks.Found | None] = {}
        for name, tool in checks.TOOLS.items():
            path = find_tool(name)
            known = self._tools.get(name)
            if path is None:
                found[name] = None
            elif known is not None and known.path == path:
                found[name] = known
            else:
                probed = checks.probe(tool)
                if probed is not None:
                    self._tools[name] = probed
                found[name] = probed
        return found

    def health(self) -> dict[str, Any]:
        meminfo = _meminfo()
        tools = self.tools()
        absent = {name: checks.TOOLS[name].purpose for name, f in tools.items() if f is None}
        return {
            "status": "degraded" if absent else "ok",
            "version": __version__,
            "prefix": self.names.prefix,
            "tools": {
                "found": {
                    name: {"path": f.path, "version": f.version}
                    for name, f in tools.items()
                    if f is not None
                },
                "missing": absent,
            },
            "capacity": {
                "cpus": os.cpu_count(),
                "memory_total_bytes": meminfo.get("MemTotal", 0),
                "memory_available_bytes": meminfo.get("MemAvailable", 0),
                "load_1m": os.getloadavg()[0],
            },
            "counts": {
                "networks": len(self.store.ids("networks")),
                "ports": len(self.store.ids("ports")),
                "appliances": len(self.appliances.ids()),
            },
        }

    # --- networks ----------------------------------------------------------------------

    def network(self, network_id: str) -> NetworkSpec:
        document = self.store.get("networks", network_id)
        if document is None:
            raise NotFound(f"network {network_id} not found")
        return NetworkSpec.model_validate(document)

    def network_info(self, network_id: str) -> NetworkInfo | None:
        try:
            return NetworkInfo(mtu=self.network(network_id).mtu)
        except NotFound:
            return None

    def network_users(self, network_id: str) -> list[str]:
        users = [
            f"port {port_id}"
            for port_id in self.store.ids("ports")
            if self.port(port_id).spec.network_id == network_id
        ]
        for appliance_id in self.appliances.ids():
            config = self.appliances.config(appliance_id)
            if config and any(i.network_id == network_id for i in config.interfaces):
                users.append(f"appliance {appliance_id}")
        return users

    def observe_network(self, network_id: str) -> dict[str, Any]:
        # Observations hold the L2 lock shared: a delete cannot pull the
        # namespace away between checking it and looking inside.
        with self.l2_lock.shared():
            return {
                "id": network_id,
                **self.network(network_id).model_dump(),
                **fabric_networks.observe_network(self.names, network_id),
            }

    def put_network(self, network_id: str, spec: NetworkSpec) -> bool:
        """Create or update a network; True if it was new."""
        checks.require(FABRIC_TOOLS)
        with self.l2_lock.exclusive():
            existing = self.network_info(network_id)
            if existing is not None and existing.mtu != spec.mtu:
                users = self.network_users(network_id)
                if users:
                    raise Conflict(
                        f"network {network_id} has attachments ({', '.join(users)});"
                        " remove them before changing its MTU"
                    )
            fabric_networks.ensure_network(self.names, network_id, spec)
            self.store.put("networks", network_id, spec.model_dump())
            return existing is None

    def delete_network(self, network_id: str) -> None:
        with self.l2_lock.exclusive():
            self.network(network_id)
            users = self.network_users(network_id)
            if users:
                raise Conflict(f"network {network_id} is in use by {', '.join(users)}")
            fabric_networks.delete_network(self.names, network_id)
            self.store.delete("networks", network_id)
            if not self.store.ids("networks"):
                fabric_networks.delete_fabric(self.names)

    # --- ports -------------------------------------------------------------------------

    def port_paths(self, port_id: str) -> PortPaths:
        return PortPaths(self.settings.runtime_dir / "ports" / port_id)

    def port(self, port_id: str) -> PortRecord:
        document = self.store.get("ports", port_id)
        if document is None:
            raise NotFound(f"port {port_id} not found")
        return PortRecord(PortSpec.model_validate(document["spec"]), document.get("created", {}))

    def _save_port(self, port_id: str, record: PortRecord) -> None:
        self.store.put(
            "ports",
            port_id,
            {"spec": record.spec.model_dump(mode="json"), "created": record.created},
        )

    def observe_port(self, port_id: str) -> dict[str, Any]:
        with self.l2_lock.shared():
            spec = self.port(port_id).spec
            return {
                "id": port_id,
                "spec": spec.model_dump(mode="json"),
                **fabric_ports.observe(self.names, port_id, spec, self.port_paths(port_id)),
            }

    def put_port(self, port_id: str, spec: PortSpec) -> bool:
        """Plug or update a port; True if it was new."""
        checks.require(
            [
                *FABRIC_TOOLS,
                *(["env", "busybox"] if spec.dhcp else []),
                *(["dhcpcd", "mount"] if spec.dhcpv6 else []),
            ]
        )
        with self.l2_lock.exclusive():
            network = self.network_info(spec.network_id)
            if network is None:
                raise Invalid(f"unknown network {spec.network_id}: PUT /v1/networks/{{id}} first")
            previous = self.port(port_id) if port_id in self.store.ids("ports") else None
            if previous is not None and (previous.spec.netns, previous.spec.ifname) != (
                spec.netns,
                spec.ifname,
            ):
                raise Conflict("a port's netns and ifname cannot change; delete and plug it again")
            for other_id in self.store.ids("ports"):
                other = self.port(other_id).spec
                if other_id != port_id and (other.netns, other.ifname) == (spec.netns, spec.ifname):
                    raise Conflict(f"port {other_id} already uses {spec.ifname} in {spec.netns}")
            created = dict(previous.created) if previous else {}
            if previous is None:
                # Recorded before acting: after a crash mid-plug, a delete still
                # knows which namespace and files were the agent's to remove.
                created = fabric_ports.would_create(spec)
                self._save_port(port_id, PortRecord(spec, created))
            try:
                made = fabric_ports.plug(
                    self.names,
                    port_id,
                    spec,
                    network.mtu,
                    self.port_paths(port_id),
                    new=previous is None,
                )
            except Exception as error:
                if previous is None:
                    self.store.delete("ports", port_id)  # plug removed what it made
                if isinstance(error, PortError):
                    raise Invalid(str(error)) from error
                raise
            created = {k: created.get(k, False) or v for k, v in made.items()}
            self._save_port(port_id, PortRecord(spec, created))
            return previous is None

    def delete_port(self, port_id: str) -> None:
        with self.l2_lock.exclusive():
            record = self.port(port_id)
            sharing = [
                other_id
                for other_id in self.store.ids("ports")
                if other_id != port_id and self.port(other_id).spec.netns == record.spec.netns
            ]
            if sharing:
                # The namespace outlives this port: the next port in it inherits
                # the duty to remove what the agent created for it.
                heir = self.port(sharing[0])
                inherited = {k: heir.created.get(k, False) or v for k, v in record.created.items()}
                self._save_port(sharing[0], PortRecord(heir.spec, inherited))
            fabric_ports.unplug(
                self.names,
                port_id,
                record.spec,
                self.port_paths(port_id),
                record.created,
                netns_still_used=bool(sharing),
            )
            self.store.delete("ports", port_id)

    # --- appliances --------------------------------------------------------------------

    def observe_appliance(self, appliance_id: str) -> dict[str, Any]:
        with self.appliances.lock(appliance_id):
            if not self.appliances.exists(appliance_id):
                raise NotFound(f"appliance {appliance_id} not found")
            return self.appliances.observe(appliance_id)

    def observe_appliances(self) -> list[dict[str, Any]]:
        """Every appliance; one deleted while listing is left out, not an error."""
        found = []
        for appliance_id in self.appliances.ids():
            try:
                found.append(self.observe_appliance(appliance_id))
            except NotFound:
                continue
        return found

    def rendered(self, appliance_id: str) -> dict[str, Any]:
        if not self.appliances.exists(appliance_id):
            raise NotFound(f"appliance {appliance_id} not found")
        return {"id": appliance_id, **self.appliances.rendered_texts(appliance_id)}

    def put_appliance(
        self, appliance_id: str, config: ApplianceConfig
    ) -> tuple[bool, ApplyResult, dict[str, Any]]:
        """Validate, then apply; (new, result, observed state). Raises
        ValidationFailed, MissingTool (before anything changed) or ApplyFailed."""
        with self.l2_lock.shared(), self.appliances.lock(appliance_id):
            new = not self.appliances.exists(appliance_id)
            prepared = self.appliances.prepare(appliance_id, config)
            # Also when the config is the one in force (whose tool checks
            # `prepare` skips): its daemons may need starting again.
            previous = self.appliances.config(appliance_id)
            checks.require(checks.appliance_tools(config, prepared.rendered, previous))
            result = self.appliances.apply(appliance_id, prepared)
            observed = self.appliances.observe(appliance_id, config, nftables_verified=True)
            return new, result, observed

    def delete_appliance(self, appliance_id: str) -> None:
        with self.l2_lock.shared(), self.appliances.lock(appliance_id):
            if not self.appliances.exists(appliance_id) and not netns.exists(
                self.names.appliance_netns(appliance_id)
            ):
                raise NotFound(f"appliance {appliance_id} not found")
            self.appliances.delete(appliance_id)


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            values[key] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    return values
