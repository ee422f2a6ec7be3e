"""Several hosts on one machine, with packets: each simulated host is a
namespace with its own agent (run inside it) and an underlay address on a
shared underlay switch. Networks span hosts over VXLAN, reach the outside
through a flat segment on a physnet interface; an agent refuses stale pushes
(epochs) and withdraws its appliances when nobody talks to it (fencing).

Everything lives in namespaces under a unique prefix; the addresses (TEST-NET
ranges) exist only there and nothing is added to the root namespace.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from astara.agent.client import AgentClient, AgentError
from astara.linux import cleanup, netlink, netns
from astara.linux.run import run
from astara.naming import Names
from astara.testing.agent import AgentProcess, unique_prefix
from astara.testing.net import Capture, never_pings, ping, sh, wait_for_ping, wait_until
from tests.root.conftest import running_agent

pytestmark = pytest.mark.root

UNDERLAY = {"h1": "192.0.2.1", "h2": "192.0.2.2", "h3": "192.0.2.3"}
VNI = 100


@dataclass
class Fabric:
    """Three hosts (h1 and h2 with underlay addresses, h3 without an agent's
    underlay setting), an outside namespace behind h1's physnet interface."""

    prefix: str
    agents: dict[str, AgentProcess] = field(default_factory=dict)

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def client(self, host: str) -> AgentClient:
        client = self.agents[host].client
        assert client is not None
        return client

    def workload_ns(self, host: str, name: str) -> str:
        return f"{self.agents[host].prefix}-{name}"


def ip(netns_name: str, *argv: str) -> None:
    run(["ip", *argv], netns=netns_name)


def build_hosts(fabric: Fabric, tmp_path: Path) -> None:
    switch = fabric.ns("sw")
    netns.create(switch)
    ip(switch, "link", "add", "br0", "type", "bridge")
    ip(switch, "link", "set", "br0", "up")
    for index, (host, address) in enumerate(UNDERLAY.items(), start=1):
        name = fabric.ns(host)
        netns.create(name)
        # Made inside the switch's namespace, the peer straight in the host's.
        ip(switch, "link", "add", f"s{index}", "type", "veth", "peer", "name", "ul0", "netns", name)
        ip(switch, "link", "set", f"s{index}", "master", "br0", "up")
        ip(name, "addr", "add", f"{address}/24", "dev", "ul0")
        ip(name, "link", "set", "ul0", "up")
    # h1's provider-network NIC, wired to an outside host.
    outside = fabric.ns("out")
    netns.create(outside)
    ip(
        fabric.ns("h1"),
        "link",
        "add",
        "phy0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        outside,
    )
    ip(outside, "addr", "add", "203.0.113.1/24", "dev", "eth0")
    ip(outside, "link", "set", "eth0", "up")
    for host in ("h1", "h2", "h3"):
        args = ["--physnet", "public=phy0"] if host == "h1" else []
        if host != "h3":
            args += ["--underlay-address", UNDERLAY[host]]
        agent = AgentProcess(tmp_path / host, netns=fabric.ns(host), args=args)
        fabric.agents[host] = agent
        agent.start()


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fabric]:
    fabric = Fabric(unique_prefix("u"))
    try:
        build_hosts(fabric, tmp_path_factory.mktemp("hosts"))
        yield fabric
    finally:
        for agent in fabric.agents.values():
            agent.remove_everything()
        cleanup.remove_all(fabric.prefix)
        for agent in fabric.agents.values():
            assert not any(cleanup.leftovers(agent.prefix).values())
        assert not any(cleanup.leftovers(fabric.prefix).values())


@pytest.fixture(autouse=True)
def clean_hosts(request: pytest.FixtureRequest) -> Iterator[None]:
    """The lab is shared by the module: whatever a test leaves on its hosts
    (it failed half-way, say) is removed before the next test starts, so one
    failure is reported once and not again by every test after it."""
    yield
    if "fabric" not in request.fixturenames:
        return
    fabric: Fabric = request.getfixturevalue("fabric")
    for host in fabric.agents:
        client = fabric.client(host)
        for port in client.ports():
            client.delete_port(port["id"])
        for network in client.networks(observe=False):
            client.delete_network(network["id"])


def put_network(client: AgentClient, network_id: str, **spec: Any) -> Any:
    return client.request("PUT", f"/v1/networks/{network_id}", spec)


def vxlan(remotes: list[str], vni: int = VNI) -> dict[str, Any]:
    return {"type": "vxlan", "vni": vni, "remotes": remotes}


def plug(fabric: Fabric, host: str, port_id: str, network_id: str, mac: str, address: str) -> str:
    namespace = fabric.workload_ns(host, port_id)
    fabric.client(host).put_port(
        port_id,
        {"network_id": network_id, "mac": mac, "netns": namespace, "addresses": [address]},
    )
    return namespace


def test_a_network_spans_two_hosts_over_vxlan(fabric: Fabric) -> None:
    h1, h2 = fabric.client("h1"), fabric.client("h2")
    seen = put_network(h1, "t1", mtu=1450, segment=vxlan([UNDERLAY["h2"]]))
    put_network(h2, "t1", mtu=1450, segment=vxlan([UNDERLAY["h1"]]))
    link = seen["segment_link"]
    assert link["kind"] == "vxlan" and link["present"] and link["on_bridge"] and link["up"]
    assert (link["vni"], link["local"], link["port"]) == (VNI, UNDERLAY["h1"], 4789)
    assert link["remotes"] == [UNDERLAY["h2"]]
    assert seen["mtu"] == 1450 and link["mtu"] == 1450
    # The device's socket is in the host's namespace: it sends from the underlay.
    names = Names(fabric.agents["h1"].prefix)
    assert link["name"] == names.vxlan("t1") and link["name"] in seen["members"]

    w1 = plug(fabric, "h1", "w1", "t1", "fa:16:3e:09:00:01", "10.9.0.1/24")
    w2 = plug(fabric, "h2", "w2", "t1", "fa:16:3e:09:00:02", "10.9.0.2/24")
    with (
        Capture(fabric.ns("h1"), "ul0", "udp port 4789") as underlay,
        Capture(fabric.ns("h3"), "ul0", "udp port 4789") as bystander,
    ):
        wait_for_ping(w1, "10.9.0.2")
        assert ping(w2, "10.9.0.1")
        # h1's own encapsulation, sent from its underlay address to h2's VXLAN
        # port (the capture sees h2's replies too: match the direction).
        packet = underlay.wait_for(f"> {UNDERLAY['h2']}.4789: VXLAN")
        assert f": {UNDERLAY['h1']}." in packet and f"vni {VNI}" in packet
        # Flooding (the first ARP) went to the remotes only: h3 saw nothing.
        assert bystander.lines == []

    # h1 now floods to h3 instead of h2: the flood entry for h2 is gone, and
    # with it the path to w2 (its learned MAC went with its remote).
    seen = put_network(h1, "t1", mtu=1450, segment=vxlan([UNDERLAY["h3"]]))
    assert seen["segment_link"]["remotes"] == [UNDERLAY["h3"]]
    fdb = sh(names.fabric_netns, ["bridge", "fdb", "show", "dev", link["name"]])
    assert f"dst {UNDERLAY['h2']}" not in fdb and f"00:00:00:00:00:00 dst {UNDERLAY['h3']}" in fdb
    sh(w1, ["ip", "neigh", "flush", "all"])
    with (
        # From h1 only: h2 still floods to h1 (its own remotes are unchanged).
        Capture(fabric.ns("h2"), "ul0", f"udp port 4789 and src {UNDERLAY['h1']}") as old,
        Capture(fabric.ns("h3"), "ul0", f"udp port 4789 and src {UNDERLAY['h1']}") as new,
    ):
        assert never_pings(w1, "10.9.0.2", attempts=2)
        new.wait_for(f"vni {VNI}")
        assert old.lines == []

    # Back to h2, and the path returns.
    put_network(h1, "t1", mtu=1450, segment=vxlan([UNDERLAY["h2"]]))
    wait_for_ping(w1, "10.9.0.2")

    # A changed VNI replaces the device: h1 on VNI 101 no longer reaches h2 on 100.
    seen = put_network(h1, "t1", mtu=1450, segment=vxlan([UNDERLAY["h2"]], vni=101))
    assert seen["segment_link"]["vni"] == 101
    sh(w1, ["ip", "neigh", "flush", "all"])
    assert never_pings(w1, "10.9.0.2", attempts=2)
    put_network(h1, "t1", mtu=1450, segment=vxlan([UNDERLAY["h2"]]))
    wait_for_ping(w1, "10.9.0.2")

    # Deleting the network removes its VXLAN device with the bridge.
    for host, port in (("h1", "w1"), ("h2", "w2")):
        fabric.client(host).delete_port(port)
        fabric.client(host).delete_network("t1")
    for host in ("h1", "h2"):
        with netlink.netns(fabric.ns(host)) as ns:
            assert netlink.links_with_prefix(ns, fabric.agents[host].prefix) == []


def test_a_flat_segment_reaches_the_outside_through_the_physnet(fabric: Fabric) -> None:
    h1 = fabric.client("h1")
    names = Names(fabric.agents["h1"].prefix)
    seen = put_network(h1, "pub", segment={"type": "flat", "physnet": "public"})
    link = seen["segment_link"]
    assert link == {**link, "kind": "physnet", "name": "phy0", "physnet": "public"}
    assert link["present"] and link["on_bridge"] and link["up"]
    with netlink.netns(fabric.ns("h1")) as host:
        assert netlink.link_index(host, "phy0") is None  # moved into the fabric
    w = plug(fabric, "h1", "wp", "pub", "fa:16:3e:09:01:01", "203.0.113.10/24")
    wait_for_ping(w, "203.0.113.1")
    assert ping(fabric.ns("out"), "203.0.113.10")

    # One flat network per physnet on a host.
    with pytest.raises(AgentError) as refused:
        put_network(h1, "pub2", segment={"type": "flat", "physnet": "public"})
    assert refused.value.status_code == 409

    h1.delete_port("wp")
    h1.delete_network("pub")
    # The host's NIC is back in the host's namespace, not deleted.
    with netlink.netns(fabric.ns("h1")) as host:
        assert netlink.link_index(host, "phy0") is not None
    if netns.exists(names.fabric_netns):
        with netlink.netns(names.fabric_netns) as fabric_ns:
            assert netlink.link_index(fabric_ns, "phy0") is None


@pytest.mark.parametrize(
    ("host", "segment", "message"),
    [
        ("h1", {"type": "flat", "physnet": "elsewhere"}, "physnet 'elsewhere' is not on this host"),
        ("h3", vxlan([UNDERLAY["h1"]]), "without --underlay-address"),
    ],
)
def test_a_segment_the_host_cannot_make_is_422(
    fabric: Fabric, host: str, segment: dict[str, Any], message: str
) -> None:
    client = fabric.client(host)
    with pytest.raises(AgentError) as refused:
        put_network(client, "nope", segment=segment)
    assert refused.value.status_code == 422
    assert message in refused.value.body["detail"]
    assert client.networks() == []


def test_health_reports_the_hosts_uplinks(fabric: Fabric) -> None:
    health = fabric.client("h1").health()
    assert health["underlay_address"] == UNDERLAY["h1"]
    assert health["physnets"] == {"public": "phy0"}
    assert health["availability_zone"] == "nova"
    assert (health["fenced"], health["fence_after_s"]) == (False, None)  # unix socket: off


# --- epochs and fencing (one agent in the root namespace's view) --------------------------

EXTERNAL_MAC = "fa:16:3e:09:02:01"


def small_router(external_address: str = "198.51.100.2/24") -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": "router",
        "interfaces": [
            {
                "mac": EXTERNAL_MAC,
                "network_id": "ext",
                "role": "external",
                "addresses": [external_address],
            },
            {
                "mac": "fa:16:3e:09:02:02",
                "network_id": "n1",
                "role": "internal",
                "addresses": ["10.1.0.1/24"],
            },
        ],
    }


def refused_as_stale(call: Any, epoch: int, seen: int) -> None:
    with pytest.raises(AgentError) as refused:
        call()
    assert refused.value.status_code == 409
    assert refused.value.body == {"detail": {"kind": "stale_epoch", "epoch": epoch, "seen": seen}}


def test_stale_pushes_are_refused_and_change_nothing(tmp_path: Path) -> None:
    with contextmanager(running_agent)(tmp_path) as agent:
        client = agent.client
        assert client is not None
        client.put_network("ext")
        client.put_network("n1")
        first = client.put_appliance("r1", small_router(), epoch=2)
        assert first["epoch"] == 2
        refused_as_stale(
            lambda: client.put_appliance("r1", small_router("198.51.100.3/24"), epoch=1), 1, 2
        )
        refused_as_stale(lambda: client.delete_appliance("r1", epoch=1), 1, 2)
        observed = client.get_appliance("r1")
        assert (observed["generation"], observed["epoch"]) == (first["generation"], 2)
        inside = f"{agent.prefix}-appliance-r1"
        assert "198.51.100.2/24" in sh(inside, ["ip", "-4", "addr"])
        assert [a["epoch"] for a in client.appliances(observe=False)] == [2]

        # The newest epoch seen survives a restart and a delete.
        agent.stop()
        client = agent.start()
        refused_as_stale(lambda: client.put_appliance("r1", small_router(), epoch=1), 1, 2)
        client.put_appliance("r1", small_router(), epoch=2)  # the same epoch is fine
        client.delete_appliance("r1", epoch=3)
        refused_as_stale(lambda: client.put_appliance("r1", small_router(), epoch=2), 2, 3)
        assert not netns.exists(inside)
        client.put_appliance("r1", small_router(), epoch=4)
        client.delete_appliance("r1", epoch=4)


def answering_in_contact(listen: str, netns_name: str, address: str) -> None:
    """Wait for `address` to answer while another client keeps in contact
    with the agent (a failed ping takes longer than the fencing bound)."""
    done = threading.Event()

    def poll() -> None:
        with AgentClient(listen) as client:
            while not done.wait(0.2):
                client.health()

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        wait_for_ping(netns_name, address)
    finally:
        done.set()
        poller.join()


def test_an_agent_without_contact_withdraws_its_appliances(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path, args=["--fence-after", "1"])
    try:
        client = agent.start()
        assert client.health()["fence_after_s"] == 1.0
        client.put_network("ext")
        client.put_network("n1")
        outside = f"{agent.prefix}-outside"
        client.put_port(
            "outside",
            {
                "network_id": "ext",
                "mac": "fa:16:3e:09:02:10",
                "netns": outside,
                "addresses": ["198.51.100.1/24"],
            },
        )
        client.put_appliance("r1", small_router(), epoch=1)
        answering_in_contact(agent.listen, outside, "198.51.100.2")
        fenced_at = time.monotonic()
        # No requests from here on: the appliance stops answering outside.
        wait_until(
            lambda: not ping(outside, "198.51.100.2", timeout_s=0.5),
            timeout_s=15,
            what="the fenced router to stop answering",
        )
        assert time.monotonic() - fenced_at >= 1.0
        health = client.health()
        assert health["fenced"] is True and health["fenced_appliances"] == ["r1"]
        assert health["fenced_since"] is not None
        observed = client.get_appliance("r1")
        assert observed["fenced"] is True
        assert any("fenced since" in problem for problem in observed["problems"])
        # Contact alone (those requests) does not bring it back, a PUT does,
        # even of the same config.
        assert never_pings(outside, "198.51.100.2", attempts=2)
        answer = client.put_appliance("r1", small_router(), epoch=1)
        assert answer["fenced"] is False
        answering_in_contact(agent.listen, outside, "198.51.100.2")
        health = client.health()
        assert (health["fenced"], health["fenced_appliances"]) == (False, [])
        log = (tmp_path / "agent.log").read_text()
        assert "WARNING" in log and "fenced: no request" in log and "unfenced" in log
    finally:
        agent.remove_everything()
        assert not any(cleanup.leftovers(agent.prefix).values())
