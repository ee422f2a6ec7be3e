"""The operator CLI against a live agent."""

from __future__ import annotations

import pytest

from astara.testing.agent import AgentProcess
from astara.testing.lab import Lab
from tests.component.test_cli import astara
from tests.root.conftest import build_standard

pytestmark = pytest.mark.root


def test_agent_commands_show_observed_state_and_rendered_config(
    lab: Lab, agent: AgentProcess
) -> None:
    build_standard(lab)
    health = astara("agent", "health", "--agent", agent.listen)
    assert health.returncode == 0 and f'"prefix": "{agent.prefix}"' in health.stdout

    listing = astara("agent", "appliances", "--agent", agent.listen)
    assert listing.returncode == 0
    row = next(line for line in listing.stdout.splitlines() if " r1 " in line)
    assert "active" in row

    rendered = astara("agent", "rendered", "r1", "--agent", agent.listen)
    assert rendered.returncode == 0
    assert "map floating_dnat" in rendered.stdout
    assert "dhcp-range=set:subnet0,10.1.0.0,static" in rendered.stdout

    missing = astara("agent", "rendered", "nope", "--agent", agent.listen)
    assert missing.returncode == 1 and "404" in missing.stdout
