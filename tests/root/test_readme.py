"""The README's walkthrough, run as written against a live agent (only the
socket path and the prefix are swapped for the test's own)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from astara.linux import cleanup
from astara.testing.agent import AgentProcess

pytestmark = pytest.mark.root

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough() -> str:
    text = README.read_text()
    section = text.split("## The agent by hand", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the README has no walkthrough"
    return match.group(1)


def test_readme_walkthrough_runs(agent: AgentProcess) -> None:
    script = (
        walkthrough()
        .replace("var/agent.sock", str(agent.socket))
        .replace("ast-", f"{agent.prefix}-")
        .replace(".venv/bin/astara", str(Path(__file__).resolve().parents[2] / ".venv/bin/astara"))
    )
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "10.0.0.10/24" in result.stdout  # the DHCP lease, shown by `ip addr`
    assert "router1" in result.stdout and "active" in result.stdout
    assert "snat ip to 198.51.100.2" in result.stdout
    assert cleanup.leftovers(agent.prefix)["namespaces"] == []
