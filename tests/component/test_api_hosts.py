"""Hosts through the tenant API (Neutron's agents, availability zones,
routers' zones, ports' binding:host_id) and the operators' API (host
list/show/drain/undrain/remove, router move), against a real database."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from astara.db.models import ApplianceState, Host, OutboxEvent, RevokedCertificate
from tests.component.conftest import Api, error, project

WHEN = datetime(2026, 11, 25, 12, 0)
NOT_AFTER = datetime(2027, 11, 25, 12, 0)


def _host(
    engine: Engine,
    name: str,
    zone: str = "nova",
    *,
    alive: bool = True,
    drained: bool = False,
    local: bool = False,
) -> str:
    host_id = str(uuid.uuid4())
    with Session(engine) as session, session.begin():
        session.add(
            Host(
                id=host_id,
                name=name,
                address="unix:/run/astara/agent.sock"
                if local
                else f"https://192.0.2.{len(name)}:9698",
                underlay_address=None if local else "198.51.100.2",
                physnets={} if local else {"public": "eth1"},
                availability_zone=zone,
                drained=drained,
                alive=alive,
                last_heartbeat=WHEN,
                reported={"capacity": {"appliances": 40}},
                cert_serial=None if local else f"{len(name):x}abc",
                cert_not_after=None if local else NOT_AFTER,
                created_at=WHEN,
            )
        )
    return host_id


def _place(engine: Engine, appliance_id: str, host: str, epoch: int = 1) -> None:
    with Session(engine) as session, session.begin():
        session.add(
            ApplianceState(
                appliance_id=appliance_id,
                kind="router",
                project_id="p",
                state="running",
                updated_at=WHEN,
                host=host,
                epoch=epoch,
            )
        )


def _events(engine: Engine, resource_type: str) -> list[tuple[str, str]]:
    with Session(engine) as session:
        found = session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.resource_type == resource_type)
            .order_by(OutboxEvent.sequence)
        )
        return [(e.action, e.resource_id) for e in found]


def test_agents_are_the_hosts_for_admins_only(admin: Api, engine: Engine) -> None:
    h1 = _host(engine, "h1", "az1")
    h2 = _host(engine, "h2", "az2", alive=False)
    _place(engine, "r1", "h1")
    listed = admin("GET", "/v2.0/agents").json()["agents"]
    assert [a["host"] for a in listed] == ["h1", "h2"]
    one = listed[0]
    assert one == {
        "id": h1,
        "agent_type": "L3 agent",
        "binary": "astara-agent",
        "topic": "l3_agent",
        "host": "h1",
        "admin_state_up": True,
        "alive": True,
        "created_at": "2026-11-25 12:00:00",
        "started_at": "2026-11-25 12:00:00",
        "heartbeat_timestamp": "2026-11-25 12:00:00",
        "configurations": {
            "physnets": {"public": "eth1"},
            "underlay_address": "198.51.100.2",
            "appliances": 1,
        },
        "description": "",
        "availability_zone": "az1",
    }
    assert admin("GET", f"/v2.0/agents/{h1}").json()["agent"] == one
    assert [a["id"] for a in admin("GET", "/v2.0/agents?alive=false").json()["agents"]] == [h2]
    assert [a["host"] for a in admin("GET", "/v2.0/agents?host=h2").json()["agents"]] == ["h2"]
    missing = admin("GET", f"/v2.0/agents/{uuid.uuid4()}")
    assert error(missing)[:2] == (404, "AgentNotFound")
    # Neutron's policy: others see an empty list, and no agent at all.
    alice = project(admin, "alice")
    assert alice("GET", "/v2.0/agents").json() == {"agents": []}
    for method, body in (("GET", None), ("PUT", {"agent": {"admin_state_up": False}})):
        assert error(alice(method, f"/v2.0/agents/{h1}", body)) == (
            404,
            "HTTPNotFound",
            "The resource could not be found.",
        )
    assert alice("DELETE", f"/v2.0/agents/{h1}").status_code == 404
    assert len(admin("GET", "/v2.0/agents").json()["agents"]) == 2


def test_agent_admin_state_is_drain_and_delete_is_remove(admin: Api, engine: Engine) -> None:
    h1 = _host(engine, "h1")
    down = admin("PUT", f"/v2.0/agents/{h1}", {"agent": {"admin_state_up": False}})
    assert down.status_code == 200, down.text
    assert down.json()["agent"]["admin_state_up"] is False
    assert admin("GET", "/astara/v1/hosts/h1").json()["host"]["state"] == "drained"
    up = admin("PUT", f"/v2.0/agents/{h1}", {"agent": {"admin_state_up": True}})
    assert up.json()["agent"]["admin_state_up"] is True
    refused = admin("PUT", f"/v2.0/agents/{h1}", {"agent": {"host": "h9"}})
    assert error(refused) == (400, "HTTPBadRequest", "Cannot update read-only attribute host")
    assert _events(engine, "host") == [("drain", h1), ("undrain", h1)]
    assert admin("DELETE", f"/v2.0/agents/{h1}").status_code == 204
    assert admin("GET", "/v2.0/agents").json()["agents"] == []
    with Session(engine) as session:
        assert session.get(RevokedCertificate, "2abc") is not None


def test_availability_zones_from_the_hosts(admin: Api, engine: Engine) -> None:
    assert admin("GET", "/v2.0/availability_zones").json() == {"availability_zones": []}
    _host(engine, "h1", "az1")
    _host(engine, "h2", "az2", alive=False)
    _host(engine, "h3", "az3", drained=True)
    _host(engine, "h4", "az3")
    alice = project(admin, "alice")  # anyone may list them
    zones = alice("GET", "/v2.0/availability_zones").json()["availability_zones"]
    assert sorted((z["name"], z["resource"], z["state"]) for z in zones) == [
        ("az1", "network", "available"),
        ("az1", "router", "available"),
        ("az2", "network", "unavailable"),
        ("az2", "router", "unavailable"),
        ("az3", "network", "available"),
        ("az3", "router", "available"),
    ]
    routers = admin("GET", "/v2.0/availability_zones?resource=router&state=unavailable")
    assert routers.json()["availability_zones"] == [
        {"name": "az2", "resource": "router", "state": "unavailable"}
    ]


def test_router_zone_hints_are_checked_and_zones_shown(admin: Api, engine: Engine) -> None:
    _host(engine, "h1", "az1")
    _host(engine, "h2", "az2")
    alice = project(admin, "alice")
    unknown = alice("POST", "/v2.0/routers", {"router": {"availability_zone_hints": ["az9"]}})
    assert error(unknown) == (
        404,
        "AvailabilityZoneNotFound",
        "AvailabilityZone az9 could not be found.",
    )
    bad = alice("POST", "/v2.0/routers", {"router": {"availability_zone_hints": "az1"}})
    assert error(bad)[:2] == (400, "InvalidInput")
    created = alice("POST", "/v2.0/routers", {"router": {"availability_zone_hints": ["az2"]}})
    assert created.status_code == 201, created.text
    router = created.json()["router"]
    assert router["availability_zone_hints"] == ["az2"]
    assert router["availability_zones"] == []  # not placed yet
    path = f"/v2.0/routers/{router['id']}"
    refused = alice("PUT", path, {"router": {"availability_zone_hints": ["az1"]}})
    assert error(refused)[:2] == (400, "HTTPBadRequest")
    _place(engine, router["id"], "h2")
    assert alice("GET", path).json()["router"]["availability_zones"] == ["az2"]
    # Networks span every host: hints on them are refused, an unknown zone as Neutron does.
    hinted = alice("POST", "/v2.0/networks", {"network": {"availability_zone_hints": ["az1"]}})
    assert error(hinted)[:2] == (400, "InvalidInput")


def test_host_list_show_drain_undrain(admin: Api, engine: Engine) -> None:
    h1 = _host(engine, "h1", "az1")
    _host(engine, "h2", alive=False)
    _place(engine, "r1", "h1", epoch=3)
    listed = admin("GET", "/astara/v1/hosts").json()["hosts"]
    assert [(h["name"], h["state"], h["appliances"]) for h in listed] == [
        ("h1", "up", 1),
        ("h2", "down", 0),
    ]
    shown = admin("GET", "/astara/v1/hosts/h1").json()["host"]
    assert shown["id"] == h1 and shown["availability_zone"] == "az1"
    assert shown["last_heartbeat"] == "2026-11-25T12:00:00Z"
    assert shown["capacity"] == {"appliances": 40}
    assert shown["underlay_address"] == "198.51.100.2" and shown["physnets"] == {"public": "eth1"}
    assert shown["appliances"] == [
        {
            "id": "r1",
            "kind": "router",
            "project_id": "p",
            "state": "running",
            "epoch": 3,
            "move_to": None,
        }
    ]
    assert shown["ports"] == []
    assert admin("GET", f"/astara/v1/hosts/{h1}").json()["host"]["name"] == "h1"  # by id too
    drained = admin("POST", "/astara/v1/hosts/h1/drain").json()["host"]
    assert drained["state"] == "drained" and drained["drained"] is True
    admin("POST", "/astara/v1/hosts/h1/drain")  # no change, no event
    assert admin("POST", "/astara/v1/hosts/h1/undrain").json()["host"]["state"] == "up"
    assert _events(engine, "host") == [("drain", h1), ("undrain", h1)]
    assert error(admin("GET", "/astara/v1/hosts/h9")) == (
        404,
        "HostNotFound",
        "Host h9 could not be found.",
    )
    assert admin("POST", "/astara/v1/hosts/h1/reboot").status_code == 404
    alice = project(admin, "alice")
    for method, path in (
        ("GET", "/astara/v1/hosts"),
        ("GET", "/astara/v1/hosts/h1"),
        ("POST", "/astara/v1/hosts/h1/drain"),
        ("DELETE", "/astara/v1/hosts/h1"),
    ):
        assert error(alice(method, path))[:2] == (403, "Forbidden"), path


def test_host_remove_revokes_and_keeps_its_appliances_named(admin: Api, engine: Engine) -> None:
    h2 = _host(engine, "h2")
    _host(engine, "local", local=True)
    _place(engine, "r1", "h2")
    assert admin("DELETE", "/astara/v1/hosts/h2").status_code == 204
    with Session(engine) as session:
        revoked = session.get(RevokedCertificate, "2abc")
        assert revoked is not None
        assert (revoked.host_name, revoked.not_after, revoked.revoked_at is not None) == (
            "h2",
            NOT_AFTER,
            True,
        )
        assert session.scalar(select(Host).where(Host.name == "h2")) is None
        state = session.get(ApplianceState, "r1")
        assert state is not None and state.host == "h2"  # the orchestrator replaces it
    assert ("remove", h2) in _events(engine, "host")
    assert error(admin("DELETE", "/astara/v1/hosts/h2"))[:2] == (404, "HostNotFound")
    local = admin("DELETE", "/astara/v1/hosts/local")
    assert error(local)[:2] == (409, "HostIsLocal")


def _router(api: Api) -> dict[str, Any]:
    response = api("POST", "/v2.0/routers", {"router": {"name": "r"}})
    assert response.status_code == 201, response.text
    router: dict[str, Any] = response.json()["router"]
    return router


def test_router_move_checks_the_host_and_router_show_says_where(admin: Api, engine: Engine) -> None:
    _host(engine, "h1")
    _host(engine, "h2")
    _host(engine, "dead", alive=False)
    _host(engine, "busy", drained=True)
    router = _router(admin)
    _place(engine, router["id"], "h1", epoch=4)
    shown = admin("GET", f"/astara/v1/routers/{router['id']}").json()["router"]
    assert (shown["host"], shown["epoch"], shown["move_to"]) == ("h1", 4, None)
    path = f"/astara/v1/routers/{router['id']}/move"
    assert error(admin("POST", path, {"host": "h9"}))[:2] == (404, "HostNotFound")
    assert error(admin("POST", "/astara/v1/routers/nope/move", {"host": "h2"}))[:2] == (
        404,
        "RouterNotFound",
    )
    for host, why in (("dead", "down"), ("busy", "drained")):
        status, kind, message = error(admin("POST", path, {"host": host}))
        assert (status, kind) == (409, "HostUnavailable") and why in message
    assert error(admin("POST", path, {"hots": "h2"}))[:2] == (400, "HTTPBadRequest")
    moved = admin("POST", path, {"host": "h2"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["router"]["move_to"] == "h2"
    assert ("move", router["id"]) in _events(engine, "router")
    events = admin("GET", f"/astara/v1/routers/{router['id']}").json()["router"]["events"]
    assert events[-1]["message"] == "operator: move to h2"
    alice = project(admin, "alice")
    assert error(alice("POST", path, {"host": "h2"}))[:2] == (403, "Forbidden")


def test_binding_host_id_is_where_the_port_is_plugged(admin: Api, engine: Engine) -> None:
    _host(engine, "h2")
    _host(engine, "here", local=True)
    alice = project(admin, "alice")
    network = alice.create_network(name="n")
    subnet = {"network_id": network["id"], "ip_version": 4, "cidr": "10.0.0.0/24"}
    assert alice("POST", "/v2.0/subnets", {"subnet": subnet}).status_code == 201
    ports = [
        alice("POST", "/v2.0/ports", {"port": {"network_id": network["id"]}}).json()["port"]
        for _ in range(2)
    ]
    assert "binding:host_id" not in ports[0]
    assert admin("GET", f"/v2.0/ports/{ports[0]['id']}").json()["port"]["binding:host_id"] == ""
    unknown = admin(
        "PUT", f"/astara/v1/ports/{ports[0]['id']}/binding", {"netns": "w1", "host": "h9"}
    )
    assert error(unknown) == (404, "HostNotFound", "Host h9 could not be found.")
    plugged = admin(
        "PUT", f"/astara/v1/ports/{ports[0]['id']}/binding", {"netns": "w1", "host": "h2"}
    )
    assert plugged.json()["binding"]["host"] == "h2"
    # The same namespace name on another host is another namespace.
    local = admin("PUT", f"/astara/v1/ports/{ports[1]['id']}/binding", {"netns": "w1"})
    assert local.status_code == 200, local.text
    listed = admin("GET", "/v2.0/ports").json()["ports"]
    hosts = {p["id"]: p["binding:host_id"] for p in listed if p["device_owner"] == ""}
    assert hosts == {ports[0]["id"]: "h2", ports[1]["id"]: "here"}
    by_host = admin("GET", "/v2.0/ports?binding:host_id=h2").json()["ports"]
    assert [p["id"] for p in by_host] == [ports[0]["id"]]
    assert "binding:host_id" not in alice("GET", f"/v2.0/ports/{ports[0]['id']}").json()["port"]
    shown = admin("GET", "/astara/v1/hosts/h2").json()["host"]
    assert [p["port_id"] for p in shown["ports"]] == [ports[0]["id"]]
    refused = admin("PUT", f"/v2.0/ports/{ports[0]['id']}", {"port": {"binding:host_id": "x"}})
    assert error(refused)[:2] == (400, "HTTPBadRequest")


def test_extensions_advertise_what_hosts_bring(admin: Api) -> None:
    aliases = {e["alias"] for e in admin("GET", "/v2.0/extensions").json()["extensions"]}
    assert {
        "provider",
        "net-mtu-writable",
        "agent",
        "availability_zone",
        "router_availability_zone",
    } <= aliases
    assert "network_availability_zone" not in aliases
