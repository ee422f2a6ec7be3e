"""L7 policies with real packets: one load balancer whose HTTP listener
sends `/api` to a second pool, redirects `/old`, and rejects requests that
carry a header, as Octavia's amphora would."""

from __future__ import annotations

import pytest

from astara.testing.net import NamedHttpServer, http_get, sh, wait_until
from astara.testing.server import Cloud
from tests.root.test_load_balancers import LB, openstack, wait_active

pytestmark = pytest.mark.root


def answer(netns: str, url: str, *headers: str) -> tuple[str, str, str]:
    """A GET's status code, Location header and body (curl, no redirects followed)."""
    argv = ["curl", "-s", "-m", "3", "-w", "\n%{http_code} %header{location}"]
    for header in headers:
        argv += ["-H", header]
    body, _, meta = sh(netns, [*argv, url], check=False).rpartition("\n")
    code, _, location = meta.partition(" ")
    return code, location.strip(), body


def test_l7_policies_route_redirect_and_reject_requests(cloud: Cloud) -> None:
    prefix = cloud.server.prefix
    subnet, addresses = cloud.workload_network("l7", "10.82.0.0/24", "web", "api", "client")
    client = f"{prefix}-client"
    servers = [NamedHttpServer(f"{prefix}-{name}", name) for name in ("web", "api")]
    try:
        balancer = cloud.create("lbaas/loadbalancers", "loadbalancer", vip_subnet_id=subnet["id"])
        lb_id, vip = balancer["id"], balancer["vip_address"]
        wait_active(cloud, lb_id)
        listener = cloud.create(
            "lbaas/listeners", "listener", loadbalancer_id=lb_id, protocol="HTTP", protocol_port=80
        )
        wait_active(cloud, lb_id)
        pools = {}
        for name in ("web", "api"):
            where = {"listener_id": listener["id"]} if name == "web" else {"loadbalancer_id": lb_id}
            pools[name] = cloud.create(
                "lbaas/pools", "pool", protocol="HTTP", lb_algorithm="ROUND_ROBIN", **where
            )
            wait_active(cloud, lb_id)
            cloud.create(
                f"lbaas/pools/{pools[name]['id']}/members",
                "member",
                address=addresses[name],
                protocol_port=8000,
            )
            wait_active(cloud, lb_id)

        def policy(**fields: object) -> dict[str, object]:
            made = cloud.create(
                "lbaas/l7policies", "l7policy", listener_id=listener["id"], **fields
            )
            wait_active(cloud, lb_id)
            return made

        def rule(kind: str, compare: str, value: str, **fields: object) -> dict[str, object]:
            return {"type": kind, "compare_type": compare, "value": value, **fields}

        policy(
            action="REDIRECT_TO_POOL",
            redirect_pool_id=pools["api"]["id"],
            rules=[rule("PATH", "STARTS_WITH", "/api")],
        )
        policy(
            action="REDIRECT_TO_URL",
            redirect_url="http://example.invalid/new?from=old",
            redirect_http_code=301,
            rules=[rule("PATH", "EQUAL_TO", "/old")],
        )
        # Position 1, and a REJECT beats every redirect whatever its position
        # (Octavia's order); made with the real CLI, as a tenant types it.
        rejecting = openstack(
            cloud,
            "loadbalancer l7policy create --name block --action REJECT --position 1"
            f" --wait -f json {listener['id']}",
        )
        openstack(
            cloud,
            "loadbalancer l7rule create --type HEADER --key X-Block --compare-type EQUAL_TO"
            " --value '\"go away\"' --wait block",
        )
        assert rejecting["position"] == 1
        listed = openstack(cloud, "loadbalancer l7rule list block -f json")
        assert [(r["type"], r["value"]) for r in listed] == [("HEADER", '"go away"')]

        wait_until(lambda: http_get(client, f"http://{vip}/") == "web", 30, 0.2, "the VIP")
        assert answer(client, f"http://{vip}/api/v1") == ("200", "", "api")
        assert answer(client, f"http://{vip}/apis") == ("200", "", "api")
        assert answer(client, f"http://{vip}/x/api") == ("200", "", "web")
        code, location, _ = answer(client, f"http://{vip}/old")
        assert (code, location) == ("301", "http://example.invalid/new?from=old")
        assert answer(client, f"http://{vip}/older")[:2] == ("200", "")
        assert answer(client, f"http://{vip}/api/v1", "X-Block: go away")[0] == "403"
        assert answer(client, f"http://{vip}/old", "X-Block: go away")[0] == "403"
        assert answer(client, f"http://{vip}/", "X-Block: go")[2] == "web"

        shown = cloud("GET", f"{LB}/l7policies/{rejecting['id']}")["l7policy"]
        assert (shown["provisioning_status"], shown["operating_status"]) == ("ACTIVE", "ONLINE")
        # Disabled: no longer applied.
        cloud("PUT", f"{LB}/l7policies/{rejecting['id']}", {"l7policy": {"admin_state_up": False}})
        wait_active(cloud, lb_id)
        assert answer(client, f"http://{vip}/api/v1", "X-Block: go away") == ("200", "", "api")
    finally:
        for server in servers:
            server.stop()
