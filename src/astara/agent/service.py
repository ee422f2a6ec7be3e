"""The agent's operations on networks, ports and appliances.

The HTTP layer (`server.py`) only translates: it calls these methods and maps
their errors (`NotFound`, `Conflict`, `Invalid`) to status codes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from astara import __version__
from astara.agent.ha import RoleEvents
from astara.agent.locks import SharedLock
from astara.agent.metadata import MetadataProxy, load_secret
from astara.agent.security import PortSecurityManager, SecurityInUse
from astara.agent.store import JsonStore
from astara.agent.watch import Check, Repair, Watch
from astara.appliance import checks
from astara.appliance.apply import (
    ApplianceManager,
    ApplyFailed,
    ApplyResult,
    NetworkInfo,
    ValidationFailed,
)
from astara.appliance.drift import stop_misplaced
from astara.appliance.ha import HaRole
from astara.appliance.phases import phase
from astara.appliance.schema import ApplianceConfig
from astara.fabric import networks as fabric_networks
from astara.fabric import ports as fabric_ports
from astara.fabric.firewall import FirewallUnavailable
from astara.fabric.networks import SegmentError, Uplinks
from astara.fabric.ports import PortError, PortPaths
from astara.linux import netlink, netns
from astara.linux.cleanup import default_run_dir
from astara.linux.run import MissingTool, find_tool, run
from astara.model.fabric import (
    AddressSetSpec,
    NetworkSpec,
    PortSpec,
    SecurityGroupSpec,
    UnderlayAddress,
)
from astara.naming import Names, appliance_interface

log = logging.getLogger(__name__)

# How often a demoted HA member looks for its peer on the HA network.
LIFT_EVERY_S = 1.0
# What every change of the L2 fabric (networks, ports) runs.
FABRIC_TOOLS = ["ip", "sysctl"]


class NotFound(LookupError):
    pass


class Conflict(RuntimeError):
    pass


class Invalid(ValueError):
    pass


class StaleEpoch(Exception):
    """A push older than one this agent has already accepted for the appliance."""

    def __init__(self, appliance_id: str, epoch: int, seen: int) -> None:
        self.epoch = epoch
        self.seen = seen
        super().__init__(f"appliance {appliance_id}: epoch {epoch} is older than {seen}")


@dataclass
class AgentSettings:
    state_dir: Path
    prefix: str = "ast"
    run_dir: Path | None = None
    underlay_address: UnderlayAddress | None = None
    physnets: dict[str, str] = field(default_factory=dict)
    availability_zone: str = "nova"
    # Seconds without an admitted request before the agent withdraws its
    # appliances from the provider networks; None: never.
    fence_after_s: float | None = None
    # The metadata backend instances' requests go to (Nova's metadata API),
    # and the file of the secret requests are signed with; None: this host
    # serves no metadata.
    metadata_url: str | None = None
    metadata_secret_file: Path | None = None

    @property
    def uplinks(self) -> Uplinks:
        return Uplinks(self.underlay_address, dict(self.physnets))

    @property
    def runtime_dir(self) -> Path:
        return self.run_dir or default_run_dir(self.prefix)

    @property
    def metadata_socket(self) -> Path | None:
        """Where the appliances' haproxy reaches the metadata proxy."""
        if self.metadata_url is None:
            return None
        return self.runtime_dir / "metadata" / "proxy.sock"


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
            self.names,
            settings.state_dir,
            settings.runtime_dir,
            self.network_info,
            settings.metadata_socket,
        )
        self.metadata: MetadataProxy | None = None
        # Guards the L2 segments (networks) and the ports plugged into them.
        # Network and port changes hold it exclusively; appliances hold it
        # shared (a network cannot vanish under an apply) plus a lock of
        # their own each (in ApplianceManager), so they apply in parallel.
        self.l2_lock = SharedLock()
        self._network_locks: dict[str, threading.Lock] = {}
        self._network_locks_guard = threading.Lock()
        # Each appliance's state at its last observation (active, degraded,
        # fenced): the metrics' appliances by state, without observing.
        self.states: dict[str, str] = {}
        # Each tool's version, probed once per path it is found at.
        self._tools: dict[str, checks.Found] = {}
        # Contact and self-fencing (see `note_contact`, `check_fence`).
        self._contact = threading.Lock()
        self._last_contact = time.monotonic()
        self._in_flight = 0
        self._outage_fenced = False  # this outage has been fenced already
        fence = self.store.get("fence", "state") or {}
        self.fenced_since: float | None = fence.get("since")
        self.fenced_ids: set[str] = set(fence.get("appliances", []))
        # Repairs what drifts behind the agent's back (`start_watching`).
        self.watch: Watch | None = None
        # The plugged ports' security groups, address sets and chains.
        self.security = PortSecurityManager(self.names, self.store, self._port_specs)
        # HA router members: keepalived's role events (`start_watching`),
        # and the demoted ones' peers looked for every `LIFT_EVERY_S`.
        self.ha_events = RoleEvents(self.appliances.roles, self.appliances.run_directory)
        self._stopping = threading.Event()

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
                    fabric_networks.ensure_network(
                        self.names, network_id, self.network(network_id), self.settings.uplinks
                    )
                except (MissingTool, SegmentError) as error:
                    log.error("network %s not restored: %s", network_id, error)
            try:
                self.security.restore()
            except (FirewallUnavailable, MissingTool, RuntimeError) as error:
                log.error("port security not restored: %s", error)

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
            "underlay_address": (
                str(self.settings.underlay_address) if self.settings.underlay_address else None
            ),
            "physnets": dict(self.settings.physnets),
            "availability_zone": self.settings.availability_zone,
            "fence_after_s": self.settings.fence_after_s,
            "fenced": self.fenced_since is not None,
            "fenced_since": self.fenced_since,
            "fenced_appliances": sorted(self.fenced_ids),
            # HA router members here and their roles (the controller's
            # heartbeat reads them: `ha_state`, two actives).
            "ha_roles": self.appliances.roles.roles(),
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
            spec = self.network(network_id)
            return {
                "id": network_id,
                **spec.model_dump(mode="json"),
                **fabric_networks.observe_network(
                    self.names, network_id, spec, self.settings.uplinks
                ),
            }

    def network_lock(self, network_id: str) -> threading.Lock:
        """Serializes the changes of one network (two PUTs of it)."""
        with self._network_locks_guard:
            return self._network_locks.setdefault(network_id, threading.Lock())

    def put_network(self, network_id: str, spec: NetworkSpec) -> bool:
        """Create or update a network; True if it was new.

        A new network, or one PUT again as it is, holds the L2 lock shared
        and its own lock: networks are made in parallel with each other and
        with applies (each touches its own bridge; the fabric namespace is
        made once, `netns.create`). A change of an existing network's spec,
        which checks who uses it, and a flat segment, which checks the other
        networks' physnets, hold the L2 lock exclusively, as a delete does."""
        checks.require(FABRIC_TOOLS)
        try:
            fabric_networks.check_segment(spec, self.settings.uplinks)
        except SegmentError as error:
            raise Invalid(f"network {network_id}: {error}") from error
        document = spec.model_dump(mode="json")
        if spec.segment.type != "flat":
            with self.l2_lock.shared(), self.network_lock(network_id):
                stored = self.store.get("networks", network_id)
                if stored is None or stored == document:
                    self._ensure_network(network_id, spec)
                    if stored is None:
                        self.store.put("networks", network_id, document)
                    return stored is None
        with self.l2_lock.exclusive(), self.network_lock(network_id):
            existing = self.network_info(network_id)
            if existing is not None and existing.mtu != spec.mtu:
                users = self.network_users(network_id)
                if users:
                    raise Conflict(
                        f"network {network_id} has attachments ({', '.join(users)});"
                        " remove them before changing its MTU"
                    )
            if spec.segment.type == "flat":
                for other_id in self.store.ids("networks"):
                    other = self.network(other_id).segment
                    if other_id != network_id and other.physnet == spec.segment.physnet:
                        raise Conflict(
                            f"physnet {spec.segment.physnet!r} is network {other_id}'s segment"
                            " on this host: one flat network per physnet"
                        )
            self._ensure_network(network_id, spec)
            self.store.put("networks", network_id, document)
            return existing is None

    def _ensure_network(self, network_id: str, spec: NetworkSpec) -> None:
        try:
            fabric_networks.ensure_network(self.names, network_id, spec, self.settings.uplinks)
        except SegmentError as error:
            raise Invalid(f"network {network_id}: {error}") from error

    def delete_network(self, network_id: str) -> None:
        with self.l2_lock.exclusive(), self.network_lock(network_id):
            self.network(network_id)
            users = self.network_users(network_id)
            if users:
                raise Conflict(f"network {network_id} is in use by {', '.join(users)}")
            self.security.network_removed(network_id)
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
            # The filter first: a port's link is never up on the bridge unfiltered.
            changed = previous is not None and previous.spec.security != spec.security
            try:
                self.security.port_changed(port_id, spec, changed=changed)
            except Exception:
                if previous is None:
                    self.store.delete("ports", port_id)  # nothing was plugged
                else:
                    fabric_ports.block(self.names, port_id)  # closed, not open
                raise
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
                    self.security.port_changed(port_id, None)
                if isinstance(error, PortError):
                    raise Invalid(str(error)) from error
                raise
            created = {k: created.get(k, False) or v for k, v in made.items()}
            self._save_port(port_id, PortRecord(spec, created))
            return previous is None

    def _port_specs(self) -> dict[str, PortSpec]:
        return {p: self.port(p).spec for p in self.store.ids("ports")}

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
            # After: a port whose unplug failed is still filtered.
            self.security.port_changed(port_id, None)
            self.store.delete("ports", port_id)

    # --- security groups and address sets ----------------------------------------------

    def put_security_group(self, group_id: str, spec: SecurityGroupSpec) -> bool:
        with self.l2_lock.exclusive():
            return self.security.put_group(group_id, spec)

    def delete_security_group(self, group_id: str) -> None:
        with self.l2_lock.exclusive():
            if self.security.group(group_id) is None:
                raise NotFound(f"security group {group_id} not found")
            self.security.delete_group(group_id)

    def put_address_set(self, set_id: str, spec: AddressSetSpec) -> bool:
        with self.l2_lock.exclusive():
            return self.security.put_set(set_id, spec)

    def delete_address_set(self, set_id: str) -> None:
        with self.l2_lock.exclusive():
            if self.security.address_set(set_id) is None:
                raise NotFound(f"address set {set_id} not found")
            try:
                self.security.delete_set(set_id)
            except SecurityInUse as error:
                raise Conflict(str(error)) from error

    # --- appliances --------------------------------------------------------------------

    def observe_appliance(self, appliance_id: str) -> dict[str, Any]:
        with self.appliances.lock(appliance_id):
            if not self.appliances.exists(appliance_id):
                raise NotFound(f"appliance {appliance_id} not found")
            return self._with_fencing(appliance_id, self.appliances.observe(appliance_id))

    def _with_fencing(self, appliance_id: str, observed: dict[str, Any]) -> dict[str, Any]:
        """The observation with the appliance's epoch and, while it is
        fenced, why its external interfaces are down (not drift: the agent
        withdrew them, and only a PUT brings them back)."""
        fenced = appliance_id in self.fenced_ids
        observed = {**observed, "epoch": self.epoch(appliance_id), "fenced": fenced}
        self.states[appliance_id] = "fenced" if fenced else str(observed.get("state"))
        observed["last_repair"] = self.watch.last_repair(appliance_id) if self.watch else None
        observed["held"] = self.held(appliance_id)
        if fenced:
            observed["problems"] = [
                *observed.get("problems", []),
                f"fenced since {self.fenced_since}: external interfaces withdrawn"
                " (no contact with the controller); a PUT brings them back",
            ]
        return observed

    # --- epochs ------------------------------------------------------------------------

    def epoch(self, appliance_id: str) -> int:
        """The highest epoch seen for the appliance (kept after its deletion)."""
        document = self.store.get("epochs", appliance_id)
        return int(document["epoch"]) if document else 0

    def _admit_epoch(self, appliance_id: str, epoch: int) -> None:
        """Refuse a push older than the newest seen, else record it: from now
        on, pushes older than this one are refused (the fencing token).
        Called under the appliance's lock."""
        seen = self.epoch(appliance_id)
        if epoch < seen:
            raise StaleEpoch(appliance_id, epoch, seen)
        if epoch > seen:
            self.store.put("epochs", appliance_id, {"epoch": epoch})

    # --- contact and self-fencing ------------------------------------------------------

    def note_contact(self) -> None:
        """An admitted request arrived: the controller can reach us."""
        with self._contact:
            self._last_contact = time.monotonic()
            self._outage_fenced = False
            if self.fenced_since is not None and not self.fenced_ids:
                self._unfenced()

    @contextmanager
    def request(self) -> Iterator[None]:
        """Around every admitted request: contact at its start and its end,
        and no fencing while one runs (an apply may take longer than the
        fencing bound)."""
        self.note_contact()
        with self._contact:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._contact:
                self._in_flight -= 1
            self.note_contact()

    def check_fence(self, now: float | None = None) -> bool:
        """The watchdog's tick: fence if `fence_after_s` passed without
        contact (once per outage). True if it fenced now."""
        bound = self.settings.fence_after_s
        if not bound:
            return False
        now = time.monotonic() if now is None else now
        with self._contact:
            if self._in_flight or self._outage_fenced or now - self._last_contact < bound:
                return False
            self._outage_fenced = True
            silent_s = now - self._last_contact
        self.fence(silent_s)
        return True

    def fence(self, silent_s: float = 0.0) -> None:
        """Withdraw every appliance from the provider networks: its external
        interfaces go link-down inside its namespace. Stops at once if
        contact comes back meanwhile (a PUT after it must not be undone)."""
        withdrawn = []
        for appliance_id in self.appliances.ids():
            with self.l2_lock.shared(), self.appliances.lock(appliance_id):
                with self._contact:
                    if not self._outage_fenced:
                        break
                config = self.appliances.config(appliance_id)
                if config is None:
                    continue
                namespace = self.names.appliance_netns(appliance_id)
                # An HA member gives up its role (its peer, if the controller
                # still reaches it, takes over within a skew time): its
                # links leave the wire as any standby's, routes kept.
                external = (
                    []
                    if self._elect(appliance_id, False)
                    else [
                        appliance_interface(i.role.value, i.mac)
                        for i in config.interfaces
                        if i.role.value == "external"
                    ]
                )
                if netns.exists(namespace) and external:
                    with netlink.netns(namespace) as ns:
                        for name in external:
                            if netlink.link_index(ns, name) is not None:
                                netlink.set_link(ns, name, state="down")
                with self._contact:
                    self.fenced_ids.add(appliance_id)
                    if self.fenced_since is None:
                        self.fenced_since = time.time()
                    self._save_fence()
                withdrawn.append(appliance_id)
        with self._contact:
            if self._outage_fenced and self.fenced_since is None:
                self.fenced_since = time.time()  # nothing to withdraw, but fenced
                self._save_fence()
        log.warning(
            "fenced: no request for %.1f s (bound %s s); appliances withdrawn from the"
            " provider networks: %s",
            silent_s,
            self.settings.fence_after_s,
            ", ".join(withdrawn) or "none",
        )

    def _unfence(self, appliance_id: str) -> None:
        """The appliance was accepted (PUT) or deleted: no longer fenced."""
        with self._contact:
            if appliance_id not in self.fenced_ids:
                return
            self.fenced_ids.discard(appliance_id)
            if self.store.get("demoted", appliance_id) is None:
                self._elect(appliance_id, True)
            log.warning("appliance %s unfenced", appliance_id)
            if not self.fenced_ids:
                self._unfenced()
            self._save_fence()

    def _unfenced(self) -> None:
        """Called with `_contact` held, once nothing is fenced any more."""
        log.warning("unfenced (fenced since %s)", self.fenced_since)
        self.fenced_since = None
        self._save_fence()

    def _save_fence(self) -> None:
        self.store.put(
            "fence", "state", {"since": self.fenced_since, "appliances": sorted(self.fenced_ids)}
        )

    def observe_appliances(self) -> list[dict[str, Any]]:
        """Every appliance; one deleted while listing is left out, not an error."""
        found = []
        for appliance_id in self.appliances.ids():
            try:
                found.append(self.observe_appliance(appliance_id))
            except NotFound:
                continue
        return found

    def recorded_appliances(self) -> list[dict[str, Any]]:
        """Every appliance as the agent recorded it (files only, no kernel,
        no process): id, epoch, generation, config hash, when applied, and
        whether it is fenced."""
        found = []
        for appliance_id in self.appliances.ids():
            status = self.appliances.status(appliance_id)
            found.append(
                {
                    "id": appliance_id,
                    "epoch": self.epoch(appliance_id),
                    "generation": status.generation,
                    "config_hash": status.config_hash,
                    "applied_at": status.applied_at,
                    "fenced": appliance_id in self.fenced_ids,
                }
            )
        return found

    def rendered(self, appliance_id: str) -> dict[str, Any]:
        if not self.appliances.exists(appliance_id):
            raise NotFound(f"appliance {appliance_id} not found")
        return {"id": appliance_id, **self.appliances.rendered_texts(appliance_id)}

    def put_appliance(
        self,
        appliance_id: str,
        config: ApplianceConfig,
        epoch: int = 0,
        body_digest: str | None = None,
        body: bytes | None = None,
    ) -> tuple[bool, ApplyResult, dict[str, Any]]:
        """Check the epoch, validate, then apply; (new, result, observed
        state). Raises StaleEpoch, ValidationFailed, MissingTool (before
        anything changed) or ApplyFailed. The apply also brings a fenced
        appliance's links back up (it converges them whatever the hash).
        The config in force, found as the last apply left it, is neither
        validated nor rendered again: nothing to do. `body_digest`: that of
        the raw body `config` was parsed from (`body`), remembered for
        `put_unchanged`."""
        with self.l2_lock.shared(), self.appliances.lock(appliance_id):
            self._admit_epoch(appliance_id, epoch)
            with phase("check"):
                # Fenced or held (an operator may have changed what the cheap
                # check does not read): applied in full.
                unchanged = (
                    appliance_id not in self.fenced_ids
                    and not self.held(appliance_id)
                    and self.appliances.unchanged(appliance_id, config, None)
                )
            result = ApplyResult(changed=False) if unchanged else self._apply(appliance_id, config)
            if body_digest is not None:
                self.appliances.remember_body(appliance_id, body_digest, body)
            self.store.delete("holds", appliance_id)  # a PUT releases an operator's hold
            with phase("report"):
                observed = self.appliances.observe(appliance_id, config, nftables_verified=True)
            return result.new, result, self._with_fencing(appliance_id, observed)

    def put_unchanged(
        self, appliance_id: str, body_digest: str, epoch: int = 0, body: bytes | None = None
    ) -> tuple[ApplyResult, dict[str, Any]] | None:
        """A PUT whose raw body is the one the config in force was applied
        from, answered without parsing it, if the appliance stands as that
        apply left it (see `put_appliance`); or, given the `body`, one that
        changes only floating IPs, applied as a delta (`appliance.floating`)
        on the same condition. None: parse it and put it. Raises StaleEpoch."""
        with self.l2_lock.shared(), self.appliances.lock(appliance_id):
            self._admit_epoch(appliance_id, epoch)
            if appliance_id in self.fenced_ids or self.held(appliance_id):
                return None
            with phase("check"):
                config = self.appliances.in_force(appliance_id, body_digest)
                in_force = self.appliances.status(appliance_id).config_hash
                if config is not None and not self.appliances.unchanged(
                    appliance_id, config, in_force
                ):
                    return None
            result = ApplyResult(changed=False)
            if config is None:
                if body is None:
                    return None
                with phase("delta"), self._applying(appliance_id):
                    found = self.appliances.apply_floating_change(appliance_id, body, body_digest)
                    if found is not None and self.watch is not None:
                        self.watch.settled(appliance_id)  # its own events are no drift
                if found is None:
                    return None
                result, config = found
            self.store.delete("holds", appliance_id)  # a PUT releases an operator's hold
            with phase("report"):
                observed = self.appliances.observe(appliance_id, config, nftables_verified=True)
            return result, self._with_fencing(appliance_id, observed)

    def _apply(self, appliance_id: str, config: ApplianceConfig) -> ApplyResult:
        """Validate and apply (under the appliance's lock)."""
        new = not self.appliances.exists(appliance_id)
        # A daemon left running in a namespace deleted from under it keeps
        # that namespace alive and looks like it runs: it goes first.
        stop_misplaced(
            self.appliances.daemons(appliance_id), self.names.appliance_netns(appliance_id)
        )
        prepared = self.appliances.prepare(appliance_id, config)
        # Also when the config is the one in force (whose tool checks
        # `prepare` skips): its daemons may need starting again.
        previous = self.appliances.config(appliance_id)
        checks.require(checks.appliance_tools(config, prepared.rendered, previous))
        if appliance_id in self.fenced_ids and self.store.get("demoted", appliance_id) is None:
            # A fenced HA member back in the election: this apply starts keepalived.
            self.appliances.roles.fence(appliance_id, False)
        with self._applying(appliance_id):
            result = self.appliances.apply(appliance_id, prepared)
            if self.watch is not None:
                self.watch.settled(appliance_id)  # its own events are no drift
        if config.ha is not None:
            self.ha_events.watch(appliance_id)
        else:
            self.ha_events.unwatch(appliance_id)
        self._unfence(appliance_id)
        return replace(result, new=new)

    @contextmanager
    def _applying(self, appliance_id: str) -> Iterator[None]:
        """Around an apply (under the appliance's lock): the watch does not
        check the appliance meanwhile (`Watch.applying`)."""
        if self.watch is None:
            yield
            return
        self.watch.applying(appliance_id, True)
        try:
            yield
        finally:
            self.watch.applying(appliance_id, False)

    def delete_appliance(self, appliance_id: str, epoch: int = 0) -> None:
        with self.l2_lock.shared(), self.appliances.lock(appliance_id):
            # Recorded even for an appliance this host no longer has: an
            # older push arriving late must not bring it back.
            self._admit_epoch(appliance_id, epoch)
            if not self.appliances.exists(appliance_id) and not netns.exists(
                self.names.appliance_netns(appliance_id)
            ):
                raise NotFound(f"appliance {appliance_id} not found")
            if self.watch is not None:
                self.watch.forget(appliance_id)  # or its socket keeps the namespace alive
            self.ha_events.unwatch(appliance_id)
            self.store.delete("demoted", appliance_id)
            self.appliances.delete(appliance_id)
            self.states.pop(appliance_id, None)
            self._unfence(appliance_id)
            self.store.delete("holds", appliance_id)

    # --- the watch: repairs without waiting for the orchestrator ----------------------

    def start_watching(self, on_repair: Callable[[str], None] | None = None) -> None:
        """Watch every appliance; `on_repair(outcome)` after each repair.
        HA members' links first as their keepalived holds the role now (an
        agent restarted meanwhile missed its events), then their events."""
        for appliance_id in self.appliances.ids():
            config = self.appliances.config(appliance_id)
            if config is not None and config.ha is not None:
                with self.appliances.lock(appliance_id):
                    self.appliances.roles.enforce(appliance_id, config)
                self.ha_events.watch(appliance_id)
        self.ha_events.start()
        self._lifting = threading.Thread(target=self._lift_loop, name="ha-lift", daemon=True)
        self._lifting.start()
        self.watch = Watch(self, on_repair)
        self.watch.start()

    def _lift_loop(self) -> None:
        while not self._stopping.wait(LIFT_EVERY_S):
            try:
                self.lift_demotions()
            except Exception:
                log.exception("lifting demotions failed; trying again")

    def stop_watching(self) -> None:
        self._stopping.set()
        self.ha_events.stop()
        if self.watch is not None:
            self.watch.stop()

    def start_metadata(self) -> None:
        """Serve instances' metadata requests, where this host has a backend."""
        settings = self.settings
        socket_path = settings.metadata_socket
        if settings.metadata_url is None or socket_path is None:
            return
        if settings.metadata_secret_file is None:
            raise ValueError("a metadata backend needs its shared secret's file")
        secret = load_secret(settings.metadata_secret_file)
        self.metadata = MetadataProxy(
            settings.metadata_url, secret, socket_path, self.appliances.metadata_host
        )
        self.metadata.start()

    def stop_metadata(self) -> None:
        if self.metadata is not None:
            self.metadata.stop()

    def held(self, appliance_id: str) -> bool:
        return self.store.get("holds", appliance_id) is not None

    def hold(self, appliance_id: str, held: bool, epoch: int = 0) -> None:
        """Hold (or release) the appliance: while held (an operator debugs
        it), the watch reports its drift but repairs nothing. An accepted
        PUT or DELETE of the appliance releases it too."""
        with self.appliances.lock(appliance_id):
            self._admit_epoch(appliance_id, epoch)
            if not self.appliances.exists(appliance_id):
                raise NotFound(f"appliance {appliance_id} not found")
            if held:
                self.store.put("holds", appliance_id, {"since": time.time()})
            elif self.held(appliance_id):
                self.store.delete("holds", appliance_id)
                if self.watch is not None:
                    self.watch.check_soon(appliance_id)  # what changed while held

    # --- HA members: demotion -------------------------------------------------------------

    def _elect(self, appliance_id: str, standing: bool) -> bool:
        """Put an HA member in the election or take it out (under its lock).
        Out: its keepalived is stopped and held stopped (a priority-0
        advert hands the role to its peer at once; its links leave the
        wire). In: started again, as a backup, by the next apply or repair.
        False if the appliance is no HA member here."""
        if not self.appliances.roles.fence(appliance_id, not standing):
            return False
        if not standing:
            # SIGTERM, not waited for (keepalived takes about a second to go):
            # its priority-0 advert hands the role over; held, it stays down.
            self.appliances.daemons(appliance_id).keepalived.signal(signal.SIGTERM)
            self.appliances.roles.transition(appliance_id, HaRole.fault)
        elif self.watch is not None:
            self.watch.check_soon(appliance_id)
        return True

    def demote(self, appliance_id: str, epoch: int = 0) -> None:
        """Take an HA member out of the election (`_elect`) until its peer
        answers on the HA network again (`lift_demotions`): a partition of
        the HA network alone leaves two actives, and the orchestrator picks
        one. Restarting keepalived as backup would not hold: cut off from
        its peer, it becomes master again after three adverts. Raises
        NotFound for an appliance that is no HA member here."""
        with self.appliances.lock(appliance_id):
            self._admit_epoch(appliance_id, epoch)
            if not self._elect(appliance_id, False):
                raise NotFound(f"appliance {appliance_id} is no HA member here")
            self.store.put("demoted", appliance_id, {"since": time.time()})
        log.warning(
            "HA member %s demoted: out of the election until its peer answers", appliance_id
        )

    def lift_demotions(self) -> list[str]:
        """Members demoted whose peer answers on the HA network again go
        back into the election (as backups: their peer is master and
        `nopreempt` keeps it so). What was lifted."""
        lifted = []
        for appliance_id in self.store.ids("demoted"):
            config = self.appliances.config(appliance_id)
            if config is None or config.ha is None:
                self.store.delete("demoted", appliance_id)
                continue
            namespace = self.names.appliance_netns(appliance_id)
            peer = str(config.ha.peer_address)
            answer = run(
                ["ping", "-n", "-q", "-c", "1", "-W", "0.5", peer], netns=namespace, check=False
            )
            if answer.returncode != 0:
                continue
            with self.appliances.lock(appliance_id):
                self.store.delete("demoted", appliance_id)
                if appliance_id not in self.fenced_ids:
                    self._elect(appliance_id, True)
            lifted.append(appliance_id)
            log.warning("HA member %s: its peer answers again; back in the election", appliance_id)
        return lifted

    def repair(self, appliance_id: str, drifted: Check) -> Repair | None:
        """Under the appliance's lock: if `drifted` finds it drifted from its
        config in force, converge it on that config, as a PUT of it would
        (same hash: generation and epoch stay). A fenced appliance is left
        as it is: its external links are down on purpose, and rebuilding
        them would announce it; the PUT that unfences it converges it. So is
        a held one (`hold`). None if it is gone or nothing drifted."""
        with self.l2_lock.shared(), self.appliances.lock(appliance_id):
            config = self.appliances.config(appliance_id)
            if config is None:
                return None
            fenced = appliance_id in self.fenced_ids
            external = [
                appliance_interface(i.role.value, i.mac)
                for i in config.interfaces
                if i.role.value == "external"
            ]
            problems = tuple(drifted(config, external if fenced else ()))
            if not problems:
                return None
            if fenced:
                return Repair("deferred", problems, time.time())
            if self.held(appliance_id):
                return Repair("held", problems, time.time())
            try:
                result = self._apply(appliance_id, config)  # as a PUT of it would
            except (ApplyFailed, MissingTool, ValidationFailed) as error:
                return Repair("failed", problems, time.time(), error=str(error))
            finally:
                if self.watch is not None:
                    self.watch.settled(appliance_id)
            return Repair("repaired", problems, time.time(), tuple(result.actions))


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            values[key] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    return values
