"""DHCPv6, end to end on one agent: radvd sends the flags, dnsmasq leases the
address or hands out the options, dhcpcd in the workload's namespace takes
them, and packets flow through the router.

Both workloads name their interface eth0: their dhcpcd instances must not
share a pid file, control socket or lease, and neither may touch the host's
/etc/resolv.conf.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from astara.testing.lab import Lab, eui64
from astara.testing.net import sh, wait_for_ping, wait_until
from astara.testing.server import Cloud
from tests.root.conftest import MAC, OUTSIDE_V6

pytestmark = pytest.mark.root

ROUTER_EXTERNAL_V6 = "2001:db8:ff::2"
STATEFUL, STATELESS = "2001:db8:7::/64", "2001:db8:8::/64"
ROUTER_STATEFUL_MAC, ROUTER_STATELESS_MAC = "fa:16:3e:00:07:01", "fa:16:3e:00:08:01"
W7_MAC, W8_MAC = "fa:16:3e:00:07:10", "fa:16:3e:00:08:10"
W7_ADDRESS = "2001:db8:7::42"
DNS_V6 = "2001:db8::53"
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
# Not the external subnet's gateway (::1): a port's default route cannot go
# through its own address.
OUTSIDE_V6_SERVE = "2001:db8:ff::10"


def dhcpv6_router() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": "router",
        "interfaces": [
            {
                "mac": MAC["router_ext"],
                "network_id": "ext",
                "role": "external",
                "addresses": [f"{ROUTER_EXTERNAL_V6}/64"],
            },
            {
                "mac": ROUTER_STATEFUL_MAC,
                "network_id": "n7",
                "role": "internal",
                "addresses": ["2001:db8:7::1/64"],
            },
            {
                "mac": ROUTER_STATELESS_MAC,
                "network_id": "n8",
                "role": "internal",
                "addresses": ["2001:db8:8::1/64"],
            },
        ],
        "subnets": [
            {
                "cidr": STATEFUL,
                "interface_mac": ROUTER_STATEFUL_MAC,
                "ipv6_ra_mode": "dhcpv6-stateful",
                "enable_dhcp": True,
                "dns_nameservers": [DNS_V6],
            },
            {
                "cidr": STATELESS,
                "interface_mac": ROUTER_STATELESS_MAC,
                "ipv6_ra_mode": "dhcpv6-stateless",
                "enable_dhcp": True,
                "dns_nameservers": [DNS_V6],
            },
        ],
        "dhcp_hosts": [{"mac": W7_MAC, "ip_address": W7_ADDRESS, "hostname": "w7"}],
        "routes": [{"destination": "::/0", "nexthop": OUTSIDE_V6}],
    }


def dhcpv6_workload(lab: Lab, port_id: str, network_id: str, mac: str, slaac: bool) -> str:
    netns = lab.netns(port_id)
    lab.client.put_port(
        port_id,
        {"network_id": network_id, "mac": mac, "netns": netns, "dhcpv6": True, "slaac": slaac},
    )
    return netns


def global_v6(netns: str) -> set[str]:
    listing = sh(netns, ["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"])
    return {line.split()[3] for line in listing.splitlines()}


def default_v6_route(netns: str) -> str:
    return sh(netns, ["ip", "-6", "route", "show", "default"]).strip()


def resolv_conf(netns: str) -> str:
    # A fresh `ip netns exec` sees the namespace's own /etc/netns/<name>/resolv.conf.
    return sh(netns, ["cat", "/etc/resolv.conf"])


def file_state(path: Path) -> tuple[bytes, int] | None:
    try:
        return path.read_bytes(), os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


@pytest.fixture
def dhcpv6_lab(lab: Lab) -> Iterator[Lab]:
    lab.network("ext", external=True)
    lab.network("n7")
    lab.network("n8")
    lab.router("r6", dhcpv6_router())
    lab.workload(
        "outside",
        "ext",
        MAC["outside"],
        addresses=(f"{OUTSIDE_V6}/64",),
        routes=((STATEFUL, ROUTER_EXTERNAL_V6), (STATELESS, ROUTER_EXTERNAL_V6)),
    )
    yield lab


def test_stateful_workload_leases_its_host_address_and_routes_out(dhcpv6_lab: Lab) -> None:
    lab = dhcpv6_lab
    host_before = file_state(HOST_RESOLV_CONF)
    w7 = dhcpv6_workload(lab, "w7", "n7", W7_MAC, slaac=False)
    # Exactly the DHCP host's address, as a /128 lease: no SLAAC address from
    # the prefix (the RA marks it not autonomous).
    wait_until(lambda: global_v6(w7) == {f"{W7_ADDRESS}/128"}, 30, what="w7's DHCPv6 lease")
    # The default route comes from the router advertisement (DHCPv6 has none).
    route = wait_until(lambda: default_v6_route(w7), 20, what="w7's default route")
    assert "via fe80::" in route and "proto ra" in route, route
    wait_for_ping(w7, OUTSIDE_V6)
    # The router forwards it as itself: the outside sees the leased address.
    wait_for_ping(lab.netns("outside"), W7_ADDRESS)
    assert file_state(HOST_RESOLV_CONF) == host_before
    port = lab.client.get_port("w7")
    assert port["dhcpv6_client"]["running"], port


def test_stateless_workload_takes_slaac_and_dns_by_dhcpv6(dhcpv6_lab: Lab) -> None:
    lab = dhcpv6_lab
    host_before = file_state(HOST_RESOLV_CONF)
    w8 = dhcpv6_workload(lab, "w8", "n8", W8_MAC, slaac=True)
    # Also a stateful neighbour on eth0 in another namespace, at the same time.
    w7 = dhcpv6_workload(lab, "w7", "n7", W7_MAC, slaac=False)
    slaac = f"{eui64(STATELESS, W8_MAC)}/64"
    wait_until(lambda: global_v6(w8) == {slaac}, 30, what="w8's SLAAC address")
    # The RA carries no RDNSS for a stateless subnet: this server came by DHCPv6.
    wait_until(
        lambda: f"nameserver {DNS_V6}" in resolv_conf(w8).splitlines(),
        30,
        what="w8's DNS server from DHCPv6",
    )
    wait_for_ping(w8, OUTSIDE_V6)
    wait_until(lambda: global_v6(w7) == {f"{W7_ADDRESS}/128"}, 30, what="w7's DHCPv6 lease")
    assert file_state(HOST_RESOLV_CONF) == host_before
    # Unplugging stops the client: it leaves no process and the other runs on.
    lab.client.delete_port("w8")
    assert lab.client.get_port("w7")["dhcpv6_client"]["running"]
    wait_for_ping(w7, OUTSIDE_V6)


def test_dhcpv6_addresses_follow_the_router(dhcpv6_lab: Lab) -> None:
    """A changed DHCP host entry is a new lease after the client asks again:
    the address is the router's to give, not the workload's to keep."""
    lab = dhcpv6_lab
    w7 = dhcpv6_workload(lab, "w7", "n7", W7_MAC, slaac=False)
    wait_until(lambda: global_v6(w7) == {f"{W7_ADDRESS}/128"}, 30, what="w7's DHCPv6 lease")
    moved = dhcpv6_router()
    moved["dhcp_hosts"] = [{"mac": W7_MAC, "ip_address": "2001:db8:7::43", "hostname": "w7"}]
    lab.router("r6", moved)
    # Replug the port (a new client, as a rebooted workload would be).
    lab.client.delete_port("w7")
    w7 = dhcpv6_workload(lab, "w7", "n7", W7_MAC, slaac=False)
    wait_until(lambda: global_v6(w7) == {"2001:db8:7::43/128"}, 30, what="w7's new lease")


# --- through `astara serve` and the tenant API --------------------------------------------


def _bind_with_dhcp(cloud: Cloud, port_id: str, netns: str) -> None:
    cloud("PUT", f"/astara/v1/ports/{port_id}/binding", {"netns": netns, "dhcp": True})
    wait_until(
        lambda: cloud("GET", f"/v2.0/ports/{port_id}")["port"]["status"] == "ACTIVE",
        60,
        0.05,
        f"port {port_id} to be plugged",
    )


def test_dhcpv6_subnets_from_the_tenant_api(cloud: Cloud) -> None:
    """A router with a DHCPv6-stateful and a DHCPv6-stateless tenant subnet,
    made with Neutron calls only; workloads bound with DHCP get their IPv6
    the subnet's way and reach an outside host."""
    prefix = cloud.server.prefix
    public = cloud.create("networks", "network", name="public", **{"router:external": True})
    cloud.create("subnets", "subnet", network_id=public["id"], cidr="198.51.100.0/24", ip_version=4)
    cloud.create(
        "subnets", "subnet", network_id=public["id"], cidr="2001:db8:ff::/64", ip_version=6
    )
    outside = cloud.create(
        "ports",
        "port",
        network_id=public["id"],
        name="outside",
        fixed_ips=[{"ip_address": "198.51.100.1"}, {"ip_address": OUTSIDE_V6_SERVE}],
    )
    outside_netns = f"{prefix}-outside"
    cloud.plug(outside["id"], outside_netns)
    router = cloud.create(
        "routers", "router", name="r6", external_gateway_info={"network_id": public["id"]}
    )
    workloads = {}
    for name, cidr, mode in (
        ("stateful", STATEFUL, "dhcpv6-stateful"),
        ("stateless", STATELESS, "dhcpv6-stateless"),
    ):
        network = cloud.create("networks", "network", name=name)
        subnet = cloud.create(
            "subnets",
            "subnet",
            network_id=network["id"],
            cidr=cidr,
            ip_version=6,
            ipv6_ra_mode=mode,
            ipv6_address_mode=mode,
            dns_nameservers=[DNS_V6],
            # Not the API's default (the subnet-router anycast address), which
            # the appliance refuses as an interface address.
            gateway_ip=cidr.replace("::/64", "::1"),
        )
        cloud(
            "PUT",
            f"/v2.0/routers/{router['id']}/add_router_interface",
            {"subnet_id": subnet["id"]},
        )
        port = cloud.create("ports", "port", network_id=network["id"], name=f"{name}-vm")
        netns = f"{prefix}-{name}"
        _bind_with_dhcp(cloud, port["id"], netns)
        workloads[name] = (netns, port["fixed_ips"][0]["ip_address"])
    cloud.wait_active(router["id"])
    router = cloud("GET", f"/v2.0/routers/{router['id']}")["router"]
    router_v6 = next(
        ip["ip_address"]
        for ip in router["external_gateway_info"]["external_fixed_ips"]
        if ":" in ip["ip_address"]
    )
    # IPv6 is routed, not NATed: upstream routes the tenant prefixes to the
    # router (not `proto static`, so the agent leaves these routes alone).
    for cidr in (STATEFUL, STATELESS):
        sh(outside_netns, ["ip", "-6", "route", "add", cidr, "via", router_v6, "proto", "boot"])

    stateful_netns, leased = workloads["stateful"]
    wait_until(
        lambda: global_v6(stateful_netns) == {f"{leased}/128"}, 30, what="the API's address leased"
    )
    wait_for_ping(stateful_netns, OUTSIDE_V6_SERVE)

    stateless_netns, slaac = workloads["stateless"]
    wait_until(
        lambda: global_v6(stateless_netns) == {f"{slaac}/64"}, 30, what="the API's SLAAC address"
    )
    wait_until(
        lambda: f"nameserver {DNS_V6}" in resolv_conf(stateless_netns).splitlines(),
        30,
        what="the subnet's DNS server by DHCPv6",
    )
    wait_for_ping(stateless_netns, OUTSIDE_V6_SERVE)
