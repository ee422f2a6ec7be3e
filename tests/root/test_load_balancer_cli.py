"""`astara lb …` on a load balancer that serves (issue 12): the haproxy
config its appliance runs, as the agent rendered it; debug leaves a deleted
namespace alone until manage; rebuild builds it again. Real packets: the VIP
answers before, not while paused and broken, and after."""

from __future__ import annotations

import json
from typing import Any

import pytest

from astara.linux import netns
from astara.testing.net import NamedHttpServer, http_get, wait_until
from astara.testing.server import Cloud
from tests.root.conftest import astara
from tests.root.test_load_balancers import wait_active

pytestmark = pytest.mark.root

LB = "/v2/lbaas"


def shown(cloud: Cloud, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(astara(cloud, "lb", "show", name))
    return found


def test_lb_show_rendered_debug_manage_and_rebuild(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # table cells unfolded
    prefix = cloud.server.prefix
    subnet, addresses = cloud.workload_network("web", "10.82.0.0/24", "m1", "client")
    server = NamedHttpServer(f"{prefix}-m1", "m1")
    try:
        balancer = cloud.create(
            "lbaas/loadbalancers", "loadbalancer", name="web", vip_subnet_id=subnet["id"]
        )
        lb_id, vip = balancer["id"], balancer["vip_address"]
        wait_active(cloud, lb_id)

        def made(collection: str, member: str, **fields: Any) -> dict[str, Any]:
            """One of its objects, once the load balancer is ACTIVE again."""
            found = cloud.create(f"lbaas/{collection}", member, **fields)
            wait_active(cloud, lb_id)
            return found

        listener = made(
            "listeners", "listener", loadbalancer_id=lb_id, protocol="HTTP", protocol_port=80
        )
        pool = made(
            "pools", "pool", listener_id=listener["id"], protocol="HTTP", lb_algorithm="ROUND_ROBIN"
        )
        made(f"pools/{pool['id']}/members", "member", address=addresses["m1"], protocol_port=8000)
        client = f"{prefix}-client"
        wait_until(lambda: http_get(client, f"http://{vip}/") == "m1", 30, 0.2, "the VIP")

        # What the appliance runs: haproxy's config, the member in it.
        state = shown(cloud, "web")
        assert state["state"] == "active" and state["host"] and state["epoch"] >= 1
        config = state["rendered"]["files"]["loadbalancer.cfg"]
        assert f"{addresses['m1']}:8000" in config
        rendered = astara(cloud, "lb", "show", lb_id, "--rendered")
        assert "loadbalancer.cfg" in rendered and f"frontend {listener['id']}" in rendered
        assert f"{addresses['m1']}:8000" in rendered
        listed = astara(cloud, "lb", "list")
        assert lb_id in listed and vip in listed and "ACTIVE" in listed

        # Paused: its namespace deleted stays deleted; the VIP is silent.
        namespace = f"{prefix}-appliance-lb-{lb_id}"
        astara(cloud, "lb", "debug", "web")
        wait_until(lambda: shown(cloud, "web")["state"] == "paused", 30, 0.2, "paused")
        netns.delete(namespace)
        cloud.wait_resyncs(2)
        assert not netns.exists(namespace) and shown(cloud, "web")["state"] == "paused"
        assert http_get(client, f"http://{vip}/", timeout_s=1) is None
        # Managed again: the orchestrator builds it back, and it serves.
        astara(cloud, "lb", "manage", "web")
        wait_until(lambda: http_get(client, f"http://{vip}/") == "m1", 60, 0.2, "the VIP back")
        # Rebuilt from scratch: serves again, and its history says so.
        astara(cloud, "lb", "rebuild", "web")
        wait_until(
            lambda: (
                "operator: rebuild" in {e["message"] for e in shown(cloud, "web")["events"]}
                and shown(cloud, "web")["state"] == "active"
            ),
            60,
            0.2,
            "the rebuild",
        )
        wait_until(lambda: http_get(client, f"http://{vip}/") == "m1", 60, 0.2, "the VIP again")
        history = [e["message"] for e in shown(cloud, "web")["events"]]
        for message in ("operator: debug", "operator: manage", "operator: rebuild"):
            assert message in history
        assert "active -> rebuilding: an operator asked for a rebuild" in history, history
    finally:
        server.stop()
