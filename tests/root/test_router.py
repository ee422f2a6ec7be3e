"""The router appliance, end to end, asserted on real packets between namespaces."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from astara.linux import netlink
from astara.testing.lab import Lab, eui64
from astara.testing.net import (
    Capture,
    Connection,
    EchoServer,
    WhoAmI,
    never_pings,
    ping,
    seen_source,
    sh,
    wait_for_ping,
    wait_until,
)
from tests.root.conftest import (
    FLOATING_IP,
    MAC,
    OUTSIDE,
    OUTSIDE_V6,
    ROUTER_EXTERNAL,
    router_config,
)

pytestmark = pytest.mark.root


def addresses(lab: Lab, port: str) -> list[str]:
    return list(lab.client.request("GET", f"/v1/ports/{port}")["addresses"])


def established_flows(netns: str) -> set[tuple[str, ...]]:
    """The original-direction tuple of each established TCP conntrack entry."""
    listing = sh(netns, ["conntrack", "-L", "-p", "tcp", "--state", "ESTABLISHED"])
    flows = set()
    for line in listing.splitlines():
        fields = [f for f in line.split() if f.split("=")[0] in ("src", "dst", "sport", "dport")]
        flows.add(tuple(fields[:4]))
    return flows


def table_handle(netns: str) -> str:
    """The kernel's handle of the appliance's nftables table: replacing the
    table makes a new one, changing set elements keeps it."""
    listing = sh(netns, ["nft", "-a", "list", "table", "inet", "astara"])
    found = re.search(r"# handle (\d+)", listing)
    assert found, listing
    return found.group(1)


def namespace_identity(netns: str) -> int:
    """The namespace's inode: a namespace made anew under the same name has another."""
    return os.stat(f"/var/run/netns/{netns}").st_ino


def test_workloads_get_addresses_from_the_appliance_and_route_across_subnets(standard: Lab) -> None:
    lab = standard
    lab.router("r1", router_config())
    w1, w2, w6 = lab.netns("w1"), lab.netns("w2"), lab.netns("w6")
    w1_v6 = eui64("2001:db8:1::/64", MAC["w1"])
    w6_v6 = eui64("2001:db8:6::/64", MAC["w6"])

    # DHCP (dnsmasq in the appliance) and SLAAC (radvd) addressed them.
    wait_until(lambda: "10.1.0.10/24" in addresses(lab, "w1"), what="w1's DHCP lease")
    wait_until(lambda: "10.2.0.10/24" in addresses(lab, "w2"), what="w2's DHCP lease")
    wait_until(lambda: f"{w1_v6}/64" in addresses(lab, "w1"), what="w1's SLAAC address")
    wait_until(lambda: f"{w6_v6}/64" in addresses(lab, "w6"), what="w6's SLAAC address")
    # The DHCP answer carried the router and the DNS servers, into the
    # namespace's own resolv.conf (the host's is never touched).
    routes = sh(w1, ["ip", "-4", "route"])
    assert "default via 10.1.0.1" in routes
    assert "192.0.2.0/24 via 10.1.0.254" in routes  # the subnet's host route
    assert Path(f"/etc/netns/{w1}/resolv.conf").read_text().split() == ["nameserver", "192.0.2.53"]

    # IPv4 across the two internal subnets, both ways, through the router.
    wait_for_ping(w1, "10.2.0.10")
    wait_for_ping(w2, "10.1.0.10")
    # IPv6 across subnets, and to the outside without NAT.
    wait_for_ping(w1, w6_v6)
    wait_for_ping(w6, w1_v6)
    with WhoAmI(lab.netns("outside")) as server:
        seen = wait_until(
            lambda: seen_source(w6, OUTSIDE_V6, server.port), what="w6 to reach outside"
        )
    assert seen == w6_v6


def test_snat_source_is_the_router_external_address(standard: Lab) -> None:
    lab = standard
    lab.router("r1", router_config(snat=True))
    with WhoAmI(lab.netns("outside")) as server:
        seen = wait_until(
            lambda: seen_source(lab.netns("w2"), OUTSIDE, server.port), what="w2 to get out"
        )
    assert seen == ROUTER_EXTERNAL


def test_without_snat_workloads_do_not_get_out(standard: Lab) -> None:
    lab = standard
    lab.router("r1", router_config(snat=False))
    outside = lab.netns("outside")
    try:
        with (
            WhoAmI(outside) as server,
            Capture(outside, "eth0", "tcp and src host 10.2.0.10") as capture,
        ):
            assert seen_source(lab.netns("w2"), OUTSIDE, server.port, timeout_s=2) is None
            # The packets leave untranslated; the outside cannot answer them.
            capture.wait_for("10.2.0.10")
        assert never_pings(lab.netns("w2"), OUTSIDE)
    finally:
        lab.router("r1", router_config(snat=True))
    with WhoAmI(outside) as server:
        assert (
            wait_until(lambda: seen_source(lab.netns("w2"), OUTSIDE, server.port))
            == ROUTER_EXTERNAL
        )


def test_floating_ip_inbound_outbound_and_removal(standard: Lab) -> None:
    lab = standard
    w1, w2, outside = lab.netns("w1"), lab.netns("w2"), lab.netns("outside")
    lab.router("r1", router_config())
    wait_until(lambda: "10.1.0.10/24" in addresses(lab, "w1"), what="w1's DHCP lease")

    # Inbound: the outside host reaches w1 through its floating IP, and w1
    # sees the outside host's own address.
    with WhoAmI(w1) as server:
        seen = wait_until(
            lambda: seen_source(outside, FLOATING_IP, server.port), what="inbound via FIP"
        )
    assert seen == OUTSIDE
    # Outbound: w1's connections arrive from its floating IP; w2 (none) from the router.
    with WhoAmI(outside) as server:
        assert seen_source(w1, OUTSIDE, server.port) == FLOATING_IP
        assert seen_source(w2, OUTSIDE, server.port) == ROUTER_EXTERNAL

    # Removal: inbound stops; w1 falls back to the router's SNAT address.
    lab.router("r1", router_config(floating_ips={}))
    with WhoAmI(w1) as server:
        assert seen_source(outside, FLOATING_IP, server.port, timeout_s=2) is None
    assert never_pings(outside, FLOATING_IP)
    assert ping(outside, ROUTER_EXTERNAL)  # the control: the same probe, a live address
    with WhoAmI(outside) as server:
        assert seen_source(w1, OUTSIDE, server.port) == ROUTER_EXTERNAL
    lab.router("r1", router_config())


def test_new_floating_ip_is_announced_by_gratuitous_arp(standard: Lab) -> None:
    lab = standard
    outside = lab.netns("outside")
    lab.router("r1", router_config())
    # Accept unsolicited ARP on the outside host, as upstream routers do.
    sh(outside, ["sysctl", "-q", "-w", "net.ipv4.conf.eth0.arp_accept=1"])
    sh(outside, ["ip", "neigh", "flush", "dev", "eth0"])
    moved = "198.51.100.51"
    try:
        with Capture(outside, "eth0", f"arp and host {moved}") as capture:
            lab.router(
                "r1", router_config(floating_ips={FLOATING_IP: "10.1.0.10", moved: "10.2.0.10"})
            )
            capture.wait_for(f"Request who-has {moved} tell {moved}")
        # Without any traffic to it, the outside host learned the new address.
        neighbours = sh(outside, ["ip", "neigh", "show", moved])
        assert MAC["router_ext"] in neighbours, neighbours
    finally:
        lab.router("r1", router_config())


def test_same_config_changes_nothing_and_changes_keep_connections(standard: Lab) -> None:
    lab = standard
    w1, w2, outside = lab.netns("w1"), lab.netns("w2"), lab.netns("outside")
    first = lab.router("r1", router_config())
    wait_until(lambda: "10.2.0.10/24" in addresses(lab, "w2"), what="w2's DHCP lease")

    again = lab.router("r1", router_config())
    assert again["changed"] is False and again["actions"] == []
    assert again["generation"] == first["generation"]
    assert again["daemons"] == first["daemons"]  # same PIDs: nothing restarted

    with (
        EchoServer(outside) as echo_out,
        EchoServer(w1) as echo_w1,
        Connection(w2, OUTSIDE, echo_out.port) as snat_connection,
        Connection(outside, FLOATING_IP, echo_w1.port) as floating_connection,
    ):
        assert snat_connection.exchange("before") == "before"
        assert floating_connection.exchange("before") == "before"
        flows_before = established_flows(lab.router_netns("r1"))
        assert len(flows_before) >= 2
        table_before = table_handle(lab.router_netns("r1"))

        # Unrelated changes: a new floating IP, a new route, a new DHCP host.
        changed = router_config(
            floating_ips={FLOATING_IP: "10.1.0.10", "198.51.100.60": "10.2.0.99"}
        )
        changed["routes"].append({"destination": "203.0.113.0/24", "nexthop": OUTSIDE})
        changed["dhcp_hosts"].append({"mac": "fa:16:3e:00:03:99", "ip_address": "10.2.0.99"})
        result = lab.router("r1", changed)
        assert result["changed"] is True
        assert result["generation"] == first["generation"] + 1
        # The new floating IP went in as map elements: the table was not replaced.
        assert table_handle(lab.router_netns("r1")) == table_before
        assert result["daemons"]["dnsmasq"]["pid"] == first["daemons"]["dnsmasq"]["pid"]
        assert result["daemons"]["radvd"]["pid"] == first["daemons"]["radvd"]["pid"]

        assert snat_connection.exchange("after") == "after"
        assert floating_connection.exchange("after") == "after"
        # No conntrack flush: the same entries carried the traffic.
        assert flows_before <= established_flows(lab.router_netns("r1"))
    lab.router("r1", router_config())


def test_invalid_config_is_refused_and_traffic_still_flows(standard: Lab) -> None:
    lab = standard
    good = lab.router("r1", router_config())
    wait_for_ping(lab.netns("w1"), "10.2.0.10")

    duplicate = router_config(floating_ips={FLOATING_IP: "10.1.0.10"})
    duplicate["floating_ips"].append({"floating_ip": FLOATING_IP, "fixed_ip": "10.2.0.10"})
    response = lab.client.http.put("/v1/appliances/r1", json=duplicate)
    assert response.status_code == 422
    assert {
        "loc": ["body", "floating_ips", 1, "floating_ip"],
        "msg": f"duplicate floating IP {FLOATING_IP}",
        "type": "value_error.duplicate",
    } in response.json()["detail"]

    other_version = router_config()
    other_version["subnets"][0]["gateway_ip"] = "2001:db8:9::1"
    response = lab.client.http.put("/v1/appliances/r1", json=other_version)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "subnets", 0, "gateway_ip"]

    typo = router_config()
    typo["snat"]["enabeld"] = True
    response = lab.client.http.put("/v1/appliances/r1", json=typo)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "snat", "enabeld"]

    # Nothing changed: same generation and hash, same daemons, traffic flows.
    now = lab.client.get_appliance("r1")
    assert (now["generation"], now["config_hash"]) == (good["generation"], good["config_hash"])
    assert now["daemons"] == good["daemons"]
    assert now["state"] == "active"
    wait_for_ping(lab.netns("w1"), "10.2.0.10")
    with WhoAmI(lab.netns("outside")) as server:
        assert seen_source(lab.netns("w2"), OUTSIDE, server.port) == ROUTER_EXTERNAL


def test_rendered_shows_the_ruleset_in_force(standard: Lab) -> None:
    lab = standard
    lab.router(
        "r1", router_config(floating_ips={FLOATING_IP: "10.1.0.10", "198.51.100.61": "10.2.0.10"})
    )
    rendered = lab.client.rendered("r1")
    assert "198.51.100.61 : 10.2.0.10" in rendered["files"]["nftables.nft"]
    assert "198.51.100.61 : 10.2.0.10" in rendered["nftables_live"]
    assert "fa:16:3e:00:02:10,10.1.0.10,w1" in rendered["files"]["dnsmasq.hosts"]
    assert "prefix 2001:db8:6::/64" in rendered["files"]["radvd.conf"]
    live = sh(lab.router_netns("r1"), ["nft", "list", "table", "inet", "astara"])
    assert live == rendered["nftables_live"]
    lab.router("r1", router_config())


def test_two_routers_with_overlapping_cidrs_stay_isolated(lab: Lab) -> None:
    lab.network("ext", external=True)
    outside = lab.workload("outside", "ext", MAC["outside"], addresses=(f"{OUTSIDE}/24",))
    tenants = {
        "a": ("198.51.100.2", "fa:16:3e:0a:00:10"),
        "b": ("198.51.100.3", "fa:16:3e:0b:00:20"),
    }
    hosts = {"a": "10.1.0.10", "b": "10.1.0.20"}
    for tenant, (external, workload_mac) in tenants.items():
        lab.network(f"net-{tenant}")
        router_mac = f"fa:16:3e:0{tenant}:00:01"
        lab.router(
            f"router-{tenant}",
            {
                "interfaces": [
                    {
                        "mac": f"fa:16:3e:0{tenant}:01:01",
                        "network_id": "ext",
                        "role": "external",
                        "addresses": [f"{external}/24"],
                    },
                    {
                        "mac": router_mac,
                        "network_id": f"net-{tenant}",
                        "role": "internal",
                        "addresses": ["10.1.0.1/24"],
                    },
                ],
                "subnets": [
                    {
                        "cidr": "10.1.0.0/24",
                        "interface_mac": router_mac,
                        "gateway_ip": "10.1.0.1",
                        "enable_dhcp": True,
                    }
                ],
                "dhcp_hosts": [{"mac": workload_mac, "ip_address": hosts[tenant]}],
                "routes": [{"destination": "0.0.0.0/0", "nexthop": OUTSIDE}],
                "snat": {"enabled": True},
            },
        )
        lab.workload(f"w-{tenant}", f"net-{tenant}", workload_mac, dhcp=True)
    w_a, w_b = lab.netns("w-a"), lab.netns("w-b")
    wait_until(lambda: "10.1.0.10/24" in addresses(lab, "w-a"), what="w-a's lease from router a")
    wait_until(lambda: "10.1.0.20/24" in addresses(lab, "w-b"), what="w-b's lease from router b")

    # Each reaches the outside through its own router.
    with WhoAmI(outside) as server:
        assert wait_until(lambda: seen_source(w_a, OUTSIDE, server.port)) == "198.51.100.2"
        assert wait_until(lambda: seen_source(w_b, OUTSIDE, server.port)) == "198.51.100.3"
    # Neither sees the other: not by address, not by broadcast.
    with Capture(w_b, "eth0", "icmp or arp") as capture_b:
        assert never_pings(w_a, "10.1.0.20")
        assert capture_b.matching("10.1.0.10") == []
    with Capture(w_a, "eth0", "icmp or arp") as capture_a:
        assert never_pings(w_b, "10.1.0.10")
        assert capture_a.matching("10.1.0.20") == []
    # Their appliances are separate namespaces with separate interfaces.
    with netlink.netns(lab.router_netns("router-a")) as ns_a:
        assert netlink.link_index(ns_a, "intfa163e0b0001") is None


def test_interfaces_are_added_and_removed_in_place(standard: Lab) -> None:
    lab = standard
    w1, w2, outside = lab.netns("w1"), lab.netns("w2"), lab.netns("outside")
    lab.router("r1", router_config())
    lab.network("n3")
    namespace_before = namespace_identity(lab.router_netns("r1"))
    with EchoServer(outside) as echo, Connection(w2, OUTSIDE, echo.port) as connection:
        assert connection.exchange("before") == "before"
        grown = router_config()
        grown["interfaces"].append(
            {
                "mac": "fa:16:3e:00:05:01",
                "network_id": "n3",
                "role": "internal",
                "addresses": ["10.3.0.1/24"],
            }
        )
        grown["subnets"].append(
            {
                "cidr": "10.3.0.0/24",
                "interface_mac": "fa:16:3e:00:05:01",
                "gateway_ip": "10.3.0.1",
                "enable_dhcp": True,
            }
        )
        grown["dhcp_hosts"].append({"mac": "fa:16:3e:00:05:10", "ip_address": "10.3.0.10"})
        lab.router("r1", grown)
        assert namespace_identity(lab.router_netns("r1")) == namespace_before
        lab.workload("w3", "n3", "fa:16:3e:00:05:10", dhcp=True)
        wait_for_ping(lab.netns("w3"), "10.1.0.10")
        with WhoAmI(outside) as server:
            assert seen_source(lab.netns("w3"), OUTSIDE, server.port) == ROUTER_EXTERNAL
        assert connection.exchange("grown") == "grown"

        lab.router("r1", router_config())
        assert never_pings(lab.netns("w3"), "10.1.0.10")
        assert connection.exchange("shrunk") == "shrunk"
        wait_for_ping(w1, "10.2.0.10")
    lab.client.delete_port("w3")
    lab.client.delete_network("n3")


def test_a_workload_reaches_its_own_floating_ip(standard: Lab) -> None:
    """Hairpin: inside hosts reach floating IPs too, even from the same subnet."""
    lab = standard
    lab.router("r1", router_config())
    w1 = lab.netns("w1")
    wait_until(lambda: "10.1.0.10/24" in addresses(lab, "w1"), what="w1's DHCP lease")
    with WhoAmI(w1) as server:
        # Translated to the router's inside address, so the answer returns through it.
        assert wait_until(lambda: seen_source(w1, FLOATING_IP, server.port)) == "10.1.0.1"
        # From outside, the client's own address is kept.
        assert seen_source(lab.netns("outside"), FLOATING_IP, server.port) == OUTSIDE


def test_an_upstream_gateway_outside_the_external_subnet_is_reached_on_link(
    standard: Lab,
) -> None:
    """Neutron accepts an external subnet whose gateway lies outside it (a
    provider's /32s, say): the router's default route goes to it on-link
    through the external interface, and traffic leaves that way."""
    lab = standard
    upstream = "192.0.2.1"
    config = router_config()
    config["routes"][0] = {"destination": "0.0.0.0/0", "nexthop": upstream, "onlink": True}
    lab.router("r1", config)
    gateway = lab.workload("upstream", "ext", "fa:16:3e:00:01:20", addresses=(f"{upstream}/24",))
    try:
        # The upstream reaches the router's own subnet on-link, as a provider's would.
        sh(gateway, ["ip", "route", "add", "198.51.100.0/24", "dev", "eth0"])
        routes = sh(lab.router_netns("r1"), ["ip", "-4", "route", "show", "default"])
        assert f"via {upstream}" in routes and "onlink" in routes
        with WhoAmI(gateway) as server:
            seen = wait_until(
                lambda: seen_source(lab.netns("w2"), upstream, server.port),
                what="w2 to reach the upstream through the on-link default route",
            )
        assert seen == ROUTER_EXTERNAL
    finally:
        lab.client.delete_port("upstream")
        lab.router("r1", router_config())
