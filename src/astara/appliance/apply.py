"""Apply a rendered appliance config inside its namespace, and observe it.

`prepare` validates everything before anything changes (semantics, then the
real tools' own checks on the rendered texts). `apply` converges the
namespace on the config in three steps: read what the namespace holds
(`appliance.observation`), decide what to do as a pure function of the old
and new config and that observation (`appliance.plan`), and carry the plan
out in order (`appliance.execute`). Only what differs is touched: links by
state, addresses and routes by diff, nftables by element delta or one atomic
table replace, daemons by SIGHUP or restart only when their files changed.
"""

from __future__ import annotations

import ipaddress
import logging
import resource
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from astara.appliance import floating, record
from astara.appliance.actions import (
    APPLIANCE_SYSCTLS,
    Announce,
    CreateNamespace,
    DeltaPlan,
    Done,
    Plan,
)
from astara.appliance.checks import tool_checks
from astara.appliance.daemons import ApplianceDaemons
from astara.appliance.execute import Target, execute, remove_appliance
from astara.appliance.floating_execute import NotAsLeft, execute_change
from astara.appliance.ha import Roles
from astara.appliance.observation import live_ruleset, observe_for_apply, observe_running
from astara.appliance.phases import phase
from astara.appliance.plan import plan_apply, settled
from astara.appliance.record import ApplianceStatus
from astara.appliance.render import MetadataProxy, Rendered, render
from astara.appliance.render.ha import SOCKETS, conntrackd_socket
from astara.appliance.schema import (
    ApplianceConfig,
    FieldError,
    MetadataHost,
    config_hash,
    validate_semantics,
)
from astara.linux.cleanup import default_run_dir
from astara.linux.files import make_readable_dir
from astara.linux.handles import NetlinkHandles
from astara.naming import ID_PATTERN, Names

log = logging.getLogger(__name__)

__all__ = [
    "APPLIANCE_SYSCTLS",
    "ApplianceManager",
    "ApplianceStatus",
    "ApplyFailed",
    "ApplyResult",
    "NetworkInfo",
]


class ValidationFailed(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors))


class ApplyFailed(RuntimeError):
    """Applying failed part-way; the previous good config was restored if there was one."""


@dataclass(frozen=True)
class NetworkInfo:
    mtu: int


NetworkLookup = Callable[[str], NetworkInfo | None]


@dataclass(frozen=True)
class Prepared:
    """A config that passed validation, with its rendering and its hash."""

    config: ApplianceConfig
    rendered: Rendered
    digest: str


@dataclass(frozen=True)
class ApplyResult:
    """`actions`: what changed, in words (the API's answer); `plan`: the
    typed actions decided; `done`: those carried out that changed something."""

    changed: bool
    actions: list[str] = field(default_factory=list)
    plan: Plan | DeltaPlan = ()
    done: tuple[Done, ...] = ()
    new: bool = False  # the appliance did not exist before

    @property
    def rebuilt(self) -> bool:
        """An appliance that existed had to be made again from its namespace up."""
        return not self.new and any(isinstance(d.action, CreateNamespace) for d in self.done)


# The connections one load balancer's haproxy may hold on this host: a third
# of the descriptors a process may open (haproxy needs about three per
# connection, and will not start past its limit).
MAX_CONNECTIONS = max(1000, resource.getrlimit(resource.RLIMIT_NOFILE)[1] // 3)


class ApplianceManager:
    """All appliances of one agent: one lock per appliance, parallel across."""

    def __init__(
        self,
        names: Names,
        state_dir: Path,
        run_dir: Path,
        networks: NetworkLookup,
        metadata_socket: Path | None = None,
    ) -> None:
        """`metadata_socket`: where this host's agent answers metadata
        requests (`astara.agent.metadata`); None: it serves none."""
        self.names = names
        self.metadata_socket = metadata_socket
        self.root = state_dir / "appliances"
        # Daemons' files live in the run directory, readable by the
        # unprivileged users they drop to (dnsmasq runs as nobody).
        self.run_root = run_dir / "appliances"
        self.networks = networks
        self._locks: dict[str, threading.Lock] = {}
        # appliance id → (its record's version, what was read from it)
        self._configs: dict[str, tuple[record.Version, ApplianceConfig]] = {}
        self._statuses: dict[str, tuple[record.Version, ApplianceStatus]] = {}
        # appliance id → (digest of the PUT body, config hash) it was applied from
        self._bodies: dict[str, tuple[str, str | None]] = {}
        # appliance id → the config in force as floating IP deltas compare it
        self._floating: dict[str, floating.Known] = {}
        self._locks_guard = threading.Lock()
        # appliance id → (its config in force, its metadata hosts by address)
        self._metadata: dict[
            str, tuple[ApplianceConfig, dict[ipaddress.IPv4Address, MetadataHost]]
        ] = {}
        # Control sockets that need a short path (render.ha.conntrackd_socket).
        self.sockets = default_run_dir(names.prefix) / SOCKETS
        # HA router members: their roles, and their links on or off the wire.
        self.roles = Roles(
            names,
            self.config,
            self.run_directory,
            lambda appliance_id: self.daemons(appliance_id).keepalived.pid() is not None,
        )

    # --- bookkeeping -----------------------------------------------------------------

    def lock(self, appliance_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(appliance_id, threading.Lock())

    def directory(self, appliance_id: str) -> Path:
        """Desired state: the last good config and the apply status."""
        return self.root / appliance_id

    def run_directory(self, appliance_id: str) -> Path:
        """Runtime files: rendered daemon configs, pid files, logs."""
        return self.run_root / appliance_id

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "config.json").exists())

    def config(self, appliance_id: str) -> ApplianceConfig | None:
        """The last good config (`appliance.record`). Read once per version
        of the record: a router with 10,000 floating IPs takes a tenth of a
        second to parse."""
        directory = self.directory(appliance_id)
        version = record.version(directory)
        if version is None:
            return None
        cached = self._configs.get(appliance_id)
        if cached is not None and cached[0] == version:
            return cached[1]
        config = record.read_config(directory)
        if config is None:
            return None
        self._configs[appliance_id] = (version, config)
        return config

    def metadata_host(
        self, appliance_id: str, address: ipaddress.IPv4Address
    ) -> MetadataHost | None:
        """The instance with `address` behind this appliance, as its config
        in force says (an index per version of the config)."""
        config = self.config(appliance_id) if ID_PATTERN.fullmatch(appliance_id) else None
        if config is None:
            return None
        known = self._metadata.get(appliance_id)
        if known is None or known[0] is not config:
            known = (config, {h.ip_address: h for h in config.metadata_hosts})
            self._metadata[appliance_id] = known
        return known[1].get(address)

    def status(self, appliance_id: str) -> ApplianceStatus:
        """The apply status (a copy: the caller may change it)."""
        directory = self.directory(appliance_id)
        version = record.version(directory)
        cached = self._statuses.get(appliance_id)
        if version is not None and cached is not None and cached[0] == version:
            return replace(cached[1])
        status = record.read_status(directory)
        if version is not None:
            self._statuses[appliance_id] = (version, replace(status))
        return status

    def _save_status(self, appliance_id: str, status: ApplianceStatus) -> None:
        self._save(appliance_id, status, None)

    def _save(
        self, appliance_id: str, status: ApplianceStatus, config: ApplianceConfig | None
    ) -> None:
        """The record written whole: `status`, and `config` if it changed
        (or the one in force, if a journal of deltas stands on top of it)."""
        directory = self.directory(appliance_id)
        text = None
        if config is None and (directory / record.JOURNAL).exists():
            config = self.config(appliance_id)
        if config is not None:
            text = config.model_dump_json(indent=2)
        record.write_whole(directory, status, text)
        self._remember(appliance_id, status, config)

    def _remember(
        self, appliance_id: str, status: ApplianceStatus, config: ApplianceConfig | None
    ) -> None:
        """What the record holds now that this agent wrote it."""
        version = record.version(self.directory(appliance_id))
        if version is None:
            return
        self._statuses[appliance_id] = (version, replace(status))
        if config is not None:
            self._configs[appliance_id] = (version, config)
        elif appliance_id in self._configs:
            self._configs[appliance_id] = (version, self._configs[appliance_id][1])

    def _network_mtus(self, config: ApplianceConfig) -> dict[str, int]:
        """The MTU of each of the config's networks that is on this host."""
        return {
            i.network_id: info.mtu
            for i in config.interfaces
            if (info := self.networks(i.network_id))
        }

    def _render(self, appliance_id: str, config: ApplianceConfig) -> Rendered:
        metadata = (
            MetadataProxy(self.metadata_socket, appliance_id)
            if self.metadata_socket is not None
            else None
        )
        return render(
            config,
            self.run_directory(appliance_id),
            self._network_mtus(config),
            metadata,
            MAX_CONNECTIONS,
            self.sockets,
        )

    def daemons(self, appliance_id: str) -> ApplianceDaemons:
        return ApplianceDaemons(
            self.names.appliance_netns(appliance_id),
            self.run_directory(appliance_id),
            metadata=self.metadata_socket is not None,
            held=self.roles.held(appliance_id),
            sockets=self.sockets,
        )

    # --- validation --------------------------------------------------------------------

    def prepare(self, appliance_id: str, config: ApplianceConfig) -> Prepared:
        """Validate and render; raise ValidationFailed. Changes nothing.
        The tools' checks are skipped for the config already in force: it
        passed them, and rendering is a pure function of it."""
        mtus = self._network_mtus(config)
        with phase("validate"):
            errors = validate_semantics(config, known_networks=set(mtus), network_mtus=mtus)
        if errors:
            raise ValidationFailed(errors)
        with phase("render"):
            rendered = self._render(appliance_id, config)
        digest = config_hash(config)
        if digest != self.status(appliance_id).config_hash:
            with phase("validate"):
                errors = tool_checks(rendered, self.names.fabric_netns)
            if errors:
                raise ValidationFailed(errors)
        return Prepared(config, rendered, digest)

    # --- an unchanged config -----------------------------------------------------------

    def in_force(self, appliance_id: str, body_digest: str) -> ApplianceConfig | None:
        """The config in force if `body_digest` (of a PUT's raw body) is that
        of the body it was last applied from, so that an identical body needs
        no parsing; else None."""
        known = self._bodies.get(appliance_id)
        status = self.status(appliance_id)
        if known is None or known != (body_digest, status.config_hash) or status.last_error:
            return None
        return self.config(appliance_id)

    def remember_body(self, appliance_id: str, body_digest: str, body: bytes | None = None) -> None:
        """The config in force was applied from a body with this digest
        (`body`: that body, parsed by the schema into the config in force,
        from which the next floating IP delta is read by difference)."""
        in_force = self.status(appliance_id).config_hash
        self._bodies[appliance_id] = (body_digest, in_force)
        known = self._floating.get(appliance_id)
        config = self.config(appliance_id)
        if in_force is None or config is None:
            return
        if known is None or known.digest != in_force:
            self._floating[appliance_id] = floating.Known.of(config, in_force, body)
        elif body is not None and known.raw is None:
            self._floating[appliance_id] = known.from_body(body)

    def unchanged(self, appliance_id: str, config: ApplianceConfig, digest: str | None) -> bool:
        """Whether a PUT of `config` (whose hash is `digest`, if known) has
        nothing to do: it is the config in force, the last apply succeeded,
        and the cheap observation finds everything as that apply left it
        (`plan.settled`). Neither renders nor validates."""
        status = self.status(appliance_id)
        if status.config_hash is None or status.last_error:
            return False
        if (digest or config_hash(config)) != status.config_hash:
            return False
        with NetlinkHandles() as handles:
            observation = observe_for_apply(
                names=self.names,
                appliance_id=appliance_id,
                config=config,
                handles=handles,
                run_directory=self.run_directory(appliance_id),
                daemons=self.daemons(appliance_id),
            )
        return settled(
            names=self.names,
            appliance_id=appliance_id,
            config=config,
            observation=observation,
            network_mtus=self._network_mtus(config),
            daemons_expected=self.daemons(appliance_id).expected(config),
            role_links=self.roles.role_links(config),
        )

    # --- floating IPs changed alone ----------------------------------------------------

    def apply_floating_change(
        self, appliance_id: str, body: bytes, body_digest: str
    ) -> tuple[ApplyResult, ApplianceConfig] | None:
        """A PUT body that changes only floating IPs, applied as a delta
        (`appliance.floating`) if the appliance stands as its last apply
        left it (`unchanged`'s cheap observation); the result and the new
        config, or None: apply it in full."""
        status = self.status(appliance_id)
        known = self._floating.get(appliance_id)
        if known is None or status.last_error or known.digest != status.config_hash:
            return None
        mtus = self._network_mtus(known.config)
        body_read = floating.read_body(body, known)
        change = body_read and floating.plan_change(
            known, body_read, known_networks=set(mtus), network_mtus=mtus
        )
        if not change or not self.unchanged(appliance_id, known.config, known.digest):
            return None
        target = Target(
            namespace=self.names.appliance_netns(appliance_id),
            fabric_netns=self.names.fabric_netns,
            run_directory=self.run_directory(appliance_id),
            daemons=self.daemons(appliance_id),
        )
        try:
            plan = change.plan
            if self.roles.standby_links(appliance_id, known.config):
                # Off the wire: it announces them when it becomes active.
                plan = tuple(a for a in plan if not isinstance(a, Announce))
            done = execute_change(plan, target)
        except NotAsLeft as drifted:  # drift: repaired by the full apply
            log.info("appliance %s: applied in full: %s", appliance_id, drifted)
            return None
        except Exception as error:  # a full apply converges whatever this left
            log.warning("appliance %s: floating IP delta not applied: %s", appliance_id, error)
            return None
        changed = bool(done) or change.digest != status.config_hash
        if change.digest != status.config_hash:
            before = replace(status)
            status.generation += 1
            status.config_hash = change.digest
            status.applied_at = time.time()
            # One line in the journal, flushed; the whole record (the body
            # as sent) once the journal is full.
            directory = self.directory(appliance_id)
            if not record.append(directory, before, status, change.splice):
                record.write_whole(directory, status, body.decode())
            self._remember(appliance_id, status, change.config)
        self._floating[appliance_id] = known.with_change(change)
        self._bodies[appliance_id] = (body_digest, change.digest)
        actions = [str(d) for d in done]
        log.info(
            "appliance %s generation %d: %s", appliance_id, status.generation, "; ".join(actions)
        )
        result = ApplyResult(changed=changed, actions=actions, plan=change.plan, done=tuple(done))
        return result, change.config

    # --- apply -------------------------------------------------------------------------

    def apply(self, appliance_id: str, prepared: Prepared) -> ApplyResult:
        """Converge the appliance on `config` (already prepared). On failure the
        last good config is re-applied (or, for a new appliance, everything
        made so far is removed) and ApplyFailed raised."""
        config, new_hash = prepared.config, prepared.digest
        previous = self.config(appliance_id)
        status = self.status(appliance_id)
        try:
            plan, done = self._converge(appliance_id, config, prepared.rendered, previous)
        except Exception as error:
            log.exception("apply of appliance %s failed", appliance_id)
            status.last_error = f"apply failed: {error}"
            if previous is not None:
                try:
                    self._converge(
                        appliance_id, previous, self._render(appliance_id, previous), None
                    )
                except Exception:
                    log.exception(
                        "restoring appliance %s to its last good config failed", appliance_id
                    )
                    status.last_error += "; restoring the last good config failed too"
                self._save_status(appliance_id, status)
            else:
                self.delete(appliance_id, config)  # a failed create leaves no orphan behind
            raise ApplyFailed(status.last_error) from error
        actions = [str(d) for d in done]
        changed = bool(done) or new_hash != status.config_hash
        changed_config = new_hash != status.config_hash
        if changed_config:
            status.generation += 1
            status.config_hash = new_hash
            status.applied_at = time.time()
        status.last_error = None
        self._save(appliance_id, status, config if changed_config else None)
        if actions:
            log.info(
                "appliance %s generation %d: %s",
                appliance_id,
                status.generation,
                "; ".join(actions),
            )
        return ApplyResult(changed=changed, actions=actions, plan=plan, done=tuple(done))

    def _converge(
        self,
        appliance_id: str,
        config: ApplianceConfig,
        rendered: Rendered,
        previous: ApplianceConfig | None,
    ) -> tuple[Plan, list[Done]]:
        """Observe, plan (pure), execute: the plan and what changed."""
        self.directory(appliance_id).mkdir(parents=True, exist_ok=True)
        run_directory = self.run_directory(appliance_id)
        make_readable_dir(run_directory)
        daemons = self.daemons(appliance_id)
        with NetlinkHandles() as handles:
            with phase("observe"):
                observation = observe_for_apply(
                    names=self.names,
                    appliance_id=appliance_id,
                    config=config,
                    handles=handles,
                    run_directory=run_directory,
                    daemons=daemons,
                )
            with phase("plan"):
                plan = plan_apply(
                    names=self.names,
                    appliance_id=appliance_id,
                    previous=previous,
                    config=config,
                    rendered=rendered,
                    observation=observation,
                    network_mtus=self._network_mtus(config),
                    role_links=self.roles.role_links(config),
                    quiet=bool(self.roles.standby_links(appliance_id, config)),
                    held=daemons.held,
                )
            log.debug("appliance %s plan: %s", appliance_id, plan)
            target = Target(
                namespace=self.names.appliance_netns(appliance_id),
                fabric_netns=self.names.fabric_netns,
                run_directory=run_directory,
                daemons=daemons,
            )
            with phase("execute"):
                done = execute(plan, target, handles)
        # The role may have changed while it ran: the links as it says now.
        self.roles.enforce(appliance_id, config)
        return plan, done

    # --- delete and observe ------------------------------------------------------------

    def delete(self, appliance_id: str, config: ApplianceConfig | None = None) -> None:
        """Remove the namespace, its links, daemons and files."""
        config = config or self.config(appliance_id)
        self._bodies.pop(appliance_id, None)
        self._floating.pop(appliance_id, None)
        self._configs.pop(appliance_id, None)
        self._statuses.pop(appliance_id, None)
        self.roles.forget(appliance_id)
        remove_appliance(
            namespace=self.names.appliance_netns(appliance_id),
            fabric_netns=self.names.fabric_netns,
            fabric_links=[
                self.names.appliance_fabric_link(appliance_id, i.mac)
                for i in (config.interfaces if config else [])
            ],
            daemons=self.daemons(appliance_id),
        )
        shutil.rmtree(self.run_directory(appliance_id), ignore_errors=True)
        shutil.rmtree(self.directory(appliance_id), ignore_errors=True)
        if config is not None and config.ha is not None:  # left by a conntrackd killed
            Path(conntrackd_socket(config, self.sockets)).unlink(missing_ok=True)

    def exists(self, appliance_id: str) -> bool:
        return (self.directory(appliance_id) / "config.json").exists()

    def observe(
        self,
        appliance_id: str,
        config: ApplianceConfig | None = None,
        nftables_verified: bool = False,
    ) -> dict[str, Any]:
        """Observed state: what runs, not what was asked. `nftables_verified`
        skips listing the table when an apply has just compared it."""
        config = config or self.config(appliance_id)
        role = self.roles.role(appliance_id)
        return {
            "id": appliance_id,
            **(
                {"ha": {"role": role.value, "fenced": self.roles.fenced(appliance_id)}}
                if role
                else {}
            ),
            **observe_running(
                namespace=self.names.appliance_netns(appliance_id),
                config=config,
                status=self.status(appliance_id).as_dict(),
                run_directory=self.run_directory(appliance_id),
                daemons=self.daemons(appliance_id),
                nftables_verified=nftables_verified,
            ),
        }

    def rendered_texts(self, appliance_id: str) -> dict[str, Any]:
        """The config in force (with the floating IP deltas of its record's
        journal), the exact texts in force, and the live nftables table for
        comparison."""
        config = self.config(appliance_id)
        if config is None:
            return {}
        texts = self._render(appliance_id, config).texts()
        return {
            "config": config.model_dump(mode="json"),
            "files": texts,
            "nftables_live": live_ruleset(self.names.appliance_netns(appliance_id)),
        }
