"""The operators' view of every appliance (`astara.api.operators`): routers'
and networks' DHCP appliances listed and shown with their state and history,
and rebuild, debug and manage of a DHCP appliance, as database requests the
orchestrator reads. (Called as the routes will call them: the routes
`/astara/v1/appliances…` are wired in `api.http.operators`.)"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select

from astara.api import operators
from astara.api.auth import Caller, authenticate
from astara.api.errors import NeutronError
from astara.db.engine import session_factory
from astara.db.models import ApplianceState, OutboxEvent
from astara.orchestrator.events import affected
from tests.component.conftest import NOW, Api, project


def isolated(api: Api) -> dict[str, Any]:
    """A network no router joins, with a workload: it has a DHCP appliance."""
    network = api.create_network(name="isolated")
    body = {"network_id": network["id"], "ip_version": 4, "cidr": "10.0.0.0/24"}
    assert api("POST", "/v2.0/subnets", {"subnet": body}).status_code == 201
    port = api("POST", "/v2.0/ports", {"port": {"network_id": network["id"]}})
    assert port.status_code == 201, port.text
    return network


def caller(engine: Engine, api: Api) -> Caller:
    with session_factory(engine).begin() as session:
        return authenticate(session, api.token, None)


def test_every_appliance_is_listed_with_its_kind(admin: Api, engine: Engine) -> None:
    network = isolated(admin)
    router = admin("POST", "/v2.0/routers", {"router": {"name": "r1"}}).json()["router"]
    with session_factory(engine).begin() as session:
        listed = operators.list_appliances(session, caller(engine, admin))
    by_id = {a["id"]: a for a in listed}
    dhcp = by_id[f"dhcp-{network['id']}"]
    assert dhcp["kind"] == "dhcp" and dhcp["network_id"] == network["id"]
    assert dhcp["name"] == "isolated" and dhcp["project_id"] == network["project_id"]
    assert (dhcp["state"], dhcp["status"], dhcp["paused"]) == ("creating", "DOWN", False)
    assert by_id[router["id"]]["kind"] == "router" and by_id[router["id"]]["name"] == "r1"
    # `astara router list` stays about routers.
    with session_factory(engine).begin() as session:
        routers = operators.list_routers(session, caller(engine, admin))
    assert [r["id"] for r in routers] == [router["id"]]


def test_debug_manage_and_rebuild_of_a_dhcp_appliance(admin: Api, engine: Engine) -> None:
    network = isolated(admin)
    appliance_id = f"dhcp-{network['id']}"
    operator = caller(engine, admin)
    sessions = session_factory(engine)
    with sessions.begin() as session:
        shown = operators.appliance_request(session, operator, appliance_id, "debug", NOW)
    assert shown["paused"] and shown["events"][-1]["message"] == "operator: debug"
    with sessions.begin() as session:
        row = session.get(ApplianceState, appliance_id)
        assert row is not None and row.kind == "dhcp" and row.paused
        # The request's event wakes the network's DHCP appliance.
        event = session.scalars(select(OutboxEvent).order_by(OutboxEvent.sequence.desc())).first()
        assert event is not None and event.action == "debug"
        assert appliance_id in affected(session, event)
    with sessions.begin() as session:
        operators.appliance_request(session, operator, appliance_id, "manage", NOW)
        shown = operators.appliance_request(session, operator, appliance_id, "rebuild", NOW)
    assert not shown["paused"]
    with sessions.begin() as session:
        row = session.get(ApplianceState, appliance_id)
        assert row is not None and row.rebuild_requested and not row.paused
        shown = operators.show_appliance(session, operator, appliance_id)
    assert [e["message"] for e in shown["events"]] == [
        "operator: debug",
        "operator: manage",
        "operator: rebuild",
    ]


def test_unknown_appliances_actions_and_tenants_are_refused(admin: Api, engine: Engine) -> None:
    network = isolated(admin)
    operator = caller(engine, admin)
    tenant = caller(engine, project(admin, "alice"))
    sessions = session_factory(engine)
    cases: list[tuple[Caller, str, str, int]] = [
        (operator, "dhcp-nothing", "debug", 404),
        (operator, f"dhcp-{network['id']}", "explode", 404),
        (tenant, f"dhcp-{network['id']}", "debug", 403),
    ]
    for who, appliance_id, action, status in cases:
        with pytest.raises(NeutronError) as raised, sessions.begin() as session:
            operators.appliance_request(session, who, appliance_id, action, NOW)
        assert raised.value.status == status, (appliance_id, action)
    with pytest.raises(NeutronError) as raised, sessions.begin() as session:
        operators.show_appliance(session, operator, "dhcp-nothing")
    assert raised.value.status == 404


def test_a_router_is_an_appliance_too(admin: Api, engine: Engine) -> None:
    router = admin("POST", "/v2.0/routers", {"router": {"name": "r1"}}).json()["router"]
    operator = caller(engine, admin)
    with session_factory(engine).begin() as session:
        shown = operators.appliance_request(session, operator, "r1", "debug", NOW)
        assert shown["kind"] == "router" and shown["id"] == router["id"] and shown["paused"]
        assert operators.show_appliance(session, operator, router["id"])["paused"]


def test_the_appliance_routes_list_show_and_act(admin: Api) -> None:
    """`/astara/v1/appliances`, what `astara appliance list|show|debug|manage`
    call: admins only, DHCP and router appliances alike."""
    network = isolated(admin)
    appliance_id = f"dhcp-{network['id']}"
    listed = admin("GET", "/astara/v1/appliances").json()["appliances"]
    assert [a["kind"] for a in listed if a["id"] == appliance_id] == ["dhcp"]
    shown = admin("GET", f"/astara/v1/appliances/{appliance_id}").json()["appliance"]
    assert shown["network_id"] == network["id"] and "events" in shown
    assert shown["appliance"] is None  # no agent behind this API: nothing more to show
    paused = admin("POST", f"/astara/v1/appliances/{appliance_id}/debug")
    assert paused.status_code == 200 and paused.json()["appliance"]["paused"] is True
    resumed = admin("POST", f"/astara/v1/appliances/{appliance_id}/manage").json()["appliance"]
    assert resumed["paused"] is False
    assert admin("GET", "/astara/v1/appliances/dhcp-nonexistent").status_code == 404
    assert admin("POST", f"/astara/v1/appliances/{appliance_id}/explode").status_code == 404
    alice = project(admin, "alice")
    assert alice("GET", "/astara/v1/appliances").status_code == 403
