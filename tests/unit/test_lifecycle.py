"""Every transition of the router lifecycle (pure: no I/O, time a parameter)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from astara.orchestrator.lifecycle import (
    MAX_ATTEMPTS,
    Action,
    Observation,
    Record,
    State,
    backoff,
    step,
)

NOW = datetime(2026, 12, 2, 12, 0)
WANT = "a" * 64
OLD = "b" * 64


def seen(**fields: object) -> Observation:
    base: dict[str, object] = {"desired_hash": WANT, "present": True, "observed_hash": WANT}
    return Observation(**{**base, **fields})  # type: ignore[arg-type]


def actions(decision: object) -> list[Action]:
    return [c.action for c in decision.commands]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("state", "observation", "after", "commands"),
    [
        # Birth: nothing on the host, push; running its config: active.
        (State.CREATING, seen(present=False, observed_hash=None), State.BOOTING, [Action.PUSH]),
        (State.BOOTING, seen(present=False, observed_hash=None), State.BOOTING, [Action.PUSH]),
        (State.BOOTING, seen(), State.ACTIVE, []),
        # A changed config is pushed in place.
        (State.ACTIVE, seen(observed_hash=OLD), State.CONFIGURING, [Action.PUSH]),
        (State.CONFIGURING, seen(), State.ACTIVE, []),
        # A missing appliance is rebuilt by a push; a sick one repaired by a push.
        (State.ACTIVE, seen(present=False, observed_hash=None), State.REBUILDING, [Action.PUSH]),
        (State.ACTIVE, seen(problems=("dnsmasq down",)), State.DEGRADED, [Action.PUSH]),
        (State.REBUILDING, seen(), State.ACTIVE, []),
        # Still sick after the repair: start from scratch.
        (State.DEGRADED, seen(problems=("dnsmasq down",)), State.REBUILDING, [Action.REBUILD]),
        # Gone from the API: delete, then forget.
        (State.ACTIVE, seen(desired_hash=None, exists=False), State.DELETING, [Action.DELETE]),
        (
            State.DELETING,
            seen(desired_hash=None, exists=False, present=False),
            State.DELETING,
            [Action.FORGET],
        ),
        # No ports: no appliance, and that is active.
        (State.ACTIVE, seen(desired_hash=None), State.CONFIGURING, [Action.DELETE]),
        (State.CONFIGURING, seen(desired_hash=None, present=False), State.ACTIVE, []),
        # Paused: nothing happens whatever is seen; managed again: decide afresh.
        (State.ACTIVE, seen(paused=True, present=False), State.PAUSED, []),
        (State.PAUSED, seen(paused=True, present=False), State.PAUSED, []),
        (State.PAUSED, seen(present=False, observed_hash=None), State.REBUILDING, [Action.PUSH]),
        (State.PAUSED, seen(), State.ACTIVE, []),
        # An operator's rebuild works from any state, ERROR included.
        (State.ERROR, seen(rebuild_requested=True), State.REBUILDING, [Action.REBUILD]),
        (State.ACTIVE, seen(rebuild_requested=True), State.REBUILDING, [Action.REBUILD]),
        # ERROR stays put unless it is found healthy.
        (State.ERROR, seen(present=False, observed_hash=None), State.ERROR, []),
        (State.ERROR, seen(), State.ACTIVE, []),
        (State.ERROR, seen(failure="still broken"), State.ERROR, []),
    ],
)
def test_transitions(
    state: State, observation: Observation, after: State, commands: list[Action]
) -> None:
    decision = step(Record(state=state), observation, NOW)
    assert decision.record.state is after
    assert actions(decision) == commands
    if after is not state:
        assert decision.events, "every change of state says why"


def test_failures_back_off_exponentially_then_end_in_error() -> None:
    record = Record(state=State.BOOTING)
    waits = []
    now = NOW
    for attempt in range(1, MAX_ATTEMPTS):
        decision = step(record, seen(present=False, failure="agent refused (422)"), now)
        record = decision.record
        assert record.attempts == attempt and record.last_error == "agent refused (422)"
        assert record.retry_at is not None
        waits.append(record.retry_at - now)
        # Before the back-off ends nothing is tried; after it, a push.
        assert actions(step(record, seen(present=False, observed_hash=None), now)) == []
        now = record.retry_at
        assert actions(step(record, seen(present=False, observed_hash=None), now)) == [Action.PUSH]
    assert waits == [timedelta(seconds=s) for s in (1, 2, 4, 8)]
    final = step(record, seen(present=False, failure="agent refused (422)"), now)
    assert final.record.state is State.ERROR
    assert "error after 5 failures" in final.events[0]
    assert actions(step(final.record, seen(present=False, observed_hash=None), now)) == []


def test_success_clears_attempts_and_error() -> None:
    record = Record(state=State.BOOTING, attempts=3, retry_at=NOW, last_error="x")
    became = step(record, seen(), NOW).record
    assert became == Record(state=State.ACTIVE, applied_hash=WANT)


def test_an_unreachable_agent_never_counts_towards_error() -> None:
    record = Record(state=State.ACTIVE, applied_hash=WANT)
    for _ in range(MAX_ATTEMPTS * 2):
        decision = step(record, seen(agent_down=True, failure="agent unreachable"), NOW)
        record = decision.record
        assert decision.commands == ()
    assert record.state is State.ACTIVE and record.attempts == 0
    assert record.last_error == "agent unreachable" and record.retry_at == NOW + timedelta(
        seconds=1
    )
    # Back: the leftovers are cleared, quietly.
    back = step(record, seen(), NOW + timedelta(seconds=2))
    assert back.record == Record(state=State.ACTIVE, applied_hash=WANT) and back.events == ()


def test_a_failed_delete_is_retried_and_remembered() -> None:
    record = Record(state=State.DELETING)
    decision = step(record, seen(desired_hash=None, exists=False, failure="agent unreachable"), NOW)
    assert actions(decision) == [Action.DELETE]
    assert decision.record.last_error == "agent unreachable"


def test_an_unhealthy_appliance_that_never_heals_ends_in_error() -> None:
    record = Record(state=State.ACTIVE)
    now = NOW
    sick = seen(problems=("dnsmasq is not running",))
    for _ in range(20):
        decision = step(record, sick, now)
        record = decision.record
        if record.state is State.ERROR:
            break
        now = (record.retry_at or now) + timedelta(seconds=1)
    assert record.state is State.ERROR
    assert record.last_error is not None and "dnsmasq is not running" in record.last_error


def test_pausing_drops_a_pending_retry() -> None:
    """A paused router is not woken by a back-off that ran out meanwhile."""
    backing_off = Record(state=State.BOOTING, attempts=2, retry_at=NOW)
    assert step(backing_off, seen(paused=True), NOW).record.retry_at is None


def test_backoff_is_capped() -> None:
    assert backoff(1) == timedelta(seconds=1)
    assert backoff(30) == timedelta(seconds=60)


states = st.sampled_from(list(State))
observations = st.builds(
    Observation,
    desired_hash=st.sampled_from([None, WANT]),
    present=st.booleans(),
    observed_hash=st.sampled_from([None, WANT, OLD]),
    problems=st.sampled_from([(), ("x",)]),
    failure=st.sampled_from([None, "boom"]),
    exists=st.booleans(),
    paused=st.booleans(),
    rebuild_requested=st.booleans(),
    agent_down=st.booleans(),
)


@given(states, st.integers(0, MAX_ATTEMPTS), observations)
def test_step_is_total_and_consistent(state: State, attempts: int, seen_: Observation) -> None:
    """Any state, any observation: a decision. Paused does nothing; ACTIVE means
    the appliance runs the current config (or none is needed); no push without
    a desired config."""
    record = Record(state=state, attempts=attempts)
    decision = step(record, seen_, NOW)
    if seen_.paused:
        assert decision.commands == () and decision.record.state is State.PAUSED
    if decision.record.state is State.ACTIVE and record.state is not State.ACTIVE:
        running = seen_.present and seen_.observed_hash == seen_.desired_hash
        assert (running and not seen_.problems) or (seen_.desired_hash is None and seen_.exists)
    if seen_.agent_down and not seen_.paused and state is not State.PAUSED:
        assert decision.commands == () and decision.record.state is state
    if seen_.desired_hash is None:
        assert not {Action.PUSH, Action.REBUILD} & set(actions(decision))
    assert step(replace(decision.record), seen_, NOW) is not None
