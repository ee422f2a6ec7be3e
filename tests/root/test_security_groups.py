"""Security groups and port security with real packets: `astara serve`
turns the tenant API's groups, rules and ports into each plugged port's
filter in the fabric, and follows every change (a rule, a member of a
remote group, port security turned off) without anyone watching."""

from __future__ import annotations

from typing import Any

import pytest

from astara.agent.client import AgentClient
from astara.testing.net import (
    Capture,
    Connection,
    EchoServer,
    never_pings,
    ping,
    send_frame,
    sh,
    tcp_request,
    wait_for_ping,
    wait_until,
)
from astara.testing.server import Cloud

pytestmark = pytest.mark.root

SG, RULES = "/v2.0/security-groups", "/v2.0/security-group-rules"


def group(cloud: Cloud, name: str, *rules: dict[str, Any]) -> str:
    made = cloud.create("security-groups", "security_group", name=name)["id"]
    for rule in rules:
        cloud.create("security-group-rules", "security_group_rule", security_group_id=made, **rule)
    return str(made)


def workload(
    cloud: Cloud, network_id: str, name: str, address: str, groups: list[str]
) -> tuple[dict[str, Any], str]:
    port = cloud.create(
        "ports",
        "port",
        network_id=network_id,
        name=name,
        fixed_ips=[{"ip_address": address}],
        security_groups=groups,
    )
    namespace = f"{cloud.server.prefix}-{name}"
    cloud.plug(port["id"], namespace)
    return port, namespace


def set_groups(cloud: Cloud, port_id: str, **fields: Any) -> None:
    cloud("PUT", f"/v2.0/ports/{port_id}", {"port": fields})


def answers(namespace: str, address: str, port: int) -> bool:
    return tcp_request(namespace, address, port, timeout_s=1.0) is not None


def test_groups_rules_remote_groups_and_port_security_on_one_network(cloud: Cloud) -> None:
    network = cloud.create("networks", "network", name="t")
    cloud.create(
        "subnets",
        "subnet",
        network_id=network["id"],
        cidr="10.20.0.0/24",
        ip_version=4,
        enable_dhcp=False,
    )
    clients = group(cloud, "clients")
    web = group(
        cloud,
        "web",
        {"direction": "ingress", "protocol": "tcp", "port_range_min": 7001, "port_range_max": 7001},
        {
            "direction": "ingress",
            "protocol": "tcp",
            "port_range_min": 7002,
            "port_range_max": 7002,
            "remote_group_id": clients,
        },
        {"direction": "ingress", "protocol": "icmp", "remote_group_id": clients},
    )
    other = group(cloud, "other")
    _, server_ns = workload(cloud, network["id"], "server", "10.20.0.10", [web])
    c1, c1_ns = workload(cloud, network["id"], "c1", "10.20.0.11", [clients])
    c2, c2_ns = workload(cloud, network["id"], "c2", "10.20.0.12", [other])

    with EchoServer(server_ns, 7001), EchoServer(server_ns, 7002), EchoServer(server_ns, 7003):
        # By port: 7001 from anyone; 7002 and ICMP from the remote group's
        # members only; 7003 from no one.
        wait_until(lambda: answers(c2_ns, "10.20.0.10", 7001), 30, 0.2, "tcp 7001 to open")
        assert answers(c1_ns, "10.20.0.10", 7002)
        assert not answers(c2_ns, "10.20.0.10", 7002)
        assert not answers(c1_ns, "10.20.0.10", 7003)
        wait_for_ping(c1_ns, "10.20.0.10")
        assert never_pings(c2_ns, "10.20.0.10", attempts=2)
        # The clients' own ingress allows nothing: the server cannot reach in.
        assert not ping(server_ns, "10.20.0.11")

        # A member added to the remote group: its traffic passes.
        set_groups(cloud, c2["id"], security_groups=[clients])
        wait_for_ping(c2_ns, "10.20.0.10", timeout_s=30)
        assert answers(c2_ns, "10.20.0.10", 7002)

        # A member removed: its new traffic fails, and the flows only its
        # membership allowed end (as Neutron does); the rest carry on.
        with (
            Connection(c1_ns, "10.20.0.10", 7002) as member_only,
            Connection(c1_ns, "10.20.0.10", 7001) as anyone,
        ):
            assert member_only.exchange("before") == "before"
            assert anyone.exchange("before") == "before"
            set_groups(cloud, c1["id"], security_groups=[other])
            wait_until(lambda: not ping(c1_ns, "10.20.0.10"), 30, 0.2, "c1's pings to stop")
            assert member_only.exchange("after", timeout_s=3) is None
            assert anyone.exchange("after") == "after"
        assert not answers(c1_ns, "10.20.0.10", 7002)

        # A rule removed closes its traffic, the flows it allowed included.
        tcp = next(
            r["id"]
            for r in cloud("GET", f"{RULES}?security_group_id={web}&port_range_min=7001")[
                "security_group_rules"
            ]
        )
        with Connection(c2_ns, "10.20.0.10", 7001) as open_flow:
            assert open_flow.exchange("before") == "before"
            cloud("DELETE", f"{RULES}/{tcp}", ok=204)
            wait_until(lambda: not answers(c2_ns, "10.20.0.10", 7001), 30, 0.2, "7001 to close")
            assert open_flow.exchange("after", timeout_s=3) is None

        # From an address group: its addresses, as they come and go.
        office = cloud.create(
            "address-groups", "address_group", name="office", addresses=["10.20.0.12/32"]
        )["id"]
        cloud.create(
            "security-group-rules",
            "security_group_rule",
            security_group_id=web,
            direction="ingress",
            protocol="tcp",
            port_range_min=7003,
            port_range_max=7003,
            remote_address_group_id=office,
        )
        wait_until(lambda: answers(c2_ns, "10.20.0.10", 7003), 30, 0.2, "7003 from the office")
        assert not answers(c1_ns, "10.20.0.10", 7003)
        cloud("PUT", f"/v2.0/address-groups/{office}/add_addresses", {"addresses": ["10.20.0.11"]})
        wait_until(lambda: answers(c1_ns, "10.20.0.10", 7003), 30, 0.2, "7003 from c1 too")
        body = {"addresses": ["10.20.0.12/32"]}
        cloud("PUT", f"/v2.0/address-groups/{office}/remove_addresses", body)
        wait_until(lambda: not answers(c2_ns, "10.20.0.10", 7003), 30, 0.2, "7003 closed to c2")
        assert answers(c1_ns, "10.20.0.10", 7003)


def test_spoofing_is_dropped_with_port_security_and_passes_without(cloud: Cloud) -> None:
    network = cloud.create("networks", "network", name="s")
    cloud.create(
        "subnets",
        "subnet",
        network_id=network["id"],
        cidr="10.21.0.0/24",
        ip_version=4,
        enable_dhcp=False,
    )
    cloud.create(
        "subnets",
        "subnet",
        network_id=network["id"],
        cidr="2001:db8:21::/64",
        ip_version=6,
        enable_dhcp=False,
    )
    everyone = group(
        cloud, "open", {"direction": "ingress"}, {"direction": "ingress", "ethertype": "IPv6"}
    )
    victim, victim_ns = workload(cloud, network["id"], "victim", "10.21.0.10", [everyone])
    victim_v6 = "2001:db8:21::10"
    cloud(
        "PUT",
        f"/v2.0/ports/{victim['id']}",
        {"port": {"fixed_ips": [*victim["fixed_ips"], {"ip_address": victim_v6}]}},
    )
    bad, bad_ns = workload(cloud, network["id"], "bad", "10.21.0.11", [everyone])
    closed, closed_ns = workload(cloud, network["id"], "closed", "10.21.0.12", [])
    wait_for_ping(bad_ns, "10.21.0.10", timeout_s=30)
    wait_until(lambda: victim_v6 in sh(victim_ns, ["ip", "-6", "addr"]), 30, 0.2, "IPv6")
    bad_mac = bad["mac_address"]
    bad_lla = sh(bad_ns, ["ip", "-6", "-br", "addr", "show", "eth0"]).split()[-1].split("/")[0]

    def spoofs() -> dict[str, bool]:
        """Each kind of spoofing from `bad`, and whether it reached the victim."""
        found: dict[str, bool] = {}
        sh(bad_ns, ["ip", "addr", "replace", "10.21.0.99/24", "dev", "eth0"])
        found["source IP"] = _ping_from(bad_ns, "10.21.0.99", "10.21.0.10")
        sh(bad_ns, ["ip", "addr", "del", "10.21.0.99/24", "dev", "eth0"], check=False)
        with Capture(victim_ns, "eth0", "arp and host 10.21.0.50") as arp:
            # An unsolicited ARP claiming another's address.
            sh(bad_ns, ["ip", "addr", "add", "10.21.0.50/32", "dev", "eth0"])
            sh(bad_ns, ["arping", "-U", "-c", "2", "-I", "eth0", "10.21.0.50"], check=False)
            sh(bad_ns, ["ip", "addr", "del", "10.21.0.50/32", "dev", "eth0"])
            found["ARP for another's address"] = bool(_settled(arp.lines))
        with Capture(victim_ns, "eth0", "udp src port 67") as dhcp:
            offer = "echo offer | socat -u - UDP4-SENDTO:10.21.0.10:68,sp=67"
            sh(bad_ns, ["sh", "-c", offer], check=False)
            found["DHCP server"] = bool(_settled(dhcp.lines))
        with Capture(victim_ns, "eth0", "icmp6 and ip6[40] == 136") as na:
            # A neighbour advertisement claiming the victim's own IPv6 address.
            send_frame(
                bad_ns, "na", "eth0", "33:33:00:00:00:01", bad_mac, bad_lla, "ff02::1", victim_v6
            )
            found["NA for another's address"] = any(
                victim_v6 in line for line in _settled(na.lines)
            )
        with Capture(closed_ns, "eth0", "icmp") as tagged:
            # An echo request tagged with VLAN 0, to a port that lets nothing in.
            closed_mac = closed["mac_address"]
            send_frame(
                bad_ns, "vlan0-echo", "eth0", closed_mac, bad_mac, "10.21.0.11", "10.21.0.12"
            )
            found["tagged frame past the ingress"] = bool(_settled(tagged.lines))
        mac = sh(bad_ns, ["cat", "/sys/class/net/eth0/address"]).strip()
        sh(bad_ns, ["ip", "link", "set", "eth0", "address", "fa:16:3e:66:66:66"])
        sh(bad_ns, ["ip", "neigh", "flush", "all"])
        found["MAC"] = ping(bad_ns, "10.21.0.10")
        sh(bad_ns, ["ip", "link", "set", "eth0", "address", mac])
        # The agent may have seen the wrong MAC and plugged the port anew.
        wait_until(lambda: _ping_from(bad_ns, "10.21.0.11", "10.21.0.10"), 30, 0.2, "healed")
        return found

    kinds = ["source IP", "ARP for another's address", "DHCP server", "NA for another's address"]
    assert spoofs() == dict.fromkeys([*kinds, "tagged frame past the ingress", "MAC"], False)

    # An allowed address pair: that address may be sent from too (a VIP).
    pair = {"port": {"allowed_address_pairs": [{"ip_address": "10.21.0.98"}]}}
    cloud("PUT", f"/v2.0/ports/{bad['id']}", pair)

    def from_pair() -> bool:
        # Added each time: the port's change may plug its link anew.
        sh(bad_ns, ["ip", "addr", "replace", "10.21.0.98/24", "dev", "eth0"])
        return _ping_from(bad_ns, "10.21.0.98", "10.21.0.10")

    wait_until(from_pair, 30, 0.2, "the pair's address")
    sh(bad_ns, ["ip", "addr", "del", "10.21.0.98/24", "dev", "eth0"])
    set_groups(
        cloud,
        bad["id"],
        port_security_enabled=False,
        security_groups=[],
        allowed_address_pairs=[],
    )
    wait_filtered(cloud, bad["id"], False)
    # Unfiltered, it spoofs at will; the closed port still gets no tagged frame.
    found = spoofs()
    assert found == {**dict.fromkeys([*kinds, "MAC"], True), "tagged frame past the ingress": False}


def wait_filtered(cloud: Cloud, port_id: str, filtered: bool) -> None:
    """Until the host's agent holds the port with (or without) its filter."""
    with AgentClient(f"unix:{cloud.server.state_dir / 'agent.sock'}") as agent:
        wait_until(
            lambda: (agent.get_port(port_id)["spec"]["security"] is not None) == filtered,
            30,
            0.1,
            f"port {port_id} {'filtered' if filtered else 'unfiltered'} on its host",
        )


def _ping_from(namespace: str, source: str, address: str) -> bool:
    result = sh(namespace, ["ping", "-c", "1", "-W", "1", "-I", source, address], check=False)
    return " 0% packet loss" in result


def _settled(lines: list[str]) -> list[str]:
    """What a capture saw, once the sender had time to send."""
    import time

    time.sleep(0.5)
    return list(lines)


def test_rules_hold_across_a_router_through_a_floating_ip_and_over_ipv6(cloud: Cloud) -> None:
    """The same group, seen from a workload behind the router (IPv4 and
    IPv6), from its own network, and from the outside through its floating
    IP: each flow the rules name passes, every other is dropped."""
    prefix = cloud.server.prefix
    public, _ = cloud.public_network()
    router = cloud.create(
        "routers", "router", name="r", external_gateway_info={"network_id": public["id"]}
    )
    networks = {}
    for name, v4, v6 in (
        ("front", "10.40.0.0/24", "2001:db8:40::/64"),
        ("back", "10.41.0.0/24", "2001:db8:41::/64"),
    ):
        network = cloud.create("networks", "network", name=name)
        for cidr, version, modes in (
            (v4, 4, {}),
            (v6, 6, {"ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"}),
        ):
            subnet = cloud.create(
                "subnets",
                "subnet",
                network_id=network["id"],
                cidr=cidr,
                ip_version=version,
                enable_dhcp=version == 6,
                **modes,
            )
            cloud(
                "PUT",
                f"/v2.0/routers/{router['id']}/add_router_interface",
                {"subnet_id": subnet["id"]},
            )
        networks[name] = network["id"]
    web = group(
        cloud,
        "web",
        {
            "direction": "ingress",
            "protocol": "tcp",
            "port_range_min": 7001,
            "port_range_max": 7001,
            "remote_ip_prefix": "0.0.0.0/0",
        },
        {
            "direction": "ingress",
            "ethertype": "IPv6",
            "protocol": "tcp",
            "port_range_min": 7001,
            "port_range_max": 7001,
            "remote_ip_prefix": "2001:db8:41::/64",
        },
    )
    other = group(cloud, "other")

    def plugged(name: str, network: str, groups: list[str]) -> tuple[str, str, str]:
        port = cloud.create(
            "ports", "port", network_id=networks[network], name=name, security_groups=groups
        )
        cloud.plug(port["id"], f"{prefix}-{name}")
        v4 = next(a["ip_address"] for a in port["fixed_ips"] if ":" not in a["ip_address"])
        v6 = next(a["ip_address"] for a in port["fixed_ips"] if ":" in a["ip_address"])
        return f"{prefix}-{name}", v4, v6

    server_ns, server_v4, server_v6 = plugged("server", "front", [web])
    client_ns, _, _ = plugged("client", "back", [other])
    peer_ns, _, _ = plugged("peer", "front", [other])
    server_port = cloud("GET", "/v2.0/ports?name=server")["ports"][0]
    floating = cloud.create(
        "floatingips", "floatingip", floating_network_id=public["id"], port_id=server_port["id"]
    )["floating_ip_address"]
    cloud.wait_active(router["id"])

    with EchoServer(server_ns, 7001), EchoServer(server_ns, 7002):
        wait_until(lambda: answers(client_ns, server_v4, 7001), 30, 0.2, "7001 across the router")
        wait_until(lambda: answers(client_ns, server_v6, 7001), 30, 0.2, "7001 over IPv6")
        wait_until(
            lambda: answers(f"{prefix}-outside", floating, 7001), 30, 0.2, "7001 via the FIP"
        )
        assert answers(peer_ns, server_v4, 7001)  # its own network, IPv4: any source
        # Dropped: a port no rule names, ICMP nobody allowed, IPv6 from outside the prefix.
        assert not answers(client_ns, server_v4, 7002)
        assert not answers(client_ns, server_v6, 7002)
        assert not answers(f"{prefix}-outside", floating, 7002)
        assert not ping(f"{prefix}-outside", floating)
        assert not answers(peer_ns, server_v6, 7001)
        # The server's own egress: its default group sends anywhere.
        assert ping(server_ns, "198.51.100.1")
