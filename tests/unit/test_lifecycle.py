"""Every transition of the router lifecycle (pure: no I/O, time a parameter)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from astara.appliance.schema import ApplianceConfig
from astara.orchestrator.failures import (
    Failure,
    FailureKind,
    config_invalid,
    from_agent,
    unreachable,
)
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


def refused(status_code: int) -> Failure:
    return Failure(FailureKind.REFUSED, status_code=status_code)


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
        (State.ERROR, seen(failure=refused(500)), State.ERROR, []),
    ],
)
def test_transitions(
    state: State, observation: Observation, after: State, commands: list[Action]
) -> None:
    # As it was running it (the hash it applied): only a router that never
    # ran an appliance has none.
    decision = step(Record(state=state, applied_hash=OLD), observation, NOW)
    assert decision.record.state is after
    assert actions(decision) == commands
    if after is not state:
        assert decision.events, "every change of state says why"


def test_a_router_that_ran_nothing_is_created_not_rebuilt() -> None:
    """Made without ports (active, no appliance), then given one: its
    first push creates the appliance; nothing went missing."""
    idle = step(Record(state=State.CONFIGURING), seen(desired_hash=None, present=False), NOW)
    assert idle.record == Record(state=State.ACTIVE)
    decision = step(idle.record, seen(present=False, observed_hash=None), NOW)
    assert decision.record.state is State.BOOTING
    assert actions(decision) == [Action.PUSH]
    assert decision.events == ("active -> booting: creating the appliance",)


def test_failures_back_off_exponentially_then_end_in_error() -> None:
    record = Record(state=State.BOOTING)
    waits = []
    now = NOW
    for attempt in range(1, MAX_ATTEMPTS):
        decision = step(record, seen(present=False, failure=refused(422)), now)
        record = decision.record
        assert record.attempts == attempt and record.last_error == "agent refused (422)"
        assert record.retry_at is not None
        waits.append(record.retry_at - now)
        # Before the back-off ends nothing is tried; after it, a push.
        assert actions(step(record, seen(present=False, observed_hash=None), now)) == []
        now = record.retry_at
        assert actions(step(record, seen(present=False, observed_hash=None), now)) == [Action.PUSH]
    assert waits == [timedelta(seconds=s) for s in (1, 2, 4, 8)]
    final = step(record, seen(present=False, failure=refused(422)), now)
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
        decision = step(record, seen(failure=unreachable("connection refused")), NOW)
        record = decision.record
        assert decision.commands == ()
    assert record.state is State.ACTIVE and record.attempts == 0
    assert (
        record.last_error == "agent unreachable: connection refused"
        and record.retry_at == NOW + timedelta(seconds=1)
    )
    # Back: the leftovers are cleared, quietly.
    back = step(record, seen(), NOW + timedelta(seconds=2))
    assert back.record == Record(state=State.ACTIVE, applied_hash=WANT) and back.events == ()


GONE = {"desired_hash": None, "exists": False}  # the router was deleted through the API
IDLE = {"desired_hash": None}  # the router has no ports (or is down): no appliance


@pytest.mark.parametrize("path", [GONE, IDLE], ids=["deleted", "idle"])
def test_a_failed_removal_backs_off_ends_in_error_and_is_still_retried(
    path: dict[str, object],
) -> None:
    """A DELETE the agent refuses is retried after a back-off (never at once,
    never in a hot loop), ends in ERROR with the reason, and from ERROR every
    wake (the resync's) tries it again."""
    record = Record(state=State.DELETING if path is GONE else State.CONFIGURING)
    now = NOW
    for attempt in range(1, MAX_ATTEMPTS):
        decision = step(record, seen(**path, failure=refused(500)), now)
        record = decision.record
        assert actions(decision) == [], "no immediate retry"
        assert record.attempts == attempt and record.last_error == "agent refused (500)"
        assert record.retry_at == now + backoff(attempt)
        # Woken before the back-off ends (an event): nothing is tried.
        assert actions(step(record, seen(**path), now)) == []
        now = record.retry_at
        retried = step(record, seen(**path), now)
        assert actions(retried) == [Action.DELETE] and retried.record.retry_at is None
        record = retried.record
    final = step(record, seen(**path, failure=refused(500)), now)
    assert final.record.state is State.ERROR and final.record.retry_at is None
    assert any("error after 5 failures" in e for e in final.events)
    # From ERROR: retried on the next wake, quietly; a failure only updates the reason.
    again = step(final.record, seen(**path), now)
    assert actions(again) == [Action.DELETE] and again.events == ()
    still = step(again.record, seen(**path, failure=refused(503)), now)
    assert still.record.state is State.ERROR and still.events == ()
    assert still.record.last_error == "agent refused (503)"
    # Once it succeeds: forgotten (deleted) or active without an appliance (idle).
    done = step(still.record, seen(**path, present=False, observed_hash=None), now)
    if path is GONE:
        assert actions(done) == [Action.FORGET]
    else:
        assert done.record == Record(state=State.ACTIVE) and actions(done) == []


def test_an_error_while_removing_does_not_hold_once_an_appliance_is_wanted_again() -> None:
    """A router set down (no appliance wanted) whose removal failed until
    ERROR, then set up again: that ERROR was about removing, so the new config
    is pushed rather than waiting for `astara router rebuild`."""
    record = Record(state=State.CONFIGURING, applied_hash=OLD)
    now = NOW
    for _ in range(MAX_ATTEMPTS):
        record = step(record, seen(**IDLE, failure=refused(500)), now).record
        now = record.retry_at or now
    assert record.state is State.ERROR and record.removing
    wanted = step(record, seen(observed_hash=OLD), now)
    assert actions(wanted) == [Action.PUSH]
    assert wanted.record.state is State.CONFIGURING and wanted.record.attempts == 0
    assert not wanted.record.removing
    assert wanted.events[0] == "error -> configuring: an appliance is wanted again"
    # An ERROR from running one is left to the operator, as before.
    ran = Record(state=State.ERROR, attempts=MAX_ATTEMPTS, applied_hash=OLD)
    assert actions(step(ran, seen(observed_hash=OLD), now)) == []


@pytest.mark.parametrize("state", [State.ACTIVE, State.CONFIGURING, State.DELETING])
@pytest.mark.parametrize("path", [GONE, IDLE], ids=["deleted", "idle"])
def test_a_failure_is_never_taken_for_the_appliance_being_gone(
    state: State, path: dict[str, object]
) -> None:
    """After a failed DELETE the agent was not asked again: `present` is
    False but says nothing. The router is neither forgotten nor reported
    ACTIVE/DOWN while its appliance may still forward."""
    record = Record(state=state, applied_hash=WANT)
    failed = seen(**path, present=False, observed_hash=None, failure=refused(500))
    decision = step(record, failed, NOW)
    assert actions(decision) == []
    assert decision.record.state is not State.ACTIVE
    assert decision.record.last_error == "agent refused (500)"
    assert decision.record.retry_at == NOW + backoff(1)


def test_a_router_deleted_while_paused_is_removed() -> None:
    """The tenant's delete wins over the operator's pause: nothing else would
    ever remove the appliance."""
    record = Record(state=State.PAUSED, applied_hash=WANT)
    decision = step(record, seen(**GONE, paused=True), NOW)
    assert actions(decision) == [Action.DELETE] and decision.record.state is State.DELETING
    assert decision.events == ("paused -> deleting",)
    gone = step(decision.record, seen(**GONE, paused=True, present=False), NOW)
    assert actions(gone) == [Action.FORGET]


def test_a_rebuild_requested_while_the_agent_is_down_is_kept_for_later() -> None:
    record = Record(state=State.ACTIVE, applied_hash=WANT)
    down = step(record, seen(rebuild_requested=True, failure=unreachable("timed out")), NOW)
    assert actions(down) == [] and not down.rebuild_handled
    paused = step(record, seen(rebuild_requested=True, paused=True), NOW)
    assert not paused.rebuild_handled
    back = step(down.record, seen(rebuild_requested=True), NOW)
    assert actions(back) == [Action.REBUILD] and back.rebuild_handled
    # Deleted meanwhile: nothing to rebuild, the request is done with.
    assert step(record, seen(**GONE, rebuild_requested=True), NOW).rebuild_handled


def test_a_command_clears_a_stale_retry() -> None:
    """A retry_at left in the past would make the poller wake the router
    again and again: any command issued clears it."""
    stale = NOW - timedelta(seconds=5)
    for record, observation in [
        (Record(state=State.ACTIVE, retry_at=stale), seen(observed_hash=OLD)),
        (Record(state=State.ACTIVE, retry_at=stale), seen(present=False, observed_hash=None)),
        (Record(state=State.ACTIVE, retry_at=stale), seen(**IDLE)),
        (Record(state=State.ACTIVE, retry_at=stale), seen(**GONE)),
        (Record(state=State.DELETING, retry_at=stale), seen(**GONE)),
    ]:
        decision = step(record, observation, NOW)
        assert decision.commands and decision.record.retry_at is None, (record, observation)
    idle = step(Record(state=State.ACTIVE, retry_at=stale), seen(**IDLE, present=False), NOW)
    assert idle.record == Record(state=State.ACTIVE)


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
    failure=st.sampled_from([None, refused(500), unreachable("x"), Failure(FailureKind.INVALID)]),
    exists=st.booleans(),
    paused=st.booleans(),
    rebuild_requested=st.booleans(),
)


retries = st.sampled_from([None, NOW - timedelta(seconds=1), NOW, NOW + timedelta(seconds=1)])


@given(states, st.integers(0, MAX_ATTEMPTS), retries, observations)
def test_step_is_total_and_consistent(
    state: State, attempts: int, retry_at: datetime | None, seen_: Observation
) -> None:
    """Any state, any observation: a decision. Paused does nothing (unless the
    router is deleted); ACTIVE means the appliance runs the current config (or
    none is needed); no push without a desired config; a failure never makes
    a router forgotten; and no decision leaves a retry due without acting (the
    poller would wake it again and again)."""
    record = Record(state=state, attempts=attempts, retry_at=retry_at)
    decision = step(record, seen_, NOW)
    if seen_.paused and seen_.exists:
        assert decision.commands == () and decision.record.state is State.PAUSED
    if seen_.failure is not None:
        assert Action.FORGET not in actions(decision)
    due = decision.record.retry_at is not None and decision.record.retry_at <= NOW
    if due and not decision.commands:
        assert decision.record.state in (State.ERROR, State.PAUSED)
    if decision.record.state is State.ACTIVE and record.state is not State.ACTIVE:
        running = seen_.present and seen_.observed_hash == seen_.desired_hash
        assert (running and not seen_.problems) or (seen_.desired_hash is None and seen_.exists)
    if seen_.agent_down and not (seen_.paused and seen_.exists) and state is not State.PAUSED:
        assert decision.commands == () and decision.record.state is state
    if seen_.desired_hash is None:
        assert not {Action.PUSH, Action.REBUILD} & set(actions(decision))
    assert step(replace(decision.record), seen_, NOW) is not None


# --- failures: typed kinds, readable text ----------------------------------------------------


@pytest.mark.parametrize(
    ("status_code", "body", "kind", "text"),
    [
        (500, {"detail": "boom"}, FailureKind.REFUSED, "agent refused (500): boom"),
        (
            503,
            "down for maintenance",
            FailureKind.REFUSED,
            "agent refused (503): down for maintenance",
        ),
        (
            422,
            {"detail": [{"loc": ["interfaces"], "msg": "too many"}]},
            FailureKind.INVALID,
            "invalid appliance config: the agent rejected it",
        ),
        (
            503,
            {"detail": {"kind": "missing_tool", "tool": "radvd"}},
            FailureKind.MISSING_TOOL,
            "missing tool on the agent's host: radvd",
        ),
        (
            500,
            {"detail": {"kind": "command_failed", "message": "nft -f exited 1: no such map"}},
            FailureKind.REFUSED,
            "agent refused (500): command_failed: nft -f exited 1: no such map",
        ),
    ],
)
def test_an_agent_answer_becomes_a_typed_failure(
    status_code: int, body: object, kind: FailureKind, text: str
) -> None:
    failure = from_agent(status_code, body)
    assert failure.kind is kind and failure.status_code == status_code
    assert str(failure).startswith(text)
    assert not failure.agent_down


def test_a_missing_tool_says_which() -> None:
    failure = from_agent(500, {"detail": {"kind": "missing_tool", "tool": "dnsmasq"}})
    assert failure.tool == "dnsmasq"


def test_only_an_unreachable_agent_is_the_agent_being_down() -> None:
    assert seen(failure=unreachable("timed out")).agent_down
    for failure in (refused(500), Failure(FailureKind.INVALID, "x"), None):
        assert not seen(failure=failure).agent_down


def test_a_config_that_cannot_be_made_is_an_invalid_config_failure() -> None:
    with pytest.raises(ValidationError) as raised:
        ApplianceConfig.model_validate({"interfaces": []})
    failure = config_invalid(raised.value)
    assert failure.kind is FailureKind.INVALID and not failure.agent_down
    assert str(failure).startswith("invalid appliance config: interfaces: ")
