"""`astara cleanup --offline`: wipe a host's objects under a prefix with the
server and agent stopped, through the real CLI, and never under a live agent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import astara
from astara.linux import cleanup, netns
from astara.testing.agent import AgentProcess, unique_prefix
from astara.testing.lab import Lab
from astara.testing.net import wait_until
from tests.root.conftest import MAC, router_config

pytestmark = pytest.mark.root

SOURCE = Path(astara.__file__).resolve().parents[1]


def astara_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed `astara` console script, running this checkout's code."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "astara"), *args],
        env={**os.environ, "PYTHONPATH": str(SOURCE), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_offline_cleanup_refuses_under_a_live_agent_and_wipes_after_a_crash(
    tmp_path: Path,
) -> None:
    agent = AgentProcess(tmp_path)
    try:
        lab = Lab(agent.start(), agent.prefix)
        for network in ("ext", "n1", "n2", "n6"):
            lab.network(network, external=network == "ext")
        lab.router("r1", router_config())
        lab.workload("w1", "n1", MAC["w1"], dhcp=True)
        dnsmasq = lab.client.get_appliance("r1")["daemons"]["dnsmasq"]["pid"]
        assert dnsmasq is not None and _alive(dnsmasq)
        before = cleanup.leftovers(agent.prefix)
        assert before["namespaces"] and before["etc_netns"] and before["run_dir"]
        stored = tmp_path / "agent"
        assert (stored / "networks").is_dir() and (stored / "appliances").is_dir()

        refused = astara_cli(
            "cleanup", "--offline", "--prefix", agent.prefix, "--state-dir", str(tmp_path)
        )
        assert refused.returncode == 1
        assert len(refused.stdout.strip().splitlines()) == 1, refused.stdout
        assert "still runs" in refused.stdout and str(agent.process.pid) in refused.stdout
        assert cleanup.leftovers(agent.prefix) == before
        assert (stored / "networks").is_dir()

        agent.kill()  # SIGKILL: the agent leaves everything behind
        assert netns.exists(f"{agent.prefix}-fabric") and _alive(dnsmasq)

        wiped = astara_cli(
            "cleanup", "--offline", "--prefix", agent.prefix, "--state-dir", str(tmp_path)
        )
        assert wiped.returncode == 0, wiped.stdout + wiped.stderr
        assert f"removed namespace {agent.prefix}-appliance-r1" in wiped.stdout
        assert f"removed /etc/netns/{agent.prefix}-w1" in wiped.stdout
        assert f"removed {stored / 'networks'}" in wiped.stdout
        assert not any(cleanup.leftovers(agent.prefix).values())
        assert not _alive(dnsmasq)
        assert not any((stored / kind).exists() for kind in ("networks", "ports", "appliances"))

        again = astara_cli("cleanup", "--offline", "--prefix", agent.prefix)
        assert again.returncode == 0 and "nothing to remove" in again.stdout
    finally:
        agent.remove_everything()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--offline"], "--offline needs --prefix"),
        (["--offline", "--prefix", "Bad-Prefix"], "prefix 'Bad-Prefix' must be"),
        (["--prefix", "ast"], "go with --offline"),
    ],
)
def test_offline_cleanup_usage_errors_are_one_line(args: list[str], message: str) -> None:
    result = astara_cli("cleanup", *args)
    assert result.returncode == 1
    assert message in result.stdout and len(result.stdout.strip().splitlines()) == 1


def test_a_daemon_whose_namespace_was_deleted_under_it_is_found_and_stopped() -> None:
    """A daemon outlives `ip netns del` of its namespace (a test, or an
    operator, deleting it while the agent holds the appliance): cleanup finds
    it by its command line, which names a file in the prefix's runtime
    directory, and stops it."""
    prefix = unique_prefix("c")
    name = f"{prefix}-orphan"
    marker = str(cleanup.default_run_dir(prefix) / "appliances" / "r2" / "daemon.conf")
    subprocess.run(["ip", "netns", "add", name], check=True)
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", name, sys.executable, "-c", "import time; time.sleep(120)", marker]
    )
    try:
        # In the namespace once `ip netns exec` has exec'd the program
        # (deleting the name before would fail the exec, not orphan it).
        wait_until(
            lambda: "time.sleep" in Path(f"/proc/{daemon.pid}/cmdline").read_text(errors="replace"),
            10,
            0.01,
            "the daemon to run in its namespace",
        )
        subprocess.run(["ip", "netns", "del", name], check=True)  # it runs on, in no netns
        assert daemon.poll() is None
        found = cleanup.leftovers(prefix)
        assert found["namespaces"] == [] and len(found["processes"]) == 1
        assert marker in found["processes"][0]
        cleanup.remove_all(prefix)
        assert daemon.wait(timeout=10) is not None
        assert not any(cleanup.leftovers(prefix).values())
    finally:
        if daemon.poll() is None:
            daemon.kill()
        if netns.exists(name):
            subprocess.run(["ip", "netns", "del", name], check=False)
