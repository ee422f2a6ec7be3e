"""Load balancers with real packets: the Octavia
API makes an appliance of its own (a namespace, the VIP port, haproxy) that
spreads requests over members that name themselves, and reports ACTIVE only
once it serves what was asked."""

from __future__ import annotations

import json
import shlex
import subprocess
from typing import Any

import pytest

from astara.testing.net import NamedHttpServer, http_get, wait_until
from astara.testing.server import BIN, Cloud

pytestmark = pytest.mark.root

LB = "/v2/lbaas"


def openstack(cloud: Cloud, line: str) -> Any:
    """The real `openstack` CLI (python-octaviaclient's commands) against
    the cloud; its JSON output, if any."""
    argv = [str(BIN / "openstack"), "--os-cloud", "astara", *shlex.split(line)]
    result = subprocess.run(
        argv, capture_output=True, text=True, env=cloud.server.env(), timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout) if result.stdout.strip().startswith(("{", "[")) else None


def wait_active(cloud: Cloud, balancer_id: str) -> dict[str, Any]:
    def active() -> dict[str, Any] | None:
        shown: dict[str, Any] = cloud("GET", f"{LB}/loadbalancers/{balancer_id}")["loadbalancer"]
        assert shown["provisioning_status"] != "ERROR", shown
        return shown if shown["provisioning_status"] == "ACTIVE" else None

    found = wait_until(active, 90, 0.1, f"load balancer {balancer_id} to be ACTIVE")
    assert found is not None
    return found


def test_a_load_balancer_spreads_requests_over_its_members(cloud: Cloud) -> None:
    prefix = cloud.server.prefix
    subnet, addresses = cloud.workload_network("web", "10.80.0.0/24", "m1", "m2", "m3", "client")
    servers = []
    client_ns = f"{prefix}-client"
    try:
        for name in ("m1", "m2", "m3"):
            servers.append(NamedHttpServer(f"{prefix}-{name}", name))
        balancer = cloud.create(
            "lbaas/loadbalancers", "loadbalancer", name="web", vip_subnet_id=subnet["id"]
        )
        lb_id, vip = balancer["id"], balancer["vip_address"]
        wait_active(cloud, lb_id)
        listener = cloud.create(
            "lbaas/listeners",
            "listener",
            loadbalancer_id=lb_id,
            protocol="HTTP",
            protocol_port=80,
        )
        wait_active(cloud, lb_id)
        pool = cloud.create(
            "lbaas/pools",
            "pool",
            listener_id=listener["id"],
            protocol="HTTP",
            lb_algorithm="ROUND_ROBIN",
        )
        wait_active(cloud, lb_id)
        for name in ("m1", "m2", "m3"):
            cloud.create(
                f"lbaas/pools/{pool['id']}/members",
                "member",
                address=addresses[name],
                protocol_port=8000,
                name=name,
            )
            wait_active(cloud, lb_id)
        cloud.create(
            "lbaas/healthmonitors",
            "healthmonitor",
            pool_id=pool["id"],
            type="HTTP",
            delay=1,
            timeout=1,
            max_retries=1,
        )
        wait_active(cloud, lb_id)
        # Round robin: every member answers within a few requests.
        seen = set()
        wait_until(lambda: http_get(client_ns, f"http://{vip}/") is not None, 30, 0.2, "the VIP")
        for _ in range(9):
            answer = http_get(client_ns, f"http://{vip}/")
            assert answer is not None
            seen.add(answer)
        assert seen == {"m1", "m2", "m3"}
        statuses = cloud("GET", f"{LB}/pools/{pool['id']}/members")["members"]
        assert {m["provisioning_status"] for m in statuses} == {"ACTIVE"}

        def operating() -> dict[str, str]:
            found = cloud("GET", f"{LB}/pools/{pool['id']}/members")["members"]
            return {m["name"]: m["operating_status"] for m in found}

        wait_until(lambda: set(operating().values()) == {"ONLINE"}, 30, 0.2, "checks to pass")
        # A member whose server stops fails its checks: ERROR (Octavia's word
        # for it), its pool and load balancer DEGRADED, and no requests.
        servers[1].stop()
        wait_until(lambda: operating()["m2"] == "ERROR", 30, 0.2, "m2 to be ERROR")
        assert operating()["m1"] == "ONLINE"
        shown = cloud("GET", f"{LB}/loadbalancers/{lb_id}")["loadbalancer"]
        assert shown["operating_status"] == "DEGRADED"
        answers = {http_get(client_ns, f"http://{vip}/") for _ in range(6)}
        assert answers == {"m1", "m3"}
        # Back: ONLINE again, and served.
        servers[1] = NamedHttpServer(f"{prefix}-m2", "m2")
        wait_until(lambda: operating()["m2"] == "ONLINE", 30, 0.2, "m2 to be ONLINE again")
        wait_until(
            lambda: "m2" in {http_get(client_ns, f"http://{vip}/") for _ in range(3)},
            30,
            0.2,
            "m2 to be served again",
        )
    finally:
        for server in servers:
            server.stop()


def test_the_openstack_loadbalancer_cli_builds_one_that_serves(cloud: Cloud) -> None:
    """python-octaviaclient's commands, each with `--wait` (it polls the load
    balancer until ACTIVE), as a tenant types them."""
    prefix = cloud.server.prefix
    subnet, addresses = cloud.workload_network("web", "10.81.0.0/24", "a", "b", "client")
    servers = [NamedHttpServer(f"{prefix}-{name}", name) for name in ("a", "b")]
    try:
        made = openstack(
            cloud, f"loadbalancer create --name lb1 --vip-subnet-id {subnet['id']} --wait -f json"
        )
        vip = made["vip_address"]
        openstack(
            cloud,
            "loadbalancer listener create --name l1 --protocol HTTP --protocol-port 80 --wait lb1",
        )
        openstack(
            cloud,
            "loadbalancer pool create --name p1 --lb-algorithm LEAST_CONNECTIONS --listener l1"
            " --protocol HTTP --wait",
        )
        for name in ("a", "b"):
            openstack(
                cloud,
                f"loadbalancer member create --name {name} --address {addresses[name]}"
                f" --protocol-port 8000 --subnet-id {subnet['id']} --wait p1",
            )
        openstack(
            cloud,
            "loadbalancer healthmonitor create --name h1 --delay 1 --timeout 1 --max-retries 1"
            " --type HTTP --url-path / --wait p1",
        )
        shown = openstack(cloud, "loadbalancer show lb1 -f json")
        assert shown["provisioning_status"] == "ACTIVE"
        members = openstack(cloud, "loadbalancer member list p1 -f json")
        assert sorted(m["name"] for m in members) == ["a", "b"]
        wait_until(
            lambda: http_get(f"{prefix}-client", f"http://{vip}/") in ("a", "b"), 30, 0.2, "VIP"
        )
        seen = {http_get(f"{prefix}-client", f"http://{vip}/") for _ in range(6)}
        assert seen == {"a", "b"}
        openstack(cloud, "loadbalancer delete --cascade --wait lb1")
        assert http_get(f"{prefix}-client", f"http://{vip}/", timeout_s=1) is None
    finally:
        for server in servers:
            server.stop()
