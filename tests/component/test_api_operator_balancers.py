"""The operators' API for load balancers (`/astara/v1/loadbalancers…`, what
`astara lb list|show|rebuild|debug|manage` call), through the real app
against a real database: the same records, history and wake-ups as a
router's, by the load balancer's id, name or appliance id (`lb-<id>`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from astara.db.models import ApplianceState, OutboxEvent
from astara.orchestrator.events import affected
from tests.component.conftest import Api, error, project
from tests.component.test_api_lbaas import LBS, activate, tenant_subnet

OPERATORS = "/astara/v1/loadbalancers"


def _balancer(api: Api, engine: Engine, name: str = "web") -> dict[str, Any]:
    """A load balancer with a listener, a pool and a member (each made once
    the one before is ACTIVE, as the orchestrator would make it)."""
    subnet = tenant_subnet(api)
    made = api("POST", LBS, {"loadbalancer": {"name": name, "vip_subnet_id": subnet["id"]}})
    assert made.status_code == 201, made.text
    balancer: dict[str, Any] = made.json()["loadbalancer"]
    activate(engine, balancer["id"])
    listener = {"loadbalancer_id": balancer["id"], "protocol": "HTTP", "protocol_port": 80}
    listener_id = api("POST", "/v2/lbaas/listeners", {"listener": listener}).json()["listener"]
    activate(engine, balancer["id"])
    pool = {"listener_id": listener_id["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
    pool_id = api("POST", "/v2/lbaas/pools", {"pool": pool}).json()["pool"]["id"]
    activate(engine, balancer["id"])
    member = {"address": "10.0.0.50", "protocol_port": 8000, "name": "m1"}
    made = api("POST", f"/v2/lbaas/pools/{pool_id}/members", {"member": member})
    assert made.status_code == 201, made.text
    activate(engine, balancer["id"])
    return balancer


def _last_event(engine: Engine) -> tuple[OutboxEvent, set[str]]:
    """The newest outbox event and the appliances it wakes."""
    with Session(engine) as session:
        event = session.scalars(select(OutboxEvent).order_by(OutboxEvent.sequence.desc())).first()
        assert event is not None
        return event, affected(session, event)


def test_list_and_show_a_load_balancer_with_its_parts_and_appliance(
    admin: Api, engine: Engine
) -> None:
    alice = project(admin, "alice")
    balancer = _balancer(alice, engine)
    appliance_id = f"lb-{balancer['id']}"

    (listed,) = admin("GET", OPERATORS).json()["loadbalancers"]
    assert listed["id"] == balancer["id"] and listed["appliance_id"] == appliance_id
    assert (listed["name"], listed["project_id"]) == ("web", balancer["project_id"])
    assert listed["vip_address"] == balancer["vip_address"]
    assert (listed["provisioning_status"], listed["operating_status"]) == ("ACTIVE", "ONLINE")
    assert (listed["state"], listed["host"], listed["paused"]) == ("creating", None, False)

    # By id, by name and by its appliance's id: the same one.
    for name in (balancer["id"], "web", appliance_id):
        response = admin("GET", f"{OPERATORS}/{name}")
        assert response.status_code == 200, response.text
        shown = response.json()["loadbalancer"]
        assert shown["id"] == balancer["id"]
    (listener,) = shown["listeners"]
    (pool,) = listener["pools"]
    assert [m["address"] for m in pool["members"]] == ["10.0.0.50"]
    assert shown["events"] == [] and shown["epoch"] == 0
    # No agent behind this API: nothing rendered to show, and nothing fails.
    assert shown["appliance"] is None and shown["rendered"] is None

    # Every appliance's list and show have it too, by its appliance id.
    appliances = admin("GET", "/astara/v1/appliances").json()["appliances"]
    (as_appliance,) = [a for a in appliances if a["kind"] == "loadbalancer"]
    assert as_appliance["id"] == appliance_id and as_appliance["status"] == "ACTIVE"
    shown = admin("GET", f"/astara/v1/appliances/{appliance_id}").json()["appliance"]
    assert shown["id"] == appliance_id and shown["kind"] == "loadbalancer"
    assert shown["loadbalancer_id"] == balancer["id"] and shown["events"] == []


def test_rebuild_debug_and_manage_are_recorded_and_wake_its_appliance(
    admin: Api, engine: Engine
) -> None:
    balancer = _balancer(admin, engine)
    appliance_id = f"lb-{balancer['id']}"
    for action in ("debug", "rebuild"):
        response = admin("POST", f"{OPERATORS}/web/{action}")
        assert response.status_code == 200, response.text
        event, woken = _last_event(engine)
        assert (event.resource_type, event.resource_id, event.action) == (
            "loadbalancer",
            balancer["id"],
            action,
        )
        assert woken == {appliance_id}
    shown = response.json()["loadbalancer"]
    assert shown["paused"] is True and shown["id"] == balancer["id"]
    assert [e["message"] for e in shown["events"]] == ["operator: debug", "operator: rebuild"]
    with Session(engine) as session:
        row = session.get(ApplianceState, appliance_id)
        assert row is not None and row.kind == "loadbalancer"
        assert row.paused and row.rebuild_requested
        assert row.project_id == balancer["project_id"]
    resumed = admin("POST", f"/astara/v1/appliances/{appliance_id}/manage")
    assert resumed.json()["appliance"]["paused"] is False
    # The tenant's view is Octavia's, untouched by an operator's request.
    assert admin("GET", f"{LBS}/{balancer['id']}").json()["loadbalancer"]["name"] == "web"


def test_a_load_balancer_deleted_while_paused_can_be_seen_and_released(
    admin: Api, engine: Engine
) -> None:
    """As a router's: its appliance stays while it is paused, so the
    operator must find it to let the orchestrator remove it."""
    balancer = _balancer(admin, engine)
    assert admin("POST", f"{OPERATORS}/{balancer['id']}/debug").status_code == 200
    deleted = admin("DELETE", f"{LBS}/{balancer['id']}?cascade=true")
    assert deleted.status_code == 204, deleted.text
    (listed,) = admin("GET", OPERATORS).json()["loadbalancers"]
    assert listed["id"] == balancer["id"] and listed["provisioning_status"] == "DELETED"
    assert listed["paused"] is True and listed["vip_address"] is None
    shown = admin("GET", f"{OPERATORS}/{balancer['id']}").json()["loadbalancer"]
    assert shown["listeners"] == [] and shown["events"][-1]["message"] == "operator: debug"
    released = admin("POST", f"{OPERATORS}/lb-{balancer['id']}/manage").json()["loadbalancer"]
    assert released["paused"] is False and released["provisioning_status"] == "DELETED"
    assert _last_event(engine)[1] == {f"lb-{balancer['id']}"}


def test_unknown_load_balancers_actions_and_tenants_are_refused(admin: Api, engine: Engine) -> None:
    balancer = _balancer(admin, engine)
    before = admin("GET", "/astara/v1/events").json()["events"]
    for method, path in (
        ("GET", f"{OPERATORS}/nothing"),
        ("POST", f"{OPERATORS}/nothing/rebuild"),
        ("GET", "/astara/v1/appliances/lb-nothing"),
    ):
        status, kind, message = error(admin(method, path))
        assert (status, kind) == (404, "LoadBalancerNotFound"), path
        assert "nothing could not be found" in message
    assert error(admin("POST", f"{OPERATORS}/web/explode"))[:2] == (404, "HTTPNotFound")
    alice = project(admin, "alice")
    assert alice("GET", OPERATORS).status_code == 403
    assert alice("POST", f"{OPERATORS}/{balancer['id']}/debug").status_code == 403
    # Nothing refused left a record or an event behind (alice's project's is the only one).
    after = admin("GET", "/astara/v1/events").json()["events"][len(before) :]
    assert [(e["resource_type"], e["action"]) for e in after] == [("project", "create")]
    with Session(engine) as session:
        assert session.scalars(select(ApplianceState)).all() == []
