"""The agent heals what is broken behind its back, without being asked:
a deleted namespace, a deleted veth, a killed daemon come back with no API
call, traffic flows again; a fenced appliance is let go, not rebuilt; and
watching costs no descriptor once an appliance is deleted."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from astara.agent.service import Agent, AgentSettings
from astara.appliance.schema import ApplianceConfig
from astara.linux import cleanup, netlink, netns
from astara.model.fabric import NetworkSpec, PortSpec
from astara.naming import Names
from astara.testing.agent import AgentProcess, unique_prefix
from astara.testing.lab import Lab
from astara.testing.net import wait_for_ping, wait_until
from tests.root.conftest import MAC, OUTSIDE, ROUTER_EXTERNAL

pytestmark = pytest.mark.root

ROUTER_INSIDE = "10.1.0.1"
# Generous: the machine is small and shared; the time is a benchmark figure
# (bench/watch.py), never asserted.
DEADLINE_S = 60.0


def small_router() -> dict[str, Any]:
    """A router between a provider network and one tenant subnet (DHCP on,
    so dnsmasq runs), SNAT to the outside."""
    return {
        "schema_version": 1,
        "kind": "router",
        "interfaces": [
            {
                "mac": MAC["router_ext"],
                "network_id": "ext",
                "role": "external",
                "addresses": [f"{ROUTER_EXTERNAL}/24"],
            },
            {
                "mac": MAC["router_n1"],
                "network_id": "n1",
                "role": "internal",
                "addresses": [f"{ROUTER_INSIDE}/24"],
            },
        ],
        "subnets": [
            {
                "cidr": "10.1.0.0/24",
                "interface_mac": MAC["router_n1"],
                "gateway_ip": ROUTER_INSIDE,
                "enable_dhcp": True,
            }
        ],
        "routes": [{"destination": "0.0.0.0/0", "nexthop": OUTSIDE}],
        "snat": {"enabled": True},
    }


def build(lab: Lab) -> str:
    """Networks, router r1, the outside host and workload w1; w1's namespace."""
    lab.network("ext", external=True)
    lab.network("n1")
    lab.router("r1", small_router())
    lab.workload("outside", "ext", MAC["outside"], addresses=(f"{OUTSIDE}/24",))
    w1 = lab.workload(
        "w1",
        "n1",
        MAC["w1"],
        addresses=("10.1.0.10/24",),
        routes=(("0.0.0.0/0", ROUTER_INSIDE),),
    )
    wait_for_ping(w1, OUTSIDE)  # through the router
    return w1


def repairs_counted(lab: Lab) -> float:
    text = lab.client.http.get("/metrics").text
    for line in text.splitlines():
        if line.startswith('astara_agent_appliance_repairs_total{outcome="repaired"}'):
            return float(line.split()[-1])
    return 0.0


def delete_namespace(name: str) -> None:
    """What an orphan cleaner does: kill what runs inside, `ip netns del`."""
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    for pid in map(int, pids.split()):
        os.kill(pid, signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], check=True)


def test_deleted_namespace_is_rebuilt_without_a_call(lab: Lab) -> None:
    w1 = build(lab)
    before = lab.client.get_appliance("r1")
    delete_namespace(lab.router_netns("r1"))

    # No call to the agent until traffic through the rebuilt router is back
    # (the old namespace may forward a moment longer: the kernel tears a
    # namespace down in the background).
    namespace = lab.router_netns("r1")
    wait_until(lambda: netns.exists(namespace), DEADLINE_S, 0.05, "the namespace to be rebuilt")
    wait_for_ping(w1, OUTSIDE, DEADLINE_S)
    wait_for_ping(w1, ROUTER_INSIDE, DEADLINE_S)

    def repaired() -> Any:
        return lab.client.get_appliance("r1")["last_repair"]

    wait_until(repaired, DEADLINE_S, 0.1, "the repair to end")
    after = lab.client.get_appliance("r1")
    assert after["state"] == "active", after["problems"]
    # The config in force again: the same hash, no new generation.
    assert after["generation"] == before["generation"]
    assert after["config_hash"] == before["config_hash"]
    repair = after["last_repair"]
    assert repair["outcome"] == "repaired"
    assert f"namespace {lab.router_netns('r1')} is missing" in repair["problems"]
    assert "namespace" in repair["events"]
    assert repairs_counted(lab) >= 1


def test_namespace_deleted_under_its_daemon_is_rebuilt_with_it(lab: Lab) -> None:
    """`ip netns del` alone: dnsmasq still runs in the old namespace (and
    keeps it alive). The rebuilt appliance has its own dnsmasq; the old one
    is stopped, so the old namespace goes."""
    build(lab)
    router = lab.router_netns("r1")
    old = lab.client.get_appliance("r1")["daemons"]["dnsmasq"]["pid"]
    subprocess.run(["ip", "netns", "del", router], check=True)

    def repaired() -> Any:
        return lab.client.get_appliance("r1")["last_repair"]

    repair = wait_until(repaired, DEADLINE_S, 0.1, "a repair")
    assert repair["outcome"] == "repaired"
    after = lab.client.get_appliance("r1")
    assert after["state"] == "active", after["problems"]
    new = after["daemons"]["dnsmasq"]["pid"]
    assert new != old
    wait_until(lambda: not _alive(old), DEADLINE_S, 0.1, "the old dnsmasq to be gone")
    assert os.stat(f"/proc/{new}/ns/net").st_ino == os.stat(f"/run/netns/{router}").st_ino


def test_deleted_veth_is_rebuilt_without_a_call(lab: Lab, agent: AgentProcess) -> None:
    names = Names(agent.prefix)
    w1 = build(lab)
    fabric_end = names.appliance_fabric_link("r1", MAC["router_n1"])
    with netlink.netns(names.fabric_netns) as fabric:
        assert netlink.delete_link(fabric, fabric_end)

    wait_for_ping(w1, ROUTER_INSIDE, DEADLINE_S)
    wait_for_ping(w1, OUTSIDE, DEADLINE_S)

    repair = lab.client.get_appliance("r1")["last_repair"]
    assert repair["outcome"] == "repaired"
    assert f"fabric link {fabric_end} is missing" in repair["problems"]
    assert repair["actions"]

    # The external side too, from inside the router this time: the default
    # route went with the link and comes back with it.
    with netlink.netns(lab.router_netns("r1")) as inside:
        assert netlink.delete_link(inside, f"ext{MAC['router_ext'].replace(':', '')}")
    wait_for_ping(w1, OUTSIDE, DEADLINE_S)


def test_deleted_route_and_killed_dnsmasq_come_back(lab: Lab) -> None:
    w1 = build(lab)
    router = lab.router_netns("r1")
    subprocess.run(["ip", "-n", router, "route", "del", "default"], check=True)
    wait_for_ping(w1, OUTSIDE, DEADLINE_S)

    pid = lab.client.get_appliance("r1")["daemons"]["dnsmasq"]["pid"]
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        dnsmasq = lab.client.get_appliance("r1")["daemons"]["dnsmasq"]
        return bool(dnsmasq["running"] and dnsmasq["pid"] != pid)

    wait_until(restarted, DEADLINE_S, 0.2, "dnsmasq to run again")

    def reported() -> bool:
        repair = lab.client.get_appliance("r1")["last_repair"]
        return "dnsmasq is not running" in repair["problems"]

    wait_until(reported, DEADLINE_S, 0.1, "the repair to be reported")


def test_a_held_appliance_is_reported_not_repaired(lab: Lab) -> None:
    """While an operator debugs an appliance (held: `astara router debug`
    tells its agent), a fault is reported, not repaired; a PUT releases it."""
    w1 = build(lab)
    lab.client.hold_appliance("r1", True)
    assert lab.client.get_appliance("r1")["held"] is True
    delete_namespace(lab.router_netns("r1"))

    def reported() -> Any:
        return lab.client.get_appliance("r1")["last_repair"]

    repair = wait_until(reported, DEADLINE_S, 0.1, "the fault to be reported")
    assert repair["outcome"] == "held"
    assert f"namespace {lab.router_netns('r1')} is missing" in repair["problems"]
    assert not netns.exists(lab.router_netns("r1"))

    assert lab.router("r1", small_router())["held"] is False
    wait_for_ping(w1, OUTSIDE, DEADLINE_S)


def test_what_changed_while_held_is_put_right_when_released(lab: Lab) -> None:
    """A route deleted by hand while the appliance is held (the watch only
    reports it) comes back when the hold ends, whether an operator releases
    it or a PUT of the unchanged config does: neither trusts the cheap
    check, which reads no routes."""
    w1 = build(lab)
    router = lab.router_netns("r1")
    for release in ("hold", "put"):
        lab.client.hold_appliance("r1", True)
        subprocess.run(["ip", "-n", router, "route", "del", "default"], check=True)
        wait_until(
            lambda: (lab.client.get_appliance("r1")["last_repair"] or {}).get("outcome") == "held",
            DEADLINE_S,
            0.1,
            "the held fault to be reported",
        )
        if release == "hold":
            lab.client.hold_appliance("r1", False)
        else:
            assert lab.router("r1", small_router())["held"] is False

        def default_route() -> bool:
            shown = subprocess.run(
                ["ip", "-n", router, "route", "show", "default"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            return OUTSIDE in shown

        wait_until(default_route, DEADLINE_S, 0.1, f"the default route back ({release})")
        wait_for_ping(w1, OUTSIDE, DEADLINE_S)


def _fds(pid: int) -> list[str]:
    """What the process's descriptors are (`socket:`, `anon_inode:[pidfd]`,
    a path), without their numbers or inodes."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        found.append(target.split("[")[0] if target.startswith("socket:") else target)
    return sorted(found)


def test_deleted_appliances_leave_no_descriptor_behind(lab: Lab, agent: AgentProcess) -> None:
    assert agent.process is not None
    pid = agent.process.pid
    lab.network("ext", external=True)
    lab.network("n1")
    # One apply and delete first: what the agent opens once stays open.
    lab.router("warm", small_router())
    lab.client.delete_appliance("warm")
    baseline = _fds(pid)

    routers = [f"r{n}" for n in range(4)]
    for router in routers:
        lab.router(router, small_router())
    watching = _fds(pid)
    # A socket in each router's namespace and a pidfd for each one's dnsmasq.
    assert watching.count("anon_inode:[pidfd]") >= len(routers)
    assert watching.count("socket:") >= baseline.count("socket:") + len(routers)

    for router in routers:
        lab.client.delete_appliance(router)
        assert not netns.exists(lab.router_netns(router))
    wait_until(lambda: _fds(pid) == baseline, DEADLINE_S, 0.2, "the descriptors to be closed")


def daemons_of(prefix: str) -> list[str]:
    """Command lines of the processes left running for anything under `prefix`."""
    marker = f"/run/astara/{prefix}/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if entry.name.isdigit() and marker in cmdline:
            found.append(entry.name + ": " + cmdline.replace(b"\0", b" ").decode())
    return found


@pytest.fixture(autouse=True)
def nothing_left_running(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every daemon the test's agent started is gone after it (checked
    after the agent's own teardown)."""
    yield
    used = request.node.funcargs
    prefixes = {getattr(used.get(name), "prefix", None) for name in ("lab", "agent")}
    if "in_process" in used:
        prefixes.add(used["in_process"].names.prefix)
    for prefix in prefixes - {None}:
        assert daemons_of(prefix) == []


@pytest.fixture
def in_process(tmp_path: Path) -> Iterator[Agent]:
    """An Agent in this process (its watch inspectable), under a unique prefix."""
    agent = Agent(
        AgentSettings(state_dir=tmp_path / "agent", prefix=unique_prefix(), fence_after_s=1.0)
    )
    agent.start()
    agent.start_watching()
    try:
        yield agent
    finally:
        agent.stop_watching()
        cleanup.remove_all(agent.names.prefix)
        assert not any(cleanup.leftovers(agent.names.prefix).values())


def test_fenced_appliance_is_let_go_not_rebuilt(in_process: Agent) -> None:
    """A fenced appliance's links are down on purpose: a fault is reported,
    not repaired (rebuilding would bring it back onto the provider network).
    Its namespace, deleted, is let go: nothing keeps it (and its veths) alive."""
    agent = in_process
    names = agent.names
    agent.put_network("ext", NetworkSpec(external=True))
    agent.put_network("n1", NetworkSpec())
    agent.put_appliance("r1", ApplianceConfig.model_validate(small_router()))
    assert agent.watch is not None
    assert names.appliance_netns("r1") in agent.watch.status()["namespaces"]
    assert agent.check_fence(now=time.monotonic() + 60)  # no contact: fenced
    assert "r1" in agent.fenced_ids

    fabric_ends = [names.appliance_fabric_link("r1", MAC[m]) for m in ("router_ext", "router_n1")]
    delete_namespace(names.appliance_netns("r1"))

    def let_go() -> bool:
        # The veths die with the namespace, which dies once no one holds it.
        with netlink.netns(names.fabric_netns) as fabric:
            return all(netlink.link_index(fabric, end) is None for end in fabric_ends)

    wait_until(let_go, DEADLINE_S, 0.1, "the deleted namespace to be let go")

    def reported() -> dict[str, Any] | None:
        return agent.watch.last_repair("r1") if agent.watch else None

    repair = wait_until(reported, DEADLINE_S, 0.1, "the fault to be reported")
    assert repair["outcome"] == "deferred"
    assert f"namespace {names.appliance_netns('r1')} is missing" in repair["problems"]
    assert not netns.exists(names.appliance_netns("r1"))
    assert names.appliance_netns("r1") not in agent.watch.status()["namespaces"]

    # The PUT that unfences converges it, and the watch follows.
    agent.put_appliance("r1", ApplianceConfig.model_validate(small_router()))
    assert netns.exists(names.appliance_netns("r1"))
    assert names.appliance_netns("r1") in agent.watch.status()["namespaces"]
    agent.delete_appliance("r1")
    assert agent.watch.status()["namespaces"] == [names.fabric_netns]
    for network in ("ext", "n1"):
        agent.delete_network(network)
    wait_until(lambda: agent.watch and not agent.watch.status()["namespaces"], DEADLINE_S)


def test_own_applies_cause_no_repair(in_process: Agent) -> None:
    """Every apply causes events; none of them may look like drift."""
    agent = in_process
    agent.put_network("ext", NetworkSpec(external=True))
    agent.put_network("n1", NetworkSpec())
    agent.put_port(
        "w1",
        PortSpec.model_validate(
            {
                "network_id": "n1",
                "mac": MAC["w1"],
                "netns": f"{agent.names.prefix}-w1",
                "addresses": ["10.1.0.10/24"],
            }
        ),
    )
    config = small_router()
    for n in range(3):
        config["routes"][0]["destination"] = "0.0.0.0/0" if n % 2 == 0 else "192.0.2.0/24"
        agent.put_appliance("r1", ApplianceConfig.model_validate(config))
        agent.put_appliance("r2", ApplianceConfig.model_validate(config))
    assert agent.watch is not None
    # Wait out any check the applies could have caused.
    wait_until(lambda: agent.watch and agent.watch.status()["idle"], DEADLINE_S, 0.05)
    assert agent.watch.status()["repairs"] == 0
    assert agent.watch.last_repair("r1") is None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")
