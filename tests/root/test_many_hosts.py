"""Many hosts, end to end, with real packets: a controller and three hosts on
one machine (astara.testing.deployment), each host's agent joined with a
token and speaking mutual TLS, tenant networks over VXLAN, the provider
network flat on each host's uplink, and the lab's outside host behind it.

One deployment is shared by the tests of this module, which run in order
and build on each other (the router starts on h1, h1 dies and comes back,
the router is moved, h1's underlay is cut). Nothing is added to the root
namespace; every address is in a documentation range inside the lab.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from astara.testing.deployment import Deployment, deployment
from astara.testing.hosts import OUTSIDE, bin_path, netns_client, run_cli
from astara.testing.net import (
    Capture,
    WhoAmI,
    never_pings,
    ping,
    seen_source,
    wait_for_ping,
    wait_until,
)
from astara.testing.server import open_security_group

pytestmark = pytest.mark.root

W2, W3 = "10.1.0.12", "10.1.0.13"  # project A's workloads on h2 and h3
B1, B2 = "10.1.0.21", "10.1.0.22"  # project B's, same CIDR, on h1 and h2


@dataclass
class World:
    cloud: Deployment
    router: dict[str, Any]
    network: dict[str, Any]
    public: dict[str, Any]
    w2: str  # namespaces
    w3: str
    floating_ip: str
    gateway_ip: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    state = tmp_path_factory.mktemp("many-hosts")
    with deployment(state, hosts=3, serve_args=["--resync-s", "5"], zones={"h3": "az3"}) as cloud:
        public, public_subnet = cloud.public_network()
        network = cloud.create("networks", "network", name="n1")
        subnet = cloud.create(
            "subnets",
            "subnet",
            network_id=network["id"],
            cidr="10.1.0.0/24",
            ip_version=4,
            gateway_ip="10.1.0.1",
        )
        router = cloud.create(
            "routers",
            "router",
            name="r1",
            external_gateway_info={"network_id": public["id"]},
        )
        cloud.api(
            "PUT",
            f"/v2.0/routers/{router['id']}/add_router_interface",
            {"subnet_id": subnet["id"]},
        )
        namespaces = {}
        ports = {}
        reachable = open_security_group(cloud.create)
        for name, host, address in (("w2", "h2", W2), ("w3", "h3", W3)):
            port = cloud.create(
                "ports",
                "port",
                network_id=network["id"],
                name=name,
                fixed_ips=[{"subnet_id": subnet["id"], "ip_address": address}],
                security_groups=[reachable],
            )
            namespaces[name] = f"{cloud.host(host).agent_prefix}-{name}"
            cloud.plug(port["id"], host, namespaces[name])
            ports[name] = port
        floating = cloud.create(
            "floatingips",
            "floatingip",
            floating_network_id=public["id"],
            port_id=ports["w3"]["id"],
        )
        router = cloud.api("GET", f"/v2.0/routers/{router['id']}")["router"]
        gateway_ip = router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
        del public_subnet
        yield World(
            cloud,
            router,
            network,
            public,
            namespaces["w2"],
            namespaces["w3"],
            floating["floating_ip_address"],
            gateway_ip,
        )


def traffic_flows(world: World, timeout_s: float = 30) -> None:
    """Both workloads reach each other and the outside (SNAT), and the
    outside reaches w3 by its floating IP."""
    outside = world.cloud.lab.outside_netns
    wait_for_ping(world.w2, W3, timeout_s)
    wait_for_ping(world.w2, OUTSIDE, timeout_s)
    wait_for_ping(world.w3, OUTSIDE, timeout_s)
    wait_for_ping(outside, world.floating_ip, timeout_s)
    with WhoAmI(outside) as server:
        assert seen_source(world.w2, OUTSIDE, server.port) == world.gateway_ip
        assert seen_source(world.w3, OUTSIDE, server.port) == world.floating_ip


def vni(world: World, network_id: str) -> int:
    shown = world.cloud.api("GET", f"/v2.0/networks/{network_id}")["network"]
    assert shown["provider:network_type"] == "vxlan"
    found: int = shown["provider:segmentation_id"]
    return found


def underlay(world: World, host: str) -> tuple[str, str]:
    """(namespace, interface) of a host's underlay."""
    lab_host = world.cloud.host(host)
    return lab_host.netns, lab_host.underlay_ifname


def test_a_tenant_network_spans_hosts_over_vxlan(world: World) -> None:
    """Router on h1, workloads on h2 and h3: they reach each other and the
    outside, over VXLAN with the network's VNI."""
    shown = world.cloud.wait_router(world.router["id"], host="h1")
    assert shown["epoch"] >= 1
    # The VXLAN network's MTU is the path MTU's (1500) minus 50, and DHCP says so.
    assert world.network["mtu"] == 1450
    assert "option:mtu,1450" in json.dumps(shown["rendered"])
    traffic_flows(world)
    segment = vni(world, world.network["id"])
    with Capture(*underlay(world, "h2"), "udp port 4789") as capture:
        assert ping(world.w2, W3)
        capture.wait_for(f"vni {segment}")


def test_projects_with_one_cidr_stay_apart_and_only_their_hosts_see_them(
    world: World,
) -> None:
    cloud = world.cloud
    created = cloud.api("POST", "/astara/v1/projects", {"name": "b"})
    with netns_client(
        cloud.lab.controller_netns, cloud.url, headers={"X-Auth-Token": created["token"]}
    ) as tenant:

        def create(collection: str, member: str, **fields: Any) -> dict[str, Any]:
            response = tenant.post(f"/v2.0/{collection}", json={member: fields})
            assert response.status_code == 201, response.text
            body: dict[str, Any] = response.json()[member]
            return body

        network = create("networks", "network", name="nb")
        assert "provider:segmentation_id" not in network, "admins only"
        subnet = create(
            "subnets", "subnet", network_id=network["id"], cidr="10.1.0.0/24", ip_version=4
        )
        namespaces = {}
        for name, host, address in (("b1", "h1", B1), ("b2", "h2", B2)):
            port = create(
                "ports",
                "port",
                network_id=network["id"],
                fixed_ips=[{"subnet_id": subnet["id"], "ip_address": address}],
            )
            namespaces[name] = f"{cloud.host(host).agent_prefix}-{name}"
            cloud.plug(port["id"], host, namespaces[name])
    theirs, ours = vni(world, network["id"]), vni(world, world.network["id"])
    assert theirs != ours
    # h3 has nothing on B's network: none of its traffic, flooding included.
    with Capture(*underlay(world, "h3"), "udp port 4789") as bystander:
        wait_for_ping(namespaces["b1"], B2)
        subprocess.run(["ip", "-n", namespaces["b1"], "neigh", "flush", "all"], check=True)
        assert ping(namespaces["b1"], B2)
        time.sleep(0.5)
        assert bystander.matching(f"vni {theirs}") == []
    # Same CIDR, no leak either way.
    assert never_pings(world.w2, B1)
    assert never_pings(namespaces["b2"], W2)


def test_availability_zone_hints_place_a_router(world: World) -> None:
    cloud = world.cloud
    zones = cloud.api("GET", "/v2.0/availability_zones?resource=router")["availability_zones"]
    assert {(z["name"], z["state"]) for z in zones} == {("nova", "available"), ("az3", "available")}
    router = cloud.create(
        "routers",
        "router",
        name="r-az3",
        availability_zone_hints=["az3"],
        external_gateway_info={"network_id": world.public["id"]},
    )
    cloud.wait_router(router["id"], host="h3")
    shown = cloud.api("GET", f"/v2.0/routers/{router['id']}")["router"]
    assert shown["availability_zones"] == ["az3"]
    cloud.api("DELETE", f"/v2.0/routers/{router['id']}")
    prefix = cloud.host("h3").agent_prefix
    wait_until(
        lambda: not _netns_exists(f"{prefix}-appliance-{router['id']}"), 30, 0.2, "its removal"
    )


def test_a_dead_host_s_router_is_rebuilt_elsewhere_and_it_comes_back_clean(
    world: World,
) -> None:
    cloud = world.cloud
    router_id = world.router["id"]
    cloud.lab.kill_host("h1")
    cloud.agents.pop("h1", None)
    shown = cloud.wait_router(router_id, timeout_s=60)
    wait_until(lambda: cloud.router(router_id).get("host") in ("h2", "h3"), 60, 0.2, "a new host")
    assert cloud.hosts()["h1"]["alive"] is False
    traffic_flows(world)
    # h1 returns (its disk kept the agent's state): nothing of r1 there.
    cloud.lab.revive_host("h1")
    cloud.start_agent("h1")
    cloud.wait_alive("h1")
    prefix = cloud.host("h1").agent_prefix
    assert not _netns_exists(f"{prefix}-appliance-{router_id}")
    del shown


def test_router_move_cuts_over_cleanly(world: World) -> None:
    cloud = world.cloud
    router_id = world.router["id"]
    before = cloud.router(router_id)
    # To h1, back from where h1's death sent it (or, where this test runs
    # without the ones before it, away from h1).
    target = "h1" if before["host"] != "h1" else "h2"
    cloud.api("POST", f"/astara/v1/routers/{router_id}/move", {"host": target}, ok=200)
    after = cloud.wait_router(router_id, host=target, timeout_s=60)
    assert after["epoch"] > before["epoch"]
    traffic_flows(world)
    old = cloud.host(before["host"]).agent_prefix
    wait_until(
        lambda: not _netns_exists(f"{old}-appliance-{router_id}"), 30, 0.2, "the old copy gone"
    )


def test_a_host_cut_off_fences_itself_before_its_router_is_rebuilt(world: World) -> None:
    """h1 (the router's host) loses its underlay but keeps its uplink: it
    withdraws the router from the provider network before the controller
    rebuilds it elsewhere, so the outside host never gets two answers."""
    cloud = world.cloud
    router_id = world.router["id"]
    if cloud.router(router_id)["host"] != "h1":
        cloud.api("POST", f"/astara/v1/routers/{router_id}/move", {"host": "h1"}, ok=200)
        cloud.wait_router(router_id, host="h1", timeout_s=60)
    outside = cloud.lab.outside_netns
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", outside, "ping", "-n", "-i", "0.05", world.gateway_ip],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        cloud.lab.cut_underlay("h1")
        wait_until(
            lambda: cloud.router(router_id).get("host") in ("h2", "h3"), 60, 0.2, "a new host"
        )
        cloud.wait_router(router_id, timeout_s=60)
        traffic_flows(world)
    finally:
        pinger.terminate()
        output, _ = pinger.communicate(timeout=10)
    assert "DUP!" not in output, "the gateway answered from two hosts"
    assert re.search(r"bytes from", output)
    # h1 comes back: its stale router goes before it counts as up.
    cloud.lab.restore_underlay("h1")
    cloud.wait_alive("h1")
    prefix = cloud.host("h1").agent_prefix
    assert not _netns_exists(f"{prefix}-appliance-{router_id}")


def test_the_real_openstack_cli_lists_agents_and_provider_attributes(world: World) -> None:
    cloud = world.cloud
    argv = [bin_path("openstack"), "--os-token", cloud.token, "--os-endpoint", cloud.url]
    listed = run_cli(
        cloud.lab.controller_netns, [*argv, "network", "agent", "list", "-f", "json"]
    ).stdout
    assert {"h1", "h2", "h3"} <= {a["Host"] for a in _json(listed)}
    shown = _json(
        run_cli(
            cloud.lab.controller_netns,
            [*argv, "network", "show", world.network["id"], "-f", "json"],
        ).stdout
    )
    assert shown["provider:network_type"] == "vxlan"
    assert shown["provider:segmentation_id"] == vni(world, world.network["id"])


def test_the_astara_cli_shows_hosts_and_makes_join_tokens(world: World) -> None:
    cloud = world.cloud
    astara = [bin_path("astara"), "host"]
    where = ["--url", cloud.url, "--token", cloud.token]
    listed = run_cli(cloud.lab.controller_netns, [*astara, "list", *where]).stdout
    assert all(name in listed for name in ("h1", "h2", "h3")), listed
    shown = run_cli(cloud.lab.controller_netns, [*astara, "show", "h1", *where]).stdout
    assert "192.0.2.11" in shown, shown
    run_cli(cloud.lab.controller_netns, [*astara, "drain", "h3", *where])
    assert cloud.hosts()["h3"]["drained"] is True
    run_cli(cloud.lab.controller_netns, [*astara, "undrain", "h3", *where])
    assert cloud.hosts()["h3"]["drained"] is False
    token = run_cli(cloud.lab.controller_netns, [*astara, "join-token", *where]).stdout
    assert re.search(r"\S+\.\S+\.[0-9a-f]{64}", token), token


def _json(text: str) -> Any:
    return json.loads(text)


def _netns_exists(name: str) -> bool:
    return Path(f"/run/netns/{name}").exists()


def test_a_short_cut_fences_a_host_and_the_controller_brings_it_back(world: World) -> None:
    """A cut longer than the host's fence bound but shorter than the
    controller's mark-down: the router is withdrawn from the provider
    network, never rebuilt elsewhere, and pushed back (unfenced) once the
    host answers again."""
    cloud = world.cloud
    router_id = world.router["id"]
    # h1's agent restarts (without joining again) with a 1 s fence bound.
    cloud.stop_agent("h1")
    cloud.start_agent("h1", ["--fence-after", "1"])
    cloud.wait_alive("h1")
    cloud.api("POST", f"/astara/v1/routers/{router_id}/move", {"host": "h1"}, ok=200)
    before = cloud.wait_router(router_id, host="h1", timeout_s=60)
    traffic_flows(world)
    namespace = f"{cloud.host('h1').agent_prefix}-appliance-{router_id}"

    def external_up() -> bool:
        links = subprocess.run(
            ["ip", "-n", namespace, "-br", "link"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        (line,) = [line for line in links if line.startswith("ext")]
        return line.split()[1] == "UP"  # the operational state

    assert external_up()
    cloud.lab.cut_underlay("h1")
    try:
        wait_until(lambda: not external_up(), 2.5, 0.05, "h1 to fence itself")
    finally:
        cloud.lab.restore_underlay("h1")
    wait_until(external_up, 30, 0.1, "the controller to push the router back")
    traffic_flows(world)
    after = cloud.router(router_id)
    assert (after["host"], after["epoch"]) == ("h1", before["epoch"]), "not rebuilt elsewhere"
