"""Neutron ports through the tenant API: MACs, fixed-IP allocation, errors,
and concurrent allocation that never hands out one address twice."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from astara.api.app import create_app
from astara.api.auth import TokenCache
from tests.component.conftest import Api, error, project


def port(api: Api, network_id: str, **fields: Any) -> Any:
    return api("POST", "/v2.0/ports", {"port": {"network_id": network_id, **fields}})


def made(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()["port"]
    return body


def workloads(api: Api, query: str = "") -> list[dict[str, Any]]:
    """The ports listed, without networks' DHCP ports (see test_api_dhcp)."""
    listed: list[dict[str, Any]] = api("GET", f"/v2.0/ports{query}").json()["ports"]
    return [p for p in listed if p["device_owner"] != "network:dhcp"]


def network_with_subnets(api: Api, *cidrs: str, **subnet_fields: Any) -> tuple[str, list[str]]:
    network = api.create_network(name="n")
    subnet_ids = []
    for cidr in cidrs:
        version = ipaddress.ip_network(cidr).version
        fields = {"network_id": network["id"], "ip_version": version, "cidr": cidr, **subnet_fields}
        if version == 6:
            fields.update(ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
        response = api("POST", "/v2.0/subnets", {"subnet": fields})
        assert response.status_code == 201, response.text
        subnet_ids.append(response.json()["subnet"]["id"])
    return network["id"], subnet_ids


def test_defaults_one_ipv4_from_the_pools_and_eui64_on_slaac(admin: Api) -> None:
    network_id, (v4, v6) = network_with_subnets(admin, "10.0.0.0/24", "2001:db8::/64")
    created = made(port(admin, network_id, name="p"))
    assert created["mac_address"].startswith("fa:16:3e:")
    assert created["status"] == "DOWN" and created["device_owner"] == ""
    by_subnet = {f["subnet_id"]: f["ip_address"] for f in created["fixed_ips"]}
    assert ipaddress.ip_address(by_subnet[v4]) in ipaddress.ip_network("10.0.0.0/24")
    assert by_subnet[v4] not in (
        "10.0.0.0",
        "10.0.0.1",
        "10.0.0.255",
    )  # network, gateway, broadcast
    mac = created["mac_address"].split(":")
    mac[0] = f"{int(mac[0], 16) ^ 2:02x}"
    assert by_subnet[v6] == str(
        ipaddress.IPv6Address(f"2001:db8::{mac[0]}{mac[1]}:{mac[2]}ff:fe{mac[3]}:{mac[4]}{mac[5]}")
    )


def test_explicit_addresses_macs_and_their_errors(admin: Api) -> None:
    network_id, (subnet_id,) = network_with_subnets(admin, "10.0.0.0/24")
    first = made(
        port(
            admin,
            network_id,
            mac_address="FA:16:3E:AA:BB:CC",
            fixed_ips=[{"ip_address": "10.0.0.50"}],
        )
    )
    assert first["mac_address"] == "fa:16:3e:aa:bb:cc"
    assert first["fixed_ips"] == [{"subnet_id": subnet_id, "ip_address": "10.0.0.50"}]
    _, (elsewhere,) = network_with_subnets(admin, "10.1.0.0/24")
    cases = [
        ({"fixed_ips": [{"ip_address": "10.0.0.50"}]}, 409, "IpAddressAlreadyAllocated"),
        ({"mac_address": "fa:16:3e:aa:bb:cc"}, 409, "MacAddressInUse"),
        ({"fixed_ips": [{"ip_address": "10.9.9.9"}]}, 400, "InvalidIpForNetwork"),
        ({"fixed_ips": [{"ip_address": "10.0.0.255"}]}, 400, "InvalidIpForSubnet"),
        ({"mac_address": "ff:ff:ff:ff:ff:ff"}, 400, "InvalidInput"),
        ({"fixed_ips": [{"subnet_id": "nope"}]}, 404, "SubnetNotFound"),
        ({"fixed_ips": [{"subnet_id": elsewhere}]}, 400, "InvalidInput"),
        ({"fixed_ips": [{"subnet_id": ["x"]}]}, 400, "InvalidInput"),
        ({"fixed_ips": [{"ip_address": 10}]}, 400, "InvalidInput"),
    ]
    for fields, status, kind in cases:
        assert error(port(admin, network_id, **fields))[:2] == (status, kind), fields
    assert len(workloads(admin)) == 1  # the refusals wrote nothing


def test_exhausted_subnet_is_409_ip_address_generation_failure(admin: Api) -> None:
    # Without DHCP: no DHCP port takes an address of the two.
    network_id, _ = network_with_subnets(
        admin,
        "10.0.0.0/29",
        allocation_pools=[{"start": "10.0.0.2", "end": "10.0.0.3"}],
        enable_dhcp=False,
    )
    made(port(admin, network_id))
    made(port(admin, network_id))
    status, kind, message = error(port(admin, network_id))
    assert (status, kind) == (409, "IpAddressGenerationFailure")
    assert message == f"No more IP addresses available on network {network_id}."


@contextmanager
def statements_of(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements run while the block runs, one-line each."""
    kept: list[str] = []

    def keep(*args: Any) -> None:
        kept.append(" ".join(str(args[2]).split()))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        yield kept
    finally:
        event.remove(engine, "before_cursor_execute", keep)


def _full_scans(statements: list[str]) -> list[str]:
    """Reads of every address of a subnet (no candidates in them)."""
    return [
        s
        for s in statements
        if s.startswith("SELECT ip_allocations.ip_address FROM ip_allocations")
        and "ANY" not in s
        and " IN " not in s
    ]


def test_a_nearly_full_pool_is_filled_to_its_last_address_without_reading_it_all(
    admin: Api, engine: Engine
) -> None:
    """20 addresses: random candidates find each free one (the second, wider
    draw holds the whole pool), and the 21st create is refused by that draw,
    never by reading every address in use."""
    network_id, _ = network_with_subnets(
        admin,
        "10.0.0.0/24",
        allocation_pools=[{"start": "10.0.0.10", "end": "10.0.0.29"}],
        enable_dhcp=False,
    )
    with statements_of(engine) as statements:
        given = {made(port(admin, network_id))["fixed_ips"][0]["ip_address"] for _ in range(20)}
        assert given == {f"10.0.0.{n}" for n in range(10, 30)}
        assert error(port(admin, network_id))[:2] == (409, "IpAddressGenerationFailure")
    assert _full_scans(statements) == [], [s[:90] for s in statements]


def test_a_port_create_reads_its_network_and_subnets_in_one_statement(
    admin: Api, engine: Engine
) -> None:
    """And costs the same statements with 2 subnets' ports as with 40. (The
    token trusted for the whole test: a lookup when the default 5 s ran out
    would add its statements.)"""
    admin = Api(TestClient(create_app(engine, tokens=TokenCache(ttl_s=3600))), admin.token)
    network_id, _ = network_with_subnets(admin, "10.0.0.0/16", "fd00::/64")
    counts = []
    for n in range(40):
        with statements_of(engine) as statements:
            made(port(admin, network_id))
        counts.append(len(statements))
        if n == 0:
            continue  # it makes the network's DHCP port too, with its own reads
        # The network's row (its lock, `SELECT networks.id ...`, is not a read of it).
        network_reads = [s for s in statements if s.startswith("SELECT networks.name")]
        assert len(network_reads) == 1 and "JOIN subnets" in network_reads[0]
        assert not [s for s in statements if s.startswith("SELECT subnets.")]
    # The first makes the network's DHCP port (its own statements).
    assert len(set(counts[1:])) == 1, counts


@pytest.mark.parametrize("dhcp", [False, True], ids=["no-dhcp", "dhcp"])
def test_fifty_concurrent_creations_on_a_small_subnet(admin: Api, dhcp: bool) -> None:
    """29 addresses, 50 requests at once: 29 distinct addresses, 21 clean 409s.
    With DHCP (no router on the network) one of them is the network's one
    DHCP port, made by whichever request came first."""
    network_id, _ = network_with_subnets(
        admin, "10.0.0.0/27", gateway_ip="10.0.0.1", enable_dhcp=dhcp
    )
    start = threading.Barrier(50)
    results: list[Any] = []
    lock = threading.Lock()

    def create() -> None:
        start.wait(timeout=30)
        response = port(admin, network_id)
        with lock:
            results.append(response)

    threads = [threading.Thread(target=create) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    statuses = sorted(r.status_code for r in results)
    made_count = 28 if dhcp else 29
    assert statuses == [201] * made_count + [409] * (50 - made_count)
    assert {r.json()["NeutronError"]["type"] for r in results if r.status_code == 409} == {
        "IpAddressGenerationFailure"
    }
    listed = admin("GET", "/v2.0/ports").json()["ports"]
    addresses = [p["fixed_ips"][0]["ip_address"] for p in listed]
    macs = [p["mac_address"] for p in listed]
    assert len(listed) == 29 and len(set(addresses)) == 29 and len(set(macs)) == 29
    owners = [p["device_owner"] for p in listed]
    assert owners.count("network:dhcp") == (1 if dhcp else 0)


def test_update_replaces_fixed_ips_and_delete_frees_them(admin: Api) -> None:
    network_id, (subnet_id,) = network_with_subnets(admin, "10.0.0.0/24")
    created = made(port(admin, network_id, fixed_ips=[{"ip_address": "10.0.0.10"}]))
    response = admin(
        "PUT",
        f"/v2.0/ports/{created['id']}",
        {"port": {"fixed_ips": [{"ip_address": "10.0.0.11"}], "name": "moved"}},
    )
    assert response.json()["port"]["fixed_ips"] == [
        {"subnet_id": subnet_id, "ip_address": "10.0.0.11"}
    ]
    made(port(admin, network_id, fixed_ips=[{"ip_address": "10.0.0.10"}]))  # released
    assert admin("DELETE", f"/v2.0/ports/{created['id']}").status_code == 204
    made(port(admin, network_id, fixed_ips=[{"ip_address": "10.0.0.11"}]))  # released too
    # A subnet with addresses in use cannot go; the network neither.
    assert error(admin("DELETE", f"/v2.0/subnets/{subnet_id}"))[:2] == (409, "SubnetInUse")
    assert error(admin("DELETE", f"/v2.0/networks/{network_id}"))[:2] == (409, "NetworkInUse")


def test_ports_of_other_projects_are_invisible(admin: Api) -> None:
    alice, bob = project(admin, "alice"), project(admin, "bob")
    network = alice.create_network(name="alices")
    alice(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": network["id"], "ip_version": 4, "cidr": "10.0.0.0/24"}},
    )
    mine = made(port(alice, network["id"]))
    assert error(port(bob, network["id"]))[:2] == (404, "NetworkNotFound")
    assert bob("GET", f"/v2.0/ports/{mine['id']}").status_code == 404
    assert bob("GET", "/v2.0/ports").json() == {"ports": []}  # nor alice's network's DHCP port
    assert [p["id"] for p in workloads(admin)] == [mine["id"]]


def test_only_the_network_owner_chooses_addresses_and_macs(admin: Api) -> None:
    alice = project(admin, "alice")
    shared = admin.create_network(name="shared", shared=True)
    admin(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": shared["id"], "ip_version": 4, "cidr": "10.9.0.0/24"}},
    )
    for fields in (
        {"fixed_ips": [{"ip_address": "10.9.0.1"}]},
        {"mac_address": "fa:16:3e:00:00:01"},
    ):
        response = port(alice, shared["id"], **fields)
        assert error(response)[:2] == (403, "PolicyNotAuthorized"), fields
    mine = made(port(alice, shared["id"]))  # any free address is fine
    response = alice(
        "PUT", f"/v2.0/ports/{mine['id']}", {"port": {"fixed_ips": [{"ip_address": "10.9.0.1"}]}}
    )
    assert error(response)[:2] == (403, "PolicyNotAuthorized")
    assert [p["id"] for p in workloads(admin)] == [mine["id"]]
    # The owner still may: the gateway address was never taken.
    assert made(port(admin, shared["id"], fixed_ips=[{"ip_address": "10.9.0.1"}]))


def test_the_fixed_ips_filter(admin: Api) -> None:
    network_id, (first, second) = network_with_subnets(admin, "10.0.0.0/24", "10.1.0.0/24")
    a = made(port(admin, network_id, fixed_ips=[{"ip_address": "10.0.0.5"}]))
    b = made(port(admin, network_id, fixed_ips=[{"subnet_id": second}]))

    def found(*filters: str) -> set[str]:
        query = "&".join(f"fixed_ips={f}" for f in filters)
        return {p["id"] for p in workloads(admin, f"?{query}")}

    assert found("ip_address=10.0.0.5") == {a["id"]}
    assert found(f"subnet_id={second}") == {b["id"]}
    assert found(f"subnet_id={first}", f"subnet_id={second}") == {a["id"], b["id"]}
    assert found("ip_address=10.0.0.5", f"subnet_id={second}") == set()
    assert found("ip_address=10.0.0.6") == set()
    assert error(admin("GET", "/v2.0/ports?fixed_ips=10.0.0.5"))[:2] == (400, "HTTPBadRequest")


def test_a_service_port_without_its_service_can_be_deleted(admin: Api) -> None:
    network_id, _ = network_with_subnets(admin, "10.0.0.0/24")
    stray = made(port(admin, network_id, device_owner="network:router_interface"))
    assert admin("DELETE", f"/v2.0/ports/{stray['id']}").status_code == 204


def test_one_address_from_the_stateful_ipv6_subnets(admin: Api) -> None:
    network = admin.create_network(name="n")
    for cidr in ("2001:db8:1::/64", "2001:db8:2::/64"):
        body = {"network_id": network["id"], "ip_version": 6, "cidr": cidr}
        body.update(ipv6_ra_mode="dhcpv6-stateful", ipv6_address_mode="dhcpv6-stateful")
        assert admin("POST", "/v2.0/subnets", {"subnet": body}).status_code == 201
    created = made(port(admin, network["id"]))
    assert len(created["fixed_ips"]) == 1
    address = ipaddress.ip_address(created["fixed_ips"][0]["ip_address"])
    assert address in ipaddress.ip_network("2001:db8:1::/64")


def test_port_security_is_kept_and_ports_inherit_the_networks(admin: Api) -> None:
    network = admin.create_network(name="n", port_security_enabled=False)
    assert network["port_security_enabled"] is False
    inherited = made(port(admin, network["id"]))
    chosen = made(port(admin, network["id"], port_security_enabled=True))
    assert (inherited["port_security_enabled"], chosen["port_security_enabled"]) == (False, True)
    # Without port security a port has no groups: the inherited one got none,
    # the chosen one its project's default, which it must drop to turn it off.
    assert (inherited["security_groups"], len(chosen["security_groups"])) == ([], 1)
    kept = admin("PUT", f"/v2.0/ports/{chosen['id']}", {"port": {"port_security_enabled": False}})
    assert kept.status_code == 409
    assert kept.json()["NeutronError"]["type"] == "PortSecurityPortHasSecurityGroup"
    changed = admin(
        "PUT",
        f"/v2.0/ports/{chosen['id']}",
        {"port": {"port_security_enabled": False, "security_groups": []}},
    )
    assert changed.json()["port"]["port_security_enabled"] is False
    assert changed.json()["port"]["security_groups"] == []
    changed = admin(
        "PUT", f"/v2.0/networks/{network['id']}", {"network": {"port_security_enabled": True}}
    )
    assert changed.json()["network"]["port_security_enabled"] is True
    shown = admin("GET", f"/v2.0/ports/{inherited['id']}").json()["port"]
    assert shown["port_security_enabled"] is False  # a port keeps its own
