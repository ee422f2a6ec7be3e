"""HA routers on three hosts, end to end, with real packets: a controller
and three hosts on one machine (astara.testing.deployment), an HA router
made through the Neutron API, its two members placed on two hosts, and the
workloads on the third, as far from the members as the lab allows.

One deployment is shared by the tests of this module, which run in order
and build on each other: the real CLI shows the pair; config changes keep
the active member; a partition of the HA network alone makes two actives
and the orchestrator demotes one; then the active member's host dies twice
(the lost member comes back as the standby on the remaining host between
the two) while a workload pings and two TCP connections, one through SNAT
and one through a floating IP, carry on. Nothing is added to the root
namespace; every address is in a documentation range inside the lab.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from astara.linux.run import run
from astara.testing.deployment import Deployment, deployment
from astara.testing.failover import Pinger, Stream
from astara.testing.hosts import OUTSIDE, bin_path, run_cli
from astara.testing.net import wait_for_ping, wait_until
from astara.testing.server import open_security_group

pytestmark = pytest.mark.root

W_SNAT, W_FLOATING = "10.1.0.12", "10.1.0.13"
VXLAN_PORT = 4789


@dataclass
class World:
    cloud: Deployment
    router_id: str
    subnet_id: str
    public_id: str
    workload_host: str
    w_snat: str  # namespaces
    w_floating: str
    w_floating_port: str
    floating_ip: str


def members(cloud: Deployment, router_id: str) -> dict[str, dict[str, Any]]:
    """The router's members as the operators' API shows them, by id."""
    shown = cloud.router(router_id)
    return {m["id"]: m for m in shown.get("members", [])}


def pair(cloud: Deployment, router_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(active, standby) when one of each runs its current config."""
    found = members(cloud, router_id)
    active = [m for m in found.values() if m["ha_state"] == "active" and m["state"] == "active"]
    standby = [m for m in found.values() if m["ha_state"] == "standby" and m["state"] == "active"]
    if len(active) == 1 and len(standby) == 1:
        return active[0], standby[0]
    return None


def settled(
    cloud: Deployment, router_id: str, timeout_s: float = 90
) -> tuple[dict[str, Any], dict[str, Any]]:
    found: tuple[dict[str, Any], dict[str, Any]] = wait_until(
        lambda: pair(cloud, router_id), timeout_s, 0.2, "an active and a standby member"
    )
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    state = tmp_path_factory.mktemp("ha-routers")
    with deployment(state, hosts=3, serve_args=["--resync-s", "5"]) as cloud:
        public, _ = cloud.public_network()
        network = cloud.create("networks", "network", name="n1")
        subnet = cloud.create(
            "subnets",
            "subnet",
            network_id=network["id"],
            cidr="10.1.0.0/24",
            ip_version=4,
            gateway_ip="10.1.0.1",
            enable_dhcp=False,
        )
        router = cloud.create(
            "routers",
            "router",
            name="r1",
            ha=True,
            external_gateway_info={"network_id": public["id"]},
        )
        cloud.api(
            "PUT",
            f"/v2.0/routers/{router['id']}/add_router_interface",
            {"subnet_id": subnet["id"]},
        )
        active, standby = settled(cloud, router["id"])
        # The workloads on the host with no member.
        workload_host = ({"h1", "h2", "h3"} - {active["host"], standby["host"]}).pop()
        reachable = open_security_group(cloud.create)
        namespaces, ports = {}, {}
        for name, address in (("snat", W_SNAT), ("floating", W_FLOATING)):
            port = cloud.create(
                "ports",
                "port",
                network_id=network["id"],
                name=name,
                fixed_ips=[{"subnet_id": subnet["id"], "ip_address": address}],
                security_groups=[reachable],
            )
            namespaces[name] = f"{cloud.host(workload_host).agent_prefix}-{name}"
            cloud.plug(port["id"], workload_host, namespaces[name])
            ports[name] = port
        # A static address: no DHCP here, the default route by hand.
        for name in namespaces.values():
            wait_until(lambda n=name: _has_link(n), 30, 0.2, f"{name} plugged")
            run(["ip", "-n", name, "route", "replace", "default", "via", "10.1.0.1"])
        floating = cloud.create(
            "floatingips",
            "floatingip",
            floating_network_id=public["id"],
            port_id=ports["floating"]["id"],
        )
        yield World(
            cloud,
            router["id"],
            subnet["id"],
            public["id"],
            workload_host,
            namespaces["snat"],
            namespaces["floating"],
            ports["floating"]["id"],
            floating["floating_ip_address"],
        )


def _has_link(namespace: str) -> bool:
    return run(["ip", "-n", namespace, "-br", "addr"], check=False).stdout.count("10.1.0.") > 0


def traffic_flows(world: World, timeout_s: float = 30) -> None:
    outside = world.cloud.lab.outside_netns
    wait_for_ping(world.w_snat, OUTSIDE, timeout_s)
    wait_for_ping(outside, world.floating_ip, timeout_s)


def flowing(stream: Stream, seconds: float = 1.0) -> bool:
    before = stream.received
    time.sleep(seconds)
    return stream.received - before > seconds * 100 / 2


def openstack(world: World, *args: str) -> Any:
    cloud = world.cloud
    argv = [bin_path("openstack"), "--os-token", cloud.token, "--os-endpoint", cloud.url]
    out = run_cli(cloud.lab.controller_netns, [*argv, *args, "-f", "json"]).stdout
    return json.loads(out)


def test_the_real_cli_shows_ha_and_the_active_host(world: World) -> None:
    active, standby = settled(world.cloud, world.router_id)
    assert active["host"] != standby["host"]  # anti-affinity
    assert openstack(world, "router", "show", world.router_id)["ha"] is True
    agents = openstack(world, "network", "agent", "list", "--router", world.router_id, "--long")
    states = {a["Host"]: a["HA State"] for a in agents}
    assert states == {active["host"]: "active", standby["host"]: "standby"}
    assert {a["Agent Type"] for a in agents} == {"L3 agent"}
    # The operators' CLI: both members, and what the active one runs.
    astara = [bin_path("astara"), "router", "show", world.router_id]
    where = ["--url", world.cloud.url, "--token", world.cloud.token]
    shown = json.loads(run_cli(world.cloud.lab.controller_netns, [*astara, *where]).stdout)
    assert {m["id"]: m["ha_state"] for m in shown["members"]} == {
        active["id"]: "active",
        standby["id"]: "standby",
    }
    assert shown["appliance_id"] == active["id"] and shown["host"] == active["host"]
    rendered = run_cli(world.cloud.lab.controller_netns, [*astara, "--rendered", *where]).stdout
    assert "vrrp_instance router" in rendered and "Sync {" in rendered
    traffic_flows(world)


def test_changes_keep_the_active_member_and_lose_no_ping(world: World) -> None:
    cloud = world.cloud
    active, _ = settled(cloud, world.router_id)
    traffic_flows(world)
    network = cloud.create("networks", "network", name="n2")
    subnet = cloud.create(
        "subnets", "subnet", network_id=network["id"], cidr="10.2.0.0/24", ip_version=4
    )
    with Pinger(world.w_snat, OUTSIDE) as pinger:
        time.sleep(0.5)
        start = pinger.mark()
        cloud.api(
            "PUT",
            f"/v2.0/routers/{world.router_id}/add_router_interface",
            {"subnet_id": subnet["id"]},
        )
        extra = cloud.create("floatingips", "floatingip", floating_network_id=world.public_id)
        settled(cloud, world.router_id)
        wait_until(
            lambda: (
                cloud.api("GET", f"/v2.0/routers/{world.router_id}")["router"]["status"] == "ACTIVE"
            ),
            60,
            0.2,
            "the router ACTIVE on its new config",
        )
        time.sleep(0.5)
        lost = pinger.lost(since=start)
    assert lost == 0
    assert settled(cloud, world.router_id)[0]["id"] == active["id"]
    cloud.api("DELETE", f"/v2.0/floatingips/{extra['id']}")


def ha_vni(world: World) -> int:
    """The VNI of the project's HA network (an admin sees it)."""
    networks = world.cloud.api(
        "GET", "/v2.0/networks?name=HA%20network%20project%20" + _project(world)
    )
    found = networks["networks"]
    assert len(found) == 1, found
    vni: int = found[0]["provider:segmentation_id"]
    return vni


def _project(world: World) -> str:
    router = world.cloud.api("GET", f"/v2.0/routers/{world.router_id}")["router"]
    project: str = router["project_id"]
    return project


def test_a_partition_of_the_ha_network_is_two_actives_until_one_is_demoted(world: World) -> None:
    cloud = world.cloud
    active, standby = settled(cloud, world.router_id)
    host = cloud.host(active["host"])
    vni = ha_vni(world)
    # The HA network's VXLAN packets dropped at one member's host, both
    # ways: nothing else is cut (the tenant networks, the controller).
    table = (
        "table inet hapart {\n"
        "\tchain out {\n\t\ttype filter hook output priority 0;\n"
        f"\t\tudp dport {VXLAN_PORT} @th,96,24 {vni} drop\n\t}}\n"
        "\tchain in {\n\t\ttype filter hook input priority 0;\n"
        f"\t\tudp dport {VXLAN_PORT} @th,96,24 {vni} drop\n\t}}\n"
        "}\n"
    )
    run(["ip", "netns", "exec", host.netns, "nft", "-f", "-"], input_text=table)
    try:
        # Two actives, seen, and the older epoch's member demoted.
        def demoted() -> bool:
            found = members(cloud, world.router_id)
            roles = sorted(m["ha_state"] or "" for m in found.values())
            return roles == ["active", "fault"]

        wait_until(demoted, 30, 0.2, "one member demoted")

        def told() -> list[str]:
            events = [e["message"] for e in cloud.router(world.router_id)["events"]]
            seen = any("two actives" in e for e in events)
            return events if seen and any("demoted on" in e for e in events) else []

        events = wait_until(told, 10, 0.2, "the history to say what happened")
        assert any("demoting" in e and "the older epoch" in e for e in events), events
        older = min((active, standby), key=lambda m: (m["epoch"], m["id"]))
        survivor = next(
            m for m in members(cloud, world.router_id).values() if m["ha_state"] == "active"
        )
        assert survivor["id"] != older["id"]
        traffic_flows(world)
    finally:
        run(["ip", "netns", "exec", host.netns, "nft", "delete", "table", "inet", "hapart"])
    # Healed: the demoted member hears its peer again and stands by.
    settled(cloud, world.router_id, timeout_s=30)
    traffic_flows(world)


def test_the_active_host_dies_twice_and_connections_carry_on(world: World) -> None:
    cloud = world.cloud
    lab = cloud.lab
    outside = lab.outside_netns
    traffic_flows(world)
    with (
        Stream(outside, world.w_snat, OUTSIDE, 5201, pusher="server") as snat,
        Stream(world.w_floating, outside, world.floating_ip, 5202, pusher="client") as floating,
        Pinger(world.w_snat, OUTSIDE) as pinger,
    ):
        lost = []
        for failover in (1, 2):
            active, standby = settled(cloud, world.router_id)
            assert active["host"] != world.workload_host
            time.sleep(1.0)
            start = pinger.mark()
            victim = active["host"]
            lab.kill_host(victim)
            cloud.agents.pop(victim, None)
            # The standby takes over (keepalived decides, not the orchestrator).
            time.sleep(3.0)
            lost.append(pinger.lost(since=start))
            assert flowing(snat) and flowing(floating), (snat.errors, floating.errors)
            if failover == 1:
                # The lost member is rebuilt on the remaining host, as standby,
                # without disturbing the active one: not a ping lost meanwhile.
                since = pinger.mark()
                now_active, rebuilt = settled(cloud, world.router_id)
                assert now_active["id"] == standby["id"]
                assert rebuilt["host"] == world.workload_host
                time.sleep(1.0)
                assert pinger.lost(since=since) == 0
        assert snat.errors == [] and floating.errors == []
    # Pings every 10 ms: under a second's worth lost at each failover.
    assert all(n < 100 for n in lost), lost


def test_no_longer_ha_the_members_go_and_one_appliance_serves(world: World) -> None:
    """HA → not HA (disabled first, Neutron's rule): both members removed
    with their daemons, files and HA ports, the project's HA network gone
    with its last HA router, and the router's own appliance serving."""
    cloud = world.cloud
    path = f"/v2.0/routers/{world.router_id}"
    cloud.api("PUT", path, {"router": {"admin_state_up": False, "ha": False}})
    cloud.api("PUT", path, {"router": {"admin_state_up": True}})
    assert cloud.api("GET", path)["router"]["ha"] is False
    wait_until(lambda: cloud.router(world.router_id).get("state") == "active", 60, 0.2, "active")
    assert "members" not in cloud.router(world.router_id)
    traffic_flows(world)
    networks = cloud.api("GET", "/v2.0/networks")["networks"]
    assert not [n for n in networks if n["name"].startswith("HA network")]
    prefix = cloud.host(world.workload_host).agent_prefix
    for member in ("ha0-", "ha1-"):
        namespace = Path(f"/var/run/netns/{prefix}-appliance-{member}{world.router_id}")
        wait_until(lambda n=namespace: not n.exists(), 30, 0.2, f"{member} removed")
    daemons = run(["pgrep", "-af", f"ha[01]-{world.router_id}"], check=False).stdout
    assert daemons == "", daemons
    assert not list(Path(f"/run/astara/{prefix}/ct").glob("*.ctl"))
