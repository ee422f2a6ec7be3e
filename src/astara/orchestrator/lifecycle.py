"""An appliance's lifecycle (a router's, or a network's DHCP appliance), a pure
state machine.

`step(record, observation, now)` → `Decision(record, commands, events)`. No I/O
and no clock reads: the reconciler observes (database and agent), calls
`step`, stores the new record, and executes the commands, which are data.
The record lives in the database, so a restarted orchestrator resumes where
the last one stopped.

States: CREATING (nothing on the host yet), BOOTING (first push sent),
CONFIGURING (the appliance runs an older config), ACTIVE (it runs the current
config and is healthy), DEGRADED (it runs the current config but reports
problems), REBUILDING (it is missing or broken and is being rebuilt), ERROR
(it failed too often: only `rebuild` moves it), DELETING (the router is gone
from the API, or the network's DHCP port), PAUSED (an operator is debugging
it: nothing is touched).

Removing an appliance (the router is deleted, or has no ports left) fails and
backs off like any other command, and ends in ERROR after `MAX_ATTEMPTS`. An
ERROR never stops a removal for good: every wake (the periodic resync at
least) tries the DELETE again, quietly, until it succeeds — nothing else would
ever remove an appliance nobody wants. A failure never counts as "the
appliance is gone": after one, the next step looks again. Such failures are
marked `removing`: once an appliance is wanted again (the router is set up,
or given a port), they no longer hold, and it is configured afresh.

`retry_at` is set only while a retry is wanted: a step that issues a command
clears it (unless it counted a failure: the back-off then delays the next
attempt), so a stale `retry_at` never wakes a router over and over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from astara.orchestrator.failures import Failure


class State(StrEnum):
    CREATING = "creating"
    BOOTING = "booting"
    CONFIGURING = "configuring"
    ACTIVE = "active"
    DEGRADED = "degraded"
    REBUILDING = "rebuilding"
    ERROR = "error"
    DELETING = "deleting"
    PAUSED = "paused"


# Failed attempts before ERROR, and the back-off between them.
MAX_ATTEMPTS = 5
BACKOFF_BASE = timedelta(seconds=1)
BACKOFF_MAX = timedelta(seconds=60)


@dataclass(frozen=True)
class Record:
    """What the database keeps per appliance between steps."""

    state: State = State.CREATING
    attempts: int = 0
    retry_at: datetime | None = None
    last_error: str | None = None
    applied_hash: str | None = None
    # The failures counted (and an ERROR) are about removing an appliance
    # nobody wants: once one is wanted again, they no longer hold.
    removing: bool = False


@dataclass(frozen=True)
class Observation:
    """What the reconciler saw just now.

    `desired_hash` is None when the router is gone from the API. `present`
    says whether the agent has the appliance, `observed_hash` the config it
    runs, `problems` what its health check reports. `failure` is set when the
    commands of the previous step failed, or the appliance could not be
    looked at (agent unreachable, apply refused, config invalid, a tool
    missing); `present` then says nothing (the agent was not asked), and no
    step concludes from it that the appliance is gone.
    """

    desired_hash: str | None
    present: bool
    observed_hash: str | None = None
    problems: tuple[str, ...] = ()
    failure: Failure | None = None
    # The router is in the API (it may need no appliance), or the network has
    # its DHCP port: the appliance is for something that exists.
    exists: bool = True
    paused: bool = False  # an operator debugs it (`astara router|project debug`)
    rebuild_requested: bool = False  # `astara router rebuild`
    # A load balancer's operating statuses as its haproxy reports them
    # (`appliance.lbstats.health`); None: not looked at this time.
    health: Mapping[str, Any] | None = None
    # The agent's last repair of it on its own (`agent.watch.Repair.as_dict`);
    # None: none known. Recorded in the history, decided nothing on.
    repair: Mapping[str, Any] | None = None

    @property
    def agent_down(self) -> bool:
        """The agent did not answer: nothing is known."""
        return self.failure is not None and self.failure.agent_down


class Action(StrEnum):
    PUSH = "push"  # PUT the desired config (creates, updates or repairs)
    REBUILD = "rebuild"  # DELETE the appliance, then PUT it anew
    DELETE = "delete"  # DELETE the appliance
    FORGET = "forget"  # the router and its appliance are gone: drop the record


@dataclass(frozen=True)
class Command:
    action: Action
    reason: str


@dataclass(frozen=True)
class Decision:
    """The new record, the commands to execute, the events to keep, and
    whether the operator's rebuild request was acted on (and may be cleared:
    not while the agent is down or the router paused)."""

    record: Record
    commands: tuple[Command, ...] = ()
    events: tuple[str, ...] = field(default=())
    rebuild_handled: bool = False


def backoff(attempts: int) -> timedelta:
    """1 s, 2 s, 4 s … after each failed attempt, at most a minute."""
    wait: timedelta = BACKOFF_BASE * (2 ** max(attempts - 1, 0))
    return min(wait, BACKOFF_MAX)


def step(record: Record, seen: Observation, now: datetime) -> Decision:
    if not seen.exists:
        # The tenant deleted the router: that wins over an operator's pause
        # (nothing would ever remove its appliance otherwise).
        return _decide(record, seen, now)
    if seen.paused:
        if record.state is State.PAUSED:
            return Decision(record)
        return Decision(
            replace(record, state=State.PAUSED, retry_at=None),
            events=(f"{record.state} -> paused: an operator is debugging it",),
        )
    if record.state is State.PAUSED:
        resumed = Record(state=State.CONFIGURING, applied_hash=record.applied_hash)
        decision = _decide(resumed, seen, now)
        return replace(decision, events=("paused -> configuring: managed again", *decision.events))
    return _decide(record, seen, now)


def _decide(record: Record, seen: Observation, now: datetime) -> Decision:
    if seen.agent_down:
        # Not the appliance's fault and nothing to decide on: keep the state,
        # say why, and look again on the next wake. Never a step towards ERROR,
        # and an operator's rebuild request waits for the agent.
        reason = str(seen.failure)
        return Decision(replace(record, last_error=reason, retry_at=now + BACKOFF_BASE))
    decision = _decide_known(record, seen, now)
    if seen.rebuild_requested:
        # Rebuilt, counted as failed, or moot (no appliance is wanted any more).
        return replace(decision, rebuild_handled=True)
    return decision


def _decide_known(record: Record, seen: Observation, now: datetime) -> Decision:
    if seen.desired_hash is None:
        return _deleting(record, seen, now) if not seen.exists else _idle(record, seen, now)
    if record.removing:
        # A removal was failing, and now an appliance is wanted again: its
        # failures say nothing about running one. Start afresh.
        fresh = Record(state=State.CONFIGURING, applied_hash=record.applied_hash)
        decision = _decide_known(fresh, seen, now)
        wanted = f"{record.state} -> configuring: an appliance is wanted again"
        return replace(decision, events=(wanted, *decision.events))
    state = record.state
    if seen.rebuild_requested:
        fresh = Record(state=State.REBUILDING, applied_hash=record.applied_hash)
        asked = f"{state} -> rebuilding: an operator asked for a rebuild"
        if seen.failure is not None:  # nothing valid to rebuild with: count it, keep what runs
            failed = _failed(fresh, str(seen.failure), now)
            return replace(failed, events=(asked, *failed.events))
        return Decision(
            fresh, (Command(Action.REBUILD, "an operator asked for a rebuild"),), (asked,)
        )
    if seen.failure is not None:
        if state is State.ERROR:  # already given up: keep the newest reason, quietly
            return Decision(replace(record, last_error=str(seen.failure)))
        return _failed(record, str(seen.failure), now)
    running = seen.present and seen.observed_hash == seen.desired_hash
    if running and not seen.problems:
        return _active(record, seen)
    if state is State.ERROR:
        return Decision(record)
    if record.retry_at is not None and now < record.retry_at:
        return Decision(record)  # backing off
    if not seen.present:
        # Never applied: a new router's, or one that ran nothing until now
        # (no ports: active without an appliance), is made, not missing.
        never = state is State.ACTIVE and record.applied_hash is None
        if state in (State.CREATING, State.BOOTING) or never:
            return _move(record, State.BOOTING, Action.PUSH, "creating the appliance")
        return _move(record, State.REBUILDING, Action.PUSH, "the appliance is missing")
    if seen.problems:
        problems = "; ".join(seen.problems)
        if state in (State.DEGRADED, State.REBUILDING) and running:
            # A push did not repair it: count a failure and start from scratch.
            failed = _failed(record, f"still unhealthy after a repair: {problems}", now)
            if failed.record.state is State.ERROR:
                return failed
            return _move(
                failed.record, State.REBUILDING, Action.REBUILD, f"unhealthy: {problems}", failed
            )
        return _move(record, State.DEGRADED, Action.PUSH, f"unhealthy: {problems}")
    return _move(record, State.CONFIGURING, Action.PUSH, "the config changed")


def _idle(record: Record, seen: Observation, now: datetime) -> Decision:
    """A router without ports (or down) runs no appliance; one left over is removed."""
    if seen.failure is not None:  # the DELETE failed: the appliance may well still run
        return _removal_failed(record, State.CONFIGURING, str(seen.failure), now)
    if record.retry_at is not None and now < record.retry_at:
        return Decision(record)  # backing off
    if seen.present:
        if record.state is State.ERROR:
            return _retry_from_error(record, "retrying: the router has no ports left")
        return _move(record, State.CONFIGURING, Action.DELETE, "the router has no ports left")
    became = Record(state=State.ACTIVE)
    if record == became:
        return Decision(record)
    if record.state is State.ACTIVE and record.applied_hash is None:
        return Decision(became)  # only the leftovers of a failure cleared
    return Decision(became, events=(f"{record.state} -> active: no ports, no appliance",))


def _active(record: Record, seen: Observation) -> Decision:
    settled = record.retry_at is None and record.last_error is None and record.attempts == 0
    if record.state is State.ACTIVE and record.applied_hash == seen.desired_hash and settled:
        return Decision(record)
    became = replace(
        record,
        state=State.ACTIVE,
        attempts=0,
        retry_at=None,
        last_error=None,
        applied_hash=seen.desired_hash,
    )
    if record.state is State.ACTIVE and record.applied_hash == seen.desired_hash:
        return Decision(became)  # only the leftovers of a failure cleared
    return Decision(became, events=(f"{record.state} -> active: running config {_short(seen)}",))


def _deleting(record: Record, seen: Observation, now: datetime) -> Decision:
    if record.state not in (State.DELETING, State.ERROR):
        # Entering: earlier failures were about running it, not removing it.
        entered = replace(record, state=State.DELETING, attempts=0, retry_at=None)
        decision = _deleting(entered, seen, now)
        return replace(decision, events=(f"{record.state} -> deleting", *decision.events))
    if seen.failure is not None:  # never forgotten on a failure: it may well still run
        return _removal_failed(record, State.DELETING, str(seen.failure), now)
    if record.retry_at is not None and now < record.retry_at:
        return Decision(record)  # backing off
    if not seen.present:
        return Decision(record, (Command(Action.FORGET, "what it served is gone"),))
    if record.state is State.ERROR:
        return _retry_from_error(record, "retrying the delete")
    return Decision(
        replace(record, retry_at=None),
        (Command(Action.DELETE, "what it served is gone (a router deleted, a DHCP port)"),),
    )


def _removal_failed(record: Record, state: State, error: str, now: datetime) -> Decision:
    """A DELETE (or the command before it) failed: back off, count, end in
    ERROR. From ERROR (every wake retries) only the newest reason is kept."""
    if record.state is State.ERROR:
        return Decision(replace(record, last_error=error, removing=True))
    return _failed(replace(record, state=state, removing=True), error, now)


def _retry_from_error(record: Record, reason: str) -> Decision:
    """A removal that ended in ERROR is tried again on every wake, quietly."""
    return Decision(replace(record, retry_at=None), (Command(Action.DELETE, reason),))


def _failed(record: Record, error: str, now: datetime) -> Decision:
    attempts = record.attempts + 1
    if attempts >= MAX_ATTEMPTS:
        became = replace(record, state=State.ERROR, attempts=attempts, retry_at=None)
        became = replace(became, last_error=error)
        return Decision(
            became, events=(f"{record.state} -> error after {attempts} failures: {error}",)
        )
    wait = backoff(attempts)
    became = replace(record, attempts=attempts, retry_at=now + wait, last_error=error)
    return Decision(
        became,
        events=(f"attempt {attempts} failed ({error}); retrying in {wait.total_seconds():g}s",),
    )


def _move(
    record: Record, state: State, action: Action, reason: str, after: Decision | None = None
) -> Decision:
    """Issue `action` in `state`. The command clears `retry_at`, unless it
    comes `after` a counted failure: that back-off delays the next attempt."""
    events = list(after.events) if after is not None else []
    events.append(f"{record.state} -> {state}: {reason}" if state != record.state else reason)
    retry_at = record.retry_at if after is not None else None
    return Decision(
        replace(record, state=state, retry_at=retry_at), (Command(action, reason),), tuple(events)
    )


def _short(seen: Observation) -> str:
    return (seen.desired_hash or "")[:12]
