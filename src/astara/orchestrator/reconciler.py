"""The reconciler: makes the host match the database, and keeps it so.

Work is keyed: one key per appliance — a router's (its id) or a network's
DHCP appliance (`dhcp-<network id>`, while the network has a DHCP port, see
`astara.api.dhcp`) — plus `L2_KEY` (workload ports and L2 segments). A key
runs on one worker at a time (its serial queue: a wake while it runs makes
it run once more afterwards); different keys run in parallel on a bounded
pool. Outbox events wake the keys they concern; a periodic, jittered resync
lists every host and wakes every key its listing cannot vouch for, and each
key is looked at in full every `health_s`, so correctness never depends on
an event arriving (a lost one costs at most `health_s`). A started
orchestrator reads the outbox from its newest event on, so what changed
while none ran comes to it through its first resync instead: every
appliance it has not seen yet is planned from the database in one batch
and compared with its record and its host's listing (`_check_unseen`);
those that agree need nothing (their full looks follow within `health_s`),
those whose plan moved are woken at once.
Appliances back off between failed attempts (`retry_at`). One appliance or
port that fails never stops the others, nor the loop: errors are caught per
item, logged, and the item retried later.

The outbox is read by sequence. On PostgreSQL a sequence is taken at INSERT,
not at commit, so a lower one can commit after a higher one was read: a
sequence skipped over is looked for again for `GAP_WAIT_S` (then the full
looks cover it). Events older than what is kept (`keep_events`, `keep_events_for`)
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

import heapq
import itertools
import logging
import random
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import ValidationError
from sqlalchemy import Engine, delete, func, or_, select, update
from sqlalchemy.orm import Session

from astara import metrics
from astara.agent.client import AgentClient, AgentError
from astara.appliance.schema import DEFAULT_ADVERT_MS
from astara.db import history, outbox
from astara.db.engine import session_factory
from astara.db.models import (
    ApplianceEvent,
    ApplianceState,
    LoadBalancer,
    Network,
    OutboxEvent,
    PausedProject,
    dhcp_network_id,
    ha_member,
)
from astara.drivers import dhcp as dhcp_driver
from astara.drivers import loadbalancer as lb_driver
from astara.drivers import router as router_driver
from astara.drivers.appliance import AppliancePlan
from astara.drivers.reads import Batch, chunks
from astara.orchestrator import appliances, placement, statuses
from astara.orchestrator.coordination import host_key
from astara.orchestrator.events import affected, touches_l2
from astara.orchestrator.failures import (
    Failure,
    FailureKind,
    config_invalid,
    from_agent,
    no_host,
    unreachable,
)
from astara.orchestrator.hosts import DOWN_AFTER_S, HEARTBEAT_S, SPLIT_ROUNDS, Hosts, infos
from astara.orchestrator.l2 import L2, CannotCarry
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
GAP_WAIT_S = 30.0  # how long a skipped sequence may still commit (then the full looks cover it)
MAX_GAPS = 1000  # skipped sequences looked for at once
SETTLE_S = 0.04  # how long a woken key waits for more wakes to fold into its reconcile
SETTLE_MAX_FACTOR = 5  # wakes keep folding in for at most this many settle times
EVENT, RESYNC = 0, 1  # wake priorities: an event's wake goes before a resync's


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def repair_event(repair: Mapping[str, Any]) -> tuple[datetime, str] | None:
    """The history's event for a repair the agent made on its own (its
    watch: a daemon killed, the namespace deleted), at the agent's time; None
    for a check that did nothing (the appliance held or fenced)."""
    outcome = repair.get("outcome")
    if outcome not in ("repaired", "failed"):
        return None
    at = datetime.fromtimestamp(float(repair["at"]), UTC).replace(tzinfo=None, microsecond=0)
    problems = "; ".join(repair.get("problems") or ()) or "drift"
    actions = "; ".join(repair.get("actions") or ()) or "no action"
    error = f" ({repair['error']})" if repair.get("error") else ""
    done = "agent repaired it on its own" if outcome == "repaired" else "agent's repair failed"
    return at, f"{done}: {problems}: {actions}{error}"


def _recorded(session: Session, appliance_id: str, at: datetime, message: str) -> bool:
    found = session.scalar(
        select(ApplianceEvent.id)
        .where(
            ApplianceEvent.appliance_id == appliance_id,
            ApplianceEvent.at == at,
            ApplianceEvent.message == message,
        )
        .limit(1)
    )
    return found is not None


@dataclass
class _Wake:
    """A key woken and not running yet (or woken again while it runs): when
    its reconcile is due, since when events settle it (None: only resync
    wakes), whether only the resync woke it (its priority, and whether what
    the host listed may stand for an observation), and its place in the
    scheduler's heaps (`seq`; an older entry is stale)."""

    due: float
    first_event: float | None
    resync: bool
    seq: int = 0
    ready: bool = False

    @property
    def priority(self) -> int:
        return RESYNC if self.resync else EVENT


@dataclass(frozen=True)
class _Seen:
    """An appliance as its agent last showed it to this orchestrator (an
    observation or a PUT's answer), and when (monotonic seconds)."""

    host: str
    epoch: int
    generation: int
    config_hash: str | None
    at: float


def _phase(key: str) -> float:
    """A key's fixed place in [0, 1): where in a resync's spread it is woken,
    so a resync's wakes (and health checks) are spread evenly, each key at
    a steady interval."""
    return zlib.crc32(key.encode()) / 2**32


@dataclass(frozen=True)
class Placement:
    """Where an appliance runs now (None: no host can take it) and its
    epoch; `moving_to`: an operator's move to carry out (see `_move`)."""

    host: placement.HostInfo | None
    epoch: int
    moving_to: placement.HostInfo | None = None


class Orchestrator:
    def __init__(
        self,
        engine: Engine,
        agent: AgentClient | None = None,
        *,
        connect: Callable[[str], AgentClient] = AgentClient,
        host_name: str = "local",
        heartbeat_s: float = HEARTBEAT_S,
        down_after_s: float = DOWN_AFTER_S,
        workers: int = 8,
        resync_s: float = 20.0,
        settle_s: float = SETTLE_S,
        health_s: float | None = None,
        poll_s: float = 0.2,
        clock: Callable[[], datetime] = utcnow,
        keep_events: int = 10_000,
        keep_events_for: timedelta = timedelta(days=1),
        prune_s: float = 600.0,
        owns: Callable[[str], bool] | None = None,
        member: str = "",
        ha_advert_ms: int = DEFAULT_ADVERT_MS,
    ) -> None:
        """`agent`: the local agent (a host named `host_name`), if any;
        `connect` makes a client for a joined host's address. `settle_s`:
        how long a woken key waits for more wakes (a router created with
        its gateway and interfaces a few ms apart is applied once);
        `health_s`: how often a resync asks the agent to observe an
        appliance it lists unchanged (default: every third resync). `owns`:
        with several orchestrators, whether this one (`member`) owns a key
        (an appliance id, `L2_KEY`, or `coordination.host_key(name)`); it
        acts on those only (see `_holds`). None: it owns everything.
        `ha_advert_ms`: the VRRP advertisement interval of HA routers' members."""
        self.sessions = session_factory(engine)
        self.ha_advert_ms = ha_advert_ms
        self.owns: Callable[[str], bool] = owns or _everything
        self.coordinated, self.member = owns is not None, member
        # Appliance → the epoch this member took it over with (and has
        # raised since); None: another member took it since, hands off until
        # the next rebalance. Emptied at each membership change.
        self._claims: dict[str, int | None] = {}
        self.coordination: Callable[[], dict[str, Any]] | None = None  # its status, if any
        self.hosts = Hosts(
            self.sessions,
            connect,
            heartbeat_s=heartbeat_s,
            down_after_s=down_after_s,
            clock=clock,
            owns=lambda name: self.owns(host_key(name)),
        )
        if agent is not None:
            self.hosts.adopt(host_name, agent, agent.address)
        # One more thread than keys run at once: a returning host's sweep.
        self.pool = ThreadPoolExecutor(workers + 1, thread_name_prefix="reconcile")
        self.workers = workers
        self.resync_s, self.poll_s, self.clock = resync_s, poll_s, clock
        self.settle_s, self.settle_max_s = settle_s, settle_s * SETTLE_MAX_FACTOR
        self.health_s = health_s if health_s is not None else 3 * resync_s
        # Outbox events are pruned once read, keeping the newest `keep_events`
        # or those younger than `keep_events_for`, whichever keeps more.
        self.keep_events, self.keep_events_for, self.prune_s = keep_events, keep_events_for, prune_s
        self._lock = threading.Lock()
        self._gaps: dict[int, float] = {}  # skipped sequences → until when to look for them
        self._returning: set[str] = set()  # hosts being swept before they count as up
        self._splitting: set[str] = set()  # HA routers whose two actives are being resolved
        # The scheduler (see `wake`): keys woken and not running (`_pending`),
        # in a heap by due time (`_timers`) until due, then in a heap by
        # priority (`_ready`) until a worker is free; keys running, and those
        # woken again meanwhile (they are scheduled anew when the run ends).
        self._wakes = threading.Condition(self._lock)
        self._pending: dict[str, _Wake] = {}
        self._timers: list[tuple[float, int, str]] = []
        self._ready: list[tuple[int, int, str]] = []
        self._running: set[str] = set()
        self._again: dict[str, _Wake] = {}
        self._sequence = itertools.count()
        # What each host listed at the last sweep (appliance → (host, entry)),
        # and what this orchestrator last saw of each appliance.
        self._listed: dict[str, tuple[str, dict[str, Any]]] = {}
        self._swept: dict[str, float] = {}  # host → when its last listing was answered
        self._seen: dict[str, _Seen] = {}
        # Appliances whose last reconcile found them ACTIVE with nothing to
        # do, and no wake but the resync's since: a resync checks them
        # against their host's listing alone (see `_unchanged_since`).
        self._clean: set[str] = set()
        # Appliances this process has asked an agent about, or pushed: the
        # listing alone vouches only for the others (see `_trusted_listing`).
        self._looked: set[str] = set()
        # Appliances found running what the database wants since this
        # process started (see `status`'s `converged`).
        self._converged: set[str] = set()
        # When each stage of the start and the first resync ended (wall
        # clock, `time.time()`), and the process's CPU seconds then (all
        # its threads): what a restart's time goes to.
        self.timeline: dict[str, float] = {}
        self.timeline_cpu: dict[str, float] = {}
        self._mark("constructed")
        self._stop = threading.Event()
        self.l2 = L2(self.sessions, self.hosts, self._stop)
        self._poked = threading.Event()
        self._thread: threading.Thread | None = None
        self._heartbeat_thread: threading.Thread | None = None
        self.cursor = 0
        self.resyncs = 0
        self.reconciles = 0  # router reconciles finished since start
        self.pushes = 0  # configs sent to the agent since start
        self._dispatcher = threading.Thread(target=self._dispatch, name="wakes", daemon=True)
        self._dispatcher.start()

    # --- running ------------------------------------------------------------------------

    def start(self) -> Orchestrator:
        self._mark("started")
        with self.sessions.begin() as session:
            self.cursor = session.scalar(select(func.max(OutboxEvent.sequence))) or 0
        self._thread = threading.Thread(target=self._main, name="orchestrator", daemon=True)
        self._thread.start()
        self._heartbeat_thread = threading.Thread(
            target=self._heartbeats, name="heartbeats", daemon=True
        )
        self._heartbeat_thread.start()
        return self

    def _mark(self, stage: str) -> None:
        self.timeline[stage] = time.time()
        self.timeline_cpu[stage] = round(time.process_time(), 3)

    def stop(self) -> None:
        self._stop.set()
        self._poked.set()
        with self._wakes:
            self._wakes.notify_all()
        self._dispatcher.join(timeout=30)
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(timeout=30)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.hosts.close()

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

    def _heartbeats(self) -> None:
        """Heartbeat every host at a fixed rate (a slow round never stretches
        the gap an agent's fence timer sees); act on what a round finds."""
        due = time.monotonic()
        while not self._stop.is_set():
            due += self.hosts.heartbeat_s
            try:
                self.heartbeat()
            except Exception:
                log.exception("heartbeats")
            late = time.monotonic() - due
            if late > 0:  # fell behind: start afresh rather than burst
                due = time.monotonic()
            self._stop.wait(max(0.0, -late))

    def heartbeat(self) -> None:
        """One heartbeat round. Hosts marked down: their appliances are woken
        (and placed elsewhere). Hosts answering again: swept, then revived,
        on a worker (never on this thread). Appliances a live host says it
        fenced (a cut shorter than the mark-down, a controller restart): each
        is woken once, and its push unfences it; one placed elsewhere since
        is a stale copy, and the host is swept."""
        beat = self.hosts.beat()
        for name in beat.returning:
            self._return_soon(name)
        self._wake_hosts(list(beat.down))
        for name, fenced in beat.fenced.items():
            with self.sessions.begin() as session:
                here = set(
                    session.scalars(
                        select(ApplianceState.appliance_id).where(
                            ApplianceState.appliance_id.in_(fenced), ApplianceState.host == name
                        )
                    )
                )
            for key in sorted(here):
                self.wake(key)
            if set(fenced) - here:
                self._return_soon(name, revive=False)
        for router_id, members in beat.split.items():
            with self._lock:
                if router_id in self._splitting:
                    continue
                self._splitting.add(router_id)
            try:
                self.pool.submit(self._resolve_split, router_id, members)
            except RuntimeError:  # shutting down
                with self._lock:
                    self._splitting.discard(router_id)

    def _resolve_split(self, router_id: str, members: tuple[str, str]) -> None:
        """Both members of an HA router active (their HA network cut between
        them, say): the one with the older epoch (the earlier placed) is
        demoted by its agent, and both histories say why. By whichever
        orchestrator saw it (it heartbeats one of the members' hosts; the
        member's owner may heartbeat neither): the demotion carries the
        member's epoch, which its agent checks, and a second one is no harm."""
        try:
            with self.sessions.begin() as session:
                rows = [session.get(ApplianceState, m) for m in members]
                if any(r is None or r.ha_state != "active" or r.host is None for r in rows):
                    return
                pair = [r for r in rows if r is not None]
                loser = min(pair, key=lambda r: (r.epoch, r.appliance_id))
                winner = next(r for r in pair if r is not loser)
                host = infos(session).get(loser.host or "")
                if host is None:
                    return
                seen = (
                    f"two actives for {SPLIT_ROUNDS} heartbeats: {winner.appliance_id} on"
                    f" {winner.host} (epoch {winner.epoch}) and {loser.appliance_id} on"
                    f" {loser.host} (epoch {loser.epoch}); demoting {loser.appliance_id},"
                    " the older epoch"
                )
                for row in pair:
                    self._event(session, row.appliance_id, seen)
                epoch = loser.epoch
                loser_id = loser.appliance_id
            try:
                self.hosts.client(host).demote_appliance(loser_id, epoch)
            except (AgentError, httpx.HTTPError) as error:
                outcome = f"demoting it on {host.name} failed: {error}"
            else:
                outcome = (
                    f"demoted on {host.name}: out of the election until its peer"
                    " answers on the HA network again"
                )
            with self.sessions.begin() as session:
                self._event(session, loser_id, outcome)
        except Exception:
            log.exception("router %s: resolving two actives", router_id)
        finally:
            with self._lock:
                self._splitting.discard(router_id)

    def _wake_hosts(self, names: list[str], unplaced: bool = False) -> None:
        """Wake the appliances placed on `names` (and those on no host)."""
        if not names and not unplaced:
            return
        with self.sessions.begin() as session:
            placed = ApplianceState.host.in_(names)
            where = or_(placed, ApplianceState.host.is_(None)) if unplaced else placed
            keys = set(session.scalars(select(ApplianceState.appliance_id).where(where)))
        for key in sorted(keys):
            self.wake(key)
        self.wake(L2_KEY)

    def _return_soon(self, name: str, revive: bool = True) -> None:
        with self._lock:
            if name in self._returning:
                return
            self._returning.add(name)
        try:
            self.pool.submit(self._return_host, name, revive)
        except RuntimeError:  # shutting down
            with self._lock:
                self._returning.discard(name)

    def _return_host(self, name: str, revive: bool = True) -> None:
        """A host marked down answers again: it counts as up only once every
        copy of an appliance placed elsewhere is gone from it (else the next
        heartbeat tries again), and is swept once more after (a placement
        that changed meanwhile). `revive=False`: a sweep only."""
        try:
            if not self.sweep(name):
                if revive:
                    log.warning("host %s: stale appliances remain; it stays down for now", name)
                return
            if not revive:
                return
            self.hosts.revive(name)
            self.sweep(name)
            # What runs there, and what nobody could place while it was down.
            self._wake_hosts([name], unplaced=True)
        except (AgentError, httpx.HTTPError) as error:
            log.warning("host %s: removing its stale appliances failed: %s", name, error)
        except Exception:
            log.exception("host %s: returning", name)
        finally:
            with self._lock:
                self._returning.discard(name)

    def idle(self) -> bool:
        """Nothing runs, and nothing is woken."""
        with self._lock:
            return not self._running and not self._pending

    def status(self) -> dict[str, Any]:
        """What `GET /astara/v1/orchestrator` shows (`busy`: keys running or
        woken; `queued`: of those, the ones woken and not running yet;
        `reconciles`: appliance reconciles run since the start;
        `converged`: appliances found, since the start, running what the
        database wants: the config planned from the database now, recorded
        as applied, run by their host at the recorded epoch, as the agent
        showed it or as its listing has it (see `_check_unseen`), whether
        or not a push was needed first; `timeline`: when the start's
        stages ended, wall clock, and `timeline_cpu_s` the process's CPU
        seconds then)."""
        with self._lock:
            queued = len(self._pending)
            busy = len(self._running) + queued
            converged = len(self._converged)
        return {
            "cursor": self.cursor,
            "resyncs": self.resyncs,
            "reconciles": self.reconciles,
            "converged": converged,
            "timeline": dict(self.timeline),
            "timeline_cpu_s": dict(self.timeline_cpu),
            "pushes": self.pushes,
            "busy": busy,
            "queued": queued,
            "workers": self.workers,
            "resync_s": self.resync_s,
            **self._ownership(),
        }

    def _ownership(self) -> dict[str, Any]:
        """With several orchestrators: the membership, and which appliances
        this one owns now."""
        if not self.coordinated:
            return {}
        with self.sessions.begin() as session:
            known = appliances.known(session)
        return {
            "coordination": self.coordination() if self.coordination is not None else {},
            "owned": sorted(key for key in known if self.owns(key)),
        }

    def wake(self, key: str, *, resync: bool = False, delay_s: float | None = None) -> None:
        """Run `key`'s reconcile soon; never two of one key at once (a wake
        while it runs makes it run again after). An event's wake (neither
        `resync` nor `delay_s`) waits `settle_s`, and wakes that come
        meanwhile fold into it (each moving it to `settle_s` after itself,
        never further than `settle_max_s` after the first): one reconcile
        per burst, and an isolated change delayed by `settle_s` at most.
        `delay_s`: due then, without settling. `resync`: woken by the
        resync only: it runs after every event's wake that is due, and what
        its host listed may stand for asking the agent. A key another
        member owns is left to it."""
        if not self.owns(key):
            return
        now = time.monotonic()
        with self._wakes:
            if self._stop.is_set():
                return
            if not resync:
                self._clean.discard(key)  # something may have changed: look in full
            if key in self._running:
                self._again[key] = self._fold(self._again.get(key), now, resync, delay_s)
                return
            self._schedule(key, self._fold(self._pending.get(key), now, resync, delay_s), now)
            self._wakes.notify()

    def _fold(self, wake: _Wake | None, now: float, resync: bool, delay_s: float | None) -> _Wake:
        """A key's pending wake with one more folded into it."""
        settles = not resync and delay_s is None
        first = wake.first_event if wake is not None else None
        if settles:
            first = now if first is None else first
            due = min(first + self.settle_max_s, now + self.settle_s)
        else:
            due = now + (delay_s or 0.0)
        if wake is None:
            return _Wake(due, first if settles else None, resync)
        if not (settles and wake.first_event is not None):
            due = min(wake.due, due)  # a settling wake alone slides later
        return _Wake(due, first, wake.resync and resync, ready=wake.ready)

    def _schedule(self, key: str, wake: _Wake, now: float) -> None:
        """Put a key's wake in the heaps (under the lock); older entries go stale."""
        wake.seq = next(self._sequence)
        self._pending[key] = wake
        if wake.ready or wake.due <= now:
            wake.ready = True
            heapq.heappush(self._ready, (wake.priority, wake.seq, key))
        else:
            heapq.heappush(self._timers, (wake.due, wake.seq, key))

    def _dispatch(self) -> None:
        """The scheduler's thread: due keys to the ready heap, ready keys to
        free workers (events' first), until stopped."""
        with self._wakes:
            while not self._stop.is_set():
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, seq, key = heapq.heappop(self._timers)
                    wake = self._pending.get(key)
                    if wake is not None and wake.seq == seq:
                        wake.ready = True
                        heapq.heappush(self._ready, (wake.priority, seq, key))
                while self._ready and len(self._running) < self.workers:
                    _, seq, key = heapq.heappop(self._ready)
                    wake = self._pending.get(key)
                    if wake is None or wake.seq != seq:
                        continue  # stale: folded into a newer entry
                    del self._pending[key]
                    self._running.add(key)
                    try:
                        self.pool.submit(self._run, key, wake.resync)
                    except RuntimeError:  # shutting down
                        self._running.discard(key)
                        return
                metrics.QUEUE_DEPTH.set(len(self._pending))
                metrics.RUNNING.set(len(self._running))
                self._wakes.wait(self._timers[0][0] - now if self._timers else None)

    def _run(self, key: str, resync: bool = False) -> None:
        started = time.monotonic()
        try:
            if key == L2_KEY:
                self.l2.reconcile()
            else:
                self.reconcile_appliance(key, resync=resync)
                with self._lock:
                    self.reconciles += 1
        except Exception:
            log.exception("reconciling %s", key)
        kind = L2_KEY if key == L2_KEY else appliances.kind(key)
        metrics.RECONCILE_SECONDS.labels(kind).observe(time.monotonic() - started)
        with self._wakes:
            self._running.discard(key)
            again = self._again.pop(key, None)
            if again is not None and not self._stop.is_set():
                self._schedule(key, again, time.monotonic())
            self._wakes.notify()

    def rebalance(self, take_over: bool = True) -> None:
        """The members changed: take over afresh (a new epoch) every key
        owned now, wake them, and leave the others. `take_over=False`: only
        wake them (this member was out of touch for a moment, not dropped:
        what it skipped meanwhile)."""
        with self._lock:
            self._clean.clear()
            if take_over:
                self._claims.clear()
        with self.sessions.begin() as session:
            known = appliances.known(session)
        for key in sorted(known):
            self.wake(key)
        self.wake(L2_KEY)

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
            due = set(
                session.scalars(
                    select(ApplianceState.appliance_id).where(
                        ApplianceState.retry_at.is_not(None),
                        ApplianceState.retry_at <= self.clock(),
                        ApplianceState.state.not_in((State.PAUSED.value, State.ERROR.value)),
                    )
                )
            )
        for key in sorted(keys):
            self.wake(key)
        for key in sorted(due - keys):
            self.wake(key, delay_s=0.0)  # its back-off ended: nothing to settle
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
        """Remove appliances nothing accounts for, listing each host once
        (what it lists stands for an observation of an appliance it lists
        unchanged, see `_trusted_listing`), and wake everything the listing
        cannot vouch for on its own (see `_unchanged_since` and, for
        appliances this process has not seen yet, such as every one after a
        restart, `_check_unseen`), with the resync's priority, spread over
        half the resync period (each key at its own phase; the first resync
        at once). What `_check_unseen` finds changed since it was applied is
        woken at once, like an event's key. A steady resync thus costs a
        listing per host and a comparison per appliance."""
        first = not self.resyncs
        with self._lock:
            # A key another member took from this one is left alone until
            # the next resync, not until the members change again: two
            # members whose views of the members differed for a moment
            # (both took it over while members joined) both leave it, and
            # the views have agreed since, so its owner takes it back now.
            for key in [k for k, held in self._claims.items() if held is None]:
                del self._claims[key]
        known, listed_now = self._remove_orphans()
        if first:
            self._mark("listed")
        spread_s = self.resync_s / 2 if self.resyncs else 0.0
        checked = 0
        unseen: list[str] = []
        watched: list[str] = []  # load balancers: their health is looked at each time
        for key in sorted(known):
            if not self.owns(key):
                continue
            if appliances.kind(key) == "loadbalancer":
                watched.append(key)
                continue
            if self._unchanged_since(key, listed_now):
                checked += 1  # the listing just taken vouches for it: nothing to run
                continue
            unseen.append(key)
        try:
            vouched, changed = self._check_unseen(unseen, listed_now)
        except Exception:  # the batch itself: every key is woken as in any resync
            log.exception("checking the appliances not seen yet")
            vouched, changed = set(), set()
        if first:
            self._mark("checked")
        for key in unseen:
            if key in changed:
                self.wake(key, delay_s=0.0)
            elif key not in vouched:
                self.wake(key, resync=True, delay_s=_phase(key) * spread_s)
        for key in watched:
            self.wake(key, resync=True, delay_s=_phase(key) * spread_s)
        metrics.OBSERVATIONS.labels("listed").inc(checked + len(vouched))
        self.wake(L2_KEY, resync=True, delay_s=0.0)
        if first:
            self._mark("woken")
        self.resyncs += 1  # counted once every key is woken (see `status`'s `busy`)

    def _check_unseen(self, keys: list[str], listed_now: set[str]) -> tuple[set[str], set[str]]:
        """Appliances this process has neither seen nor asked about (after a
        restart: all of them), checked together, in one transaction of about
        a dozen statements: each planned from the database now (`Batch`),
        and compared with its record and its host's listing just taken. One
        whose plan, record (ACTIVE on that config, nothing pending: no
        failure, back-off, pause, rebuild or move), Neutron statuses (the
        router ACTIVE and up, the DHCP port ACTIVE) and listing (that host,
        the record's epoch, that config hash, unfenced, no problem) all
        agree is vouched for: nothing to run, as a reconcile would conclude
        (no agent call, no push, no write), its full look coming within
        `health_s` at its own phase (`_trusted_listing`'s rule). The plan is
        what makes it sound: whatever changed in the database while no
        orchestrator ran (the outbox is read from its newest event on at a
        start, not from where the last process stopped) changes the plan,
        and such an appliance is returned as changed, to be woken at once.
        Several orchestrators: none (a takeover raises the epoch anyway).
        (vouched, changed)."""
        if self.coordinated or not keys:
            return set(), set()
        with self._lock:
            listed = {
                key: self._listed[key]
                for key in keys
                if key in self._listed
                and key not in self._seen
                and key not in self._looked
                and self._listed[key][0] in listed_now
            }
            swept = dict(self._swept)
        if not listed:
            return set(), set()
        vouched: dict[str, _Seen] = {}
        changed: set[str] = set()
        with self.sessions.begin() as session:
            rows: dict[str, ApplianceState] = {}
            for chunk in chunks(listed):
                rows.update(
                    (row.appliance_id, row)
                    for row in session.scalars(
                        select(ApplianceState).where(ApplianceState.appliance_id.in_(chunk))
                    )
                )
            hosts = infos(session)
            paused = set(session.scalars(select(PausedProject.project_id)))
            networks = {k: n for k in listed if (n := dhcp_network_id(k)) is not None}
            batch = Batch(session).load(
                {(ha_member(k) or (k, 0))[0] for k in listed if k not in networks},
                networks.values(),
            )
            for key, (host_name, entry) in sorted(listed.items()):
                row = rows.get(key)
                if row is None or row.state != State.ACTIVE.value:
                    continue
                try:
                    found = _plan_from(session, batch, key, networks.get(key), self.ha_advert_ms)
                except ValidationError:
                    continue  # a config no appliance can run: the reconcile says why
                except Exception:  # one appliance's anomaly: its own reconcile meets it
                    log.exception("%s: planning it in the restart's batch", key)
                    continue
                if found is None:
                    continue
                plan, project_id, statuses_agree = found
                if plan.digest is None:
                    continue
                if plan.digest != row.applied_hash:
                    changed.add(key)  # the database changed since it was applied
                    continue
                host = hosts.get(host_name)
                generation = entry.get("generation")
                agree = (
                    statuses_agree
                    and host is not None
                    and host.alive
                    and row.host == host_name
                    and not (row.paused or row.rebuild_requested or row.removing)
                    and row.move_to is None
                    and row.retry_at is None
                    and row.last_error is None
                    and row.attempts == 0
                    and project_id not in paused
                    and entry.get("epoch") == row.epoch
                    and entry.get("config_hash") == plan.digest
                    and not entry.get("fenced")
                    and not entry.get("problems")
                    and isinstance(generation, int)
                )
                if agree:
                    assert isinstance(generation, int)
                    at = swept.get(host_name, time.monotonic()) - _phase(key) * self.health_s
                    vouched[key] = _Seen(host_name, row.epoch, generation, plan.digest, at)
        with self._wakes:
            for key, seen in list(vouched.items()):
                busy = key in self._pending or key in self._running or key in self._again
                if busy or key in self._looked or key in self._seen:
                    del vouched[key]  # an event woke it meanwhile: its reconcile looks in full
                    continue
                self._seen[key] = seen
                self._clean.add(key)
                self._converged.add(key)
        return set(vouched), changed

    def _remove_orphans(self, removed: list[str] | None = None) -> tuple[set[str], set[str]]:
        """Sweep every live host this member owns: all listed at once, then
        the database read once for all of them. A host that cannot be
        listed is logged: the appliances are woken all the same, each finds
        out for itself. The appliances known, as read after the listings,
        and the hosts listed."""
        hosts = [
            name
            for name, host in sorted(self.hosts.infos().items())
            if host.alive and self.owns(host_key(name))
        ]
        listings: dict[str, tuple[AgentClient, dict[str, dict[str, Any]]]] = {}
        if hosts and not self._stop.is_set():
            with ThreadPoolExecutor(min(len(hosts), 8), thread_name_prefix="sweep") as pool:
                futures = {name: pool.submit(self._list, name) for name in hosts}
            for name, future in futures.items():
                try:
                    listed = future.result()
                except (AgentError, httpx.HTTPError) as error:
                    log.warning("host %s: listing its appliances failed: %s", name, error)
                    continue
                if listed is not None:
                    listings[name] = listed
        # The agents first, then the database: see `sweep`.
        with self.sessions.begin() as session:
            known = appliances.known(session)
        for name, (client, on_agent) in listings.items():
            if self._stop.is_set():
                break
            self._sweep_listed(name, client, on_agent, known, removed)
        return known, set(listings)

    def sweep(self, host_name: str, removed: list[str] | None = None) -> bool:
        """Delete from a host the appliances it should not run: those nothing
        accounts for (no router, no network's DHCP port, no record), and
        those placed on another host since (it was down, or they were moved:
        deleted with their current epoch, which the stale copy's is below).
        One that cannot be deleted is logged and left for the next pass.
        Whether every copy of an appliance placed elsewhere went; AgentError
        or httpx.HTTPError when the host cannot be listed."""
        listed = self._list(host_name)
        if listed is None:
            return False
        # The agent first, then the database: an appliance is only ever pushed
        # after its router row (or DHCP port) exists and it is placed, so one
        # listed here and unknown there is an orphan, never one being born.
        with self.sessions.begin() as session:
            known = appliances.known(session)
        return self._sweep_listed(host_name, *listed, known, removed)

    def _list(self, host_name: str) -> tuple[AgentClient, dict[str, dict[str, Any]]] | None:
        """A host's appliances as its agent recorded them (kept for
        `_trusted_listing` and `_unchanged_since`), and its client; None:
        no such host."""
        host = self.hosts.infos().get(host_name)
        if host is None:
            return None
        client = self.hosts.client(host)
        on_agent = {a["id"]: a for a in client.appliances(observe=False)}
        with self._lock:
            for appliance_id in [k for k, (h, _) in self._listed.items() if h == host_name]:
                del self._listed[appliance_id]
            self._listed.update({k: (host_name, entry) for k, entry in on_agent.items()})
            self._swept[host_name] = time.monotonic()
        return client, on_agent

    def _sweep_listed(
        self,
        host_name: str,
        client: AgentClient,
        on_agent: dict[str, dict[str, Any]],
        known: set[str],
        removed: list[str] | None,
    ) -> bool:
        """`sweep`'s removals, from a listing and the appliances known since."""
        with self.sessions.begin() as session:
            stale = {
                appliance_id: (host or "no host", epoch)
                for appliance_id, host, epoch in session.execute(
                    select(
                        ApplianceState.appliance_id, ApplianceState.host, ApplianceState.epoch
                    ).where(ApplianceState.appliance_id.in_(on_agent))
                )
                if host != host_name
            }
        clean = True
        for appliance_id in sorted(on_agent):
            if self._stop.is_set():
                return False
            if appliance_id in known and appliance_id not in stale:
                continue
            if appliance_id in stale:
                elsewhere, epoch = stale[appliance_id]
                why = f"it runs on {elsewhere} now (epoch {epoch})"
            else:
                epoch = int(on_agent[appliance_id].get("epoch") or 0)
                why = "nothing accounts for it"
            log.warning("host %s: removing appliance %s: %s", host_name, appliance_id, why)
            try:
                _delete(client, appliance_id, epoch)
            except (AgentError, httpx.HTTPError) as error:
                log.warning("removing appliance %s failed: %s", appliance_id, error)
                # An orphan left behind is retried at the next resync; a copy
                # of one placed elsewhere must go before the host counts.
                clean = clean and appliance_id not in stale
                continue
            if removed is not None:
                removed.append(f"appliance {appliance_id}")
        return clean

    def cleanup(self) -> list[str]:
        """`astara cleanup`: remove orphans now; what was removed."""
        removed: list[str] = []
        self._remove_orphans(removed)
        removed.extend(self.l2.reconcile())
        return removed

    # --- one appliance ------------------------------------------------------------------

    def reconcile_appliance(self, appliance_id: str, *, resync: bool = False) -> None:
        """Observe → step → store → execute, for one router's or network's
        DHCP appliance, until nothing is left to do (or the step budget).
        `resync`: only the resync woke it, so what its host listed may
        stand for the first observation (see `_trusted_listing`)."""
        failure: Failure | None = None
        applied: dict[str, Any] | None = None  # what the last PUT answered
        # A load balancer is looked at on every resync: its members' health
        # changes without any change of its config.
        watched = appliances.kind(appliance_id) == "loadbalancer"
        if resync and not watched and self._unchanged_since(appliance_id):
            metrics.OBSERVATIONS.labels("listed").inc()
            return
        with self._lock:
            self._clean.discard(appliance_id)
        for _ in range(MAX_STEPS):
            if self._stop.is_set() or not self._holds(appliance_id):
                return  # the record says where it stands: the next start continues
            seen, record, plan, project_id, where = self._observe(
                appliance_id, failure, applied, listed=resync
            )
            resync = False
            if seen is None:
                return
            if seen.failure is not None:
                metrics.FAILURES.labels(seen.failure.kind.value).inc()
            decision = step(record, seen, self.clock())
            self._store(appliance_id, project_id, record, decision, plan, seen)
            paused = decision.record.state is State.PAUSED
            if paused != (record.state is State.PAUSED):
                self._hold(appliance_id, where, paused)
            if not decision.commands:
                if decision.record.state is State.ACTIVE and seen.failure is None:
                    with self._lock:
                        self._clean.add(appliance_id)
                        self._converged.add(appliance_id)
                return
            failure, applied = None, None
            for command in decision.commands:
                if command.action is Action.FORGET:
                    self._forget(appliance_id)
                    return
                if not self._holds(appliance_id):
                    return
                failure, applied = self._execute(appliance_id, command.action, plan, where)
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
        self,
        appliance_id: str,
        failure: Failure | None,
        applied: dict[str, Any] | None = None,
        listed: bool = False,
    ) -> tuple[Observation | None, Record, AppliancePlan | None, str, Placement]:
        """The appliance's record, plan and placement from the database (it
        is placed, or placed anew, here: see `_place`), its state from its
        host's agent (or from the answer to the PUT just made: the same
        thing; or, for one never placed before, absent without asking).
        After a `failure` the agent is not asked: `present` then says
        nothing, and the lifecycle concludes nothing from it."""
        with self.sessions.begin() as session:
            subject = appliances.subject(session, appliance_id, self.ha_advert_ms)
            # Several members: the row locked, so a takeover waits for this
            # observation's placement, or this observation sees it.
            row = session.get(ApplianceState, appliance_id, with_for_update=self.coordinated)
            if self.coordinated and not self._still_held(appliance_id, row):
                return None, Record(), None, "", Placement(None, 0)
            if subject is not None:
                project_id, make_plan = subject
            elif row is not None:
                project_id, make_plan = row.project_id, None
            else:
                # Nothing to do: never was, or forgotten.
                return None, Record(), None, "", Placement(None, 0)
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
            # Never placed (no record, or a record of no appliance yet):
            # every push carries an epoch of 1 or more, given by a placement.
            unplaced = row is None or row.epoch == 0
            rebuild = bool(row is not None and row.rebuild_requested)
            wanted = plan is not None and plan.config is not None and not paused
            where = self._place(session, appliance_id, project_id, row, plan, wanted)
        if self.coordinated:  # committed: the epoch placed (or kept) is this member's
            with self._lock:
                self._claims[appliance_id] = where.epoch
        if where.moving_to is not None and failure is None:
            where, failure = self._move(appliance_id, where)
        observed: dict[str, Any] | None = applied
        failure = failure or invalid
        # An invalid config is still a wanted appliance: never "none needed".
        desired = plan.digest if plan is not None else ("invalid" if invalid else None)
        if failure is None and observed is None and where.host is None:
            if desired is not None:
                failure = no_host()
        elif failure is None and observed is None and where.host is not None and unplaced:
            # Placed by this very observation: no orchestrator has pushed it
            # under this database, so no host runs it (one that holds a copy
            # anyway, of an id used before or a record lost, is put right by
            # the push: it replaces the config, and a host that saw a higher
            # epoch refuses it, see `_catch_up`). Asking would only cost the
            # first push an agent round trip.
            pass
        elif failure is None and observed is None and where.host is not None:
            if listed and appliances.kind(appliance_id) != "loadbalancer":
                observed = self._trusted_listing(appliance_id, where, desired, record)
            if observed is not None:
                metrics.OBSERVATIONS.labels("listed").inc()
            else:
                metrics.OBSERVATIONS.labels("agent").inc()
                observed, failure = self._ask(appliance_id, where.host, desired)
                self._note_seen(appliance_id, where, observed)
        if applied is not None:
            self._note_seen(appliance_id, where, applied)
        seen = Observation(
            desired_hash=desired,
            present=observed is not None,
            observed_hash=(observed or {}).get("config_hash"),
            problems=tuple((observed or {}).get("problems") or ()),
            failure=failure,
            exists=make_plan is not None,
            paused=paused,
            rebuild_requested=rebuild,
            health=(observed or {}).get("loadbalancer"),
            repair=(observed or {}).get("last_repair"),
        )
        return seen, record, plan, project_id, where

    def _ask(
        self, appliance_id: str, host: placement.HostInfo, desired: str | None
    ) -> tuple[dict[str, Any] | None, Failure | None]:
        """The agent's observation of the appliance (None: it has none), or
        why it could not be had."""
        try:
            observed: dict[str, Any] = self.hosts.client(host).request(
                "GET", f"/v1/appliances/{appliance_id}", ok=(200,)
            )
        except AgentError as error:
            if error.status_code == 404:
                return None, None
            if desired is None:
                # No appliance is wanted and the agent cannot show this
                # one: remove it all the same (a DELETE of nothing is a
                # 404, ignored). Only a failed DELETE counts as a failure.
                return {}, None
            return None, from_agent(error.status_code, error.body)
        except httpx.HTTPError as error:
            return None, unreachable(str(error))
        return observed, None

    def _note_seen(
        self, appliance_id: str, where: Placement, observed: dict[str, Any] | None
    ) -> None:
        """Keep what the agent just showed (an observation, a PUT's answer)."""
        generation = (observed or {}).get("generation")
        with self._lock:
            self._looked.add(appliance_id)
            if where.host is None or not isinstance(generation, int) or observed is None:
                self._seen.pop(appliance_id, None)
                return
            # The epoch the agent holds (below the record's after another
            # member's takeover, until it pushes): what its listings show.
            epoch = observed.get("epoch")
            self._seen[appliance_id] = _Seen(
                where.host.name,
                epoch if isinstance(epoch, int) else where.epoch,
                generation,
                observed.get("config_hash"),
                time.monotonic(),
            )

    def _unchanged_since(self, appliance_id: str, listed_now: set[str] | None = None) -> bool:
        """Whether a resync may check the appliance by its host's listing
        alone, without reading the database: its last reconcile found it
        ACTIVE with nothing to do and nothing but the resync woke it since
        (every change to what it should run comes as an event, whose wake
        makes it look in full), it was last observed in full within
        `health_s`, and its host, listed since and in this resync (among
        `listed_now`, the hosts the resync just listed, if given), lists it
        with that very epoch, generation and config hash, unfenced. A full
        look still comes every `health_s`, and catches what no event
        announced."""
        with self._lock:
            seen = self._seen.get(appliance_id)
            listed = self._listed.get(appliance_id)
            if appliance_id not in self._clean or seen is None or listed is None:
                return False
            swept = self._swept.get(seen.host)
        if listed_now is not None and seen.host not in listed_now:
            return False
        now_s = time.monotonic()
        if swept is None or swept <= seen.at or now_s - seen.at >= self.health_s:
            return False
        if now_s - swept >= 0.75 * self.resync_s:
            return False  # not this resync's listing (the host could not be listed since)
        host, entry = listed
        if entry.get("fenced"):
            return False
        now = (host, entry.get("epoch"), entry.get("generation"), entry.get("config_hash"))
        return now == (seen.host, seen.epoch, seen.generation, seen.config_hash)

    def _trusted_listing(
        self, appliance_id: str, where: Placement, desired: str | None, record: Record
    ) -> dict[str, Any] | None:
        """What this orchestrator last saw of the appliance, as an
        observation, when it can stand for one: the appliance is ACTIVE on
        the config wanted now, was seen within `health_s` on this host and
        epoch running it, and the host's last listing, if answered after
        that, lists it with that very epoch, generation (no apply since: the
        agent counts each) and config hash, and no problem it knows of.
        One this process has never asked an agent about (it just started,
        or the key just came to it), on a live host, stands on the listing
        alone when the listing agrees with the record: this host, the
        record's epoch, the config hash the record says was applied (the
        agent's watch repairs or reports what drifts meanwhile); its full
        observation comes within `health_s`, at its own phase. Else None:
        the agent is asked."""
        assert where.host is not None
        if desired is None or record.state is not State.ACTIVE or record.applied_hash != desired:
            return None
        with self._lock:
            listed = self._listed.get(appliance_id)
            seen = self._seen.get(appliance_id)
            swept = self._swept.get(where.host.name)
        fresh = swept is not None and time.monotonic() - swept < self.health_s
        if (
            seen is None
            and fresh
            and listed is not None
            and where.host.alive
            and appliance_id not in self._looked
        ):
            host, entry = listed
            generation = entry.get("generation")
            vouched = (
                host,
                entry.get("epoch"),
                entry.get("config_hash"),
                bool(entry.get("fenced")),
            )
            if vouched != (where.host.name, where.epoch, desired, False) or not isinstance(
                generation, int
            ):
                return None
            assert swept is not None
            # Its first full look comes within `health_s`, at its own phase:
            # not every appliance of a host at once.
            at = swept - _phase(appliance_id) * self.health_s
            with self._lock:
                self._seen.setdefault(
                    appliance_id, _Seen(host, where.epoch, generation, desired, at)
                )
            return {"config_hash": desired, "generation": generation, "problems": []}
        if seen is None or swept is None or time.monotonic() - seen.at >= self.health_s:
            return None
        if (seen.host, seen.epoch, seen.config_hash) != (where.host.name, where.epoch, desired):
            return None
        if seen.at < swept:  # listed since: the listing must agree
            if listed is None:
                return None  # gone from the host
            host, entry = listed
            if entry.get("problems") or entry.get("fenced"):
                return None
            now = (host, entry.get("epoch"), entry.get("generation"), entry.get("config_hash"))
            if now != (seen.host, seen.epoch, seen.generation, seen.config_hash):
                return None
        return {"config_hash": desired, "generation": seen.generation, "problems": []}

    def _place(
        self,
        session: Session,
        appliance_id: str,
        project_id: str,
        row: ApplianceState | None,
        plan: AppliancePlan | None,
        wanted: bool,
    ) -> Placement:
        """Where the appliance runs. A wanted one with no live host (never
        placed, its host down or removed) is placed on one that can take it;
        an operator's move is begun (see `_move`). A new placement grows the
        epoch (and makes the record, for a new appliance): every push carries
        it, and a host refuses one older than it has seen. Without a host
        that can take it, it stays where it was (a lone host that is down may
        come back)."""
        hosts = infos(session)
        current = hosts.get(row.host) if row is not None and row.host else None
        epoch = row.epoch if row is not None else 0
        if not wanted:
            return Placement(current, epoch)
        # An HA router's members: never on one host (anti-affinity), and
        # member 1 placed only once member 0 is placed on a live host (two
        # placed at once could not see each other's choice; should they
        # meet on one host all the same, the later placed moves, below). A
        # member's epoch grows past its sibling's: the newer of two is the
        # later placed.
        pair = appliances.sibling(appliance_id)
        other = session.get(ApplianceState, pair) if pair is not None else None
        apart = {other.host} if other is not None and other.host else set()
        needs_host = current is None or not current.alive
        if pair is not None and appliances.ha_slot(appliance_id) == 1 and needs_host:
            first = hosts.get(other.host) if other is not None and other.host else None
            if first is None or not first.alive:
                return Placement(current, epoch)
        epoch_floor = max(epoch, other.epoch if other is not None else 0)
        slot = appliances.ha_slot(appliance_id)
        if (
            row is not None
            and other is not None
            and current is not None
            and current.alive
            and other.host == current.name
            and row.move_to is None
            and (epoch, slot) > (other.epoch, 1 - (slot or 0))
        ):
            # Both members on one host (placed at once as two hosts failed):
            # the later placed one moves, cut over as an operator's move is.
            spare = placement.choose(
                hosts.values(),
                {},
                hints=appliances.zone_hints(session, appliance_id),
                exclude={current.name},
            )
            if spare is not None:
                row.move_to = spare.name
                self._event(
                    session,
                    appliance_id,
                    f"the other member runs on {current.name} too: moving to {spare.name}",
                )
        target: placement.HostInfo | None = None
        why = ""
        move = row.move_to if row is not None else None
        if row is not None and move is not None:
            destination = hosts.get(move)
            if destination is None or not destination.schedulable:
                row.move_to = None
                self._event(session, appliance_id, f"move to {move} dropped: it is not up")
            elif destination.name in apart:
                row.move_to = None
                self._event(
                    session, appliance_id, f"move to {move} dropped: the other member runs there"
                )
            elif current is not None and destination.name == current.name:
                row.move_to = None  # there already
            elif current is not None and current.alive:
                # The next epoch first, committed with this observation: the
                # old copy is deleted with it, so whatever happens next (a
                # lost answer, a crash, the move dropped), the record is
                # never below what a host has seen.
                row.epoch = epoch_floor + 1
                return Placement(current, row.epoch, moving_to=destination)
            else:  # its host is down: it goes where the operator said
                row.move_to = None
                target, why = destination, "moved by an operator (its host is down)"
        if target is None and (current is None or not current.alive):
            load: dict[str, int] = dict(
                session.execute(  # type: ignore[arg-type]
                    select(ApplianceState.host, func.count())
                    .where(ApplianceState.host.is_not(None))
                    .group_by(ApplianceState.host)
                ).all()
            )
            physnets = set(
                session.scalars(
                    select(Network.physical_network).where(
                        Network.id.in_(plan.networks if plan is not None else ()),
                        Network.network_type == "flat",
                    )
                )
            )
            target = placement.choose(
                hosts.values(),
                load,
                hints=appliances.zone_hints(session, appliance_id),
                physnets={p for p in physnets if p},
                exclude=apart,
            )
            if target is not None:
                why = f"host {current.name} is down" if current is not None else "placed"
        if target is None:
            return Placement(current, epoch)
        if row is None:
            row = ApplianceState(
                appliance_id=appliance_id,
                kind=appliances.kind(appliance_id),
                project_id=project_id,
                state=State.CREATING.value,
                attempts=0,
                removing=False,
                paused=False,
                rebuild_requested=False,
                updated_at=self.clock(),
            )
            session.add(row)
        row.host, row.epoch = target.name, epoch_floor + 1
        self._event(session, appliance_id, f"on host {target.name} (epoch {row.epoch}): {why}")
        return Placement(target, row.epoch)

    def _event(self, session: Session, appliance_id: str, message: str) -> None:
        log.info("appliance %s: %s", appliance_id, message)
        session.add(ApplianceEvent(appliance_id=appliance_id, at=self.clock(), message=message))

    def _move(self, appliance_id: str, where: Placement) -> tuple[Placement, Failure | None]:
        """An operator's move, cut over cleanly: the old copy is deleted with
        the move's epoch (already recorded: see `_place`) before the new host
        is recorded and the new copy pushed; never one address on two hosts.
        If the delete fails, the move waits (and is tried again shortly)."""
        assert where.host is not None and where.moving_to is not None
        try:
            _delete(self.hosts.client(where.host), appliance_id, where.epoch)
        except (AgentError, httpx.HTTPError) as error:
            return where, unreachable(f"removing it from {where.host.name} to move it: {error}")
        with self.sessions.begin() as session:
            moved = session.execute(
                update(ApplianceState)
                .where(
                    ApplianceState.appliance_id == appliance_id,
                    ApplianceState.epoch == where.epoch,
                    ApplianceState.move_to == where.moving_to.name,
                )
                .values(host=where.moving_to.name, move_to=None)
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                return where, unreachable("its record changed while it moved: looking again")
            self._event(
                session,
                appliance_id,
                f"on host {where.moving_to.name} (epoch {where.epoch}):"
                f" moved from {where.host.name} by an operator",
            )
        self.wake(L2_KEY)  # the old host's segments, and the flood lists
        return Placement(where.moving_to, where.epoch), None

    def _catch_up(self, appliance_id: str, epoch: int, body: object) -> None:
        """A host refused a push or delete as older than an epoch it has seen
        (a record dropped and made anew, a DHCP appliance's id coming back,
        an answer lost): the record takes the next epoch, if nothing changed
        it meanwhile (an orchestrator that lost the record to another one
        changes nothing), and the next step uses it."""
        detail = body.get("detail") if isinstance(body, dict) else None
        if not isinstance(detail, dict) or detail.get("kind") != "stale_epoch":
            return
        seen = detail.get("seen")
        if not isinstance(seen, int) or seen < epoch:
            return
        with self.sessions.begin() as session:
            raised = session.execute(
                update(ApplianceState)
                .where(ApplianceState.appliance_id == appliance_id, ApplianceState.epoch == epoch)
                .values(epoch=seen + 1)
            )
            caught_up = raised.rowcount == 1  # type: ignore[attr-defined]
            if caught_up:
                self._event(
                    session,
                    appliance_id,
                    f"epoch {epoch} refused (a host saw {seen}): now {seen + 1}",
                )
        if caught_up:  # committed: only now is the new epoch this member's
            with self._lock:
                if self._claims.get(appliance_id) == epoch:
                    self._claims[appliance_id] = seen + 1

    def _execute(
        self,
        appliance_id: str,
        action: Action,
        plan: AppliancePlan | None,
        where: Placement,
    ) -> tuple[Failure | None, dict[str, Any] | None]:
        """Run one command: (its failure or None, the agent's answer to a PUT)."""
        applied: dict[str, Any] | None = None
        if where.host is None:
            return no_host(), None
        client = self.hosts.client(where.host)
        try:
            if action in (Action.DELETE, Action.REBUILD):
                _delete(client, appliance_id, where.epoch)
            if action in (Action.PUSH, Action.REBUILD):
                if plan is None or plan.config is None:
                    return Failure(FailureKind.NO_CONFIG), None
                if self.l2.sync_networks(plan.networks, where.host.name):
                    self.wake(L2_KEY)
                config = plan.config.model_dump(mode="json")
                applied = client.put_appliance(appliance_id, config, epoch=where.epoch)
                with self._lock:
                    self.pushes += 1
                metrics.PUSHES.inc()
            if action is Action.REBUILD:
                metrics.REBUILDS.inc()
        except CannotCarry as error:
            return Failure(FailureKind.REFUSED, str(error)), None
        except AgentError as error:
            self.l2.forget_segments(plan.networks if plan is not None else {}, where.host.name)
            if error.status_code == 409:
                self._catch_up(appliance_id, where.epoch, error.body)
            return from_agent(error.status_code, error.body), None
        except httpx.HTTPError as error:
            self.l2.forget_segments(None, where.host.name)
            return unreachable(str(error)), None
        return None, applied

    def _hold(self, appliance_id: str, where: Placement, held: bool) -> None:
        """Tell the appliance's agent that an operator debugs it (its watch
        then repairs nothing on its own), or no longer. Best effort: an agent
        without the appliance has nothing to hold."""
        if where.host is None:
            return
        try:
            self.hosts.client(where.host).hold_appliance(appliance_id, held, where.epoch)
        except (AgentError, httpx.HTTPError) as error:
            log.info("appliance %s: hold=%s not told to its agent: %s", appliance_id, held, error)

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
            repaired = repair_event(seen.repair) if seen.repair else None
            if repaired is not None and not _recorded(session, appliance_id, *repaired):
                history.record(session, appliance_id, *repaired)
            if not seen.agent_down:  # nothing known: leave the statuses as they are
                kind = appliances.kind(appliance_id)
                if kind == "loadbalancer":
                    statuses.write_lb_statuses(
                        session, appliance_id, after.state, plan, seen.health
                    )
                    statuses.write_lb_stats(session, appliance_id, seen.health, now)
                elif kind == "router":
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
        with self._lock:
            self._seen.pop(appliance_id, None)
            self._listed.pop(appliance_id, None)
            self._claims.pop(appliance_id, None)
            self._clean.discard(appliance_id)
            self._looked.discard(appliance_id)
        self.wake(L2_KEY)

    # --- several orchestrators: fencing -------------------------------------------------

    def _holds(self, appliance_id: str) -> bool:
        """Whether this member may act on the appliance now: it owns it, and
        has taken it over (raised its epoch: see `_take_over`) since the
        members last changed, and nobody took it from it since."""
        if not self.coordinated:
            return True
        if not self.owns(appliance_id):
            return False
        with self._lock:
            if appliance_id in self._claims:
                return self._claims[appliance_id] is not None
        return self._take_over(appliance_id)

    def _take_over(self, appliance_id: str) -> bool:
        """Raise the appliance's epoch (compare-and-set on the one read):
        from now on, whatever its previous owner sends with the older epoch
        (a push decided before it paused) is refused by the agent once this
        member has pushed or deleted. No record yet: the first placement
        makes one (epoch 1), and a member that raced to it gets a conflict."""
        for _ in range(3):
            with self.sessions.begin() as session:
                epoch = session.scalar(
                    select(ApplianceState.epoch).where(ApplianceState.appliance_id == appliance_id)
                )
                if epoch is None:
                    taken = 0  # the history says who placed it, all the same
                else:
                    raised = session.execute(
                        update(ApplianceState)
                        .where(
                            ApplianceState.appliance_id == appliance_id,
                            ApplianceState.epoch == epoch,
                        )
                        .values(epoch=epoch + 1)
                    )
                    if raised.rowcount != 1:  # type: ignore[attr-defined]
                        continue  # another member raised it meanwhile: read again
                    taken = epoch + 1
                self._event(session, appliance_id, f"taken over by {self.member} (epoch {taken})")
            with self._lock:
                self._claims[appliance_id] = taken
            return True
        return False

    def _still_held(self, appliance_id: str, row: ApplianceState | None) -> bool:
        """The record's epoch is still the one this member set: else another
        member took the appliance over, and this one keeps its hands off it
        until the members change again or its next resync (see `resync`)."""
        with self._lock:
            if appliance_id not in self._claims:
                return False  # the members just changed: the rebalance's wake takes it over
            held = self._claims[appliance_id]
            now = row.epoch if row is not None else 0
            if held == now:
                return True
            self._claims[appliance_id] = None
        log.warning(
            "appliance %s: taken over by another member (epoch %s, ours %s): leaving it",
            appliance_id,
            now,
            held,
        )
        return False


def _everything(key: str) -> bool:
    return True


def _delete(client: AgentClient, appliance_id: str, epoch: int) -> None:
    """DELETE an appliance (gone already is fine)."""
    try:
        client.delete_appliance(appliance_id, epoch=epoch)
    except AgentError as error:
        if error.status_code != 404:
            raise


def _plan_from(
    session: Session,
    batch: Batch,
    appliance_id: str,
    network_id: str | None,
    advert_interval_ms: int = DEFAULT_ADVERT_MS,
) -> tuple[AppliancePlan, str, bool] | None:
    """An appliance's plan from a batch's rows, its project, and whether its
    Neutron statuses are as a settled reconcile leaves them (`statuses`:
    the router ACTIVE and up, the DHCP port ACTIVE); None: nothing is
    wanted of it (its router or DHCP port is gone)."""
    balancer_id = lb_driver.balancer_id(appliance_id)
    if balancer_id is not None:
        balancer = session.get(LoadBalancer, balancer_id)
        if balancer is None:
            return None
        plan = lb_driver.plan(session, balancer)
        return plan, balancer.project_id, balancer.provisioning_status == "ACTIVE"
    if network_id is None:
        router_id, slot = ha_member(appliance_id) or (appliance_id, None)
        router = batch.routers.get(router_id)
        if router is None:
            return None
        plan = router_driver.plan(
            session, router, batch, member=slot, advert_interval_ms=advert_interval_ms
        )
        return plan, router.project_id, router.admin_state_up and router.status == "ACTIVE"
    port = batch.dhcp_port(network_id)
    if port is None:
        return None
    plan = dhcp_driver.plan(session, network_id, batch)
    return plan, port.project_id, plan.ports == [port.id] and port.status == "ACTIVE"


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
