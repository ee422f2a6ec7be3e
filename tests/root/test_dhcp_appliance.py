"""DHCP on a network no router joins, through `astara serve`: the network's
DHCP port stands for an appliance of its own (kind "dhcp"), which hands a
workload plugged with `--dhcp` its Neutron fixed IP, routes nothing, goes
when nothing needs it, and gives way to a router that joins the subnet."""

from __future__ import annotations

from typing import Any

import pytest

from astara.agent.client import AgentClient, AgentError
from astara.linux import netns
from astara.testing.net import ping, sh, wait_until
from astara.testing.server import Cloud
from tests.root.conftest import astara

pytestmark = pytest.mark.root


def ipv4(namespace: str) -> str:
    return sh(namespace, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"], check=False)


def plug_with_dhcp(cloud: Cloud, port: dict[str, Any], namespace: str) -> str:
    """Plug with the operators' `--dhcp` binding; wait for the Neutron fixed
    IP to arrive by DHCP; the address."""
    cloud("PUT", f"/astara/v1/ports/{port['id']}/binding", {"netns": namespace, "dhcp": True})
    address: str = port["fixed_ips"][0]["ip_address"]
    wait_until(
        lambda: f"inet {address}/24 " in ipv4(namespace),
        90,
        0.2,
        f"{namespace}'s DHCP lease of {address}",
    )
    return address


def dhcp_port(cloud: Cloud, network_id: str) -> dict[str, Any] | None:
    found = cloud("GET", f"/v2.0/ports?network_id={network_id}&device_owner=network:dhcp")
    ports: list[dict[str, Any]] = found["ports"]
    return ports[0] if ports else None


def on_agent(agent: AgentClient, appliance_id: str) -> bool:
    try:
        agent.request("GET", f"/v1/appliances/{appliance_id}", ok=(200,))
    except AgentError as error:
        if error.status_code == 404:
            return False
        raise
    return True


def test_an_unrouted_network_is_served_by_its_own_dhcp_appliance(cloud: Cloud) -> None:
    prefix = cloud.server.prefix
    agent = AgentClient(f"unix:{cloud.server.state_dir / 'agent.sock'}")
    network = cloud.create("networks", "network", name="isolated")
    subnet = cloud.create(
        "subnets", "subnet", network_id=network["id"], cidr="10.7.0.0/24", ip_version=4
    )
    vm = cloud.create("ports", "port", network_id=network["id"], name="vm")
    appliance_id = f"dhcp-{network['id']}"
    namespace = f"{prefix}-appliance-{appliance_id}"

    # The workload gets its Neutron address from the network's DHCP appliance.
    vm_netns = f"{prefix}-vm"
    address = plug_with_dhcp(cloud, vm, vm_netns)
    assert address.startswith("10.7.0.") and netns.exists(namespace)
    served = dhcp_port(cloud, network["id"])
    assert served is not None and served["device_id"] == appliance_id
    dhcp_address = served["fixed_ips"][0]["ip_address"]
    wait_until(
        lambda: (shown := dhcp_port(cloud, network["id"])) and shown["status"] == "ACTIVE",
        60,
        0.1,
        "the DHCP port to be ACTIVE",
    )
    assert ping(vm_netns, dhcp_address, timeout_s=5)
    # It routes nothing: its ruleset drops every forwarded packet.
    rendered = agent.request("GET", f"/v1/appliances/{appliance_id}/rendered", ok=(200,))
    drop = "type filter hook forward priority filter; policy drop;"
    assert drop in rendered["files"]["nftables.nft"]
    assert "policy drop;" in rendered["nftables_live"]  # in force in the kernel

    # Accounted for: no orphan to `astara cleanup`, and no router.
    assert "nothing to remove" in astara(cloud, "cleanup")
    assert netns.exists(namespace)
    assert appliance_id not in {r["id"] for r in cloud.routers()}
    # Kept alive like a router's: deleted behind Astara's back, it comes back.
    netns.delete(namespace)
    wait_until(lambda: netns.exists(namespace), 60, 0.2, "the DHCP appliance to be rebuilt")
    wait_until(lambda: ping(vm_netns, dhcp_address), 60, 0.2, "the DHCP appliance to answer")

    # The workload gone, nothing needs DHCP: the appliance and namespace go,
    # and then the subnet and network delete as usual.
    cloud("DELETE", f"/astara/v1/ports/{vm['id']}/binding", ok=204)
    cloud("DELETE", f"/v2.0/ports/{vm['id']}", ok=204)
    assert dhcp_port(cloud, network["id"]) is None
    wait_until(lambda: not netns.exists(namespace), 60, 0.2, "the DHCP namespace to go")
    assert not on_agent(agent, appliance_id)
    cloud("DELETE", f"/v2.0/subnets/{subnet['id']}", ok=204)
    cloud("DELETE", f"/v2.0/networks/{network['id']}", ok=204)
    cloud.wait_resyncs()
    assert not [a for a in agent.appliances() if a["id"] == appliance_id]


def test_a_router_joining_the_subnet_takes_dhcp_over(cloud: Cloud) -> None:
    prefix = cloud.server.prefix
    agent = AgentClient(f"unix:{cloud.server.state_dir / 'agent.sock'}")
    network = cloud.create("networks", "network", name="joined")
    subnet = cloud.create(
        "subnets", "subnet", network_id=network["id"], cidr="10.8.0.0/24", ip_version=4
    )
    first = cloud.create("ports", "port", network_id=network["id"], name="first")
    plug_with_dhcp(cloud, first, f"{prefix}-first")
    appliance_id = f"dhcp-{network['id']}"
    assert on_agent(agent, appliance_id)

    router = cloud.create("routers", "router", name="r")
    cloud(
        "PUT",
        f"/v2.0/routers/{router['id']}/add_router_interface",
        {"subnet_id": subnet["id"]},
    )
    assert dhcp_port(cloud, network["id"]) is None  # in the same transaction
    cloud.wait_active(router["id"])
    namespace = f"{prefix}-appliance-{appliance_id}"
    wait_until(lambda: not netns.exists(namespace), 60, 0.2, "the DHCP appliance to go")
    # A workload plugged now gets its lease from the router, which also
    # routes it: its gateway answers.
    second = cloud.create("ports", "port", network_id=network["id"], name="second")
    plug_with_dhcp(cloud, second, f"{prefix}-second")
    assert ping(f"{prefix}-second", subnet["gateway_ip"], timeout_s=5)
    assert not on_agent(agent, appliance_id)

    # The router leaves: the DHCP appliance comes back for the workloads.
    cloud(
        "PUT",
        f"/v2.0/routers/{router['id']}/remove_router_interface",
        {"subnet_id": subnet["id"]},
    )
    assert dhcp_port(cloud, network["id"]) is not None
    wait_until(lambda: netns.exists(namespace), 60, 0.2, "the DHCP appliance to come back")
    third = cloud.create("ports", "port", network_id=network["id"], name="third")
    plug_with_dhcp(cloud, third, f"{prefix}-third")
