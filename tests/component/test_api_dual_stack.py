"""Dual-stack networks the Neutron way: router interfaces per address family
(§4.1, §4.2), and auto-address (SLAAC, DHCPv6-stateless) subnets that come
and go under existing ports (§3.2)."""

from __future__ import annotations

import ipaddress
from typing import Any

from tests.component.conftest import Api, error, project
from tests.component.test_api_routers import router


def subnet(api: Api, network_id: str, cidr: str, **fields: Any) -> dict[str, Any]:
    version = 6 if ":" in cidr else 4
    body = {"network_id": network_id, "ip_version": version, "cidr": cidr, **fields}
    response = api("POST", "/v2.0/subnets", {"subnet": body})
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()["subnet"]
    return made


def slaac(api: Api, network_id: str, cidr: str) -> dict[str, Any]:
    return subnet(api, network_id, cidr, ipv6_ra_mode="slaac", ipv6_address_mode="slaac")


def add(api: Api, router_id: str, **body: str) -> Any:
    return api("PUT", f"/v2.0/routers/{router_id}/add_router_interface", body)


def remove(api: Api, router_id: str, **body: str) -> Any:
    return api("PUT", f"/v2.0/routers/{router_id}/remove_router_interface", body)


def interface_ports(api: Api, router_id: str) -> list[dict[str, Any]]:
    ports: list[dict[str, Any]] = api(
        "GET", f"/v2.0/ports?device_id={router_id}&device_owner=network:router_interface"
    ).json()["ports"]
    return ports


def test_ipv6_subnets_share_one_port_and_each_ipv4_subnet_gets_its_own(admin: Api) -> None:
    alice = project(admin, "alice")
    network = alice.create_network(name="dual")
    v4a = subnet(alice, network["id"], "10.0.0.0/24")
    v4b = subnet(alice, network["id"], "10.0.1.0/24")
    v6a = slaac(alice, network["id"], "2001:db8:1::/64")
    v6b = slaac(alice, network["id"], "2001:db8:2::/64")
    made = router(alice)

    first = add(alice, made["id"], subnet_id=v4a["id"]).json()
    second = add(alice, made["id"], subnet_id=v4b["id"]).json()
    assert first["port_id"] != second["port_id"]  # each IPv4 subnet: a port of its own
    v6_first = add(alice, made["id"], subnet_id=v6a["id"])
    assert v6_first.status_code == 200, v6_first.text
    v6_port = v6_first.json()["port_id"]
    assert v6_port not in (first["port_id"], second["port_id"])  # IPv6 beside IPv4
    v6_second = add(alice, made["id"], subnet_id=v6b["id"]).json()
    assert v6_second["port_id"] == v6_port  # further IPv6 subnets join that port
    assert v6_second["subnet_id"] == v6b["id"]
    assert v6_second["subnet_ids"] == [v6a["id"], v6b["id"]]
    shown = alice("GET", f"/v2.0/ports/{v6_port}").json()["port"]
    assert [(f["subnet_id"], f["ip_address"]) for f in shown["fixed_ips"]] == [
        (v6a["id"], "2001:db8:1::"),
        (v6b["id"], "2001:db8:2::"),
    ]
    assert shown["revision_number"] == 2  # the joining subnet is a change of the port
    assert len(interface_ports(alice, made["id"])) == 3

    # Removing one IPv6 subnet takes only its address; the last one takes the port.
    gone = remove(alice, made["id"], subnet_id=v6a["id"])
    assert gone.status_code == 200, gone.text
    assert gone.json()["port_id"] == v6_port and gone.json()["subnet_ids"] == [v6a["id"]]
    left = alice("GET", f"/v2.0/ports/{v6_port}").json()["port"]
    assert [f["subnet_id"] for f in left["fixed_ips"]] == [v6b["id"]]
    assert alice("DELETE", f"/v2.0/subnets/{v6a['id']}").status_code == 204
    assert remove(alice, made["id"], subnet_id=v6b["id"]).status_code == 200
    assert alice("GET", f"/v2.0/ports/{v6_port}").status_code == 404
    assert len(interface_ports(alice, made["id"])) == 2


def test_a_router_port_carries_at_most_one_ipv4_subnet(admin: Api) -> None:
    alice = project(admin, "alice")
    network = alice.create_network(name="two-v4")
    a = subnet(alice, network["id"], "10.0.0.0/24")
    b = subnet(alice, network["id"], "10.0.1.0/24")
    port = alice(
        "POST",
        "/v2.0/ports",
        {
            "port": {
                "network_id": network["id"],
                "fixed_ips": [{"subnet_id": a["id"]}, {"subnet_id": b["id"]}],
            }
        },
    ).json()["port"]
    made = router(alice)
    status, kind, message = error(add(alice, made["id"], port_id=port["id"]))
    assert (status, kind) == (400, "BadRequest")
    assert "multiple IPv4 subnets" in message
    assert alice("GET", f"/v2.0/ports/{port['id']}").json()["port"]["device_id"] == ""


def test_an_externally_advertised_ipv6_subnet_cannot_join_a_router(admin: Api) -> None:
    alice = project(admin, "alice")
    network = alice.create_network(name="ext-ra")
    outside = subnet(alice, network["id"], "2001:db8:9::/64", ipv6_address_mode="slaac")
    made = router(alice)
    status, kind, message = error(add(alice, made["id"], subnet_id=outside["id"]))
    assert (status, kind) == (400, "BadRequest")
    assert "external router" in message


def test_an_auto_address_subnet_is_deleted_from_under_its_ports(admin: Api) -> None:
    """Neutron deletes SLAAC and DHCPv6-stateless subnets while ordinary ports
    have addresses on them, and takes those addresses away (§3.2)."""
    alice = project(admin, "alice")
    network = alice.create_network(name="auto")
    v4 = subnet(alice, network["id"], "10.0.0.0/24")
    for mode in ("slaac", "dhcpv6-stateless"):
        v6 = subnet(
            alice,
            network["id"],
            "2001:db8:5::/64",
            ipv6_ra_mode=mode,
            ipv6_address_mode=mode,
        )
        port = alice("POST", "/v2.0/ports", {"port": {"network_id": network["id"]}}).json()["port"]
        assert {f["subnet_id"] for f in port["fixed_ips"]} == {v4["id"], v6["id"]}
        assert alice("DELETE", f"/v2.0/subnets/{v6['id']}").status_code == 204, mode
        after = alice("GET", f"/v2.0/ports/{port['id']}").json()["port"]
        assert [f["subnet_id"] for f in after["fixed_ips"]] == [v4["id"]]
        assert after["revision_number"] == port["revision_number"] + 1
        assert alice("DELETE", f"/v2.0/ports/{port['id']}").status_code == 204


def test_a_router_interface_still_holds_an_auto_address_subnet(admin: Api) -> None:
    alice = project(admin, "alice")
    network = alice.create_network(name="held")
    v6 = slaac(alice, network["id"], "2001:db8:6::/64")
    made = router(alice)
    assert add(alice, made["id"], subnet_id=v6["id"]).status_code == 200
    assert error(alice("DELETE", f"/v2.0/subnets/{v6['id']}"))[:2] == (409, "SubnetInUse")
    # A stateful subnet is held by any port, as before.
    stateful = subnet(
        alice,
        network["id"],
        "2001:db8:7::/64",
        ipv6_ra_mode="dhcpv6-stateful",
        ipv6_address_mode="dhcpv6-stateful",
    )
    alice("POST", "/v2.0/ports", {"port": {"network_id": network["id"]}})
    assert error(alice("DELETE", f"/v2.0/subnets/{stateful['id']}"))[:2] == (409, "SubnetInUse")


def test_a_new_auto_address_subnet_gives_existing_ports_their_address(admin: Api) -> None:
    """Creating a SLAAC subnet adds each existing port's EUI-64 address (§3.2),
    so what a port shows is what the network will give it."""
    alice = project(admin, "alice")
    network = alice.create_network(name="later")
    subnet(alice, network["id"], "10.0.0.0/24")
    port = alice("POST", "/v2.0/ports", {"port": {"network_id": network["id"]}}).json()["port"]
    v6 = slaac(alice, network["id"], "2001:db8:8::/64")
    after = alice("GET", f"/v2.0/ports/{port['id']}").json()["port"]
    octets = bytes(int(part, 16) for part in port["mac_address"].split(":"))
    interface_id = bytes([octets[0] ^ 2, *octets[1:3], 0xFF, 0xFE, *octets[3:]])
    eui64 = str(ipaddress.IPv6Address(b"\x20\x01\x0d\xb8\x00\x08\x00\x00" + interface_id))
    assert {"subnet_id": v6["id"], "ip_address": eui64} in after["fixed_ips"]
    assert after["revision_number"] == port["revision_number"] + 1


def test_an_ipv6_mode_the_appliance_cannot_serve_on_that_prefix_is_refused(admin: Api) -> None:
    """The appliance's rule, asked at the door: SLAAC and stateless need a /64,
    a DHCPv6 range a prefix of at least /64 (dnsmasq refuses shorter ones)."""
    alice = project(admin, "alice")
    network = alice.create_network(name="modes")
    for mode, cidr in (("dhcpv6-stateful", "2001:db8::/48"), ("slaac", "2001:db8:1::/80")):
        body = {
            "network_id": network["id"],
            "ip_version": 6,
            "cidr": cidr,
            "ipv6_ra_mode": mode,
            "ipv6_address_mode": mode,
        }
        status, kind, message = error(alice("POST", "/v2.0/subnets", {"subnet": body}))
        assert (status, kind) == (400, "InvalidInput") and mode in message
    stateful = {
        "network_id": network["id"],
        "ip_version": 6,
        "cidr": "2001:db8:2::/120",
        "ipv6_ra_mode": "dhcpv6-stateful",
        "ipv6_address_mode": "dhcpv6-stateful",
    }
    assert alice("POST", "/v2.0/subnets", {"subnet": stateful}).status_code == 201


def test_a_change_that_would_strand_an_extra_route_is_refused(admin: Api) -> None:
    """A route's next hop must stay connected and its destination must not
    become a subnet the router is on: clearing the gateway the route goes
    through, or adding an interface on its destination, is refused (409)
    rather than leaving the router a config it cannot run."""
    public = admin.create_network(name="public", **{"router:external": True})
    subnet(admin, public["id"], "198.51.100.0/24")
    inside = admin.create_network(name="inside")
    first = subnet(admin, inside["id"], "10.0.0.0/24")
    later = subnet(admin, inside["id"], "10.1.0.0/24")
    made = router(admin, external_gateway_info={"network_id": public["id"]})
    assert add(admin, made["id"], subnet_id=first["id"]).status_code == 200
    routes = [
        # The external subnet's gateway: never the router's own (random) address.
        {"destination": "203.0.113.0/24", "nexthop": "198.51.100.1"},
        {"destination": "10.1.0.0/24", "nexthop": "10.0.0.9"},
    ]
    assert (
        admin("PUT", f"/v2.0/routers/{made['id']}", {"router": {"routes": routes}}).status_code
        == 200
    )
    cleared = admin("PUT", f"/v2.0/routers/{made['id']}", {"router": {"external_gateway_info": {}}})
    assert error(cleared)[:2] == (409, "RouterInUseByRoute")
    shown = admin("GET", f"/v2.0/routers/{made['id']}").json()["router"]
    assert shown["external_gateway_info"]["network_id"] == public["id"]  # nothing changed
    status, kind, message = error(add(admin, made["id"], subnet_id=later["id"]))
    assert (status, kind) == (409, "RouterInUseByRoute") and "10.1.0.0/24" in message
    assert len(interface_ports(admin, made["id"])) == 1
