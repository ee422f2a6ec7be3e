"""The reconciler: makes the host match the database, and keeps it so.

Work is keyed: one key per router, plus `FABRIC` (workload ports and L2
segments). A key runs on one worker at a time (its serial queue: a wake
while it runs makes it run once more afterwards); different keys run in
parallel on a bounded pool. Outbox events wake the keys they concern; a
periodic, jittered resync wakes every key, so correctness never depends on an
event arriving. Routers back off between failed attempts (`retry_at`).
One router or port that fails never stops the others, nor the loop: errors
are caught per item, logged, and the item retried later.

The outbox is read by sequence. On PostgreSQL a sequence is taken at INSERT,
not at commit, so a lower one can commit after a higher one was read: a
sequence skipped over is looked for again for `GAP_WAIT_S` (then the resync
covers it). Events older than what is kept (`keep_events`, `keep_events_for`)
are pruned once read.

Per router: observe (driver plan from the database, appliance from the
agent) → `lifecycle.step` → store the record, its events and the Neutron
statuses → execute the commands → observe again, until nothing is left to do.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import ValidationError
from sqlalchemy import Engine, delete, func, or_, select, update
from sqlalchemy.orm import Session

from astara.agent.client import AgentClient, AgentError
from astara.db import history, outbox
from astara.db.engine import session_factory
from astara.db.models import (
    FloatingIp,
    Network,
    OutboxEvent,
    PausedProject,
    Port,
    PortBinding,
    Router,
    RouterEvent,
    RouterPort,
    RouterState,
    Subnet,
)
from astara.drivers import router as driver
from astara.fabric.ports import PortSpec
from astara.orchestrator.lifecycle import (
    BACKOFF_BASE,
    Action,
    Decision,
    Observation,
    Record,
    State,
    step,
)

log = logging.getLogger(__name__)

FABRIC = "fabric"
UNREACHABLE = "agent unreachable"
MAX_STEPS = 6
GAP_WAIT_S = 30.0  # how long a skipped sequence may still commit (then the resync covers it)
MAX_GAPS = 1000  # skipped sequences looked for at once


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def neutron_status(state: State) -> str:
    """A router is ACTIVE only when its appliance runs its current config."""
    if state is State.ACTIVE:
        return "ACTIVE"
    if state is State.ERROR:
        return "ERROR"
    return "BUILD"


class Orchestrator:
    def __init__(
        self,
        engine: Engine,
        agent: AgentClient,
        *,
        workers: int = 8,
        resync_s: float = 20.0,
        poll_s: float = 0.2,
        clock: Callable[[], datetime] = utcnow,
        keep_events: int = 10_000,
        keep_events_for: timedelta = timedelta(days=1),
        prune_s: float = 600.0,
    ) -> None:
        self.sessions = session_factory(engine)
        self.agent = agent
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="reconcile")
        self.resync_s, self.poll_s, self.clock = resync_s, poll_s, clock
        # Outbox events are pruned once read, keeping the newest `keep_events`
        # or those younger than `keep_events_for`, whichever keeps more.
        self.keep_events, self.keep_events_for, self.prune_s = keep_events, keep_events_for, prune_s
        self._lock = threading.Lock()
        self._fabric_lock = threading.Lock()  # one fabric pass at a time (worker or cleanup)
        self._gaps: dict[int, float] = {}  # skipped sequences → until when to look for them
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._stop = threading.Event()
        self._poked = threading.Event()
        self._segments: dict[str, tuple[int, bool]] = {}  # segments known on the agent
        self._thread: threading.Thread | None = None
        self.cursor = 0
        self.resyncs = 0
        self.reconciles = 0  # router reconciles finished since start
        self.pushes = 0  # configs sent to the agent since start

    # --- running ------------------------------------------------------------------------

    def start(self) -> Orchestrator:
        with self.sessions.begin() as session:
            self.cursor = session.scalar(select(func.max(OutboxEvent.sequence))) or 0
        self._thread = threading.Thread(target=self._main, name="orchestrator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._poked.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.pool.shutdown(wait=True, cancel_futures=True)

    def poke(self) -> None:
        """Something was committed: read the outbox now, not at the next poll
        (what an API in the same process calls after each write)."""
        self._poked.set()

    def _main(self) -> None:
        next_resync = next_prune = 0.0
        while not self._stop.is_set():
            self._poked.clear()
            # Each part on its own: a resync that fails (the agent is down, an
            # orphan resists) never stops the outbox from being read, and is
            # tried again at the next interval, not at every poll.
            if time.monotonic() >= next_resync:
                next_resync = time.monotonic() + self.resync_s * random.uniform(0.8, 1.2)
                try:
                    self.resync()
                except Exception:
                    log.exception("resync")
            try:
                self._poll()
            except Exception:
                log.exception("reading the outbox")
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + self.prune_s
                try:
                    self.prune()
                except Exception:
                    log.exception("pruning the outbox")
            self._poked.wait(self.poll_s)

    def idle(self) -> bool:
        with self._lock:
            return not self._running

    def status(self) -> dict[str, Any]:
        """What `GET /astara/v1/orchestrator` shows."""
        with self._lock:
            busy = len(self._running)
        return {
            "cursor": self.cursor,
            "resyncs": self.resyncs,
            "reconciles": self.reconciles,
            "pushes": self.pushes,
            "busy": busy,
            "workers": self.pool._max_workers,
            "resync_s": self.resync_s,
        }

    def wake(self, key: str) -> None:
        """Run `key`'s reconcile soon; never two of one key at once."""
        with self._lock:
            if key in self._running:
                self._again.add(key)
                return
            self._running.add(key)
        try:
            self.pool.submit(self._run, key)
        except RuntimeError:  # shutting down
            with self._lock:
                self._running.discard(key)

    def _run(self, key: str) -> None:
        while True:
            try:
                if key == FABRIC:
                    self.reconcile_fabric()
                else:
                    self.reconcile_router(key)
                    with self._lock:
                        self.reconciles += 1
            except Exception:
                log.exception("reconciling %s", key)
            with self._lock:
                if key in self._again and not self._stop.is_set():
                    self._again.discard(key)
                    continue
                self._running.discard(key)
                return

    def _poll(self) -> None:
        """Wake what new outbox events concern (and skipped ones that committed
        since), and routers whose back-off ended. The cursor moves only once
        the wakes are done: a failure before that reads the events again."""
        now_s = time.monotonic()
        gaps = {sequence: until for sequence, until in self._gaps.items() if until > now_s}
        with self.sessions.begin() as session:
            newer = OutboxEvent.sequence > self.cursor
            events = session.scalars(
                select(OutboxEvent)
                .where(or_(newer, OutboxEvent.sequence.in_(sorted(gaps))) if gaps else newer)
                .order_by(OutboxEvent.sequence)
                .limit(1000)
            ).all()
            keys: set[str] = set()
            for event in events:
                keys.update(_affected(session, event))
                if _touches_fabric(event):
                    keys.add(FABRIC)
            due = session.scalars(
                select(RouterState.router_id).where(
                    RouterState.retry_at.is_not(None),
                    RouterState.retry_at <= self.clock(),
                    RouterState.state.not_in((State.PAUSED.value, State.ERROR.value)),
                )
            )
            keys.update(due)
        for key in sorted(keys):
            self.wake(key)
        cursor = self.cursor
        for event in events:
            gaps.pop(event.sequence, None)
            if event.sequence > cursor:
                # Sequences between the last read and this one may belong to
                # transactions not committed yet: look for them a while longer.
                for missing in range(max(cursor + 1, event.sequence - MAX_GAPS), event.sequence):
                    gaps[missing] = now_s + GAP_WAIT_S
                cursor = event.sequence
        self._gaps = dict(sorted(gaps.items())[-MAX_GAPS:])
        self.cursor = cursor

    def prune(self) -> int:
        """Delete outbox events already read that are neither among the newest
        `keep_events` nor younger than `keep_events_for`; how many."""
        with self.sessions.begin() as session:
            return outbox.prune(
                session,
                read_up_to=self.cursor,
                keep=self.keep_events,
                before=self.clock() - self.keep_events_for,
            )

    def resync(self) -> None:
        """Wake everything, and remove appliances no router accounts for."""
        self.resyncs += 1
        try:
            self._remove_orphans()
        except (AgentError, httpx.HTTPError) as error:
            # The routers are woken all the same: each finds out for itself.
            log.warning("listing the agent's appliances failed: %s", error)
        with self.sessions.begin() as session:
            known = set(session.scalars(select(Router.id)))
            known.update(session.scalars(select(RouterState.router_id)))
        for key in sorted(known):
            self.wake(key)
        self.wake(FABRIC)

    def _remove_orphans(self, removed: list[str] | None = None) -> None:
        """Delete appliances no router accounts for. One that cannot be deleted
        is logged and left for the next pass; the others are deleted."""
        # The agent first, then the database: an appliance is only ever pushed
        # after its router row exists, so one listed here and unknown there
        # is an orphan, never a router being born.
        on_agent = {a["id"] for a in self.agent.appliances(observe=False)}
        with self.sessions.begin() as session:
            known = set(session.scalars(select(Router.id)))
            known.update(session.scalars(select(RouterState.router_id)))
        for orphan in sorted(on_agent - known):
            if self._stop.is_set():
                return
            log.warning("removing appliance %s: no router accounts for it", orphan)
            try:
                self._delete_appliance(orphan)
            except (AgentError, httpx.HTTPError) as error:
                log.warning("removing appliance %s failed: %s", orphan, error)
                continue
            if removed is not None:
                removed.append(f"appliance {orphan}")

    def cleanup(self) -> list[str]:
        """`astara cleanup`: remove orphans now; what was removed."""
        removed: list[str] = []
        self._remove_orphans(removed)
        removed.extend(self.reconcile_fabric())
        return removed

    # --- one router ---------------------------------------------------------------------

    def reconcile_router(self, router_id: str) -> None:
        failure: str | None = None
        applied: dict[str, Any] | None = None  # what the last PUT answered
        for _ in range(MAX_STEPS):
            if self._stop.is_set():
                return  # the record says where it stands: the next start continues
            seen, record, plan, project_id = self._observe(router_id, failure, applied)
            if seen is None:
                return
            decision = step(record, seen, self.clock())
            self._store(router_id, project_id, record, decision, plan, seen)
            if not decision.commands:
                return
            failure, applied = None, None
            for command in decision.commands:
                if command.action is Action.FORGET:
                    self._forget(router_id)
                    return
                failure, applied = self._execute(router_id, command.action, plan)
                if failure is not None:
                    break
            if failure is None:
                continue
        # Not settled yet: due again shortly, so the poller continues it (not
        # the next resync), yet a router that never settles is no hot loop.
        log.debug("router %s: step budget spent; the next wake continues", router_id)
        with self.sessions.begin() as session:
            session.execute(
                update(RouterState)
                .where(RouterState.router_id == router_id, RouterState.retry_at.is_(None))
                .values(retry_at=self.clock() + BACKOFF_BASE)
            )

    def _observe(
        self, router_id: str, failure: str | None, applied: dict[str, Any] | None = None
    ) -> tuple[Observation | None, Record, driver.RouterPlan | None, str]:
        """The router's record and plan from the database, its appliance from
        the agent (or from the answer to the PUT just made: the same thing).
        After a `failure` the agent is not asked: `present` then says nothing,
        and the lifecycle concludes nothing from it."""
        with self.sessions.begin() as session:
            router = session.get(Router, router_id)
            row = session.get(RouterState, router_id)
            if router is not None:
                project_id = router.project_id
            elif row is not None:
                project_id = row.project_id
            else:
                return None, Record(), None, ""  # nothing to do: never was, or forgotten
            plan: driver.RouterPlan | None = None
            invalid: str | None = None
            if router is not None:
                try:
                    plan = driver.plan(session, router)
                except ValidationError as error:
                    # The router asks for what no appliance can run (too many
                    # interfaces, say): a failure like any other, with its reason.
                    invalid = "invalid appliance config: " + "; ".join(
                        f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()
                    )
            paused = bool(row is not None and row.paused) or (
                session.get(PausedProject, project_id) is not None
            )
            record = _record(row)
            rebuild = bool(row is not None and row.rebuild_requested)
        observed: dict[str, Any] | None = applied
        failure = failure or invalid
        if failure is None and observed is None:
            try:
                observed = self.agent.request("GET", f"/v1/appliances/{router_id}", ok=(200,))
            except AgentError as error:
                if error.status_code != 404:
                    failure = f"agent: {error}"
            except httpx.HTTPError as error:
                failure = f"{UNREACHABLE}: {error}"
        seen = Observation(
            desired_hash=plan.digest if plan is not None else (invalid and "invalid"),
            present=observed is not None,
            observed_hash=(observed or {}).get("config_hash"),
            problems=tuple((observed or {}).get("problems") or ()),
            failure=failure,
            exists=router is not None,
            paused=paused,
            rebuild_requested=rebuild,
            agent_down=bool(failure and failure.startswith(UNREACHABLE)),
        )
        return seen, record, plan, project_id

    def _execute(
        self, router_id: str, action: Action, plan: driver.RouterPlan | None
    ) -> tuple[str | None, dict[str, Any] | None]:
        """Run one command: (the failure's text or None, the agent's answer to a PUT)."""
        applied: dict[str, Any] | None = None
        try:
            if action in (Action.DELETE, Action.REBUILD):
                self._delete_appliance(router_id)
            if action in (Action.PUSH, Action.REBUILD):
                if plan is None or plan.config is None:
                    return "no config to push", None
                for network_id, need in sorted(plan.networks.items()):
                    self._ensure_network(network_id, need.mtu, need.external)
                applied = self.agent.put_appliance(router_id, plan.config.model_dump(mode="json"))
                with self._lock:
                    self.pushes += 1
        except AgentError as error:
            self._forget_segments(plan.networks if plan is not None else {})
            return _agent_failure(error), None
        except httpx.HTTPError as error:
            self._forget_segments(None)
            return f"{UNREACHABLE}: {error}", None
        return None, applied

    def _ensure_network(self, network_id: str, mtu: int, external: bool) -> None:
        """PUT the segment unless this orchestrator already did with the same
        spec (a PUT takes the agent's fabric lock, which applies wait for)."""
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

    def _forget_segments(self, network_ids: Iterable[str] | None) -> None:
        """After a failure, ask the agent again rather than trust the cache."""
        with self._lock:
            if network_ids is None:
                self._segments.clear()
            for network_id in network_ids or ():
                self._segments.pop(network_id, None)

    def _delete_appliance(self, appliance_id: str) -> None:
        try:
            self.agent.delete_appliance(appliance_id)
        except AgentError as error:
            if error.status_code != 404:
                raise

    def _store(
        self,
        router_id: str,
        project_id: str,
        before: Record,
        decision: Decision,
        plan: driver.RouterPlan | None,
        seen: Observation,
    ) -> None:
        now = self.clock()
        after = decision.record
        with self.sessions.begin() as session:
            row = session.get(RouterState, router_id)
            if row is None:
                row = RouterState(
                    router_id=router_id,
                    project_id=project_id,
                    paused=False,
                    rebuild_requested=False,
                    updated_at=now,
                )
                session.add(row)
            if after != before or row.state is None:
                row.state = after.state.value
                row.attempts = after.attempts
                row.retry_at = after.retry_at
                row.last_error = after.last_error
                row.applied_hash = after.applied_hash
                row.updated_at = now
            if decision.rebuild_handled:
                row.rebuild_requested = False  # this step acted on it
            for message in decision.events:
                log.info("router %s: %s", router_id, message)
                session.add(RouterEvent(router_id=router_id, at=now, message=message))
            if decision.events:
                history.trim(session, router_id)
            if not seen.agent_down:  # nothing known: leave the statuses as they are
                _write_statuses(session, router_id, after.state, plan)

    def _forget(self, router_id: str) -> None:
        with self.sessions.begin() as session:
            session.execute(delete(RouterState).where(RouterState.router_id == router_id))
            session.execute(delete(RouterEvent).where(RouterEvent.router_id == router_id))
        log.info("router %s: appliance removed, record dropped", router_id)
        self.wake(FABRIC)

    # --- workload ports and L2 segments -------------------------------------------------

    def reconcile_fabric(self) -> list[str]:
        """Plug bound ports, unplug the rest, and remove segments nothing uses;
        what was removed. One pass at a time (the FABRIC worker's or
        `cleanup`'s); a port, segment or binding that fails is logged (a
        port's status says DOWN) and the others proceed."""
        with self._fabric_lock:
            return self._reconcile_fabric()

    def _reconcile_fabric(self) -> list[str]:
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
        for network_id, (mtu, external) in sorted(networks.items()):
            if self._stop.is_set():
                return removed
            try:
                self._ensure_network(network_id, mtu, external)
            except AgentError as error:  # its ports fail below, and are DOWN
                log.warning("segment %s failed: %s", network_id, error)
        plugged = {p["id"]: p for p in self.agent.ports()}
        for port_id in sorted(set(plugged) - set(specs)):
            if self._stop.is_set():
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
            if self._stop.is_set():
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
            # Ports neither bound nor a router's are DOWN: nothing on the host carries them.
            session.execute(
                update(Port)
                .where(
                    Port.status != "DOWN",
                    Port.id.not_in(select(PortBinding.port_id)),
                    Port.id.not_in(select(RouterPort.port_id)),
                    Port.device_owner != "network:floatingip",
                )
                .values(status="DOWN")
            )
        for segment in segments:
            if segment["id"] in needed:
                continue
            if self._stop.is_set():
                return removed
            try:
                self._forget_segments([segment["id"]])
                self.agent.delete_network(segment["id"])
                removed.append(f"network {segment['id']}")
            except AgentError as error:
                if error.status_code != 409:  # 409: still in use, the next pass
                    log.warning("removing segment %s failed: %s", segment["id"], error)
        return removed


def _touches_fabric(event: OutboxEvent) -> bool:
    """Events that can change plugs or leave a segment unused: any port change,
    and what detaches a router from a network. (Segments in use are pushed
    with their router; the resync catches anything else.)"""
    if event.resource_type == "port":
        return True
    if event.resource_type == "network":
        return event.action == "delete"
    if event.resource_type == "router":
        return event.action in ("delete", "remove_interface", "update")
    return False


def _affected(session: Session, event: OutboxEvent) -> set[str]:
    """The routers an event may change: the router itself; the routers on a
    network, a subnet's or a port's network; a floating IP's router. When the
    object is gone already, what the event's detail says it was on
    (`network_id` for a subnet or port, `router_id` for a floating IP);
    without that, every router of its project (the resync catches anything
    this misses)."""
    kind, object_id = event.resource_type, event.resource_id
    detail = event.detail if isinstance(event.detail, dict) else {}
    if kind == "router":
        return {object_id}
    network_id: str | None = None
    if kind == "network":
        network_id = object_id
    elif kind == "subnet":
        network_id = session.scalar(select(Subnet.network_id).where(Subnet.id == object_id))
    elif kind == "port":
        network_id = session.scalar(select(Port.network_id).where(Port.id == object_id))
    elif kind == "floatingip":
        floating = session.get(FloatingIp, object_id)
        if floating is not None:
            return {floating.router_id} if floating.router_id else set()
        if "router_id" in detail:  # the router it was on when deleted (None: none)
            router_id = detail["router_id"]
            return {router_id} if isinstance(router_id, str) else set()
    if network_id is None and isinstance(detail.get("network_id"), str):
        network_id = detail["network_id"]
    if network_id is not None:
        return set(
            session.scalars(
                select(RouterPort.router_id)
                .join(Port, Port.id == RouterPort.port_id)
                .where(Port.network_id == network_id)
            )
        )
    found = set(session.scalars(select(Router.id).where(Router.project_id == event.project_id)))
    found.update(
        session.scalars(
            select(RouterState.router_id).where(RouterState.project_id == event.project_id)
        )
    )
    return found


def _record(row: RouterState | None) -> Record:
    if row is None:
        return Record()
    return Record(
        state=State(row.state),
        attempts=row.attempts,
        retry_at=row.retry_at,
        last_error=row.last_error,
        applied_hash=row.applied_hash,
    )


def _agent_failure(error: AgentError) -> str:
    body = error.body
    if isinstance(body, dict):
        detail = body.get("detail", body)
        return f"agent refused ({error.status_code}): {detail}"
    return f"agent refused ({error.status_code}): {body}"


def _write_statuses(
    session: Session, router_id: str, state: State, plan: driver.RouterPlan | None
) -> None:
    """Neutron statuses from reality: the router, its ports, its floating IPs.
    Observed values, not changes: no revision bump, no outbox event."""
    if state is State.PAUSED:
        return
    status = neutron_status(state)
    # Lock the router row first (a row lock on PostgreSQL, the write lock on
    # SQLite), then read: an API change that marks it BUILD either commits
    # before and is seen below, or waits and lands after this write.
    session.execute(update(Router).where(Router.id == router_id).values(status=Router.status))
    session.expire_all()
    router = session.get(Router, router_id)
    if router is not None and not router.admin_state_up and state is State.ACTIVE:
        status = "DOWN"  # down as asked: its appliance is gone
    # The API may have changed what the router should run since we looked (and
    # marked it BUILD): ACTIVE only if what runs is still current.
    if (
        status == "ACTIVE"
        and router is not None
        and plan is not None
        and driver.plan(session, router).digest != plan.digest
    ):
        status = "BUILD"
    session.execute(
        update(Router).where(Router.id == router_id, Router.status != status).values(status=status)
    )
    up = "ACTIVE" if status == "ACTIVE" else "DOWN"
    own = select(RouterPort.port_id).where(RouterPort.router_id == router_id)
    session.execute(update(Port).where(Port.id.in_(own), Port.status != up).values(status=up))
    session.execute(
        update(FloatingIp)
        .where(
            FloatingIp.router_id == router_id,
            FloatingIp.fixed_port_id.is_not(None),
            FloatingIp.status != up,
        )
        .values(status=up)
    )
    session.execute(
        update(FloatingIp)
        .where(FloatingIp.router_id.is_(None), FloatingIp.status != "DOWN")
        .values(status="DOWN")
    )


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
    ValueError (pydantic's ValidationError is one) when none can be made."""
    addresses: list[str] = []
    routes: list[dict[str, str]] = []
    for allocation in port.fixed_ips:
        subnet = session.get(Subnet, allocation.subnet_id)
        if subnet is None:
            raise ValueError(f"subnet {allocation.subnet_id} is gone")
        prefix = ipaddress.ip_network(subnet.cidr).prefixlen
        if subnet.ip_version == 4 and binding.dhcp:
            continue
        addresses.append(f"{allocation.ip_address}/{prefix}")
        if subnet.gateway_ip and not routes_have_default(routes, subnet.ip_version):
            default = "0.0.0.0/0" if subnet.ip_version == 4 else "::/0"
            routes.append({"destination": default, "nexthop": subnet.gateway_ip})
    spec = PortSpec.model_validate(
        {
            "network_id": port.network_id,
            "mac": port.mac_address,
            "netns": binding.netns,
            "ifname": binding.ifname,
            "addresses": addresses,
            "routes": routes,
            "dhcp": binding.dhcp,
            "mtu": network.mtu,
        }
    )
    # In the agent's own normal form, so that equal specs compare equal.
    spec_json: dict[str, Any] = spec.model_dump(mode="json")
    return spec_json


def routes_have_default(routes: list[dict[str, str]], version: int) -> bool:
    default = "0.0.0.0/0" if version == 4 else "::/0"
    return any(r["destination"] == default for r in routes)
