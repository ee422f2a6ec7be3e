"""The agent watches what it built and repairs it at once.

A fault behind the agent's back (a namespace deleted, a veth deleted, an
address or route removed, a daemon killed) is noticed by an event, not found
by the orchestrator's next resync:

- one netlink socket inside each appliance's namespace (links, addresses and
  routes of both families) and one in the fabric's (links: the fabric ends
  of the appliances' veth pairs, mapped back by name);
- inotify on the namespace directory: a socket held inside a namespace keeps
  it alive after `ip netns del`, so when the name goes the socket is closed
  at once (the namespace is let go) and the appliance marked;
- a pidfd per daemon (dnsmasq, radvd), readable when it exits;

all waited on by one thread through epoll. Events come in bursts (and every
apply causes some), so a marked appliance is checked only after the burst
settles (`Schedule`). The check runs on a small pool under the appliance's
lock (`Agent.repair`): a cheap observation (`appliance.drift`), and only if
something drifted, a converge on the config in force, as a PUT of it would.
Events caused by the agent's own applies are dropped when the apply ends
(`settled`): they were all queued by then (the kernel queues a notification
before it acknowledges the change), and what they tell the apply already saw.
So a repair does not trigger another; and should a fault come back every
time, repairs back off instead of looping.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from astara.appliance.actions import DaemonName
from astara.appliance.drift import drift
from astara.appliance.ha import HaRole
from astara.appliance.schema import ApplianceConfig
from astara.linux import monitor
from astara.linux.monitor import Aspect

if TYPE_CHECKING:
    from astara.agent.service import Agent

log = logging.getLogger(__name__)

# A burst of events ends when none came for DEBOUNCE_S; a long burst is
# checked after BURST_MAX_S all the same.
DEBOUNCE_S = 0.05
BURST_MAX_S = 0.25
# The first BACKOFF_FREE repairs of one appliance run at once; after that,
# until BACKOFF_RESET_S pass without a repair, each waits twice as long as
# the one before (from BACKOFF_FIRST_S, up to BACKOFF_MAX_S) after it: a
# fault that keeps coming back is no hot loop.
BACKOFF_FREE = 3
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
BACKOFF_RESET_S = 60.0
REPAIR_WORKERS = 2
# Sockets per appliance (one, plus two pidfds) and some for everything else.
OPEN_FILES_WANTED = 65536

# The drift check of one appliance: (config in force, interfaces meant to be
# down) → its problems, [] if none.
Check = Callable[[ApplianceConfig, Collection[str]], list[str]]


# --- when to check (pure: time is a parameter) -----------------------------------------


@dataclass
class _Marked:
    first: float
    last: float
    aspects: set[Aspect]


@dataclass
class _Backoff:
    last_repair: float
    delay_s: float
    streak: int  # repairs with less than BACKOFF_RESET_S between them


@dataclass
class Schedule:
    """Which appliances to check when: marked by events, due once their
    burst settled, never two checks of one at once, repairs backing off."""

    debounce_s: float = DEBOUNCE_S
    burst_max_s: float = BURST_MAX_S
    marked: dict[str, _Marked] = field(default_factory=dict)
    backoff: dict[str, _Backoff] = field(default_factory=dict)

    def mark(self, key: str, aspects: Collection[Aspect], now: float) -> None:
        entry = self.marked.get(key)
        if entry is None:
            self.marked[key] = _Marked(now, now, set(aspects))
        else:
            entry.last = now
            entry.aspects.update(aspects)

    def cancel(self, key: str) -> None:
        self.marked.pop(key, None)

    def forget(self, key: str) -> None:
        self.marked.pop(key, None)
        self.backoff.pop(key, None)

    def due_at(self, key: str) -> float | None:
        entry = self.marked.get(key)
        if entry is None:
            return None
        settled = min(entry.last + self.debounce_s, entry.first + self.burst_max_s)
        backoff = self.backoff.get(key)
        if backoff is not None:
            settled = max(settled, backoff.last_repair + backoff.delay_s)
        return settled

    def next_deadline(self, busy: Collection[str] = ()) -> float | None:
        deadlines = [self.due_at(key) for key in self.marked if key not in busy]
        return min((d for d in deadlines if d is not None), default=None)

    def take_due(self, now: float, busy: Collection[str] = ()) -> list[tuple[str, set[Aspect]]]:
        """The appliances to check now, with what their events touched; they
        are unmarked (events from now on mark them again)."""
        due = []
        for key in list(self.marked):
            at = self.due_at(key)
            if key not in busy and at is not None and at <= now:
                due.append((key, self.marked.pop(key).aspects))
        return due

    def repaired(self, key: str, now: float) -> None:
        """A repair was made: past the free ones, the next one of this
        appliance waits longer, unless it comes after a quiet spell."""
        previous = self.backoff.get(key)
        if previous is None or now - previous.last_repair >= BACKOFF_RESET_S:
            self.backoff[key] = _Backoff(now, 0.0, 1)
            return
        streak = previous.streak + 1
        delay = (
            0.0
            if streak < BACKOFF_FREE
            else min(max(2 * previous.delay_s, BACKOFF_FIRST_S), BACKOFF_MAX_S)
        )
        self.backoff[key] = _Backoff(now, delay, streak)


# --- what a check found and did --------------------------------------------------------


@dataclass(frozen=True)
class Repair:
    """One check that found drift: what, and what was done about it
    (`repaired`, `failed`; `deferred` while the appliance is fenced, `held`
    while an operator debugs it)."""

    outcome: str
    problems: tuple[str, ...]
    at: float  # wall clock, like the appliance's `applied_at`
    actions: tuple[str, ...] = ()
    error: str | None = None
    seconds: float = 0.0
    events: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "problems": list(self.problems),
            "at": self.at,
            "actions": list(self.actions),
            "error": self.error,
            "seconds": round(self.seconds, 4),
            "events": list(self.events),
        }


# --- the watch -------------------------------------------------------------------------


@dataclass
class _Watched:
    """What is held open for one appliance."""

    socket: monitor.EventSocket | None = None
    fabric_links: frozenset[str] = frozenset()
    exits: dict[int, str] = field(default_factory=dict)  # pidfd → daemon name


class Watch:
    def __init__(
        self,
        agent: Agent,
        on_repair: Callable[[str], None] | None = None,
        *,
        debounce_s: float = DEBOUNCE_S,
        workers: int = REPAIR_WORKERS,
    ) -> None:
        self.agent = agent
        self.names = agent.names
        self.on_repair = on_repair
        self.schedule = Schedule(debounce_s=debounce_s)
        self.repairs = 0
        self._workers = workers
        # Guards everything below; never held while waiting for an
        # appliance's lock (checks take that lock, then this one).
        self._mutex = threading.Lock()
        self._watched: dict[str, _Watched] = {}
        self._fabric: monitor.EventSocket | None = None
        self._fabric_links: dict[str, str] = {}  # fabric link name → appliance id
        self._fds: dict[int, tuple[str, str]] = {}  # fd → (kind, appliance id or "")
        self._busy: set[str] = set()  # being checked
        self._applying: set[str] = set()  # being applied (`applying`)
        self.checks = 0  # checks run
        self._last: dict[str, Repair] = {}
        self._stopping = False
        self._quiet = False  # shutting down: notice, but repair nothing
        self._epoll: select.epoll | None = None
        self._directory: monitor.NamespaceDirectory | None = None
        self._wake = -1
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._ready = threading.Event()

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Open the watch and track every appliance the agent has (in the
        watch's thread: an agent with many appliances answers meanwhile)."""
        limit = monitor.raise_open_files_limit(OPEN_FILES_WANTED)
        log.debug("open files limit %d", limit)
        self._epoll = select.epoll()
        self._directory = monitor.NamespaceDirectory()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._register(self._directory.fileno(), "directory", "")
        self._register(self._wake, "wake", "")
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="repair")
        self._thread = threading.Thread(target=self._run, name="watch", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Whether every appliance the agent had at start is tracked."""
        return self._ready.wait(timeout_s)

    def quiesce(self) -> None:
        """Repair nothing from now on: the agent is shutting down, and what
        goes now (an operator's or a test's cleanup after it) must stay gone."""
        with self._mutex:
            self._quiet = True

    def stop(self) -> None:
        """Stop the thread, let the checks under way finish, close everything."""
        with self._mutex:
            self._stopping = True
        self._poke()
        if self._thread is not None:
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        with self._mutex:
            for appliance_id in list(self._watched):
                self._close_appliance(appliance_id)
            self._close_fabric()
            if self._directory is not None:
                self._directory.close()
                self._directory = None
            if self._wake >= 0:
                os.close(self._wake)
                self._wake = -1
            if self._epoll is not None:
                self._epoll.close()
                self._epoll = None
            self._fds.clear()

    # --- what the agent tells the watch ----------------------------------------------

    def settled(self, appliance_id: str) -> None:
        """An apply of the appliance ended (called under its lock): watch it
        as it is now, and drop the events it caused, all queued by now."""
        with self._mutex:
            if self._stopping:
                return
            self._track(appliance_id)
            watched = self._watched.get(appliance_id)
            if watched is not None and watched.socket is not None:
                watched.socket.read()
            if self._fabric is not None:
                self._read_fabric(time.monotonic(), ignore=appliance_id)
            self.schedule.cancel(appliance_id)

    def applying(self, appliance_id: str, under_way: bool) -> None:
        """An apply of the appliance starts or ends (called under its lock).
        While it runs, the appliance is not checked: the events it causes
        would only make a check that waits for the lock and then reads what
        the apply just left (10,000 routes: a few hundred ms, which the next
        PUT would wait for). Its events stay marked; `settled` drops them
        when it succeeds, and if it fails they are checked after it."""
        with self._mutex:
            if under_way:
                self._applying.add(appliance_id)
            else:
                self._applying.discard(appliance_id)
        if not under_way:
            self._poke()  # a mark left by a failed apply may be due

    def check_soon(self, appliance_id: str) -> None:
        """Check the appliance in full soon, as if events had been lost (an
        operator's hold ended: what changed meanwhile was only reported)."""
        with self._mutex:
            if self._stopping:
                return
            self.schedule.mark(appliance_id, {Aspect.lost}, time.monotonic())
        self._poke()

    def forget(self, appliance_id: str) -> None:
        """The appliance is being deleted (called under its lock, before its
        namespace goes): let go of it."""
        with self._mutex:
            self._close_appliance(appliance_id)
            self._watched.pop(appliance_id, None)
            self.schedule.forget(appliance_id)
            self._last.pop(appliance_id, None)

    def last_repair(self, appliance_id: str) -> dict[str, Any] | None:
        with self._mutex:
            repair = self._last.get(appliance_id)
        return repair.as_dict() if repair else None

    def status(self) -> dict[str, Any]:
        """What the watch holds open (for tests and health)."""
        with self._mutex:
            return {
                "namespaces": sorted(
                    self.names.appliance_netns(a)
                    for a, w in self._watched.items()
                    if w.socket is not None
                )
                + ([self.names.fabric_netns] if self._fabric is not None else []),
                "daemons": sum(len(w.exits) for w in self._watched.values()),
                "marked": sorted(self.schedule.marked),
                "idle": not self.schedule.marked and not self._busy,
                "repairs": self.repairs,
                "checks": self.checks,
            }

    # --- tracking (with the mutex held) ----------------------------------------------

    def _register(self, fd: int, kind: str, appliance_id: str) -> None:
        assert self._epoll is not None
        self._epoll.register(fd, select.EPOLLIN)
        self._fds[fd] = (kind, appliance_id)

    def _unregister(self, fd: int) -> None:
        if self._fds.pop(fd, None) is not None and self._epoll is not None:
            self._epoll.unregister(fd)

    def _track(self, appliance_id: str) -> None:
        config = self.agent.appliances.config(appliance_id)
        if config is None:
            return
        watched = self._watched.setdefault(appliance_id, _Watched())
        namespace = self.names.appliance_netns(appliance_id)
        now_there = monitor.identity(namespace)
        if watched.socket is not None and watched.socket.identity != now_there:
            self._close_socket(watched)
        if watched.socket is None and now_there is not None:
            try:
                watched.socket = monitor.EventSocket(namespace)
            except OSError as error:  # deleted meanwhile: a check says so
                log.warning("cannot watch %s: %s", namespace, error)
                self.schedule.mark(appliance_id, {Aspect.namespace}, time.monotonic())
            else:
                self._register(watched.socket.fileno(), "appliance", appliance_id)
        for link in watched.fabric_links:
            self._fabric_links.pop(link, None)
        watched.fabric_links = frozenset(
            self.names.appliance_fabric_link(appliance_id, i.mac) for i in config.interfaces
        )
        self._fabric_links.update(dict.fromkeys(watched.fabric_links, appliance_id))
        self._track_daemons(appliance_id, watched)
        self._track_fabric()

    def _track_daemons(self, appliance_id: str, watched: _Watched) -> None:
        for fd in list(watched.exits):
            self._unregister(fd)
            os.close(fd)
        watched.exits.clear()
        daemons = self.agent.appliances.daemons(appliance_id)
        for name, daemon in daemons.all().items():
            pid = daemon.pid()
            exit_fd = monitor.exit_fd(pid) if pid is not None else None
            if exit_fd is not None:
                watched.exits[exit_fd] = name
                self._register(exit_fd, "exit", appliance_id)

    def _track_fabric(self) -> None:
        now_there = monitor.identity(self.names.fabric_netns)
        if self._fabric is not None and self._fabric.identity == now_there:
            return
        self._close_fabric()
        if now_there is None:
            return
        try:
            self._fabric = monitor.EventSocket(
                self.names.fabric_netns, monitor.LINKS, monitor.LARGE_BUFFER_BYTES
            )
        except OSError as error:
            log.warning("cannot watch %s: %s", self.names.fabric_netns, error)
            return
        self._register(self._fabric.fileno(), "fabric", "")

    def _close_socket(self, watched: _Watched) -> None:
        if watched.socket is not None:
            self._unregister(watched.socket.fileno())
            watched.socket.close()
            watched.socket = None

    def _close_appliance(self, appliance_id: str) -> None:
        watched = self._watched.get(appliance_id)
        if watched is None:
            return
        self._close_socket(watched)
        for fd in list(watched.exits):
            self._unregister(fd)
            os.close(fd)
        watched.exits.clear()
        for link in watched.fabric_links:
            if self._fabric_links.get(link) == appliance_id:
                del self._fabric_links[link]

    def _close_fabric(self) -> None:
        if self._fabric is not None:
            self._unregister(self._fabric.fileno())
            self._fabric.close()
            self._fabric = None

    # --- the thread ------------------------------------------------------------------

    def _poke(self) -> None:
        if self._wake >= 0:
            os.eventfd_write(self._wake, 1)

    def _run(self) -> None:
        for appliance_id in self.agent.appliances.ids():
            with self.agent.appliances.lock(appliance_id), self._mutex:
                if self._stopping:
                    break
                if self.agent.appliances.exists(appliance_id):
                    self._track(appliance_id)
        self._ready.set()
        assert self._epoll is not None
        epoll = self._epoll
        while True:
            with self._mutex:
                if self._stopping:
                    return
                deadline = self.schedule.next_deadline(self._busy | self._applying)
            timeout = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            ready = epoll.poll(timeout)
            with self._mutex:
                if self._stopping:
                    return
                now = time.monotonic()
                for fd, _ in ready:
                    try:
                        self._dispatch(fd, now)
                    except Exception:
                        log.exception("watch: handling an event failed")
                assert self._pool is not None
                waiting = self._busy | self._applying
                for appliance_id, aspects in self.schedule.take_due(now, waiting):
                    if self._quiet:
                        continue
                    self._busy.add(appliance_id)
                    try:
                        self._pool.submit(self._check, appliance_id, aspects)
                    except RuntimeError:  # the pool is shut down: stopping
                        return

    def _dispatch(self, fd: int, now: float) -> None:
        kind, appliance_id = self._fds.get(fd, ("", ""))
        if kind == "wake":
            os.eventfd_read(self._wake)
        elif kind == "directory":
            assert self._directory is not None
            for name, appeared in self._directory.read():
                if not appeared:
                    self._namespace_gone(name, now)
        elif kind == "fabric":
            self._read_fabric(now)
        elif kind == "appliance":
            watched = self._watched[appliance_id]
            assert watched.socket is not None
            changes, lost = watched.socket.read()
            aspects = {c.aspect for c in changes} | ({Aspect.lost} if lost else set())
            if aspects:
                self.schedule.mark(appliance_id, aspects, now)
        elif kind == "exit" and _readable(fd):
            watched = self._watched[appliance_id]
            daemon = watched.exits.pop(fd)
            self._unregister(fd)
            os.close(fd)
            log.info("appliance %s: %s exited", appliance_id, daemon)
            if daemon == DaemonName.keepalived.value:
                # Its peer takes over within three adverts: off the wire now,
                # before the repair starts it again (as a backup).
                try:
                    self.agent.appliances.roles.transition(appliance_id, HaRole.fault)
                except Exception:  # the repair puts the links right
                    log.exception("appliance %s: taking it off the wire", appliance_id)
            self.schedule.mark(appliance_id, {Aspect.daemon}, now)

    def _namespace_gone(self, name: str, now: float) -> None:
        if name == self.names.fabric_netns:
            if self._fabric is not None and monitor.identity(name) is None:
                log.warning("%s was deleted behind the agent's back", name)
                self._close_fabric()
            return
        lead = self.names.appliance_netns("")
        appliance_id = name[len(lead) :] if name.startswith(lead) else None
        watched = self._watched.get(appliance_id or "")
        if appliance_id is None or watched is None:
            return
        # Let go of it, or our socket keeps the namespace (and its veths) alive.
        if watched.socket is not None and monitor.identity(name) != watched.socket.identity:
            self._close_socket(watched)
        log.warning("namespace %s was deleted behind the agent's back", name)
        self.schedule.mark(appliance_id, {Aspect.namespace}, now)

    def _read_fabric(self, now: float, ignore: str | None = None) -> None:
        assert self._fabric is not None
        changes, lost = self._fabric.read()
        if lost:  # any appliance's fabric end may have changed
            for watched_id in self._watched:
                if watched_id != ignore:
                    self.schedule.mark(watched_id, {Aspect.lost}, now)
        for change in changes:
            owner = self._fabric_links.get(change.ifname or "")
            if owner is not None and owner != ignore:
                self.schedule.mark(owner, {Aspect.link}, now)

    # --- checks (on the pool) --------------------------------------------------------

    def _check(self, appliance_id: str, aspects: set[Aspect]) -> None:
        started = time.monotonic()
        read_routes = bool(aspects & {Aspect.route, Aspect.lost, Aspect.namespace})

        def drifted(config: ApplianceConfig, withdrawn: Collection[str]) -> list[str]:
            mtus = {
                i.network_id: info.mtu
                for i in config.interfaces
                if (info := self.agent.network_info(i.network_id))
            }
            try:
                return drift(
                    names=self.names,
                    appliance_id=appliance_id,
                    config=config,
                    network_mtus=mtus,
                    daemons=self.agent.appliances.daemons(appliance_id),
                    withdrawn=withdrawn,
                    read_routes=read_routes,
                    standby=self.agent.appliances.roles.standby_links(appliance_id, config),
                )
            except Exception as error:  # what could not be read is not known good
                log.warning("appliance %s: drift check failed: %s", appliance_id, error)
                return [f"the check failed: {error}"]

        events = tuple(sorted(a.value for a in aspects))
        try:
            repair = self.agent.repair(appliance_id, drifted)
        except Exception as error:
            log.exception("appliance %s: repair failed", appliance_id)
            repair = Repair("failed", (), time.time(), error=str(error))
        if repair is not None:
            repair = Repair(
                repair.outcome,
                repair.problems,
                repair.at,
                repair.actions,
                repair.error,
                time.monotonic() - started,
                events,
            )
            log.warning(
                "appliance %s %s after %s (%s): %s%s, in %.0f ms",
                appliance_id,
                repair.outcome,
                ", ".join(events),
                "; ".join(repair.problems),
                "; ".join(repair.actions) or "no action",
                f" ({repair.error})" if repair.error else "",
                repair.seconds * 1000,
            )
            if self.on_repair is not None:
                self.on_repair(repair.outcome)
        with self._mutex:
            self._busy.discard(appliance_id)
            self.checks += 1
            if repair is not None and appliance_id in self._watched:
                self._last[appliance_id] = repair
                if repair.outcome not in ("deferred", "held"):  # only real repairs back off
                    self.repairs += 1
                    self.schedule.repaired(appliance_id, time.monotonic())
        self._poke()  # a mark that waited for this check may be due


def _readable(fd: int) -> bool:
    """Whether `fd` is readable now (a pidfd: its process has exited)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
