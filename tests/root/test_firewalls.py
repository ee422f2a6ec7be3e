"""FWaaS v2 with real packets: a firewall group on a router interface
filters what the router forwards into and out of the network behind it, by
its policies' rules in order; a rule inserted before another changes the
outcome; a group set down stops everything; a group's status is ACTIVE only
once the router runs it."""

from __future__ import annotations

from typing import Any

import pytest

from astara.linux.run import run
from astara.testing.net import Connection, EchoServer, ping, tcp_request, wait_until
from astara.testing.server import Cloud, open_security_group

pytestmark = pytest.mark.root

FW = "/v2.0/fwaas"


def answers(namespace: str, address: str, port: int) -> bool:
    return tcp_request(namespace, address, port, timeout_s=1.0) is not None


def outcome(namespace: str, address: str, port: int) -> str:
    """How a TCP connection attempt ends: "connected", "refused" (a reset or
    port-unreachable came back) or "timed out" (nothing came back)."""
    result = run(
        ["socat", "-T", "1", "/dev/null", f"TCP:{address}:{port},connect-timeout=2"],
        netns=namespace,
        check=False,
    )
    if result.returncode == 0:
        return "connected"
    return "refused" if "refused" in result.stderr else "timed out"


def rule(cloud: Cloud, name: str, **fields: Any) -> str:
    made: str = cloud.create("fwaas/firewall_rules", "firewall_rule", name=name, **fields)["id"]
    return made


def wait_status(cloud: Cloud, group_id: str, status: str) -> None:
    """Until the group's routers run what it is now (the API says so)."""
    wait_until(
        lambda: (
            cloud("GET", f"{FW}/firewall_groups/{group_id}")["firewall_group"]["status"] == status
        ),
        60,
        0.1,
        f"firewall group {group_id} to be {status}",
    )


def test_a_firewall_group_filters_a_router_interface_by_its_ordered_rules(cloud: Cloud) -> None:
    prefix = cloud.server.prefix
    public, outside_ns = cloud.public_network()
    router = cloud.create(
        "routers", "router", name="r", external_gateway_info={"network_id": public["id"]}
    )
    interfaces = {}
    for name, cidr in (("front", "10.60.0.0/24"), ("back", "10.61.0.0/24")):
        network = cloud.create("networks", "network", name=name)
        subnet = cloud.create(
            "subnets",
            "subnet",
            network_id=network["id"],
            cidr=cidr,
            ip_version=4,
            enable_dhcp=False,
        )
        added = cloud(
            "PUT",
            f"/v2.0/routers/{router['id']}/add_router_interface",
            {"subnet_id": subnet["id"]},
        )
        interfaces[name] = (network["id"], added["port_id"])
    open_group = open_security_group(cloud.create)

    def workload(name: str, network: str, address: str) -> str:
        port = cloud.create(
            "ports",
            "port",
            network_id=interfaces[network][0],
            name=name,
            fixed_ips=[{"ip_address": address}],
            security_groups=[open_group],
        )
        cloud.plug(port["id"], f"{prefix}-{name}")
        return str(port["id"])

    server_port = workload("server", "front", "10.60.0.10")
    workload("client", "back", "10.61.0.10")
    server_ns, client_ns = f"{prefix}-server", f"{prefix}-client"
    floating = cloud.create(
        "floatingips", "floatingip", floating_network_id=public["id"], port_id=server_port
    )["floating_ip_address"]
    cloud.wait_active(router["id"])

    web = rule(cloud, "web", protocol="tcp", destination_port="7001", action="allow")
    from_back = rule(cloud, "from-back", source_ip_address="10.61.0.0/16", action="deny")
    anything = rule(cloud, "anything", action="allow")
    inbound = cloud.create(
        "fwaas/firewall_policies", "firewall_policy", name="inbound", firewall_rules=[web]
    )["id"]
    outbound = cloud.create(
        "fwaas/firewall_policies", "firewall_policy", name="outbound", firewall_rules=[anything]
    )["id"]

    with EchoServer(server_ns, 7001), EchoServer(server_ns, 7002):
        wait_until(lambda: answers(client_ns, "10.60.0.10", 7002), 30, 0.2, "7002 unfiltered")
        assert answers(outside_ns, floating, 7002)
        with Connection(client_ns, "10.60.0.10", 7002) as open_before:
            assert open_before.exchange("before") == "before"
            group = cloud.create(
                "fwaas/firewall_groups",
                "firewall_group",
                name="edge",
                ports=[interfaces["front"][1]],
                ingress_firewall_policy_id=inbound,
                egress_firewall_policy_id=outbound,
            )
            assert group["status"] == "PENDING_CREATE"
            wait_status(cloud, group["id"], "ACTIVE")
            # Into the front network: 7001 only, from anywhere; nothing else,
            # and a flow open before that the rules refuse is ended.
            assert answers(client_ns, "10.60.0.10", 7001)
            assert answers(outside_ns, floating, 7001)
            assert not answers(client_ns, "10.60.0.10", 7002)
            assert not answers(outside_ns, floating, 7002)
            assert not ping(client_ns, "10.60.0.10")
            assert open_before.exchange("after", timeout_s=3) is None
        # Out of it: anything (and the answers come back).
        assert ping(server_ns, "198.51.100.1")
        assert ping(server_ns, "10.61.0.10")

        # A deny inserted before the allow wins for what it matches, and ends
        # the matching flows already open; the rest is as before.
        with Connection(client_ns, "10.60.0.10", 7001) as web_flow:
            assert web_flow.exchange("before") == "before"
            cloud(
                "PUT",
                f"{FW}/firewall_policies/{inbound}/insert_rule",
                {"firewall_rule_id": from_back, "insert_before": web},
            )
            wait_status(cloud, group["id"], "ACTIVE")
            assert not answers(client_ns, "10.60.0.10", 7001)
            assert answers(outside_ns, floating, 7001)
            assert web_flow.exchange("after", timeout_s=3) is None
        # Inserted after it instead, the deny changes nothing for 7001.
        cloud(
            "PUT", f"{FW}/firewall_policies/{inbound}/remove_rule", {"firewall_rule_id": from_back}
        )
        cloud(
            "PUT",
            f"{FW}/firewall_policies/{inbound}/insert_rule",
            {"firewall_rule_id": from_back, "insert_after": web},
        )
        wait_status(cloud, group["id"], "ACTIVE")
        assert answers(client_ns, "10.60.0.10", 7001)
        assert not answers(client_ns, "10.60.0.10", 7002)
        # Dropped, a connection times out; rejected, it is refused at once.
        assert outcome(client_ns, "10.60.0.10", 7002) == "timed out"
        refuse = rule(cloud, "refuse", protocol="tcp", destination_port="7002", action="reject")
        insert = f"{FW}/firewall_policies/{inbound}/insert_rule"
        cloud("PUT", insert, {"firewall_rule_id": refuse})
        wait_status(cloud, group["id"], "ACTIVE")
        assert outcome(client_ns, "10.60.0.10", 7002) == "refused"

        # Between two firewalled networks, each group must let a packet
        # through: the back network's egress policy, empty, stops 7001 that
        # the front's ingress allows; one allow there opens it again.
        back_out = cloud.create(
            "fwaas/firewall_policies", "firewall_policy", name="back-out", firewall_rules=[]
        )["id"]
        back = cloud.create(
            "fwaas/firewall_groups",
            "firewall_group",
            name="back-edge",
            ports=[interfaces["back"][1]],
            egress_firewall_policy_id=back_out,
        )
        wait_status(cloud, back["id"], "ACTIVE")
        assert not answers(client_ns, "10.60.0.10", 7001)
        cloud(
            "PUT", f"{FW}/firewall_policies/{back_out}/insert_rule", {"firewall_rule_id": anything}
        )
        wait_status(cloud, back["id"], "ACTIVE")
        assert answers(client_ns, "10.60.0.10", 7001)
        cloud("PUT", f"{FW}/firewall_groups/{back['id']}", {"firewall_group": {"ports": []}})
        cloud("DELETE", f"{FW}/firewall_groups/{back['id']}", ok=204)

        # Without an egress policy nothing new leaves the network; what comes
        # in is still answered.
        group_url = f"{FW}/firewall_groups/{group['id']}"
        cloud("PUT", group_url, {"firewall_group": {"egress_firewall_policy_id": None}})
        wait_status(cloud, group["id"], "ACTIVE")
        assert not ping(server_ns, "198.51.100.1")
        assert answers(outside_ns, floating, 7001)

        # Set down: nothing passes at all.
        cloud("PUT", group_url, {"firewall_group": {"admin_state_up": False}})
        wait_status(cloud, group["id"], "DOWN")
        assert not answers(outside_ns, floating, 7001)
        assert not answers(client_ns, "10.60.0.10", 7001)

        # Without its port the group filters nothing: all passes again.
        cloud("PUT", group_url, {"firewall_group": {"ports": []}})
        wait_status(cloud, group["id"], "INACTIVE")
        wait_until(lambda: answers(client_ns, "10.60.0.10", 7002), 30, 0.2, "7002 open again")
        assert answers(outside_ns, floating, 7001)
        assert ping(server_ns, "198.51.100.1")
