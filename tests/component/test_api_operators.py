"""The operators' API under `/astara/v1`: port plugs, router and project
requests, through the real app against a real database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from astara.db import history
from astara.db.models import ApplianceEvent, PausedProject, PortBinding
from astara.model.fabric import PortSpec
from tests.component.conftest import Api, error, project


def _port(api: Api) -> dict[str, Any]:
    network = api.create_network(name="n")
    subnet = {"network_id": network["id"], "ip_version": 4, "cidr": "10.0.0.0/24"}
    assert api("POST", "/v2.0/subnets", {"subnet": subnet}).status_code == 201
    response = api("POST", "/v2.0/ports", {"port": {"network_id": network["id"]}})
    assert response.status_code == 201, response.text
    port: dict[str, Any] = response.json()["port"]
    return port


def _bindings(engine: Engine) -> list[PortBinding]:
    with Session(engine) as session:
        return list(session.scalars(select(PortBinding)))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"netns": ""}, "netns"),
        ({"netns": "-leading-dash"}, "netns"),
        ({"netns": "has space"}, "netns"),
        ({"netns": "a/b"}, "netns"),
        ({"netns": "n" * 65}, "netns"),  # fits PortSpec, not the binding's column
        ({"netns": "ws", "ifname": "eth.0"}, "ifname"),  # '.' separates sysctl keys
        ({"netns": "ws", "ifname": "0eth"}, "ifname"),
        ({"netns": "ws", "ifname": "lo"}, "ifname"),
        ({"netns": "ws", "ifname": "e" * 16}, "ifname"),
        ({"netns": "ws", "ifname": 7}, "ifname"),
        ({"netns": "ws", "dhcp": "yes"}, "dhcp"),
    ],
)
def test_plug_refuses_what_the_agent_would_and_stores_nothing(
    admin: Api, engine: Engine, body: dict[str, Any], field: str
) -> None:
    port = _port(admin)
    response = admin("PUT", f"/astara/v1/ports/{port['id']}/binding", body)
    status, kind, message = error(response)
    assert (status, kind) == (400, "HTTPBadRequest")
    assert message.startswith(f"{field}: "), message
    assert _bindings(engine) == []
    plugs = [e for e in admin("GET", "/astara/v1/events").json()["events"] if e["action"] == "plug"]
    assert plugs == []


def test_a_stored_plug_is_a_valid_port_spec(admin: Api, engine: Engine) -> None:
    port = _port(admin)
    body = {"netns": "web-1.a", "ifname": "eth_0", "dhcp": True}
    response = admin("PUT", f"/astara/v1/ports/{port['id']}/binding", body)
    assert response.status_code == 200, response.text
    (binding,) = _bindings(engine)
    PortSpec(
        network_id=port["network_id"],
        mac=port["mac_address"],
        netns=binding.netns,
        ifname=binding.ifname,
        dhcp=binding.dhcp,
    )
    assert (binding.netns, binding.ifname, binding.dhcp) == ("web-1.a", "eth_0", True)


def _router(api: Api, name: str = "r") -> dict[str, Any]:
    response = api("POST", "/v2.0/routers", {"router": {"name": name}})
    assert response.status_code == 201, response.text
    router: dict[str, Any] = response.json()["router"]
    return router


def test_a_router_deleted_while_paused_can_be_seen_and_released(admin: Api) -> None:
    """Its appliance stays while it is paused; the operator must find it to
    let the orchestrator remove it."""
    alice = project(admin, "alice")
    router = _router(alice)
    assert admin("POST", f"/astara/v1/routers/{router['id']}/debug").status_code == 200
    assert alice("DELETE", f"/v2.0/routers/{router['id']}").status_code == 204

    (listed,) = admin("GET", "/astara/v1/routers").json()["routers"]
    assert listed["id"] == router["id"] and listed["project_id"] == router["project_id"]
    assert listed["status"] == "DELETED" and listed["paused"] is True
    shown = admin("GET", f"/astara/v1/routers/{router['id']}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["router"]["events"][-1]["message"] == "operator: debug"

    for action in ("rebuild", "debug", "manage"):
        response = admin("POST", f"/astara/v1/routers/{router['id']}/{action}")
        assert response.status_code == 200, response.text
    released = admin("GET", f"/astara/v1/routers/{router['id']}").json()["router"]
    assert released["paused"] is False and released["status"] == "DELETED"
    actions = [e["action"] for e in admin("GET", "/astara/v1/events").json()["events"]]
    assert actions[-1] == "manage"
    # An id nothing knows is still not found.
    assert error(admin("POST", "/astara/v1/routers/nothing/manage"))[:2] == (404, "RouterNotFound")


def test_deleting_a_paused_project_leaves_no_pause_behind(admin: Api, engine: Engine) -> None:
    bob = project(admin, "bob")
    router = _router(bob)
    # A record of the orchestrator's that outlives the router and the project.
    assert admin("POST", f"/astara/v1/routers/{router['id']}/rebuild").status_code == 200
    assert admin("POST", "/astara/v1/projects/bob/debug").status_code == 200
    assert bob("DELETE", f"/v2.0/routers/{router['id']}").status_code == 204
    assert admin("DELETE", "/astara/v1/projects/bob").status_code == 204
    with Session(engine) as session:
        assert session.get(PausedProject, router["project_id"]) is None
    (listed,) = admin("GET", "/astara/v1/routers").json()["routers"]
    assert listed["id"] == router["id"] and listed["paused"] is False


def test_operator_requests_keep_the_history_bounded(admin: Api, engine: Engine) -> None:
    router = _router(admin)
    for _ in range(history.KEPT + 5):
        response = admin("POST", f"/astara/v1/routers/{router['id']}/rebuild")
        assert response.status_code == 200
    with Session(engine) as session:
        count = session.scalar(
            select(func.count())
            .select_from(ApplianceEvent)
            .where(ApplianceEvent.appliance_id == router["id"])
        )
    assert count == history.KEPT
