"""A load balancer made in one call, with real packets: it serves (a
member off the VIP's network through a port of its own), its VIP admits
only what its security group opens, its statistics count what it served,
and a failover rebuilds it while it keeps its place."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest

from astara.linux.cleanup import default_run_dir
from astara.linux.netns import exists as netns_exists
from astara.naming import Names
from astara.testing.net import NamedHttpServer, http_get, wait_until
from astara.testing.server import Cloud
from tests.root.test_load_balancers import LB, openstack, wait_active

pytestmark = pytest.mark.root


def curl_code(netns: str, url: str, timeout_s: int = 2) -> int:
    """curl's exit code: 0 served, 7 refused, 28 timed out (dropped), 52/56 closed."""
    argv = ["ip", "netns", "exec", netns, "curl", "-s", "-o", "/dev/null", "-m", str(timeout_s)]
    return subprocess.run([*argv, url], check=False, timeout=timeout_s + 10).returncode


def fabric_links(names: Names) -> set[str]:
    found = subprocess.run(
        ["ip", "-n", names.fabric_netns, "-o", "link", "show"], capture_output=True, text=True
    )
    return {line.split(":")[1].strip().split("@")[0] for line in found.stdout.splitlines()}


def pids(netns: str) -> set[str]:
    found = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    return set(found.stdout.split())


def test_one_call_makes_a_load_balancer_that_serves_filters_counts_and_fails_over(
    cloud: Cloud,
) -> None:
    prefix = cloud.server.prefix
    assert prefix is not None
    subnet, addresses = cloud.workload_network("web", "10.81.0.0/24", "m1", "m2", "client")
    # m3 is on a network of its own, which no router joins: the appliance
    # reaches it through a port of its own on m3's subnet, as Octavia's amphora.
    far_subnet, far = cloud.workload_network("far", "10.82.0.0/24", "m3", gateway_ip=None)
    addresses.update(far)
    client = f"{prefix}-client"
    servers = [NamedHttpServer(f"{prefix}-{name}", name) for name in ("m1", "m2", "m3")]
    try:
        pool: dict[str, Any] = {
            "name": "web",
            "protocol": "HTTP",
            "lb_algorithm": "ROUND_ROBIN",
            "healthmonitor": {"type": "HTTP", "delay": 1, "timeout": 1, "max_retries": 1},
            "members": [
                {"address": addresses[name], "protocol_port": 8000, "name": name}
                for name in ("m1", "m2")
            ]
            + [
                {
                    "address": addresses["m3"],
                    "protocol_port": 8000,
                    "name": "m3",
                    "subnet_id": far_subnet["id"],
                }
            ],
        }
        body = {
            "name": "one-call",
            "vip_subnet_id": subnet["id"],
            "listeners": [
                {"name": "http", "protocol": "HTTP", "protocol_port": 80, "default_pool": pool}
            ],
        }
        made = cloud("POST", f"{LB}/loadbalancers", {"loadbalancer": body}, ok=201)
        balancer = made["loadbalancer"]
        lb_id, vip = balancer["id"], balancer["vip_address"]
        wait_active(cloud, lb_id)
        wait_until(lambda: http_get(client, f"http://{vip}/") is not None, 30, 0.2, "the VIP")
        served = [http_get(client, f"http://{vip}/") for _ in range(12)]
        assert set(served) == {"m1", "m2", "m3"}
        far_ports = cloud(
            "GET", f"/v2.0/ports?network_id={far_subnet['network_id']}&device_owner=Octavia"
        )
        [member_side] = far_ports["ports"]
        assert member_side["name"] == f"octavia-lb-{lb_id}-member-{far_subnet['id']}"

        # The VIP's group opens the listener's port only: another port is
        # dropped before anything answers (a refusal would be quick), and so
        # is a ping (Octavia's group has no ICMP rule).
        assert curl_code(client, f"http://{vip}:81/") == 28
        ping = ["ip", "netns", "exec", client, "ping", "-c", "1", "-W", "1", vip]
        assert subprocess.run(ping, capture_output=True, check=False).returncode != 0
        # allowed_cidrs narrows the group: the client's address left out is
        # dropped at the VIP (haproxy's own refusal would close the connection).
        listener_id = balancer["listeners"][0]["id"]
        elsewhere = {"listener": {"allowed_cidrs": ["192.0.2.0/24"]}}
        cloud("PUT", f"{LB}/listeners/{listener_id}", elsewhere)
        wait_active(cloud, lb_id)
        assert curl_code(client, f"http://{vip}/") == 28
        own = {"listener": {"allowed_cidrs": [f"{addresses['client']}/32"]}}
        cloud("PUT", f"{LB}/listeners/{listener_id}", own)
        wait_active(cloud, lb_id)
        wait_until(lambda: http_get(client, f"http://{vip}/") is not None, 30, 0.2, "served")

        # Statistics: haproxy's counters, read by the orchestrator.
        for _ in range(5):
            assert http_get(client, f"http://{vip}/") is not None

        def counted() -> dict[str, int] | None:
            stats: dict[str, int] = cloud("GET", f"{LB}/loadbalancers/{lb_id}/stats")["stats"]
            return stats if stats["total_connections"] >= 5 and stats["bytes_out"] > 0 else None

        stats = wait_until(counted, 30, 0.5, "the statistics to count the requests")
        assert stats is not None
        assert stats["bytes_in"] > 0 and stats["request_errors"] >= 0
        listener_stats = cloud("GET", f"{LB}/listeners/{listener_id}/stats")["stats"]
        assert listener_stats["total_connections"] >= stats["total_connections"]
        # The real client reads them, and the rest of what this part serves.
        shown = openstack(cloud, f"loadbalancer stats show {lb_id} -f json")
        assert shown["total_connections"] >= stats["total_connections"]
        quota = openstack(cloud, f"loadbalancer quota show {balancer['project_id']} -f json")
        assert quota["load_balancer"] == 10 and quota["member"] == -1
        assert openstack(cloud, "loadbalancer flavor list -f json") == []
        zones = openstack(cloud, "loadbalancer availabilityzone list -f json")
        assert [z["name"] for z in zones] == ["nova"]

        # Failover: the appliance is made again (new processes in a new
        # namespace), and serves again.
        netns = f"{prefix}-appliance-lb-{lb_id}"
        before = pids(netns)
        assert before
        openstack(cloud, f"loadbalancer failover {lb_id}")  # (PENDING_UPDATE: component tests)
        wait_active(cloud, lb_id)
        wait_until(lambda: pids(netns) and not pids(netns) & before, 30, 0.2, "new processes")
        deadline = time.monotonic() + 30
        while http_get(client, f"http://{vip}/") is None:
            assert time.monotonic() < deadline, "not served after the failover"
            time.sleep(0.2)
        # The counters go on from where they were (haproxy's began again).
        after = cloud("GET", f"{LB}/loadbalancers/{lb_id}/stats")["stats"]
        assert after["total_connections"] >= stats["total_connections"]
        # A cascade delete removes everything from the host: the namespace,
        # its links on the fabric (the VIP's and the member side's), its
        # runtime files, and its ports and group from the API.
        vip_port = cloud("GET", f"/v2.0/ports/{balancer['vip_port_id']}")["port"]
        names = Names(prefix)
        links = {names.appliance_fabric_link(f"lb-{lb_id}", vip_port["mac_address"])}
        links.add(names.appliance_fabric_link(f"lb-{lb_id}", member_side["mac_address"]))
        [group_id] = vip_port["security_groups"]
        run_directory = default_run_dir(prefix) / "appliances" / f"lb-{lb_id}"
        assert run_directory.exists() and links <= fabric_links(names)
        cloud("DELETE", f"{LB}/loadbalancers/{lb_id}?cascade=true", ok=204)

        def removed() -> bool:
            return not netns_exists(netns) and not run_directory.exists()

        wait_until(removed, 30, 0.2, "the appliance to be removed")
        assert not links & fabric_links(names)
        octavia = cloud("GET", "/v2.0/ports?device_owner=Octavia")
        assert octavia["ports"] == []
        assert cloud("GET", f"/v2.0/security-groups?id={group_id}")["security_groups"] == []
    finally:
        for server in servers:
            server.stop()
