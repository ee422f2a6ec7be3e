"""Neutron subnets through the tenant API: defaults, IPAM rules and errors."""

from __future__ import annotations

from typing import Any

import pytest

from tests.component.conftest import Api, error, project


def subnet(api: Api, network_id: str, **fields: Any) -> Any:
    return api("POST", "/v2.0/subnets", {"subnet": {"network_id": network_id, **fields}})


def created(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()["subnet"]
    return body


def test_ipv4_defaults(admin: Api) -> None:
    network = admin.create_network(name="n")
    made = created(subnet(admin, network["id"], ip_version=4, cidr="10.0.0.5/24", name="s"))
    assert made["cidr"] == "10.0.0.0/24"
    assert made["gateway_ip"] == "10.0.0.1"
    assert made["allocation_pools"] == [{"start": "10.0.0.2", "end": "10.0.0.254"}]
    assert (
        made["enable_dhcp"] is True and made["dns_nameservers"] == [] and made["host_routes"] == []
    )
    shown = admin("GET", f"/v2.0/networks/{network['id']}").json()["network"]
    assert shown["subnets"] == [made["id"]]
    assert shown["revision_number"] == 2  # a new subnet is a change of its network


def test_ipv6_slaac_and_no_gateway(admin: Api) -> None:
    network = admin.create_network(name="n")
    v6 = created(
        subnet(
            admin,
            network["id"],
            ip_version=6,
            cidr="2001:DB8::/64",
            ipv6_ra_mode="slaac",
            ipv6_address_mode="slaac",
        )
    )
    assert v6["cidr"] == "2001:db8::/64" and v6["gateway_ip"] == "2001:db8::"
    assert v6["allocation_pools"] == [
        {"start": "2001:db8::1", "end": "2001:db8::ffff:ffff:ffff:ffff"}
    ]
    bare = created(subnet(admin, network["id"], ip_version=4, cidr="10.9.0.0/24", gateway_ip=None))
    assert bare["gateway_ip"] is None
    assert bare["allocation_pools"] == [{"start": "10.9.0.1", "end": "10.9.0.254"}]


def test_pools_split_around_a_chosen_gateway_and_explicit_pools(admin: Api) -> None:
    network = admin.create_network(name="n")
    split = created(
        subnet(admin, network["id"], ip_version=4, cidr="10.0.0.0/24", gateway_ip="10.0.0.50")
    )
    assert split["allocation_pools"] == [
        {"start": "10.0.0.1", "end": "10.0.0.49"},
        {"start": "10.0.0.51", "end": "10.0.0.254"},
    ]
    explicit = created(
        subnet(
            admin,
            network["id"],
            ip_version=4,
            cidr="10.1.0.0/24",
            allocation_pools=[{"start": "10.1.0.100", "end": "10.1.0.199"}],
            dns_nameservers=["192.0.2.53"],
            host_routes=[{"destination": "192.168.0.0/16", "nexthop": "10.1.0.254"}],
        )
    )
    assert explicit["allocation_pools"] == [{"start": "10.1.0.100", "end": "10.1.0.199"}]
    assert explicit["dns_nameservers"] == ["192.0.2.53"]


@pytest.mark.parametrize(
    ("fields", "status", "kind", "text"),
    [
        ({"ip_version": 4, "cidr": "10.0.0.0"}, 400, "InvalidInput", "is not a valid IP subnet"),
        (
            {"ip_version": 6, "cidr": "10.0.0.0/24"},
            400,
            "InvalidInput",
            "does not match the ip_version",
        ),
        (
            {"ip_version": 4, "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.255"},
            400,
            "InvalidInput",
            "Gateway is not valid",
        ),
        (
            {
                "ip_version": 4,
                "cidr": "10.0.0.0/24",
                "allocation_pools": [{"start": "10.0.0.1", "end": "10.0.1.9"}],
            },
            400,
            "OutOfBoundsAllocationPool",
            "spans beyond",
        ),
        (
            {
                "ip_version": 4,
                "cidr": "10.0.0.0/24",
                "allocation_pools": [{"start": "10.0.0.1", "end": "10.0.0.9"}],
            },
            409,
            "GatewayConflictWithAllocationPools",
            "conflicts with allocation pool",
        ),
        (
            {
                "ip_version": 4,
                "cidr": "10.0.0.0/24",
                "dns_nameservers": [f"192.0.2.{i}" for i in range(6)],
            },
            400,
            "DNSNameServersExhausted",
            "exceeds the limit 5",
        ),
        (
            {"ip_version": 4, "cidr": "10.0.0.0/24", "ipv6_ra_mode": "slaac"},
            400,
            "InvalidInput",
            "ip_version is 4",
        ),
        (
            {"ip_version": 6, "cidr": "2001:db8::/56", "ipv6_ra_mode": "slaac"},
            400,
            "InvalidInput",
            "needs a /64",
        ),
        (
            {"cidr": "10.0.0.0/24"},
            400,
            "HTTPBadRequest",
            "Required attribute 'ip_version' not specified",
        ),
        # Ranges no DHCP-enabled subnet may have (§3.2), and `::/n` never.
        *(
            ({"ip_version": 4, "cidr": cidr}, 400, "InvalidInput", reason)
            for cidr, reason in (
                ("10.0.0.0/31", "/30 or shorter"),
                ("10.1.0.0/32", "/30 or shorter"),
                ("127.0.0.0/24", "loopback"),
                ("224.0.0.0/24", "multicast"),
                ("0.0.0.0/8", "unspecified"),
            )
        ),
        *(
            ({"ip_version": 6, "cidr": cidr}, 400, "InvalidInput", reason)
            for cidr, reason in (
                ("2001:db8::/127", "/126 or shorter"),
                ("ff00::/64", "multicast"),
                ("::/64", "not allowed"),
            )
        ),
        (
            {"ip_version": 6, "cidr": "::/64", "enable_dhcp": False},
            400,
            "InvalidInput",
            "not allowed",
        ),
    ],
)
def test_invalid_subnets_are_refused(
    admin: Api, fields: dict[str, Any], status: int, kind: str, text: str
) -> None:
    network = admin.create_network(name="n")
    got_status, got_kind, message = error(subnet(admin, network["id"], **fields))
    assert (got_status, got_kind) == (status, kind) and text in message
    assert admin("GET", "/v2.0/subnets").json() == {"subnets": []}


def test_overlap_is_refused_within_a_network_but_not_across(admin: Api) -> None:
    first, second = admin.create_network(name="a"), admin.create_network(name="b")
    created(subnet(admin, first["id"], ip_version=4, cidr="10.0.0.0/24"))
    status, _, message = error(subnet(admin, first["id"], ip_version=4, cidr="10.0.0.128/25"))
    assert status == 400 and "overlaps with another subnet" in message
    created(subnet(admin, second["id"], ip_version=4, cidr="10.0.0.0/24"))


def test_subnets_of_others_private_networks_are_not_found(admin: Api) -> None:
    alice, bob = project(admin, "alice"), project(admin, "bob")
    network = alice.create_network(name="alices")
    status, kind, _ = error(subnet(bob, network["id"], ip_version=4, cidr="10.0.0.0/24"))
    assert (status, kind) == (404, "NetworkNotFound")
    mine = created(subnet(alice, network["id"], ip_version=4, cidr="10.0.0.0/24"))
    assert bob("GET", f"/v2.0/subnets/{mine['id']}").status_code == 404


def test_update_and_delete(admin: Api) -> None:
    network = admin.create_network(name="n")
    made = created(subnet(admin, network["id"], ip_version=4, cidr="10.0.0.0/24"))
    response = admin(
        "PUT",
        f"/v2.0/subnets/{made['id']}",
        {"subnet": {"name": "s2", "dns_nameservers": ["192.0.2.1"]}},
    )
    assert (
        response.json()["subnet"]["name"] == "s2"
        and response.json()["subnet"]["revision_number"] == 2
    )
    status, _, message = error(
        admin("PUT", f"/v2.0/subnets/{made['id']}", {"subnet": {"cidr": "10.1.0.0/24"}})
    )
    assert status == 400 and message == "Cannot update read-only attribute cidr"
    assert admin("DELETE", f"/v2.0/subnets/{made['id']}").status_code == 204
    assert admin("GET", f"/v2.0/networks/{network['id']}").json()["network"]["subnets"] == []


def test_small_subnets_without_dhcp_are_allowed(admin: Api) -> None:
    network = admin.create_network(name="n")
    point_to_point = created(
        subnet(admin, network["id"], ip_version=4, cidr="10.0.0.0/31", enable_dhcp=False)
    )
    assert point_to_point["cidr"] == "10.0.0.0/31"
    # Turning DHCP on later meets the same rule.
    response = admin(
        "PUT", f"/v2.0/subnets/{point_to_point['id']}", {"subnet": {"enable_dhcp": True}}
    )
    assert error(response)[:2] == (400, "InvalidInput")


def test_a_gateway_held_by_a_router_interface_cannot_change(admin: Api) -> None:
    network = admin.create_network(name="n")
    held = created(subnet(admin, network["id"], ip_version=4, cidr="10.0.0.0/24"))
    router = admin("POST", "/v2.0/routers", {"router": {"name": "r"}}).json()["router"]
    added = admin(
        "PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": held["id"]}
    ).json()
    for gateway in ("10.0.0.254", None):
        response = admin("PUT", f"/v2.0/subnets/{held['id']}", {"subnet": {"gateway_ip": gateway}})
        assert error(response) == (
            409,
            "GatewayIpInUse",
            f"Current gateway ip 10.0.0.1 already in use by port {added['port_id']}."
            " Unable to update.",
        )
    shown = admin("GET", f"/v2.0/subnets/{held['id']}").json()["subnet"]
    assert shown["gateway_ip"] == "10.0.0.1" and shown["revision_number"] == held["revision_number"]
    # Without the interface, the gateway may move.
    admin("PUT", f"/v2.0/routers/{router['id']}/remove_router_interface", {"subnet_id": held["id"]})
    moved = admin("PUT", f"/v2.0/subnets/{held['id']}", {"subnet": {"gateway_ip": None}})
    assert moved.status_code == 200, moved.text
