"""Neutron routers through the tenant API: gateway, interfaces, extra routes."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from astara.api.app import create_app
from astara.api.auth import TokenCache
from tests.component.conftest import Api, error, project


def external(admin: Api) -> tuple[str, str]:
    network = admin.create_network(name="public", **{"router:external": True})
    subnet = admin(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": network["id"], "ip_version": 4, "cidr": "198.51.100.0/24"}},
    ).json()["subnet"]
    return network["id"], subnet["id"]


def tenant_subnet(api: Api, cidr: str, name: str = "private") -> tuple[str, str]:
    network = api.create_network(name=name)
    subnet = api(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": network["id"], "ip_version": 4, "cidr": cidr}},
    ).json()["subnet"]
    return network["id"], subnet["id"]


def router(api: Api, **fields: Any) -> dict[str, Any]:
    response = api("POST", "/v2.0/routers", {"router": {"name": "r", **fields}})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()["router"]
    return body


def test_gateway_interfaces_and_teardown(admin: Api) -> None:
    alice = project(admin, "alice")
    public_id, public_subnet = external(admin)
    network_id, subnet_id = tenant_subnet(alice, "10.0.0.0/24")
    made = router(alice, external_gateway_info={"network_id": public_id})
    info = made["external_gateway_info"]
    assert info["network_id"] == public_id and info["enable_snat"] is True
    assert info["external_fixed_ips"][0]["subnet_id"] == public_subnet
    assert info["external_fixed_ips"][0]["ip_address"] != "198.51.100.1"  # never the gateway

    added = alice(
        "PUT", f"/v2.0/routers/{made['id']}/add_router_interface", {"subnet_id": subnet_id}
    )
    assert added.status_code == 200
    body = added.json()
    assert body["subnet_id"] == subnet_id and body["network_id"] == network_id
    interface = alice("GET", f"/v2.0/ports/{body['port_id']}").json()["port"]
    assert interface["device_owner"] == "network:router_interface"
    assert interface["device_id"] == made["id"]
    assert interface["fixed_ips"] == [{"subnet_id": subnet_id, "ip_address": "10.0.0.1"}]

    again = alice(
        "PUT", f"/v2.0/routers/{made['id']}/add_router_interface", {"subnet_id": subnet_id}
    )
    assert error(again)[:2] == (400, "BadRequest")
    assert error(alice("DELETE", f"/v2.0/ports/{body['port_id']}"))[:2] == (409, "ServicePortInUse")
    assert error(alice("DELETE", f"/v2.0/routers/{made['id']}"))[:2] == (409, "RouterInUse")
    assert error(alice("DELETE", f"/v2.0/subnets/{subnet_id}"))[:2] == (409, "SubnetInUse")

    removed = alice(
        "PUT", f"/v2.0/routers/{made['id']}/remove_router_interface", {"subnet_id": subnet_id}
    )
    assert removed.status_code == 200 and removed.json()["port_id"] == body["port_id"]
    assert alice("GET", f"/v2.0/ports/{body['port_id']}").status_code == 404
    assert alice("DELETE", f"/v2.0/routers/{made['id']}").status_code == 204
    # The gateway port went with the router: the external subnet is free again.
    assert admin("DELETE", f"/v2.0/subnets/{public_subnet}").status_code == 204


def test_gateway_rules(admin: Api) -> None:
    alice = project(admin, "alice")
    public_id, _ = external(admin)
    private_id, _ = tenant_subnet(alice, "10.0.0.0/24")
    status, kind, message = error(
        alice(
            "POST",
            "/v2.0/routers",
            {"router": {"external_gateway_info": {"network_id": private_id}}},
        )
    )
    assert (status, kind) == (400, "BadRequest") and "is not an external network" in message
    refused = alice(
        "POST",
        "/v2.0/routers",
        {"router": {"external_gateway_info": {"network_id": public_id, "enable_snat": False}}},
    )
    assert error(refused)[:2] == (403, "PolicyNotAuthorized")
    made = router(admin, external_gateway_info={"network_id": public_id, "enable_snat": False})
    assert made["external_gateway_info"]["enable_snat"] is False
    cleared = admin("PUT", f"/v2.0/routers/{made['id']}", {"router": {"external_gateway_info": {}}})
    assert cleared.json()["router"]["external_gateway_info"] is None
    assert [p for p in admin("GET", "/v2.0/ports").json()["ports"] if p["device_owner"]] == []


def test_extra_routes_need_a_connected_next_hop(admin: Api) -> None:
    _, subnet_id = tenant_subnet(admin, "10.0.0.0/24")
    made = router(admin)
    admin("PUT", f"/v2.0/routers/{made['id']}/add_router_interface", {"subnet_id": subnet_id})
    route = {"destination": "192.168.0.0/16", "nexthop": "10.0.0.5"}
    updated = admin("PUT", f"/v2.0/routers/{made['id']}", {"router": {"routes": [route]}})
    assert updated.json()["router"]["routes"] == [route]
    for nexthop, reason in (("172.16.0.1", "not connected"), ("10.0.0.1", "used by router")):
        bad = {"destination": "192.168.0.0/16", "nexthop": nexthop}
        status, kind, message = error(
            admin("PUT", f"/v2.0/routers/{made['id']}", {"router": {"routes": [bad]}})
        )
        assert (status, kind) == (400, "InvalidRoutes") and reason in message
    blocked = admin(
        "PUT", f"/v2.0/routers/{made['id']}/remove_router_interface", {"subnet_id": subnet_id}
    )
    assert error(blocked)[:2] == (409, "RouterInterfaceInUseByRoute")


def test_routers_of_other_projects_are_not_found(admin: Api) -> None:
    alice, bob = project(admin, "alice"), project(admin, "bob")
    made = router(alice)
    assert error(bob("GET", f"/v2.0/routers/{made['id']}"))[:2] == (404, "RouterNotFound")
    _, subnet_id = tenant_subnet(bob, "10.0.0.0/24")
    action = bob(
        "PUT", f"/v2.0/routers/{made['id']}/add_router_interface", {"subnet_id": subnet_id}
    )
    assert action.status_code == 404
    assert bob("GET", "/v2.0/routers").json() == {"routers": []}


def test_interface_actions_need_a_subnet_or_a_port(admin: Api) -> None:
    made = router(admin)
    for action in ("add_router_interface", "remove_router_interface"):
        response = admin("PUT", f"/v2.0/routers/{made['id']}/{action}", {})
        assert error(response) == (
            400,
            "BadRequest",
            "Bad router request: Either subnet_id or port_id must be specified.",
        )
    assert admin("PUT", f"/v2.0/routers/{made['id']}/add_router_interface", []).status_code == 400


def test_the_gateway_ip_is_the_routers_own_too(admin: Api) -> None:
    public_id, _ = external(admin)
    made = router(admin, external_gateway_info={"network_id": public_id})
    own = made["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
    bad = {"destination": "192.168.0.0/16", "nexthop": own}
    status, kind, message = error(
        admin("PUT", f"/v2.0/routers/{made['id']}", {"router": {"routes": [bad]}})
    )
    assert (status, kind) == (400, "InvalidRoutes") and "used by router" in message


def test_a_gateway_may_not_overlap_the_interfaces(admin: Api) -> None:
    public_id, _ = external(admin)  # 198.51.100.0/24
    _, inside = tenant_subnet(admin, "198.51.100.0/25")
    made = router(admin)
    admin("PUT", f"/v2.0/routers/{made['id']}/add_router_interface", {"subnet_id": inside})
    response = admin(
        "PUT",
        f"/v2.0/routers/{made['id']}",
        {"router": {"external_gateway_info": {"network_id": public_id}}},
    )
    status, kind, message = error(response)
    assert (status, kind) == (400, "BadRequest") and "overlaps" in message
    shown = admin("GET", f"/v2.0/routers/{made['id']}").json()["router"]
    assert shown["external_gateway_info"] is None
    gateways = admin("GET", "/v2.0/ports?device_owner=network:router_gateway").json()["ports"]
    assert gateways == []


def test_interfaces_only_on_own_or_shared_subnets(admin: Api) -> None:
    alice, bob = project(admin, "alice"), project(admin, "bob")
    _, public_subnet = external(admin)
    shared = admin.create_network(name="shared", shared=True)
    shared_subnet = admin(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": shared["id"], "ip_version": 4, "cidr": "10.9.0.0/24"}},
    ).json()["subnet"]["id"]
    made = router(alice)
    interface = f"/v2.0/routers/{made['id']}/add_router_interface"
    # The external subnet is visible to alice but not hers: its gateway IP is
    # the upstream router's, not hers to take.
    status, kind, message = error(alice("PUT", interface, {"subnet_id": public_subnet}))
    assert (status, kind) == (400, "BadRequest") and "another project" in message
    assert alice("GET", "/v2.0/ports").json()["ports"] == []
    assert alice("PUT", interface, {"subnet_id": shared_subnet}).status_code == 200
    # Bob's private subnet stays invisible to alice.
    _, bobs = tenant_subnet(bob, "10.5.0.0/24")
    assert error(alice("PUT", interface, {"subnet_id": bobs}))[0] == 404


def test_an_interface_costs_the_same_statements_however_many_the_router_has(
    admin: Api, engine: Engine
) -> None:
    """Its overlap check reads the router's subnets in one statement, not
    one read per address it holds. (The token trusted for the whole test: a
    lookup when the default 5 s ran out would add its statements.)"""
    admin = Api(TestClient(create_app(engine, tokens=TokenCache(ttl_s=3600))), admin.token)
    public_id, _ = external(admin)
    made = router(admin, external_gateway_info={"network_id": public_id})
    path = f"/v2.0/routers/{made['id']}/add_router_interface"
    statements: list[str] = []

    def keep(*args: Any) -> None:
        statements.append(str(args[2]))

    counts = []
    for n in range(6):
        _, subnet_id = tenant_subnet(admin, f"10.{n}.0.0/24", name=f"n{n}")
        event.listen(engine, "before_cursor_execute", keep)
        try:
            assert admin("PUT", path, {"subnet_id": subnet_id}).status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", keep)
        counts.append(len(statements))
        statements.clear()
    assert len(set(counts[1:])) == 1, counts
