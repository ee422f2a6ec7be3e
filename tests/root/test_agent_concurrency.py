"""The agent's create in parallel: networks made side by side (each holds
its own lock, not the whole fabric), namespaces made and set by a thread
entering them, and commands forked from inside a namespace."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from astara.agent.service import Agent, AgentSettings, Conflict
from astara.appliance.schema import ApplianceConfig
from astara.linux import cleanup, netlink, netns
from astara.linux.run import run
from astara.model.fabric import NetworkSpec
from astara.naming import Names
from astara.testing.agent import unique_prefix
from astara.testing.net import wait_for_ping

pytestmark = pytest.mark.root


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    prefix = unique_prefix()
    made = Agent(
        AgentSettings(state_dir=tmp_path / "state", prefix=prefix, run_dir=tmp_path / "run")
    )
    try:
        yield made
    finally:
        cleanup.remove_all(prefix)
    assert not any(cleanup.leftovers(prefix).values())


def test_networks_put_side_by_side_each_get_their_bridge(agent: Agent) -> None:
    ids = [f"n{i}" for i in range(12)]
    barrier = threading.Barrier(len(ids))

    def put(network_id: str) -> bool:
        barrier.wait()  # all at once, the fabric namespace included
        return agent.put_network(network_id, NetworkSpec(mtu=1400))

    with ThreadPoolExecutor(len(ids)) as pool:
        assert all(pool.map(put, ids))
    names = Names(agent.settings.prefix)
    with netlink.netns(names.fabric_netns) as fabric:
        for network_id in ids:
            state = netlink.link_state(fabric, names.bridge(network_id))
            assert state is not None and state.mtu == 1400 and state.up
    assert agent.store.ids("networks") == sorted(ids)
    assert netns.names().count(names.fabric_netns) == 1


def test_the_same_network_put_at_once_is_new_once(agent: Agent) -> None:
    barrier = threading.Barrier(8)

    def put(_: int) -> bool:
        barrier.wait()
        return agent.put_network("same", NetworkSpec())

    with ThreadPoolExecutor(8) as pool:
        news = list(pool.map(put, range(8)))
    assert news.count(True) == 1  # one made it; the others found it made
    names = Names(agent.settings.prefix)
    with netlink.netns(names.fabric_netns) as fabric:
        assert netlink.link_state(fabric, names.bridge("same")) is not None
    assert agent.network("same") == NetworkSpec()


def test_an_mtu_change_under_a_user_is_still_refused(agent: Agent) -> None:
    agent.put_network("n1", NetworkSpec())
    agent.put_appliance("r1", _dhcp_only("n1"))
    with pytest.raises(Conflict):
        agent.put_network("n1", NetworkSpec(mtu=1400))
    assert agent.put_network("n1", NetworkSpec()) is False  # the same spec: fine


def _dhcp_only(network_id: str) -> ApplianceConfig:
    return ApplianceConfig.model_validate(
        {
            "schema_version": 1,
            "kind": "dhcp",
            "forwarding": False,
            "interfaces": [
                {
                    "mac": "fa:16:3e:00:09:01",
                    "network_id": network_id,
                    "role": "internal",
                    "addresses": ["10.9.0.2/24"],
                }
            ],
            "subnets": [
                {"cidr": "10.9.0.0/24", "interface_mac": "fa:16:3e:00:09:01", "enable_dhcp": True}
            ],
        }
    )


def test_a_namespace_is_made_and_set_without_commands_and_once() -> None:
    name = f"{unique_prefix()}-made"
    host_forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    barrier = threading.Barrier(6)

    def create(_: int) -> bool:
        barrier.wait()
        return netns.create(name, {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"})

    try:
        with ThreadPoolExecutor(6) as pool:
            made = list(pool.map(create, range(6)))
        assert made.count(True) == 1
        assert "LOOPBACK,UP" in run(["ip", "-n", name, "link", "show", "lo"]).stdout
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            assert run(["sysctl", "-n", key], netns=name).stdout.strip() == "1"
        wait_for_ping(name, "127.0.0.1")
        # The visiting thread left the host's own settings alone.
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == host_forwarding
        # A namespace left half-made (loopback down) is set again.
        run(["ip", "-n", name, "link", "set", "lo", "down"])
        assert netns.create(name) is False
        assert "LOOPBACK,UP" in run(["ip", "-n", name, "link", "show", "lo"]).stdout
        with pytest.raises(OSError, match=r"net\.ipv4\.no_such_thing"):
            netns.set_sysctls(name, {"net.ipv4.no_such_thing": "1"})
    finally:
        netns.delete(name)
    assert not netns.exists(name)


def test_commands_forked_from_inside_a_namespace_run_there(tmp_path: Path) -> None:
    name = f"{unique_prefix()}-fork"
    netns.create(name)
    try:
        run(
            ["ip", "link", "add", "only-here", "type", "veth", "peer", "name", "peer-here"],
            netns=name,
        )
        # `ip` is forked from inside (NETNS_ONLY), `cat` through `ip netns exec`:
        # both see the namespace.
        assert "only-here" in run(["ip", "-br", "link"], netns=name).stdout
        assert "only-here" in run(["cat", "/proc/net/dev"], netns=name).stdout
        assert "only-here" not in Path("/proc/net/dev").read_text()
        missing = run(["ip", "link"], netns=f"{name}-none", check=False)
        assert missing.returncode != 0 and "Cannot open network namespace" in missing.stderr
    finally:
        netns.delete(name)
