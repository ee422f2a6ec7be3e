"""The reconciler: makes the host match the database, and keeps it so.

Work is keyed: one key per appliance — a router's (its id) or a network's
DHCP appliance (`dhcp-<network id>`, while the network has a DHCP port, see
`astara.api.dhcp`) — plus `L2_KEY` (workload ports and L2 segments). A key
runs on one worker at a time (its serial queue: a wake while it runs makes
it run once more afterwards); different keys run in parallel on a bounded
pool. Outbox events wake the keys they concern; a periodic, jittered resync
wakes every key, so correctness never depends on an event arriving.
Appliances back off between failed attempts (`retry_at`). One appliance or
port that fails never stops the others, nor the loop: errors are caught per
item, logged, and the item retried later.

The outbox is read by sequence. On PostgreSQL a sequence is taken at INSERT,
not at commit, so a lower one can commit after a higher one was read: a
sequence skipped over is looked for again for `GAP_WAIT_S` (then the resync
covers it). Events older than what is kept (`keep_events`, `keep_events_for`)
are pruned once read.

Per appliance: observe (the driver's plan from the database — `drivers.router`
or `drivers.dhcp` — the appliance from the agent) → `lifecycle.step` → store
the record, its events and the Neutron statuses → execute the commands →
observe again, until nothing is left to do. Both kinds share the lifecycle,
history, back-off, rebuild and debug/manage.

Beside it: `events` (which keys an event wakes), `l2` (segments and
workload plugs, the `L2_KEY` key's pass), `statuses` (Neutron statuses
from what was observed) and `failures` (why a step failed, typed).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import ValidationError
from sqlalchemy import Engine, delete, func, or_, select, update

from astara.agent.client import AgentClient, AgentError
from astara.db import history, outbox
from astara.db.engine import session_factory
from astara.db.models import (
    ApplianceEvent,
    ApplianceState,
    OutboxEvent,
    PausedProject,
    dhcp_network_id,
)
from astara.drivers.appliance import AppliancePlan
from astara.orchestrator import appliances, statuses
from astara.orchestrator.events import affected, touches_l2
from astara.orchestrator.failures import (
    Failure,
    FailureKind,
    config_invalid,
    from_agent,
    unreachable,
)
from astara.orchestrator.l2 import L2
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

L2_KEY = "l2"  # the work key of L2 segments and workload plugs
MAX_STEPS = 6
GAP_WAIT_S = 30.0  # how long a skipped sequence may still commit (then the resync covers it)
MAX_GAPS = 1000  # skipped sequences looked for at once


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


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
        self._gaps: dict[int, float] = {}  # skipped sequences → until when to look for them
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._stop = threading.Event()
        self.l2 = L2(self.sessions, agent, self._stop)
        self._poked = threading.Event()
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
                if key == L2_KEY:
                    self.l2.reconcile()
                else:
                    self.reconcile_appliance(key)
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
                keys.update(affected(session, event))
                if touches_l2(event):
                    keys.add(L2_KEY)
            due = session.scalars(
                select(ApplianceState.appliance_id).where(
                    ApplianceState.retry_at.is_not(None),
                    ApplianceState.retry_at <= self.clock(),
                    ApplianceState.state.not_in((State.PAUSED.value, State.ERROR.value)),
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
        """Wake everything, and remove appliances nothing accounts for."""
        self.resyncs += 1
        try:
            self._remove_orphans()
        except (AgentError, httpx.HTTPError) as error:
            # The routers are woken all the same: each finds out for itself.
            log.warning("listing the agent's appliances failed: %s", error)
        with self.sessions.begin() as session:
            known = appliances.known(session)
        for key in sorted(known):
            self.wake(key)
        self.wake(L2_KEY)

    def _remove_orphans(self, removed: list[str] | None = None) -> None:
        """Delete appliances nothing accounts for (no router, no network's DHCP
        port, no record). One that cannot be deleted is logged and left for
        the next pass; the others are deleted."""
        # The agent first, then the database: an appliance is only ever pushed
        # after its router row (or DHCP port) exists, so one listed here and
        # unknown there is an orphan, never an appliance being born.
        on_agent = {a["id"] for a in self.agent.appliances(observe=False)}
        with self.sessions.begin() as session:
            known = appliances.known(session)
        for orphan in sorted(on_agent - known):
            if self._stop.is_set():
                return
            log.warning("removing appliance %s: nothing accounts for it", orphan)
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
        removed.extend(self.l2.reconcile())
        return removed

    # --- one appliance ------------------------------------------------------------------

    def reconcile_appliance(self, appliance_id: str) -> None:
        """Observe → step → store → execute, for one router's or network's
        DHCP appliance, until nothing is left to do (or the step budget)."""
        failure: Failure | None = None
        applied: dict[str, Any] | None = None  # what the last PUT answered
        for _ in range(MAX_STEPS):
            if self._stop.is_set():
                return  # the record says where it stands: the next start continues
            seen, record, plan, project_id = self._observe(appliance_id, failure, applied)
            if seen is None:
                return
            decision = step(record, seen, self.clock())
            self._store(appliance_id, project_id, record, decision, plan, seen)
            if not decision.commands:
                return
            failure, applied = None, None
            for command in decision.commands:
                if command.action is Action.FORGET:
                    self._forget(appliance_id)
                    return
                failure, applied = self._execute(appliance_id, command.action, plan)
                if failure is not None:
                    break
            if failure is None:
                continue
        # Not settled yet: due again shortly, so the poller continues it (not
        # the next resync), yet an appliance that never settles is no hot loop.
        log.debug("appliance %s: step budget spent; the next wake continues", appliance_id)
        with self.sessions.begin() as session:
            session.execute(
                update(ApplianceState)
                .where(
                    ApplianceState.appliance_id == appliance_id,
                    ApplianceState.retry_at.is_(None),
                )
                .values(retry_at=self.clock() + BACKOFF_BASE)
            )

    def _observe(
        self, appliance_id: str, failure: Failure | None, applied: dict[str, Any] | None = None
    ) -> tuple[Observation | None, Record, AppliancePlan | None, str]:
        """The appliance's record and plan from the database, its state from
        the agent (or from the answer to the PUT just made: the same thing).
        After a `failure` the agent is not asked: `present` then says nothing,
        and the lifecycle concludes nothing from it."""
        with self.sessions.begin() as session:
            subject = appliances.subject(session, appliance_id)
            row = session.get(ApplianceState, appliance_id)
            if subject is not None:
                project_id, make_plan = subject
            elif row is not None:
                project_id, make_plan = row.project_id, None
            else:
                return None, Record(), None, ""  # nothing to do: never was, or forgotten
            plan: AppliancePlan | None = None
            invalid: Failure | None = None
            if make_plan is not None:
                try:
                    plan = make_plan()
                except ValidationError as error:
                    # The subject asks for what no appliance can run (too many
                    # interfaces, say): a failure like any other, with its reason.
                    invalid = config_invalid(error)
            paused = bool(row is not None and row.paused) or (
                session.get(PausedProject, project_id) is not None
            )
            record = _record(row)
            rebuild = bool(row is not None and row.rebuild_requested)
        observed: dict[str, Any] | None = applied
        failure = failure or invalid
        # An invalid config is still a wanted appliance: never "none needed".
        desired = plan.digest if plan is not None else ("invalid" if invalid else None)
        if failure is None and observed is None:
            try:
                observed = self.agent.request("GET", f"/v1/appliances/{appliance_id}", ok=(200,))
            except AgentError as error:
                if error.status_code == 404:
                    pass
                elif desired is None:
                    # No appliance is wanted and the agent cannot show this
                    # one: remove it all the same (a DELETE of nothing is a
                    # 404, ignored). Only a failed DELETE counts as a failure.
                    observed = {}
                else:
                    failure = from_agent(error.status_code, error.body)
            except httpx.HTTPError as error:
                failure = unreachable(str(error))
        seen = Observation(
            desired_hash=desired,
            present=observed is not None,
            observed_hash=(observed or {}).get("config_hash"),
            problems=tuple((observed or {}).get("problems") or ()),
            failure=failure,
            exists=make_plan is not None,
            paused=paused,
            rebuild_requested=rebuild,
        )
        return seen, record, plan, project_id

    def _execute(
        self, appliance_id: str, action: Action, plan: AppliancePlan | None
    ) -> tuple[Failure | None, dict[str, Any] | None]:
        """Run one command: (its failure or None, the agent's answer to a PUT)."""
        applied: dict[str, Any] | None = None
        try:
            if action in (Action.DELETE, Action.REBUILD):
                self._delete_appliance(appliance_id)
            if action in (Action.PUSH, Action.REBUILD):
                if plan is None or plan.config is None:
                    return Failure(FailureKind.NO_CONFIG), None
                for network_id, need in sorted(plan.networks.items()):
                    self.l2.ensure_network(network_id, need.mtu, need.external)
                config = plan.config.model_dump(mode="json")
                applied = self.agent.put_appliance(appliance_id, config)
                with self._lock:
                    self.pushes += 1
        except AgentError as error:
            self.l2.forget_segments(plan.networks if plan is not None else {})
            return from_agent(error.status_code, error.body), None
        except httpx.HTTPError as error:
            self.l2.forget_segments(None)
            return unreachable(str(error)), None
        return None, applied

    def _delete_appliance(self, appliance_id: str) -> None:
        try:
            self.agent.delete_appliance(appliance_id)
        except AgentError as error:
            if error.status_code != 404:
                raise

    def _store(
        self,
        appliance_id: str,
        project_id: str,
        before: Record,
        decision: Decision,
        plan: AppliancePlan | None,
        seen: Observation,
    ) -> None:
        now = self.clock()
        after = decision.record
        with self.sessions.begin() as session:
            row = session.get(ApplianceState, appliance_id)
            if row is None:
                row = ApplianceState(
                    appliance_id=appliance_id,
                    kind=appliances.kind(appliance_id),
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
                row.removing = after.removing
                row.updated_at = now
            if decision.rebuild_handled:
                row.rebuild_requested = False  # this step acted on it
            for message in decision.events:
                log.info("appliance %s: %s", appliance_id, message)
                session.add(ApplianceEvent(appliance_id=appliance_id, at=now, message=message))
            if decision.events:
                history.trim(session, appliance_id)
            if not seen.agent_down:  # nothing known: leave the statuses as they are
                if dhcp_network_id(appliance_id) is None:
                    statuses.write_statuses(session, appliance_id, after.state, plan)
                else:
                    statuses.write_dhcp_statuses(session, after.state, plan)

    def _forget(self, appliance_id: str) -> None:
        with self.sessions.begin() as session:
            session.execute(
                delete(ApplianceState).where(ApplianceState.appliance_id == appliance_id)
            )
            session.execute(
                delete(ApplianceEvent).where(ApplianceEvent.appliance_id == appliance_id)
            )
        log.info("appliance %s: removed, record dropped", appliance_id)
        self.wake(L2_KEY)


def _record(row: ApplianceState | None) -> Record:
    if row is None:
        return Record()
    return Record(
        state=State(row.state),
        attempts=row.attempts,
        retry_at=row.retry_at,
        last_error=row.last_error,
        applied_hash=row.applied_hash,
        removing=row.removing,
    )
