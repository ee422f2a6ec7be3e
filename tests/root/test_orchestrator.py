"""The whole system: `astara serve` (API, orchestrator, local agent) turns
tenant API calls into working routers, keeps them so, and cleans up."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from astara.agent.client import AgentClient
from astara.linux import netns
from astara.linux.run import in_netns
from astara.testing.net import (
    Connection,
    EchoServer,
    WhoAmI,
    ping,
    seen_source,
    sh,
    wait_for_ping,
    wait_until,
)
from astara.testing.server import BIN, Cloud, open_security_group
from tests.root.conftest import astara

pytestmark = pytest.mark.root


def standard(
    cloud: Cloud, cidr: str = "10.0.0.0/24", name: str = "web", project_id: str | None = None
) -> dict[str, Any]:
    """An external network, a tenant network behind a router, a workload
    plugged on it, an outside host, and a floating IP for the workload."""
    prefix = cloud.server.prefix
    public = cloud("GET", "/v2.0/networks?name=public")["networks"]
    if public:
        public_id = public[0]["id"]
    else:
        public_id = cloud.create("networks", "network", name="public", **{"router:external": True})[
            "id"
        ]
        # Addresses on the external network are static (the outside host is
        # plugged without DHCP): with DHCP on, its workload would get the
        # network a DHCP appliance of its own (see test_dhcp_appliance).
        cloud.create(
            "subnets",
            "subnet",
            network_id=public_id,
            cidr="198.51.100.0/24",
            ip_version=4,
            enable_dhcp=False,
        )
        # The outside stands in for the Internet: no port security.
        outside = cloud.create(
            "ports",
            "port",
            network_id=public_id,
            name="outside",
            fixed_ips=[{"ip_address": "198.51.100.1"}],
            port_security_enabled=False,
        )
        cloud.plug(outside["id"], f"{prefix}-outside")
    owner = {"project_id": project_id} if project_id else {}
    network, subnet, router = cloud.routed_network(name, cidr, public_id, **owner)
    vm = cloud.create(
        "ports",
        "port",
        network_id=network["id"],
        name=f"{name}-vm",
        security_groups=[open_security_group(cloud.create, **owner)],
        **owner,
    )
    cloud.plug(vm["id"], f"{prefix}-{name}")
    floating = cloud.create(
        "floatingips", "floatingip", floating_network_id=public_id, port_id=vm["id"], **owner
    )
    cloud.wait_active(router["id"])
    router = cloud("GET", f"/v2.0/routers/{router['id']}")["router"]
    return {
        "router": router,
        "vm": vm,
        "vm_netns": f"{prefix}-{name}",
        "outside_netns": f"{prefix}-outside",
        "floating_ip": floating["floating_ip_address"],
        "router_external": router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"],
        "network": network,
        "subnet": subnet,
        "floating": floating,
    }


def test_a_router_from_the_api_forwards_nats_and_floats(cloud: Cloud) -> None:
    setup = standard(cloud)
    vm_address = setup["vm"]["fixed_ips"][0]["ip_address"]
    # The workload reaches the outside host, seen with the floating IP (1:1 NAT).
    with WhoAmI(setup["outside_netns"], 8080):
        assert seen_source(setup["vm_netns"], "198.51.100.1", 8080) == setup["floating_ip"]
    # The outside host reaches the workload through its floating IP.
    with WhoAmI(setup["vm_netns"], 8081):
        assert seen_source(setup["outside_netns"], setup["floating_ip"], 8081) == "198.51.100.1"
    # Without the floating IP the workload leaves with the router's address (SNAT).
    cloud("PUT", f"/v2.0/floatingips/{setup['floating']['id']}", {"floatingip": {"port_id": None}})
    with WhoAmI(setup["outside_netns"], 8082):
        wait_until(
            lambda: (
                seen_source(setup["vm_netns"], "198.51.100.1", 8082) == setup["router_external"]
            ),
            30,
            0.3,
            "SNAT through the router's external address",
        )
    assert ping(setup["vm_netns"], "10.0.0.1") and vm_address.startswith("10.0.0.")
    shown = cloud.wait_active(setup["router"]["id"])
    assert shown["rendered"]["files"]["nftables.nft"]
    assert any("-> active" in e["message"] for e in shown["events"])
    fip = cloud("GET", f"/v2.0/floatingips/{setup['floating']['id']}")["floatingip"]
    assert fip["status"] == "DOWN"


def held_on_its_agent(cloud: Cloud, appliance_id: str) -> None:
    """Hold the appliance on the local agent, whose watch would otherwise
    repair it first: the orchestrator's own healing is what is shown."""
    with AgentClient(f"unix:{cloud.server.state_dir / 'agent.sock'}") as agent:
        agent.hold_appliance(appliance_id, True, agent.get_appliance(appliance_id)["epoch"])


def test_healing_after_the_namespace_is_deleted_behind_astaras_back(cloud: Cloud) -> None:
    setup = standard(cloud)
    router_id = setup["router"]["id"]
    namespace = f"{cloud.server.prefix}-appliance-{router_id}"
    held_on_its_agent(cloud, router_id)
    netns.delete(namespace)
    assert not netns.exists(namespace)

    def noticed() -> bool:
        messages = [e["message"] for e in cloud.router(router_id)["events"]]
        return any("missing" in m or "unhealthy" in m for m in messages)

    # The next resync sees it (the history says why) and brings it back.
    wait_until(noticed, 60, 0.2, "the orchestrator to notice")
    shown = cloud.wait_active(router_id)
    assert netns.exists(namespace) and shown["appliance"]["state"] == "active"
    wait_for_ping(setup["outside_netns"], setup["floating_ip"], timeout_s=60)


def test_deleting_everything_through_the_api_removes_it_from_the_host(cloud: Cloud) -> None:
    setup = standard(cloud)
    router_id = setup["router"]["id"]
    cloud("DELETE", f"/v2.0/floatingips/{setup['floating']['id']}", ok=204)
    cloud("DELETE", f"/v2.0/ports/{setup['vm']['id']}", ok=204)
    cloud(
        "PUT",
        f"/v2.0/routers/{router_id}/remove_router_interface",
        {"subnet_id": setup["subnet"]["id"]},
    )
    cloud("PUT", f"/v2.0/routers/{router_id}", {"router": {"external_gateway_info": {}}})
    cloud("DELETE", f"/v2.0/routers/{router_id}", ok=204)
    cloud("DELETE", f"/v2.0/networks/{setup['network']['id']}", ok=204)
    prefix = cloud.server.prefix

    def gone() -> bool:
        names = set(netns.names())
        return not any(n.startswith(f"{prefix}-appliance") or n == f"{prefix}-web" for n in names)

    wait_until(gone, 60, 0.3, "the router's namespace and the workload to go")
    # The orchestrator's record goes right after the appliance (shown DELETED till then).
    wait_until(
        lambda: cloud("GET", "/astara/v1/routers")["routers"] == [],
        10,
        0.1,
        "the router's record to be dropped",
    )


def test_readme_openstack_walkthrough(cloud: Cloud) -> None:
    """The README's five minutes, every command as written, against this
    test's server (its prefix, state dir and port substituted)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Five minutes with the `openstack` CLI", 1)[1]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    server = cloud.server
    script = (
        script.replace("$PWD/.venv/bin", str(BIN))
        .replace("$PWD/var/", f"{server.state_dir}/")
        .replace("ast-", f"{server.prefix}-")
    )
    env = {**server.env(), "ASTARA_STATE_DIR": str(server.state_dir)}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 received" in result.stdout  # both pings answered
    routers = cloud("GET", "/astara/v1/routers")["routers"]
    assert [(r["name"], r["status"], r["state"]) for r in routers] == [("r1", "ACTIVE", "active")]
    # The outside host saw the workload with its floating IP.
    fip = cloud("GET", "/v2.0/floatingips")["floatingips"][0]
    with WhoAmI(f"{server.prefix}-outside", 8090):
        assert (
            seen_source(f"{server.prefix}-vm1", "198.51.100.1", 8090) == fip["floating_ip_address"]
        )
    assert fip["status"] == "ACTIVE"
    # Without its floating IP the workload leaves with the router's external address.
    router = cloud("GET", "/v2.0/routers?name=r1")["routers"][0]
    external = router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
    cloud("PUT", f"/v2.0/floatingips/{fip['id']}", {"floatingip": {"port_id": None}})
    cloud.wait_active(router["id"])
    with WhoAmI(f"{server.prefix}-outside", 8091):
        assert seen_source(f"{server.prefix}-vm1", "198.51.100.1", 8091) == external


def test_two_projects_with_the_same_cidr_work_side_by_side_and_stay_apart(cloud: Cloud) -> None:
    projects = [
        cloud("POST", "/astara/v1/projects", {"name": name}, 201)["project"]["id"]
        for name in ("red", "blue")
    ]
    red = standard(cloud, "10.0.0.0/24", "red", projects[0])
    blue = standard(cloud, "10.0.0.0/24", "blue", projects[1])
    with WhoAmI(red["outside_netns"], 8100):
        assert seen_source(red["vm_netns"], "198.51.100.1", 8100) == red["floating_ip"]
        assert seen_source(blue["vm_netns"], "198.51.100.1", 8100) == blue["floating_ip"]
    # Each tenant's 10.0.0.0/24 is its own: red's workload never reaches blue's.
    blue_address = blue["vm"]["fixed_ips"][0]["ip_address"]
    with WhoAmI(blue["vm_netns"], 8101):
        # The control: blue's workload answers on that port, through its floating IP.
        assert seen_source(blue["outside_netns"], blue["floating_ip"], 8101) == "198.51.100.1"
        assert seen_source(red["vm_netns"], blue_address, 8101, timeout_s=2) is None
    hosts = cloud.router(red["router"]["id"])["rendered"]["files"]["dnsmasq.hosts"]
    assert red["vm"]["mac_address"] in hosts and blue["vm"]["mac_address"] not in hosts


def test_updates_apply_in_place_and_keep_established_connections(cloud: Cloud) -> None:
    setup = standard(cloud)
    router_id, public_id = setup["router"]["id"], setup["floating"]["floating_network_id"]
    before = cloud.router(router_id)["appliance"]
    with (
        EchoServer(setup["outside_netns"], 7101) as echo,
        Connection(setup["vm_netns"], "198.51.100.1", echo.port) as connection,
    ):
        assert connection.exchange("hello") == "hello"
        # A new interface: another network behind the same router.
        network = cloud.create("networks", "network", name="db")
        subnet = cloud.create(
            "subnets", "subnet", network_id=network["id"], cidr="10.9.0.0/24", ip_version=4
        )
        cloud("PUT", f"/v2.0/routers/{router_id}/add_router_interface", {"subnet_id": subnet["id"]})
        cloud.wait_active(router_id)
        assert connection.exchange("after an interface") == "after an interface"
        # A floating IP for a second workload.
        other = cloud.create(
            "ports",
            "port",
            network_id=setup["network"]["id"],
            name="other",
            security_groups=setup["vm"]["security_groups"],
        )
        cloud.plug(other["id"], f"{cloud.server.prefix}-other")
        second = cloud.create(
            "floatingips", "floatingip", floating_network_id=public_id, port_id=other["id"]
        )
        cloud.wait_active(router_id)
        wait_for_ping(setup["outside_netns"], second["floating_ip_address"])
        assert connection.exchange("after a floating IP") == "after a floating IP"
        # An extra route.
        route = {"destination": "192.0.2.0/24", "nexthop": "10.0.0.254"}
        cloud("PUT", f"/v2.0/routers/{router_id}", {"router": {"routes": [route]}})
        shown = cloud.wait_active(router_id)
        assert connection.exchange("after a route") == "after a route"
    after = shown["appliance"]
    assert after["generation"] >= before["generation"] + 3
    assert not any("rebuild" in e["message"] for e in shown["events"])
    namespace = f"{cloud.server.prefix}-appliance-{router_id}"
    assert "via 10.0.0.254" in sh(namespace, ["ip", "route", "show", "192.0.2.0/24"])


def test_a_killed_dnsmasq_comes_back_and_the_history_says_why(cloud: Cloud) -> None:
    setup = standard(cloud)
    router_id = setup["router"]["id"]
    appliance = cloud.router(router_id)["appliance"]
    pid = appliance["daemons"]["dnsmasq"]["pid"]
    held_on_its_agent(cloud, router_id)
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        daemons = cloud.router(router_id)["appliance"]["daemons"]["dnsmasq"]
        return bool(daemons["running"] and daemons["pid"] != pid)

    wait_until(restarted, 60, 0.3, "dnsmasq to be restarted")
    shown = cloud.wait_active(router_id)
    assert any("unhealthy" in e["message"] and "dnsmasq" in e["message"] for e in shown["events"])


def test_a_router_that_keeps_failing_ends_in_error_until_rebuilt(cloud: Cloud) -> None:
    """65 interfaces (gateway, web and 63 more): more than an appliance takes
    (64). The router backs off, then ends in `error` with the reason; with one
    interface removed, `astara router rebuild` brings it back."""
    setup = standard(cloud)
    router_id = setup["router"]["id"]
    subnets = []
    for n in range(63):
        network = cloud.create("networks", "network", name=f"many{n}")
        subnet = cloud.create(
            "subnets",
            "subnet",
            network_id=network["id"],
            cidr=f"10.{100 + n}.0.0/24",
            ip_version=4,
            enable_dhcp=False,
        )
        cloud("PUT", f"/v2.0/routers/{router_id}/add_router_interface", {"subnet_id": subnet["id"]})
        subnets.append(subnet)

    def in_error() -> dict[str, Any] | None:
        shown = cloud.router(router_id)
        return shown if shown["state"] == "error" else None

    shown = wait_until(in_error, 90, 0.5, "the router to end in error")
    assert shown["status"] == "ERROR" and "at most 64" in shown["last_error"]
    assert any("error after 5 failures" in e["message"] for e in shown["events"])
    # It stays in error: the appliance keeps its last good config meanwhile.
    assert ping(setup["vm_netns"], "198.51.100.1")
    cloud(
        "PUT",
        f"/v2.0/routers/{router_id}/remove_router_interface",
        {"subnet_id": subnets[-1]["id"]},
    )
    assert cloud.router(router_id)["state"] == "error"
    env = {**cloud.server.env(), "ASTARA_STATE_DIR": str(cloud.server.state_dir)}
    rebuilt = subprocess.run(
        [str(BIN / "astara"), "router", "rebuild", "r-web"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    shown = cloud.wait_active(router_id, 120)
    assert shown["appliance"]["interfaces"] and len(shown["appliance"]["interfaces"]) == 64
    wait_for_ping(setup["outside_netns"], setup["floating_ip"], timeout_s=60)


def test_crash_while_creating_twenty_routers_then_restart(cloud: Cloud) -> None:
    """kill -9 `astara serve` while 20 routers are being built; after a restart
    all 20 are ACTIVE, nothing is orphaned, and a ping through a router that
    already ran loses no packet across the crash and the restart."""
    steady = standard(cloud)
    public_id = steady["floating"]["floating_network_id"]
    cloud.unlimited_quotas()
    pinger = subprocess.Popen(
        in_netns(steady["outside_netns"], ["ping", "-n", "-i", "0.05", steady["floating_ip"]]),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        routers = []
        for n in range(20):
            _, _, router = cloud.routed_network(f"crash{n}", f"10.{50 + n}.0.0/24", public_id)
            routers.append(router["id"])
        # Mid-flight: some routers built, some not.
        listed = cloud("GET", "/astara/v1/routers")["routers"]
        assert any(r["status"] != "ACTIVE" for r in listed)
        cloud.server.kill()
        cloud.server.start()
        for router_id in [*routers, steady["router"]["id"]]:
            cloud.wait_active(router_id, 120)
        cloud.wait_resyncs(1)  # and a resync of everything, pinging all along
    finally:
        pinger.send_signal(signal.SIGINT)
        output, _ = pinger.communicate(timeout=10)
    summary = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    assert summary is not None, output
    sent, received = map(int, summary.groups())
    assert sent > 20 and received >= sent - 1, output  # the last may be in flight at SIGINT
    # Nothing orphaned: one appliance namespace per router, one dnsmasq each.
    prefix = cloud.server.prefix
    appliances = {n for n in netns.names() if n.startswith(f"{prefix}-appliance-")}
    assert appliances == {f"{prefix}-appliance-{r}" for r in [*routers, steady["router"]["id"]]}
    for namespace in appliances:
        dnsmasqs = [p for p in netns.pids(namespace) if b"dnsmasq" in _cmdline(p)]
        assert len(dnsmasqs) == 1, (namespace, dnsmasqs)
    agents = [
        p for p in _all_pids() if b"astara.agent" in _cmdline(p) and prefix.encode() in _cmdline(p)
    ]
    pid_file = (cloud.server.state_dir / "agent.pid").read_text()
    details = [(p, _cmdline(p), Path(f"/proc/{p}/stat").read_text()) for p in agents]
    assert len(agents) == 1, (pid_file, details, cloud.server.log()[-3000:])


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_dead_agent_is_restarted_and_the_routers_carry_on(cloud: Cloud) -> None:
    setup = standard(cloud)
    pid_file = cloud.server.state_dir / "agent.pid"
    old = int(pid_file.read_text())
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: int(pid_file.read_text()) != old, 30, 0.2, "a new agent")
    # The data plane never noticed; the new agent adopted the appliance.
    assert ping(setup["outside_netns"], setup["floating_ip"])
    route = {"destination": "192.0.2.0/24", "nexthop": "10.0.0.254"}
    cloud("PUT", f"/v2.0/routers/{setup['router']['id']}", {"router": {"routes": [route]}})
    shown = cloud.wait_active(setup["router"]["id"])
    assert shown["appliance"] is not None, json.dumps(shown)[-1500:]
    assert shown["appliance"]["state"] == "active"


def test_admin_state_down_stops_forwarding_but_keeps_the_ports_wired(cloud: Cloud) -> None:
    """Neutron's meaning: a port's status says it is wired on its host. An
    administratively down router keeps its appliance and ports (ACTIVE), and
    its subnets' DHCP, and forwards, translates and floats nothing."""
    setup = standard(cloud)
    router_id = setup["router"]["id"]
    vm_netns, outside = setup["vm_netns"], setup["outside_netns"]
    namespace = f"{cloud.server.prefix}-appliance-{router_id}"
    cloud("PUT", f"/v2.0/routers/{router_id}", {"router": {"admin_state_up": False}})
    wait_until(
        lambda: cloud("GET", f"/v2.0/routers/{router_id}")["router"]["status"] == "DOWN",
        60,
        0.2,
        "the router to be DOWN",
    )
    interfaces = cloud("GET", f"/v2.0/ports?device_id={router_id}")["ports"]
    assert interfaces and {p["status"] for p in interfaces} == {"ACTIVE"}
    assert netns.exists(namespace)
    assert sh(namespace, ["sysctl", "-n", "net.ipv4.ip_forward"]).strip() == "0"
    fip = cloud("GET", f"/v2.0/floatingips/{setup['floating']['id']}")["floatingip"]
    assert fip["status"] == "DOWN"
    # The control: the workload still reaches the router itself; through it, nothing.
    assert ping(vm_netns, "10.0.0.1")
    assert not ping(vm_netns, "198.51.100.1")
    assert not ping(outside, setup["floating_ip"])
    cloud("PUT", f"/v2.0/routers/{router_id}", {"router": {"admin_state_up": True}})
    cloud.wait_active(router_id)
    wait_for_ping(outside, setup["floating_ip"])
    wait_for_ping(vm_netns, "198.51.100.1")

    # A router born down (how Neutron's own API tests make theirs): its
    # interface port is ACTIVE once wired, so clients waiting for it go on.
    network = cloud.create("networks", "network", name="born-down")
    subnet = cloud.create(
        "subnets", "subnet", network_id=network["id"], cidr="10.9.0.0/24", ip_version=4
    )
    down = cloud.create("routers", "router", name="down", admin_state_up=False)
    added = cloud(
        "PUT", f"/v2.0/routers/{down['id']}/add_router_interface", {"subnet_id": subnet["id"]}
    )
    wait_until(
        lambda: cloud("GET", f"/v2.0/ports/{added['port_id']}")["port"]["status"] == "ACTIVE",
        60,
        0.2,
        "the down router's interface port to be ACTIVE",
    )
    assert cloud("GET", f"/v2.0/routers/{down['id']}")["router"]["status"] == "DOWN"


def test_debug_pauses_a_router_or_a_project_and_manage_resumes(cloud: Cloud) -> None:
    setup = standard(cloud)
    router_id = setup["router"]["id"]
    namespace = f"{cloud.server.prefix}-appliance-{router_id}"
    astara(cloud, "router", "debug", "r-web")
    wait_until(lambda: cloud.router(router_id)["state"] == "paused", 30, 0.2, "paused")
    assert "paused" in astara(cloud, "router", "list")
    netns.delete(namespace)
    cloud.wait_resyncs(2)  # a paused router is left alone
    assert not netns.exists(namespace) and cloud.router(router_id)["state"] == "paused"
    astara(cloud, "router", "manage", "r-web")
    cloud.wait_active(router_id)
    assert netns.exists(namespace)
    # The same for a whole project.
    astara(cloud, "project", "debug", "admin")
    wait_until(lambda: cloud.router(router_id)["state"] == "paused", 30, 0.2, "paused")
    netns.delete(namespace)
    cloud.wait_resyncs(2)
    assert not netns.exists(namespace)
    astara(cloud, "project", "manage", "admin")
    cloud.wait_active(router_id)
    wait_for_ping(setup["outside_netns"], setup["floating_ip"])
    history = [e["message"] for e in cloud.router(router_id)["events"]]
    assert "operator: debug" in history and "operator: manage" in history


def test_cleanup_removes_what_nothing_accounts_for(cloud: Cloud) -> None:
    setup = standard(cloud)
    # Resyncs remove orphans too; make them rare, so that `cleanup` is seen doing it.
    cloud.server.stop()
    cloud.server.extra = ("--resync-s", "600")
    cloud.server.start()
    wait_until(
        lambda: cloud("GET", "/astara/v1/orchestrator")["orchestrator"]["resyncs"] >= 1,
        30,
        0.2,
        "the first resync",
    )
    prefix = cloud.server.prefix
    agent = AgentClient(f"unix:{cloud.server.state_dir / 'agent.sock'}")
    try:
        agent.put_network("stray-net")
        stray = {
            "interfaces": [
                {
                    "mac": "fa:16:3e:99:99:98",
                    "network_id": "stray-net",
                    "role": "internal",
                    "addresses": ["10.99.0.1/24"],
                }
            ]
        }
        agent.put_appliance("stray-router", stray)
        agent.put_port(
            "stray-port",
            {
                "network_id": "stray-net",
                "mac": "fa:16:3e:99:99:99",
                "netns": f"{prefix}-stray",
                "addresses": ["10.99.0.5/24"],
            },
        )
        output = astara(cloud, "cleanup")
        for removed in ("appliance stray-router", "port stray-port", "network stray-net"):
            assert removed in output, output
        assert not netns.exists(f"{prefix}-stray")
        assert not netns.exists(f"{prefix}-appliance-stray-router")
        assert "nothing to remove" in astara(cloud, "cleanup")
    finally:
        agent.close()
    cloud.wait_active(setup["router"]["id"])
    wait_for_ping(setup["outside_netns"], setup["floating_ip"])


def test_a_ruleset_changed_behind_astaras_back_is_repaired(cloud: Cloud) -> None:
    """Drift: the appliance's nftables table is deleted by hand. The health
    check sees it, a push restores it, and the floating IP answers again."""
    setup = standard(cloud)
    router_id = setup["router"]["id"]
    namespace = f"{cloud.server.prefix}-appliance-{router_id}"
    sh(namespace, ["nft", "delete", "table", "inet", "astara"])

    def noticed() -> bool:
        return any("unhealthy" in e["message"] for e in cloud.router(router_id)["events"])

    wait_until(noticed, 60, 0.2, "the orchestrator to notice the drift")
    cloud.wait_active(router_id)
    assert "table inet astara" in sh(namespace, ["nft", "list", "tables"])
    wait_for_ping(setup["outside_netns"], setup["floating_ip"])


def test_a_dual_stack_workload_reaches_out_over_ipv4_and_ipv6(cloud: Cloud) -> None:
    """The everyday dual-stack network: its IPv4 and its SLAAC IPv6 subnet on
    one router (two router ports on one network, Neutron's shape), and one
    workload that leaves over both families through it."""
    prefix = cloud.server.prefix
    public = cloud.create("networks", "network", name="public", **{"router:external": True})
    cloud.create("subnets", "subnet", network_id=public["id"], cidr="198.51.100.0/24", ip_version=4)
    cloud.create(
        "subnets",
        "subnet",
        network_id=public["id"],
        cidr="2001:db8:ff::/64",
        ip_version=6,
        gateway_ip=None,
    )
    outside = cloud.create(
        "ports",
        "port",
        network_id=public["id"],
        fixed_ips=[{"ip_address": "198.51.100.1"}, {"ip_address": "2001:db8:ff::1"}],
        port_security_enabled=False,
    )
    cloud.plug(outside["id"], f"{prefix}-outside")
    network = cloud.create("networks", "network", name="dual")
    v4 = cloud.create(
        "subnets", "subnet", network_id=network["id"], cidr="10.0.0.0/24", ip_version=4
    )
    v6 = cloud.create(
        "subnets",
        "subnet",
        network_id=network["id"],
        cidr="2001:db8:1::/64",
        ip_version=6,
        ipv6_ra_mode="slaac",
        ipv6_address_mode="slaac",
    )
    router = cloud.create(
        "routers", "router", name="r-dual", external_gateway_info={"network_id": public["id"]}
    )
    for subnet in (v4, v6):
        cloud(
            "PUT",
            f"/v2.0/routers/{router['id']}/add_router_interface",
            {"subnet_id": subnet["id"]},
        )
    vm = cloud.create(
        "ports",
        "port",
        network_id=network["id"],
        name="dual-vm",
        security_groups=[open_security_group(cloud.create)],
    )
    cloud.plug(vm["id"], f"{prefix}-dual")
    shown = cloud.wait_active(router["id"])
    interfaces = shown["appliance"]["interfaces"]
    assert [i["network_id"] for i in interfaces].count(network["id"]) == 2
    gateway = cloud("GET", f"/v2.0/routers/{router['id']}")["router"]["external_gateway_info"]
    router_v6 = next(
        f["ip_address"] for f in gateway["external_fixed_ips"] if ":" in f["ip_address"]
    )
    # IPv6 is routed, not translated: the outside host routes the tenant prefix back.
    sh(f"{prefix}-outside", ["ip", "-6", "route", "replace", "2001:db8:1::/64", "via", router_v6])
    wait_for_ping(f"{prefix}-dual", "198.51.100.1")
    wait_for_ping(f"{prefix}-dual", "2001:db8:ff::1")
    with WhoAmI(f"{prefix}-outside", 8090):
        vm_v6 = next(f["ip_address"] for f in vm["fixed_ips"] if ":" in f["ip_address"])
        assert seen_source(f"{prefix}-dual", "2001:db8:ff::1", 8090) == vm_v6
        assert (
            seen_source(f"{prefix}-dual", "198.51.100.1", 8090)
            == gateway["external_fixed_ips"][0]["ip_address"]
        )
