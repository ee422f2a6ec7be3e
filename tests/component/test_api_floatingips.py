"""Neutron floating IPs: allocation, association through a router, and the
rules that tie floating IPs, ports and routers together."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from astara.db.engine import session_factory
from astara.db.models import Router
from tests.component.conftest import Api, error, project
from tests.component.test_api_routers import external, router, tenant_subnet


def floating(api: Api, network_id: str, **fields: Any) -> Any:
    return api(
        "POST", "/v2.0/floatingips", {"floatingip": {"floating_network_id": network_id, **fields}}
    )


def made(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()["floatingip"]
    return body


def topology(admin: Api, tenant: Api) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """public network, a tenant subnet behind a router, and a port on it."""
    public_id, _ = external(admin)
    network_id, subnet_id = tenant_subnet(tenant, "10.0.0.0/24")
    r1 = router(tenant, external_gateway_info={"network_id": public_id})
    tenant("PUT", f"/v2.0/routers/{r1['id']}/add_router_interface", {"subnet_id": subnet_id})
    port = tenant("POST", "/v2.0/ports", {"port": {"network_id": network_id}}).json()["port"]
    return public_id, subnet_id, r1, port


def test_allocate_associate_disassociate_release(admin: Api) -> None:
    alice = project(admin, "alice")
    public_id, _, r1, port = topology(admin, alice)
    fip = made(floating(alice, public_id))
    assert fip["status"] == "DOWN" and fip["port_id"] is None and fip["router_id"] is None
    assert fip["floating_ip_address"].startswith("198.51.100.")

    associated = alice(
        "PUT", f"/v2.0/floatingips/{fip['id']}", {"floatingip": {"port_id": port["id"]}}
    )
    body = associated.json()["floatingip"]
    assert body["port_id"] == port["id"] and body["router_id"] == r1["id"]
    assert body["fixed_ip_address"] == port["fixed_ips"][0]["ip_address"]

    # While associated, the router cannot drop the interface or the gateway.
    subnet_id = port["fixed_ips"][0]["subnet_id"]
    blocked = alice(
        "PUT", f"/v2.0/routers/{r1['id']}/remove_router_interface", {"subnet_id": subnet_id}
    )
    assert error(blocked)[:2] == (409, "RouterInterfaceInUseByFloatingIP")
    cleared = alice("PUT", f"/v2.0/routers/{r1['id']}", {"router": {"external_gateway_info": {}}})
    assert error(cleared)[:2] == (409, "RouterExternalGatewayInUseByFloatingIp")
    # A second floating IP for the same fixed IP is refused.
    second = floating(alice, public_id, port_id=port["id"])
    assert error(second)[:2] == (409, "FloatingIPPortAlreadyAssociated")

    released = alice("PUT", f"/v2.0/floatingips/{fip['id']}", {"floatingip": {"port_id": None}})
    assert released.json()["floatingip"]["router_id"] is None
    assert alice("DELETE", f"/v2.0/floatingips/{fip['id']}").status_code == 204
    # The address is free again on the external network.
    assert made(floating(admin, public_id, floating_ip_address=fip["floating_ip_address"]))


def test_association_needs_a_router_between_the_port_and_the_network(admin: Api) -> None:
    alice = project(admin, "alice")
    public_id, _ = external(admin)
    network_id, _ = tenant_subnet(alice, "10.0.0.0/24")
    port = alice("POST", "/v2.0/ports", {"port": {"network_id": network_id}}).json()["port"]
    status, kind, message = error(floating(alice, public_id, port_id=port["id"]))
    assert (status, kind) == (404, "ExternalGatewayForFloatingIPNotFound")
    assert "is not reachable from subnet" in message
    assert alice("GET", "/v2.0/floatingips").json() == {"floatingips": []}  # nothing half-made


def test_bad_floating_ip_requests(admin: Api) -> None:
    alice = project(admin, "alice")
    public_id, _, _, port = topology(admin, alice)
    private_id = port["network_id"]
    cases = [
        ({"floating_network_id": private_id}, 400, "BadRequest"),
        ({"fixed_ip_address": "10.0.0.9"}, 400, "BadRequest"),
        ({"port_id": port["id"], "fixed_ip_address": "10.0.0.250"}, 400, "BadRequest"),
        ({"floating_ip_address": "198.51.100.77"}, 403, "PolicyNotAuthorized"),
    ]
    for fields, status, kind in cases:
        body = {"floating_network_id": public_id, **fields}
        response = alice("POST", "/v2.0/floatingips", {"floatingip": body})
        assert error(response)[:2] == (status, kind), fields
    missing = alice("POST", "/v2.0/floatingips", {"floatingip": {"floating_network_id": "nope"}})
    assert error(missing)[:2] == (404, "NetworkNotFound")


def test_deleting_the_port_disassociates_its_floating_ip(admin: Api, engine: Engine) -> None:
    alice = project(admin, "alice")
    public_id, _, _, port = topology(admin, alice)
    fip = made(floating(alice, public_id, port_id=port["id"]))
    r1 = fip["router_id"]
    with session_factory(engine).begin() as session:  # as if the orchestrator had applied it
        row = session.get(Router, r1)
        assert row is not None
        row.status = "ACTIVE"
    last = admin("GET", "/astara/v1/events").json()["events"][-1]["sequence"]
    assert alice("DELETE", f"/v2.0/ports/{port['id']}").status_code == 204
    after = alice("GET", f"/v2.0/floatingips/{fip['id']}").json()["floatingip"]
    assert (after["port_id"], after["fixed_ip_address"], after["router_id"]) == (None, None, None)
    assert after["revision_number"] > fip["revision_number"]
    # The router must stop translating to the freed address: it is told, and
    # BUILD until its appliance has caught up.
    events = admin("GET", "/astara/v1/events", params={"since": last}).json()["events"]
    told = {(e["resource_type"], e["resource_id"], e["action"]) for e in events}
    assert {("floatingip", fip["id"], "update"), ("router", r1, "refresh")} <= told
    # What the deleted port was on, for the orchestrator to find its routers.
    (deleted,) = [e for e in events if e["resource_type"] == "port"]
    assert deleted["detail"] == {"network_id": port["network_id"]}
    assert alice("DELETE", f"/v2.0/floatingips/{fip['id']}").status_code == 204
    (gone,) = [
        e
        for e in admin("GET", "/astara/v1/events").json()["events"]
        if e["resource_type"] == "floatingip" and e["action"] == "delete"
    ]
    assert gone["detail"] == {"router_id": None}
    assert alice("GET", f"/v2.0/routers/{r1}").json()["router"]["status"] == "BUILD"


def test_the_fixed_ip_a_floating_ip_uses_cannot_be_changed_away(admin: Api) -> None:
    alice = project(admin, "alice")
    public_id, subnet_id, _, port = topology(admin, alice)
    fip = made(floating(alice, public_id, port_id=port["id"]))
    # Another address than the port's (allocated at random: it may be .77).
    other = next(
        f"10.0.0.{n}" for n in (77, 78) if f"10.0.0.{n}" != port["fixed_ips"][0]["ip_address"]
    )
    moved = alice(
        "PUT",
        f"/v2.0/ports/{port['id']}",
        {"port": {"fixed_ips": [{"subnet_id": subnet_id, "ip_address": other}]}},
    )
    status, kind, message = error(moved)
    assert (status, kind) == (400, "BadRequest") and fip["id"] in message
    shown = alice("GET", f"/v2.0/ports/{port['id']}").json()["port"]
    assert shown["fixed_ips"] == port["fixed_ips"]
    # Adding an address while keeping the used one is fine.
    kept = [*port["fixed_ips"], {"subnet_id": subnet_id, "ip_address": other}]
    response = alice("PUT", f"/v2.0/ports/{port['id']}", {"port": {"fixed_ips": kept}})
    assert response.status_code == 200, response.text


def test_an_unknown_marker_is_floating_ip_not_found(admin: Api) -> None:
    response = admin("GET", "/v2.0/floatingips?limit=1&marker=nope")
    assert error(response) == (404, "FloatingIPNotFound", "Floating IP nope could not be found.")


def test_floating_ips_of_others_are_not_found(admin: Api) -> None:
    alice, bob = project(admin, "alice"), project(admin, "bob")
    public_id, _, _, port = topology(admin, alice)
    fip = made(floating(alice, public_id))
    assert error(bob("GET", f"/v2.0/floatingips/{fip['id']}"))[:2] == (404, "FloatingIPNotFound")
    # Bob cannot point his floating IP at Alice's port either.
    bobs = made(floating(bob, public_id))
    response = bob(
        "PUT", f"/v2.0/floatingips/{bobs['id']}", {"floatingip": {"port_id": port["id"]}}
    )
    assert response.status_code == 404
