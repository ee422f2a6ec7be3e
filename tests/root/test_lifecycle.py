"""Appliances across agent restarts, damage behind the agent's back, and delete."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from astara.linux import cleanup, netlink, netns
from astara.linux.run import in_netns
from astara.naming import appliance_interface
from astara.testing.agent import AgentProcess
from astara.testing.lab import Lab, eui64
from astara.testing.net import (
    WhoAmI,
    seen_source,
    sh,
    wait_for_ping,
    wait_until,
)
from tests.root.conftest import MAC, OUTSIDE, ROUTER_EXTERNAL, build_standard, router_config

pytestmark = pytest.mark.root


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_agent_restart_leaves_the_data_plane_alone(lab: Lab, agent: AgentProcess) -> None:
    build_standard(lab)
    before = lab.client.get_appliance("r1")
    wait_for_ping(lab.netns("w1"), "10.2.0.10")
    # A ping running across the crash and restart loses nothing: the data
    # plane does not depend on the agent process.
    pinger = subprocess.Popen(
        in_netns(lab.netns("w1"), ["ping", "-n", "-i", "0.05", "-c", "60", "10.2.0.10"]),
        stdout=subprocess.PIPE,
        text=True,
    )
    agent.kill()
    client = agent.start()
    lab.client = client
    output, _ = pinger.communicate(timeout=30)
    assert " 0% packet loss" in output, output

    after = client.get_appliance("r1")
    assert (after["generation"], after["config_hash"]) == (
        before["generation"],
        before["config_hash"],
    )
    assert after["daemons"] == before["daemons"]
    assert after["state"] == "active"
    again = client.put_appliance("r1", router_config())
    assert again["changed"] is False


def test_killed_dnsmasq_is_restarted_by_the_next_apply(lab: Lab) -> None:
    build_standard(lab)
    before = lab.client.get_appliance("r1")
    lab.client.hold_appliance("r1", True)  # or the agent's watch repairs it first
    os.kill(before["daemons"]["dnsmasq"]["pid"], signal.SIGKILL)
    degraded = wait_until(
        lambda: (a := lab.client.get_appliance("r1"))["state"] == "degraded" and a, what="degraded"
    )
    assert "dnsmasq is not running" in degraded["problems"]
    healed = lab.client.put_appliance("r1", router_config())
    assert healed["state"] == "active"
    assert healed["daemons"]["dnsmasq"]["pid"] not in (None, before["daemons"]["dnsmasq"]["pid"])
    assert healed["daemons"]["radvd"]["pid"] == before["daemons"]["radvd"]["pid"]
    # And it serves again: a new workload gets its lease.
    lab.client.delete_port("w2")
    lab.workload("w2", "n2", "fa:16:3e:00:03:10", dhcp=True)
    wait_for_ping(lab.netns("w2"), "10.1.0.10")


def test_a_lost_interface_is_replugged_and_served_again(lab: Lab) -> None:
    """An interface gone from the namespace is recreated by the next apply,
    and DHCP and router advertisements serve it again without a restart:
    dnsmasq and radvd follow their interfaces by name."""
    build_standard(lab)
    before = lab.client.get_appliance("r1")
    lost = appliance_interface("internal", MAC["router_n1"])
    lab.client.hold_appliance("r1", True)  # or the agent's watch repairs it first
    with netlink.netns(lab.router_netns("r1")) as inside:
        netlink.delete_link(inside, lost)
    assert f"interface {lost} is missing" in lab.client.get_appliance("r1")["problems"]
    healed = lab.client.put_appliance("r1", router_config())
    assert healed["state"] == "active"
    assert healed["daemons"] == before["daemons"]
    lab.client.delete_port("w1")
    lab.workload("w1", "n1", MAC["w1"], dhcp=True, slaac=True)
    slaac = f"{eui64('2001:db8:1::/64', MAC['w1'])}/64"
    wait_until(lambda: "10.1.0.10/24" in lab.client.get_port("w1")["addresses"], what="lease")
    wait_until(lambda: slaac in lab.client.get_port("w1")["addresses"], what="SLAAC address")
    wait_for_ping(lab.netns("w1"), "10.2.0.10")


def test_deleted_namespace_is_rebuilt_by_the_next_apply(lab: Lab) -> None:
    build_standard(lab)
    old = lab.client.get_appliance("r1")
    # A mark only the old namespace has (inode numbers are reused once freed).
    with netlink.netns(lab.router_netns("r1")) as inside:
        inside.link("add", ifname="oldmark", kind="veth", peer="oldmark1")
    lab.client.hold_appliance("r1", True)  # or the agent's watch repairs it first
    netns.delete(lab.router_netns("r1"))
    degraded = lab.client.get_appliance("r1")
    assert degraded["state"] == "degraded"
    assert f"namespace {lab.router_netns('r1')} is missing" in degraded["problems"]
    rebuilt = lab.client.put_appliance("r1", router_config())
    assert rebuilt["state"] == "active" and rebuilt["held"] is False
    with netlink.netns(lab.router_netns("r1")) as inside:
        assert netlink.link_index(inside, "oldmark") is None
    assert rebuilt["daemons"]["dnsmasq"]["pid"] != old["daemons"]["dnsmasq"]["pid"]
    with WhoAmI(lab.netns("outside")) as server:
        seen = wait_until(lambda: seen_source(lab.netns("w2"), OUTSIDE, server.port), what="SNAT")
    assert seen == ROUTER_EXTERNAL


def test_delete_leaves_nothing_behind(lab: Lab, agent: AgentProcess) -> None:
    build_standard(lab)
    appliance = lab.client.get_appliance("r1")
    daemon_pids = [d["pid"] for d in appliance["daemons"].values() if d["expected"]]
    dhcp_pid = lab.client.request("GET", "/v1/ports/w1")["dhcp_client"]["pid"]
    assert len(daemon_pids) == 2 and all(daemon_pids) and dhcp_pid  # dnsmasq, radvd

    for port in ("w1", "w2", "w6", "outside"):
        lab.client.delete_port(port)
    lab.client.delete_appliance("r1")
    for network in ("ext", "n1", "n2", "n6"):
        lab.client.delete_network(network)

    # No namespace, no /etc/netns entry, no process, no runtime file.
    leftovers = cleanup.leftovers(agent.prefix)
    assert leftovers["namespaces"] == []
    assert leftovers["etc_netns"] == []
    for pid in [*daemon_pids, dhcp_pid]:
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/cmdline").read_bytes() == b""
    run_dir = cleanup.default_run_dir(agent.prefix)
    assert [p for p in run_dir.rglob("*") if p.is_file()] == []
    assert _processes_mentioning(str(run_dir)) == []
    assert list((agent.state_dir / "agent").rglob("*.json")) == []
    assert lab.client.health()["counts"] == {"networks": 0, "ports": 0, "appliances": 0}


def test_hand_edited_ruleset_is_reported_and_repaired(lab: Lab) -> None:
    build_standard(lab)
    router, outside = lab.router_netns("r1"), lab.netns("outside")
    wait_until(lambda: "10.1.0.10/24" in lab.client.get_port("w1")["addresses"], what="w1's lease")
    with WhoAmI(lab.netns("w1")) as server:
        assert wait_until(lambda: seen_source(outside, "198.51.100.50", server.port)) == OUTSIDE
        element = "{ 198.51.100.50 }"
        sh(router, ["nft", "delete", "element", "inet", "astara", "floating_dnat", element])
        assert seen_source(outside, "198.51.100.50", server.port, timeout_s=2) is None

        drifted = lab.client.get_appliance("r1")
        assert "nftables table differs from the applied ruleset" in drifted["problems"]
        table_before = _table_handle(router)
        repaired = lab.client.put_appliance("r1", router_config())
        # Repaired by replacing the table (a new kernel object), not by patching it.
        assert _table_handle(router) != table_before
        assert repaired["state"] == "active"
        assert seen_source(outside, "198.51.100.50", server.port) == OUTSIDE


def test_a_port_whose_plug_was_cut_short_by_a_crash_is_still_removed(
    lab: Lab, agent: AgentProcess
) -> None:
    """The agent records what it is about to create before it acts, so a
    crash mid-plug does not turn the workload's namespace into an orphan."""
    import threading

    lab.network("lonely")
    workload = lab.netns("w")
    # No DHCP server on this network: the plug waits for a lease that never comes.
    body = {"network_id": "lonely", "mac": "fa:16:3e:00:07:10", "netns": workload, "dhcp": True}
    plugging = threading.Thread(
        target=lambda: _ignore_errors(lambda: lab.client.put_port("w", body))
    )
    plugging.start()
    wait_until(lambda: netns.exists(workload), what="the plug to begin")
    agent.kill()
    plugging.join(timeout=30)

    lab.client = agent.start()
    lab.client.delete_port("w")
    assert not netns.exists(workload)
    assert not Path(f"/etc/netns/{workload}").exists()


def _table_handle(netns_name: str) -> str:
    """The kernel's handle of the appliance's nftables table: replacing the
    table makes a new one, changing set elements keeps it."""
    listing = sh(netns_name, ["nft", "-a", "list", "table", "inet", "astara"])
    found = re.search(r"# handle (\d+)", listing)
    assert found, listing
    return found.group(1)


def _ignore_errors(call: Callable[[], object]) -> None:
    """Run `call`; the agent it talks to is killed under it on purpose."""
    with contextlib.suppress(Exception):
        call()
