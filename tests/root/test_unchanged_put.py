"""An unchanged PUT (the config in force, the appliance as its last apply
left it) answers without validating, rendering or listing anything; any
drift the cheap observation sees sends it through a full apply, which
repairs it."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from astara.agent.service import Agent, AgentSettings
from astara.appliance import apply as apply_module
from astara.appliance.schema import ApplianceConfig
from astara.linux import cleanup, nft
from astara.linux.run import run
from astara.model.fabric import NetworkSpec
from astara.testing.agent import unique_prefix
from astara.testing.net import wait_until
from tests.root.conftest import MAC, router_config

pytestmark = pytest.mark.root


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    agent = Agent(AgentSettings(state_dir=tmp_path, prefix=unique_prefix()))
    try:
        for network in ("ext", "n1", "n2", "n6"):
            agent.put_network(network, NetworkSpec(external=network == "ext"))
        yield agent
    finally:
        cleanup.remove_all(agent.names.prefix)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often the expensive steps ran: validation, rendering, listing."""
    counted: dict[str, int] = {"validate": 0, "render": 0, "list": 0}

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counted[name] += 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        apply_module, "validate_semantics", counting("validate", apply_module.validate_semantics)
    )
    monkeypatch.setattr(apply_module, "render", counting("render", apply_module.render))
    monkeypatch.setattr(nft, "list_table", counting("list", nft.list_table))
    return counted


def test_an_unchanged_put_does_nothing_unless_something_drifted(
    agent: Agent, calls: dict[str, int]
) -> None:
    config = ApplianceConfig.model_validate(router_config())
    new, first, _ = agent.put_appliance("r1", config, body_digest="body-1")
    assert new and first.changed
    namespace = agent.names.appliance_netns("r1")
    generation = agent.appliances.status("r1").generation
    calls.update(validate=0, render=0, list=0)

    _, again, observed = agent.put_appliance("r1", config)
    assert (again.changed, again.actions) == (False, [])
    assert observed["state"] == "active", observed["problems"]
    found = agent.put_unchanged("r1", "body-1")
    assert found is not None and found[1]["state"] == "active"
    assert agent.put_unchanged("r1", "another body") is None
    assert calls == {"validate": 0, "render": 0, "list": 0}

    # An interface set down by hand: the same PUT converges in full.
    external = f"ext{MAC['router_ext'].replace(':', '')}"[:15]
    run(["ip", "link", "set", external, "down"], netns=namespace)
    assert agent.put_unchanged("r1", "body-1") is None
    _, repaired, observed = agent.put_appliance("r1", config)
    assert repaired.actions and calls["render"] == 1, repaired.actions
    assert observed["state"] == "active", observed["problems"]

    # dnsmasq killed: started again by the same PUT.
    pid = observed["daemons"]["dnsmasq"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: agent.appliances.observe("r1")["daemons"]["dnsmasq"]["pid"] is None)
    _, restarted, observed = agent.put_appliance("r1", config)
    assert "dnsmasq started" in " ".join(restarted.actions), restarted.actions
    assert observed["daemons"]["dnsmasq"]["running"]
    assert agent.appliances.status("r1").generation == generation
