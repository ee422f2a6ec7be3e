"""A host without a tool: the agent says so in its health, refuses what needs
the tool with a typed error naming it (before anything changes), and serves
what does not need it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from astara.agent.client import AgentClient, AgentError
from astara.appliance.checks import TOOLS
from astara.linux import cleanup, netns
from astara.naming import Names
from astara.orchestrator.failures import from_agent
from astara.testing.agent import AgentProcess
from tests.root.conftest import router_config

pytestmark = pytest.mark.root


@pytest.fixture
def without_dnsmasq(tmp_path: Path) -> Iterator[AgentProcess]:
    """An agent whose PATH holds every tool it runs but dnsmasq."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in TOOLS:
        if name != "dnsmasq":
            found = shutil.which(name)
            assert found is not None, f"{name} must be installed for this test"
            (tools / name).symlink_to(found)
    process = AgentProcess(tmp_path / "state", env={**os.environ, "PATH": str(tools)})
    try:
        process.start()
        yield process
    finally:
        process.remove_everything()
        assert not any(cleanup.leftovers(process.prefix).values())


def _without_dhcp(config: dict[str, Any]) -> dict[str, Any]:
    subnets = [{**s, "enable_dhcp": False} for s in config["subnets"]]
    return {**config, "subnets": subnets, "dhcp_hosts": []}


def test_health_lists_found_and_missing_tools(agent: AgentProcess) -> None:
    assert agent.client is not None
    health = agent.client.health()
    assert health["status"] == "ok"
    assert health["tools"]["missing"] == {}
    assert set(health["tools"]["found"]) == set(TOOLS)
    assert health["tools"]["found"]["dnsmasq"]["version"]


def test_a_missing_tool_is_named_and_refused_before_anything_changes(
    without_dnsmasq: AgentProcess,
) -> None:
    client: AgentClient | None = without_dnsmasq.client
    assert client is not None
    health = client.health()
    assert health["status"] == "degraded"
    assert list(health["tools"]["missing"]) == ["dnsmasq"]
    assert "DHCP" in health["tools"]["missing"]["dnsmasq"]
    assert health["tools"]["found"]["nft"]["version"]

    for network in ("ext", "n1", "n2", "n6"):
        client.put_network(network, external=network == "ext")
    with pytest.raises(AgentError) as refused:
        client.put_appliance("r1", router_config())
    assert refused.value.status_code == 503
    detail = refused.value.body["detail"]
    assert detail["kind"] == "missing_tool" and detail["tool"] == "dnsmasq"
    assert "dnsmasq is not installed" in detail["message"]
    assert not netns.exists(Names(without_dnsmasq.prefix).appliance_netns("r1"))
    assert client.appliances(observe=False) == []
    # What the orchestrator records as the router's last error names the tool.
    recorded = str(from_agent(refused.value.status_code, refused.value.body))
    assert "dnsmasq" in recorded and "not installed" in recorded

    # A router without DHCP needs no dnsmasq: it applies.
    applied = client.put_appliance("r1", _without_dhcp(router_config()))
    assert applied["state"] == "active", applied
    assert applied["daemons"]["radvd"]["running"] is True
    assert netns.exists(Names(without_dnsmasq.prefix).appliance_netns("r1"))

    # Turning DHCP on later is refused the same way, and the router keeps its config.
    with pytest.raises(AgentError) as again:
        client.put_appliance("r1", router_config())
    assert again.value.status_code == 503 and again.value.body["detail"]["tool"] == "dnsmasq"
    assert client.get_appliance("r1")["config_hash"] == applied["config_hash"]
