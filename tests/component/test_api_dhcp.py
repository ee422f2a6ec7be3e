"""A network's DHCP port (`astara.api.dhcp`): it exists exactly while some
workload has an address on a DHCP subnet no router serves, has one fixed IP
on each such subnet, follows every change that moves the answer in the
change's own transaction, and keeps Neutron's rules (not in quotas, never
blocking a delete, seen by the network's project). On SQLite and PostgreSQL."""

from __future__ import annotations

import ipaddress
import threading
from typing import Any

from sqlalchemy import Engine, select

from astara.appliance.schema import validate_semantics
from astara.db.engine import session_factory
from astara.db.models import OutboxEvent
from astara.drivers import dhcp as dhcp_driver
from astara.orchestrator.events import affected
from tests.component.conftest import Api, error, project

DHCP = "network:dhcp"


def created(response: Any, kind: str) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()[kind]
    return body


def subnet(api: Api, network_id: str, cidr: str, **fields: Any) -> dict[str, Any]:
    body = {"network_id": network_id, "ip_version": 4, "cidr": cidr, **fields}
    return created(api("POST", "/v2.0/subnets", {"subnet": body}), "subnet")


def port(api: Api, network_id: str, **fields: Any) -> dict[str, Any]:
    return created(
        api("POST", "/v2.0/ports", {"port": {"network_id": network_id, **fields}}), "port"
    )


def dhcp_ports(api: Api, network_id: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = api(
        "GET", f"/v2.0/ports?network_id={network_id}&device_owner={DHCP}"
    ).json()["ports"]
    return listed


def served(api: Api, network_id: str) -> set[str]:
    """The subnets the network's DHCP port is on (empty: no DHCP port)."""
    found = dhcp_ports(api, network_id)
    assert len(found) <= 1, found
    return {a["subnet_id"] for p in found for a in p["fixed_ips"]}


def interface(api: Api, router_id: str, action: str, subnet_id: str) -> None:
    response = api("PUT", f"/v2.0/routers/{router_id}/{action}", {"subnet_id": subnet_id})
    assert response.status_code == 200, response.text


def test_a_workload_on_an_unrouted_dhcp_subnet_gets_the_network_a_dhcp_port(
    admin: Api,
) -> None:
    alice = project(admin, "alice")
    network = alice.create_network(name="isolated")
    first = subnet(alice, network["id"], "10.0.0.0/24")
    # A network and a subnet alone: nobody to serve, no DHCP port.
    assert served(alice, network["id"]) == set()
    vm = port(alice, network["id"])
    (dhcp,) = dhcp_ports(alice, network["id"])  # the network's project sees it
    assert dhcp["device_id"] == f"dhcp-{network['id']}"
    assert dhcp["project_id"] == network["project_id"]
    assert [a["subnet_id"] for a in dhcp["fixed_ips"]] == [first["id"]]
    assert dhcp["fixed_ips"][0]["ip_address"] not in (
        vm["fixed_ips"][0]["ip_address"],
        first["gateway_ip"],
    )
    # A second workload changes nothing.
    port(alice, network["id"])
    assert dhcp_ports(alice, network["id"]) == [dhcp]


def test_only_subnets_with_dhcp_and_workloads_are_served(admin: Api) -> None:
    network = admin.create_network(name="n")
    first = subnet(admin, network["id"], "10.0.0.0/24")
    second = subnet(admin, network["id"], "10.1.0.0/24")
    quiet = subnet(admin, network["id"], "10.2.0.0/24", enable_dhcp=False)
    port(admin, network["id"], fixed_ips=[{"subnet_id": quiet["id"]}])
    assert served(admin, network["id"]) == set()  # no DHCP there
    on_second = port(admin, network["id"], fixed_ips=[{"subnet_id": second["id"]}])
    assert served(admin, network["id"]) == {second["id"]}
    on_first = port(admin, network["id"], fixed_ips=[{"subnet_id": first["id"]}])
    assert served(admin, network["id"]) == {first["id"], second["id"]}
    # A port moved off a subnet, then deleted: its subnet, then the port, go.
    moved = admin(
        "PUT",
        f"/v2.0/ports/{on_first['id']}",
        {"port": {"fixed_ips": [{"subnet_id": quiet["id"]}]}},
    )
    assert moved.status_code == 200, moved.text
    assert served(admin, network["id"]) == {second["id"]}
    assert admin("DELETE", f"/v2.0/ports/{on_second['id']}").status_code == 204
    assert served(admin, network["id"]) == set()


def test_enable_dhcp_toggles_the_dhcp_port(admin: Api) -> None:
    network = admin.create_network(name="n")
    made = subnet(admin, network["id"], "10.0.0.0/24", enable_dhcp=False)
    port(admin, network["id"])
    assert served(admin, network["id"]) == set()
    path = f"/v2.0/subnets/{made['id']}"
    assert admin("PUT", path, {"subnet": {"enable_dhcp": True}}).status_code == 200
    assert served(admin, network["id"]) == {made["id"]}
    assert admin("PUT", path, {"subnet": {"enable_dhcp": False}}).status_code == 200
    assert served(admin, network["id"]) == set()


def test_a_router_interface_takes_dhcp_over_and_hands_it_back(admin: Api) -> None:
    network = admin.create_network(name="n")
    made = subnet(admin, network["id"], "10.0.0.0/24")
    port(admin, network["id"])
    assert served(admin, network["id"]) == {made["id"]}
    router = created(admin("POST", "/v2.0/routers", {"router": {"name": "r"}}), "router")
    interface(admin, router["id"], "add_router_interface", made["id"])
    assert served(admin, network["id"]) == set()  # the router serves it now
    interface(admin, router["id"], "remove_router_interface", made["id"])
    assert served(admin, network["id"]) == {made["id"]}


def test_a_routed_network_never_gets_a_dhcp_port(admin: Api) -> None:
    """The usual order (network, subnet, router interface, workloads) makes
    no transient DHCP port: what a scale run of 1,000 routers does."""
    network = admin.create_network(name="n")
    made = subnet(admin, network["id"], "10.0.0.0/24")
    router = created(admin("POST", "/v2.0/routers", {"router": {"name": "r"}}), "router")
    interface(admin, router["id"], "add_router_interface", made["id"])
    port(admin, network["id"])
    assert served(admin, network["id"]) == set()
    ports = admin("GET", f"/v2.0/ports?network_id={network['id']}").json()["ports"]
    assert DHCP not in {p["device_owner"] for p in ports}


def test_the_dhcp_port_never_blocks_a_delete_and_goes_with_its_network(admin: Api) -> None:
    network = admin.create_network(name="n")
    made = subnet(admin, network["id"], "10.0.0.0/24")
    other = subnet(admin, network["id"], "10.1.0.0/24")
    vm = port(admin, network["id"], fixed_ips=[{"subnet_id": made["id"]}])
    assert served(admin, network["id"]) == {made["id"]}
    # The workload holds its subnet: refused, and the DHCP port is untouched.
    status, kind, _ = error(admin("DELETE", f"/v2.0/subnets/{made['id']}"))
    assert (status, kind) == (409, "SubnetInUse")
    assert served(admin, network["id"]) == {made["id"]}
    assert admin("DELETE", f"/v2.0/subnets/{other['id']}").status_code == 204
    assert error(admin("DELETE", f"/v2.0/networks/{network['id']}"))[:2] == (
        409,
        "NetworkInUse",
    )
    assert admin("DELETE", f"/v2.0/ports/{vm['id']}").status_code == 204
    assert served(admin, network["id"]) == set()
    assert admin("DELETE", f"/v2.0/networks/{network['id']}").status_code == 204


def test_a_deleted_dhcp_port_comes_back_while_needed(admin: Api) -> None:
    alice = project(admin, "alice")
    network = alice.create_network(name="n")
    made = subnet(alice, network["id"], "10.0.0.0/24")
    port(alice, network["id"])
    (dhcp,) = dhcp_ports(alice, network["id"])
    assert alice("DELETE", f"/v2.0/ports/{dhcp['id']}").status_code == 204
    (again,) = dhcp_ports(alice, network["id"])
    assert again["id"] != dhcp["id"] and served(alice, network["id"]) == {made["id"]}


def test_dhcp_ports_are_not_counted_in_quotas(admin: Api) -> None:
    alice = project(admin, "alice")
    network = alice.create_network(name="n")
    subnet(alice, network["id"], "10.0.0.0/24")
    project_id = network["project_id"]
    limited = admin("PUT", f"/v2.0/quotas/{project_id}", {"quota": {"port": 2}})
    assert limited.status_code == 200, limited.text
    port(alice, network["id"])
    port(alice, network["id"])  # the DHCP port is the third port, not counted
    assert len(dhcp_ports(alice, network["id"])) == 1
    response = alice("POST", "/v2.0/ports", {"port": {"network_id": network["id"]}})
    assert error(response)[:2] == (409, "OverQuota")
    usage = alice("GET", f"/v2.0/quotas/{project_id}/details").json()["quota"]["port"]
    assert usage["used"] == 2


def test_the_dhcp_port_s_events_wake_its_network_s_dhcp_appliance(
    admin: Api, engine: Engine
) -> None:
    network = admin.create_network(name="n")
    subnet(admin, network["id"], "10.0.0.0/24")
    port(admin, network["id"])
    (dhcp,) = dhcp_ports(admin, network["id"])
    with session_factory(engine).begin() as session:
        events = session.scalars(
            select(OutboxEvent).where(OutboxEvent.resource_id == dhcp["id"])
        ).all()
        assert [e.action for e in events] == ["create"]
        assert affected(session, events[0]) == {f"dhcp-{network['id']}"}


def test_the_dhcp_driver_plans_the_network_s_dhcp_appliance(admin: Api, engine: Engine) -> None:
    network = admin.create_network(name="n")
    made = subnet(admin, network["id"], "10.0.0.0/24", dns_nameservers=["192.0.2.53"])
    no_gateway = subnet(admin, network["id"], "10.1.0.0/24", gateway_ip=None)
    first = port(admin, network["id"], fixed_ips=[{"subnet_id": made["id"]}])
    second = port(admin, network["id"], fixed_ips=[{"subnet_id": no_gateway["id"]}])
    (dhcp,) = dhcp_ports(admin, network["id"])
    with session_factory(engine).begin() as session:
        plan = dhcp_driver.plan(session, network["id"])
    assert plan.appliance_id == f"dhcp-{network['id']}" and plan.ports == [dhcp["id"]]
    config = plan.config
    assert config is not None and config.kind == "dhcp" and not config.forwarding
    assert validate_semantics(config) == []
    (only,) = config.interfaces
    assert (only.mac, only.role, only.network_id) == (
        dhcp["mac_address"],
        "internal",
        network["id"],
    )
    assert sorted(str(a.ip) for a in only.addresses) == sorted(
        a["ip_address"] for a in dhcp["fixed_ips"]
    )
    gateways = {str(s.cidr): s.gateway_ip and str(s.gateway_ip) for s in config.subnets}
    # The subnet's own gateway, or none: never the DHCP port's address.
    assert gateways == {"10.0.0.0/24": made["gateway_ip"], "10.1.0.0/24": None}
    hosts = {h.mac: str(h.ip_address) for h in config.dhcp_hosts}
    assert hosts == {
        first["mac_address"]: first["fixed_ips"][0]["ip_address"],
        second["mac_address"]: second["fixed_ips"][0]["ip_address"],
    }
    assert not config.routes and not config.floating_ips and not config.snat.enabled
    # No DHCP port: no appliance.
    for workload in (first, second):
        assert admin("DELETE", f"/v2.0/ports/{workload['id']}").status_code == 204
    with session_factory(engine).begin() as session:
        assert dhcp_driver.plan(session, network["id"]).config is None


def test_concurrent_workloads_on_two_subnets_make_one_dhcp_port(admin: Api) -> None:
    """Twenty workloads at once across two subnets of a new network: one
    DHCP port, with exactly one address on each subnet."""
    network = admin.create_network(name="n")
    subnets = [subnet(admin, network["id"], f"10.{n}.0.0/24")["id"] for n in range(2)]
    start = threading.Barrier(20)
    statuses: list[int] = []
    lock = threading.Lock()

    def create(n: int) -> None:
        start.wait(timeout=30)
        body = {"network_id": network["id"], "fixed_ips": [{"subnet_id": subnets[n % 2]}]}
        response = admin("POST", "/v2.0/ports", {"port": body})
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert statuses == [201] * 20
    (dhcp,) = dhcp_ports(admin, network["id"])
    assert sorted(a["subnet_id"] for a in dhcp["fixed_ips"]) == sorted(subnets)


def test_dhcpv6_on_an_unrouted_network_is_served_by_its_dhcp_appliance(
    admin: Api, engine: Engine
) -> None:
    """Neutron's DHCP agent serves DHCPv6 without a router too: the DHCP port
    gets an address on the stateful subnet, its appliance leases it and sends
    the router advertisements (managed flag, no default router)."""
    network = admin.create_network(name="v6")
    stateful = subnet(
        admin,
        network["id"],
        "2001:db8:5::/64",
        ip_version=6,
        ipv6_ra_mode="dhcpv6-stateful",
        ipv6_address_mode="dhcpv6-stateful",
    )
    workload = port(admin, network["id"])
    assert served(admin, network["id"]) == {stateful["id"]}
    with session_factory(engine).begin() as session:
        config = dhcp_driver.plan(session, network["id"]).config
    assert config is not None and not config.forwarding
    assert validate_semantics(config) == []
    (entry,) = config.subnets
    assert entry.ipv6_ra_mode is not None and entry.ipv6_ra_mode.value == "dhcpv6-stateful"
    assert entry.enable_dhcp
    assert {(h.mac, str(h.ip_address)) for h in config.dhcp_hosts} == {
        (workload["mac_address"], workload["fixed_ips"][0]["ip_address"])
    }


def test_a_link_local_subnet_is_never_served_by_a_dhcp_appliance(
    admin: Api, engine: Engine
) -> None:
    """A DHCPv6 subnet in fe80::/64 (accepted, as Neutron does) with a
    workload on it: no appliance address can be on it (the kernel makes each
    interface's own link-local address), so the network's DHCP appliance
    serves only its other subnet. (Found by hypothesis in
    test_every_router_the_api_accepts_is_served: the DHCP port took a
    link-local address and the appliance's config was refused.)"""
    network = admin.create_network(name="ll")
    v4 = subnet(admin, network["id"], "10.0.0.0/24")
    subnet(
        admin,
        network["id"],
        "fe80::/64",
        ip_version=6,
        gateway_ip=None,
        ipv6_ra_mode="dhcpv6-stateful",
        ipv6_address_mode="dhcpv6-stateful",
    )
    port(admin, network["id"])
    assert served(admin, network["id"]) == {v4["id"]}
    with session_factory(engine).begin() as session:
        config = dhcp_driver.plan(session, network["id"]).config
    assert config is not None
    assert validate_semantics(config) == []
    assert [entry.cidr for entry in config.subnets] == [ipaddress.ip_network("10.0.0.0/24")]


def test_a_full_subnet_does_not_stop_a_router_from_leaving_it(admin: Api) -> None:
    """With every pool address taken, a router leaving the subnet leaves it
    unserved (said in the log) rather than failing the removal."""
    network = admin.create_network(name="full")
    small = subnet(admin, network["id"], "10.0.0.0/29")  # pool .2-.6: five addresses
    router = created(admin("POST", "/v2.0/routers", {"router": {"name": "r"}}), "router")
    interface(admin, router["id"], "add_router_interface", small["id"])
    for _ in range(5):
        port(admin, network["id"])
    interface(admin, router["id"], "remove_router_interface", small["id"])
    assert served(admin, network["id"]) == set()


def test_no_caller_makes_or_unmakes_a_dhcp_port(admin: Api) -> None:
    """The DHCP port is the server's: a port created or updated as one is
    refused (it would dodge the quota and could stand in for the real one)."""
    alice = project(admin, "alice")
    network = alice.create_network(name="mine")
    subnet(alice, network["id"], "10.0.0.0/24")
    for caller in (alice, admin):
        refused = caller(
            "POST",
            "/v2.0/ports",
            {"port": {"network_id": network["id"], "device_owner": DHCP, "device_id": "x"}},
        )
        assert error(refused)[:2] == (403, "PolicyNotAuthorized")
    workload = port(alice, network["id"])
    (dhcp,) = dhcp_ports(alice, network["id"])
    to_dhcp = alice("PUT", f"/v2.0/ports/{workload['id']}", {"port": {"device_owner": DHCP}})
    assert error(to_dhcp)[:2] == (403, "PolicyNotAuthorized")
    away = alice("PUT", f"/v2.0/ports/{dhcp['id']}", {"port": {"device_owner": "compute:nova"}})
    assert error(away)[:2] == (403, "PolicyNotAuthorized")
    renamed = alice("PUT", f"/v2.0/ports/{dhcp['id']}", {"port": {"name": "dhcp"}})
    assert renamed.status_code == 200


def test_a_new_slaac_subnet_leaves_the_dhcp_port_alone(admin: Api) -> None:
    """Existing ports get their EUI-64 address on a new SLAAC subnet; the DHCP
    port does not (it has nothing to serve there)."""
    network = admin.create_network(name="later-v6")
    v4 = subnet(admin, network["id"], "10.0.0.0/24")
    port(admin, network["id"])
    subnet(
        admin,
        network["id"],
        "2001:db8:6::/64",
        ip_version=6,
        ipv6_ra_mode="slaac",
        ipv6_address_mode="slaac",
    )
    assert served(admin, network["id"]) == {v4["id"]}
