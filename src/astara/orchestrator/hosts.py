"""The hosts the orchestrator drives, and whether each is alive.

Every host runs an astara-agent: the local one of `astara serve` (a unix
socket) or one that joined over mutual TLS (`https://ADDR:PORT`). The
controller heartbeats them (it must reach them to push anyway: one
direction, one failure detector): `GET /v1/health` every `heartbeat_s`. A
host that has not answered for `down_after_s` is marked down, and its
appliances are placed elsewhere. A host that answers again is not alive at
once: the orchestrator first removes what it no longer should run (its
stale appliances, see `Orchestrator.sweep`), then marks it alive. The agent
side of the bargain: an agent that has not heard from a controller for its
`--fence-after` (shorter than `down_after_s`) takes its appliances off the
provider network by itself, so an address never answers from two hosts.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from astara.agent.client import AgentClient, AgentError
from astara.db.models import ApplianceState, Host, PortBinding, ha_member, ha_member_id
from astara.orchestrator.placement import HostInfo

log = logging.getLogger(__name__)

HEARTBEAT_S = 0.5
DOWN_AFTER_S = 3.0
# A host's `last_heartbeat` (shown, whole seconds) is written at most this
# often while nothing else about it changes: no database write per round.
HEARTBEAT_RECORD_S = 5.0


def info(row: Host) -> HostInfo:
    return HostInfo(
        name=row.name,
        address=row.address,
        underlay_address=row.underlay_address,
        physnets=dict(row.physnets or {}),
        availability_zone=row.availability_zone,
        drained=row.drained,
        alive=row.alive,
    )


def infos(session: Session) -> dict[str, HostInfo]:
    return {row.name: info(row) for row in session.scalars(select(Host).order_by(Host.name))}


@dataclass(frozen=True)
class Beat:
    """One heartbeat round: hosts marked down now, hosts that answer again
    while marked down (the orchestrator sweeps them, then `revive`s), and
    live hosts whose agent says it fenced itself (their appliances are
    pushed again, which unfences them)."""

    down: tuple[str, ...] = ()
    returning: tuple[str, ...] = ()
    fenced: dict[str, tuple[str, ...]] = field(default_factory=dict)  # host → newly fenced
    # HA routers both of whose members said "active" in this round and the
    # one before (router id → its members' ids): a split brain.
    split: dict[str, tuple[str, str]] = field(default_factory=dict)


# Rounds in a row both members of an HA router must say "active" before it
# counts as a split brain: one round may catch a failover half done.
SPLIT_ROUNDS = 2


class Hosts:
    """An agent client per host, and the heartbeats."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        connect: Callable[[str], AgentClient] = AgentClient,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        down_after_s: float = DOWN_AFTER_S,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
        owns: Callable[[str], bool] = lambda name: True,
    ) -> None:
        """`owns`: whether this orchestrator heartbeats a host (with several,
        each host has one owner: see `orchestrator.coordination`)."""
        self.sessions, self.connect = sessions, connect
        self.owns = owns
        self.heartbeat_s, self.down_after_s = heartbeat_s, down_after_s
        self.clock, self.monotonic = clock, monotonic
        self.local: str | None = None  # the host a binding without one means
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[str, AgentClient]] = {}  # name → (address, client)
        self._last_ok: dict[str, float] = {}
        self._fenced: dict[str, set[str]] = {}  # host → appliances it said were fenced
        # host → the roles of its HA members as written last; router → rounds
        # in a row its two members were both active.
        self._roles: dict[str, dict[str, str]] = {}
        self._split: dict[str, int] = {}
        # host → what its row was last given (besides the time), and when: a
        # round writes a host only when that changed or the time is stale.
        self._written: dict[str, tuple[dict[str, Any], float]] = {}
        self._pool = ThreadPoolExecutor(16, thread_name_prefix="heartbeat")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def adopt(self, name: str, client: AgentClient, address: str) -> None:
        """Register a host whose client is already made (the local agent):
        its row is created, or updated (address). The local host is known
        by its address: renamed (a new hostname, `--host-name`), its row is
        renamed with what is placed and bound there, never duplicated."""
        now = self.clock()
        with self.sessions.begin() as session:
            named = session.scalar(select(Host).where(Host.name == name))
            row = session.scalar(select(Host).where(Host.address == address))
            if named is not None and named is not row:
                if not named.address.startswith("unix:"):
                    raise ValueError(
                        f"host name {name} belongs to a joined host ({named.address}):"
                        " give the local host another name (--host-name)"
                    )
                if row is None:
                    row = named  # the local host, its socket moved
                else:
                    session.delete(named)  # an older local host's row
                    session.flush()
            if row is None:
                session.add(
                    Host(
                        id=str(uuid.uuid4()),
                        name=name,
                        address=address,
                        physnets={},
                        availability_zone="nova",
                        drained=False,
                        alive=True,
                        last_heartbeat=now,
                        reported={},
                        created_at=now,
                    )
                )
            else:
                if row.name != name:
                    log.warning("the local host %s is now called %s", row.name, name)
                    for table in (ApplianceState, PortBinding):
                        session.execute(
                            update(table).where(table.host == row.name).values(host=name)
                        )
                    session.execute(
                        update(ApplianceState)
                        .where(ApplianceState.move_to == row.name)
                        .values(move_to=name)
                    )
                    row.name = name
                row.address = address
            # Appliances applied before they had hosts (migration 0008) run here.
            session.execute(
                update(ApplianceState)
                .where(ApplianceState.host.is_(None), ApplianceState.applied_hash.is_not(None))
                .values(host=name)
            )
        with self._lock:
            self._clients[name] = (address, client)
            self._last_ok[name] = self.monotonic()
        self.local = name

    def client(self, host: HostInfo) -> AgentClient:
        """The client for `host` (made on first use, again if its address changed)."""
        with self._lock:
            known = self._clients.get(host.name)
            if known is not None and known[0] == host.address:
                return known[1]
        client = self.connect(host.address)
        with self._lock:
            self._clients[host.name] = (host.address, client)
        return client

    def infos(self) -> dict[str, HostInfo]:
        with self.sessions.begin() as session:
            return infos(session)

    # --- heartbeats ---------------------------------------------------------------------

    def beat(self) -> Beat:
        """One round: ask every host for its health (in parallel, each within
        a heartbeat), record the answers, and mark down the hosts silent for
        longer than `down_after_s`. Only the hosts this orchestrator owns:
        one it did not own counts its silence from when it first asks."""
        hosts = {name: host for name, host in self.infos().items() if self.owns(name)}
        with self._lock:
            for name in set(self._last_ok) - set(hosts):
                del self._last_ok[name]  # removed, or another orchestrator's
                self._written.pop(name, None)
                self._roles.pop(name, None)
        futures = {name: self._pool.submit(self._health, host) for name, host in hosts.items()}
        answers: dict[str, dict[str, Any] | None] = {}
        for name, future in futures.items():
            try:
                answers[name] = future.result(timeout=self.heartbeat_s * 2 + 1)
            except Exception:
                answers[name] = None
        now_s, now = self.monotonic(), self.clock()
        down: list[str] = []
        returning: list[str] = []
        fenced: dict[str, tuple[str, ...]] = {}
        written_now: dict[str, dict[str, Any]] = {}
        with self.sessions.begin() as session:
            for name, health in answers.items():
                host = hosts[name]
                with self._lock:
                    if health is not None:
                        self._last_ok[name] = now_s
                    last = self._last_ok.setdefault(name, now_s)
                if health is not None:
                    values: dict[str, Any] = {"reported": _reported(health)}
                    values.update(_settings(health, host))
                    # The capacity (free memory, load) moves at every answer:
                    # refreshed with the time, not a reason to write.
                    steady = {k: v for k, v in values.items() if k != "reported"}
                    steady["reported"] = {
                        k: v for k, v in values["reported"].items() if k != "capacity"
                    }
                    with self._lock:
                        written, at = self._written.get(name, (None, -HEARTBEAT_RECORD_S))
                    if steady != written or now_s - at >= HEARTBEAT_RECORD_S or not host.alive:
                        session.execute(
                            update(Host)
                            .where(Host.name == name)
                            .values(last_heartbeat=now, **values)
                        )
                        written_now[name] = steady
                    if not host.alive:
                        returning.append(name)
                    now_fenced = set(health.get("fenced_appliances") or ())
                    with self._lock:
                        new = now_fenced - self._fenced.get(name, set())
                        self._fenced[name] = now_fenced
                    if new and host.alive:
                        fenced[name] = tuple(sorted(new))
                elif host.alive and now_s - last > self.down_after_s:
                    session.execute(update(Host).where(Host.name == name).values(alive=False))
                    log.warning("host %s: no heartbeat for %.1f s, marked down", name, now_s - last)
                    down.append(name)
            roles = {
                name: self._record_roles(session, name, health) for name, health in answers.items()
            }
            split = self._splits(session, answers, roles)
        with self._lock:  # committed: what the rows hold now
            self._written.update({name: (steady, now_s) for name, steady in written_now.items()})
            self._roles.update(roles)
        return Beat(tuple(down), tuple(returning), fenced, split)

    def _record_roles(
        self, session: Session, name: str, health: dict[str, Any] | None
    ) -> dict[str, str]:
        """The roles of the HA members on a host, as it reports them now
        (`ha_state`, where the record places them there), written where
        they changed, one statement per role; a host that did not answer
        this round has no known role: they were active, for all anyone
        knows, only while it answered. What it reports (kept once committed)."""
        roles = health.get("ha_roles") if health is not None else None
        now = (
            {k: v for k, v in roles.items() if isinstance(v, str)}
            if isinstance(roles, dict)
            else {}
        )
        with self._lock:
            before = self._roles.get(name, {})
        changed: dict[str | None, list[str]] = {}
        for appliance_id in set(before) | set(now):
            if before.get(appliance_id) != now.get(appliance_id):
                changed.setdefault(now.get(appliance_id), []).append(appliance_id)
        for role, ids in changed.items():
            session.execute(
                update(ApplianceState)
                .where(ApplianceState.appliance_id.in_(ids), ApplianceState.host == name)
                .values(ha_state=role)
            )
        return now

    def _splits(
        self,
        session: Session,
        answers: dict[str, dict[str, Any] | None],
        roles: dict[str, dict[str, str]],
    ) -> dict[str, tuple[str, str]]:
        """HA routers whose two members, each where its record places it,
        both said "active" (an answer of this round for the hosts this
        orchestrator asks; the record, while its host is up, for others'),
        for `SPLIT_ROUNDS` rounds in a row."""
        active = {
            appliance_id
            for name, health in answers.items()
            if health is not None
            for appliance_id, role in roles.get(name, {}).items()
            if role == "active"
        }
        routers = {m[0] for a in active if (m := ha_member(a)) is not None}
        found: dict[str, tuple[str, str]] = {}
        if routers:
            pairs = [ha_member_id(r, slot) for r in sorted(routers) for slot in (0, 1)]
            rows = session.execute(
                select(ApplianceState.appliance_id, ApplianceState.host, ApplianceState.ha_state)
                .join(Host, Host.name == ApplianceState.host)
                .where(ApplianceState.appliance_id.in_(pairs), Host.alive)
            ).all()
            both: dict[str, list[str]] = {}
            for appliance_id, host, state in rows:
                member = ha_member(appliance_id)
                heard = answers.get(host or "", {}) is not None  # ours answered, or another's
                if member is not None and state == "active" and heard:
                    both.setdefault(member[0], []).append(appliance_id)
            for router_id, ids in both.items():
                if len(set(ids)) == 2:
                    first, second = sorted(set(ids))
                    found[router_id] = (first, second)
        self._split = {r: self._split.get(r, 0) + 1 for r in found}
        return {r: found[r] for r, n in self._split.items() if n >= SPLIT_ROUNDS}

    def revive(self, name: str) -> None:
        """Mark a returning host alive (after its stale appliances are gone)."""
        with self.sessions.begin() as session:
            session.execute(update(Host).where(Host.name == name).values(alive=True))
        log.warning("host %s: answers again, marked up", name)

    def _health(self, host: HostInfo) -> dict[str, Any] | None:
        try:
            health: dict[str, Any] = self.client(host).health(timeout_s=self.heartbeat_s)
        except (AgentError, httpx.HTTPError, OSError) as error:
            log.debug("host %s: heartbeat failed: %s", host.name, error)
            return None
        return health


def _settings(health: dict[str, Any], host: HostInfo) -> dict[str, Any]:
    """The host's own settings as its agent reports them now (it may have
    been restarted with others than it joined with): what changed."""
    changed: dict[str, Any] = {}
    underlay = health.get("underlay_address")
    if "underlay_address" in health and underlay != host.underlay_address:
        log.warning(
            "host %s: its underlay address is now %s (was %s)",
            host.name,
            underlay,
            host.underlay_address,
        )
        changed["underlay_address"] = underlay
    physnets = health.get("physnets")
    if isinstance(physnets, dict) and physnets != dict(host.physnets):
        changed["physnets"] = physnets
    zone = health.get("availability_zone")
    if isinstance(zone, str) and zone and zone != host.availability_zone:
        changed["availability_zone"] = zone
    return changed


def _reported(health: dict[str, Any]) -> dict[str, Any]:
    """What a host's row keeps of its health: version and capacity."""
    keep = (
        "version",
        "status",
        "capacity",
        "fenced",
        "fenced_since",
        "underlay_address",
        "physnets",
        "availability_zone",
    )
    return {key: health[key] for key in keep if key in health}
