"""The agent's fencing token and self-fencing clock, without root: epochs
are files, and the watchdog's decision is a function of the time given."""

from __future__ import annotations

from pathlib import Path

import pytest

from astara.agent.service import Agent, AgentSettings, NotFound, StaleEpoch


def test_epochs_are_kept_per_appliance_across_deletes_and_restarts(tmp_path: Path) -> None:
    agent = Agent(AgentSettings(state_dir=tmp_path))
    assert agent.epoch("r1") == 0
    # A DELETE of an appliance this host does not have still records its epoch.
    with pytest.raises(NotFound):
        agent.delete_appliance("r1", epoch=5)
    assert agent.epoch("r1") == 5
    with pytest.raises(StaleEpoch) as refused:
        agent.delete_appliance("r1", epoch=4)
    assert (refused.value.epoch, refused.value.seen) == (4, 5)
    restarted = Agent(AgentSettings(state_dir=tmp_path))
    assert restarted.epoch("r1") == 5
    assert restarted.epoch("r2") == 0
    with pytest.raises(StaleEpoch):
        restarted.delete_appliance("r1")  # a push without an epoch is epoch 0


def test_fencing_waits_for_the_bound_and_fences_once_per_outage(tmp_path: Path) -> None:
    agent = Agent(AgentSettings(state_dir=tmp_path, fence_after_s=1.0))
    agent.note_contact()
    start = agent._last_contact
    assert not agent.check_fence(start + 0.5)
    assert agent.fenced_since is None
    assert agent.check_fence(start + 1.5)
    assert agent.health()["fenced"] is True
    assert not agent.check_fence(start + 3.0)  # once per outage
    # Nothing was withdrawn (no appliances): contact ends the fence.
    agent.note_contact()
    assert agent.health()["fenced"] is False


def test_no_fencing_while_a_request_runs_or_when_off(tmp_path: Path) -> None:
    agent = Agent(AgentSettings(state_dir=tmp_path, fence_after_s=1.0))
    with agent.request():
        assert not agent.check_fence(agent._last_contact + 10)
    off = Agent(AgentSettings(state_dir=tmp_path / "off"))
    assert not off.check_fence(off._last_contact + 1000)


def test_fenced_appliances_survive_a_restart(tmp_path: Path) -> None:
    agent = Agent(AgentSettings(state_dir=tmp_path, fence_after_s=1.0))
    agent.fenced_ids.add("r1")
    assert agent.check_fence(agent._last_contact + 2)
    restarted = Agent(AgentSettings(state_dir=tmp_path, fence_after_s=1.0))
    assert restarted.fenced_ids == {"r1"}
    restarted.note_contact()  # contact alone does not unfence an appliance: a PUT does
    health = restarted.health()
    assert health["fenced"] is True and health["fenced_appliances"] == ["r1"]
