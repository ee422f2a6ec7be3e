"""HA routers through the tenant API (Neutron's `l3-ha` and
`l3_agent_scheduler`): who sets and sees `ha`, its default, when it may
change, how many hosts it needs, the hidden HA network and its ports, and
which agents run a router, against a real database (SQLite and PostgreSQL).
The orchestrator's side (placing the members, their roles) is written into
the database as it would write it."""

from __future__ import annotations

import ipaddress
import threading
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from astara.api import ha
from astara.api.app import create_app
from astara.api.bootstrap import ensure_admin
from astara.api.settings import ApiSettings
from astara.db.models import (
    ROUTER_HA_INTERFACE,
    ApplianceState,
    HaNetwork,
    Host,
    IpAllocation,
    Network,
    OutboxEvent,
    Port,
    RouterPort,
    Subnet,
    ha_member_id,
)
from tests.component.conftest import NOW, Api, error, project

WHEN = datetime(2026, 11, 25, 12, 0)
ACTIVE_ROUTERS_MESSAGE = (
    "Bad router request: Cannot change HA attribute of active routers. Please set router"
    " admin_state_up to False prior to upgrade."
)


def _host(
    engine: Engine,
    name: str,
    zone: str = "nova",
    *,
    alive: bool = True,
    drained: bool = False,
    local: bool = False,
) -> str:
    """A host as `astara serve` (the local one, `unix:`) or a join records it."""
    host_id = str(uuid.uuid4())
    with Session(engine) as session, session.begin():
        session.add(
            Host(
                id=host_id,
                name=name,
                address="unix:/run/astara/agent.sock" if local else "https://192.0.2.12:9698",
                underlay_address=None if local else "198.51.100.2",
                physnets={},
                availability_zone=zone,
                drained=drained,
                alive=alive,
                last_heartbeat=WHEN,
                reported={},
                created_at=WHEN,
            )
        )
    return host_id


def _place(engine: Engine, appliance_id: str, host: str | None, ha_state: str | None) -> None:
    """An appliance's record as the orchestrator writes it: where it runs and,
    for an HA router's member, the role its host reported."""
    with Session(engine) as session, session.begin():
        session.merge(
            ApplianceState(
                appliance_id=appliance_id,
                kind="router",
                project_id="p",
                state="running",
                updated_at=WHEN,
                host=host,
                epoch=1,
                ha_state=ha_state,
            )
        )


def _set_host(engine: Engine, name: str, **columns: Any) -> None:
    with Session(engine) as session, session.begin():
        host = session.scalar(select(Host).where(Host.name == name))
        assert host is not None
        for key, value in columns.items():
            setattr(host, key, value)


def _router(api: Api, **fields: Any) -> dict[str, Any]:
    response = api("POST", "/v2.0/routers", {"router": {"name": "r", **fields}})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()["router"]
    return body


def _project_id(api: Api) -> str:
    found: str = api("GET", "/v2.0/quotas/project").json()["project"]["project_id"]
    return found


def _count(engine: Engine, model: Any, *where: Any) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def _ha_ports(engine: Engine) -> list[Port]:
    with Session(engine) as session:
        return list(
            session.scalars(select(Port).where(Port.device_owner == ROUTER_HA_INTERFACE)).all()
        )


def _with_settings(engine: Engine, tmp_path: Path, settings: ApiSettings) -> Api:
    token = ensure_admin(engine, tmp_path, "http://testserver", NOW)
    return Api(TestClient(create_app(engine, settings=settings)), token)


@pytest.fixture
def two_hosts(engine: Engine) -> tuple[str, str]:
    return _host(engine, "h1", "az1"), _host(engine, "h2", "az2")


def test_extensions_advertise_l3_ha_and_the_scheduler(admin: Api) -> None:
    shown = admin("GET", "/v2.0/extensions/l3-ha").json()["extension"]
    assert shown == {
        "alias": "l3-ha",
        "name": "HA Router extension",
        "description": "Adds HA capability to routers.",
        "updated": "2014-04-26T00:00:00-00:00",
        "links": [],
    }
    scheduler = admin("GET", "/v2.0/extensions/l3_agent_scheduler").json()["extension"]
    assert scheduler["name"] == "L3 Agent Scheduler"
    assert scheduler["description"] == "Schedule routers among l3 agents"
    assert scheduler["updated"] == "2013-02-07T10:00:00-00:00"


def test_only_admins_set_and_see_ha(admin: Api, two_hosts: tuple[str, str]) -> None:
    alice = project(admin, "alice")
    for body in ({"name": "r", "ha": True}, {"name": "r", "ha": False}):
        assert error(alice("POST", "/v2.0/routers", {"router": body})) == (
            403,
            "PolicyNotAuthorized",
            "(rule:create_router:ha) is disallowed by policy",
        )
    assert admin("GET", "/v2.0/routers").json()["routers"] == []  # nothing was made
    made = _router(alice)
    assert "ha" not in made
    assert "ha" not in alice("GET", f"/v2.0/routers/{made['id']}").json()["router"]
    assert all("ha" not in r for r in alice("GET", "/v2.0/routers").json()["routers"])
    assert alice("GET", f"/v2.0/routers/{made['id']}?fields=ha").json()["router"] == {}
    # A filter on what the caller may not read matches nothing.
    assert alice("GET", "/v2.0/routers?ha=false").json()["routers"] == []
    refused = alice("PUT", f"/v2.0/routers/{made['id']}", {"router": {"ha": False}})
    assert error(refused) == (
        403,
        "PolicyNotAuthorized",
        "(rule:update_router:ha) is disallowed by policy",
    )
    # An admin sees it on every router, and filters by it.
    assert admin("GET", f"/v2.0/routers/{made['id']}").json()["router"]["ha"] is False
    highly = _router(admin, ha=True, project_id=_project_id(alice))
    assert highly["ha"] is True and highly["project_id"] == _project_id(alice)
    assert [r["id"] for r in admin("GET", "/v2.0/routers?ha=true").json()["routers"]] == [
        highly["id"]
    ]
    assert [r["id"] for r in admin("GET", "/v2.0/routers?ha=False").json()["routers"]] == [
        made["id"]
    ]
    # The tenant sees its HA router, not what makes it one.
    shown = alice("GET", f"/v2.0/routers/{highly['id']}").json()["router"]
    assert "ha" not in shown
    assert error(admin("POST", "/v2.0/routers", {"router": {"ha": "sometimes"}}))[:2] == (
        400,
        "InvalidInput",
    )


def test_ha_not_given_is_the_deployments_default(
    engine: Engine, tmp_path: Path, two_hosts: tuple[str, str]
) -> None:
    plain = _with_settings(engine, tmp_path, ApiSettings())
    assert _router(plain)["ha"] is False
    assert _router(plain, ha=None)["ha"] is False  # null is not given
    highly = _with_settings(engine, tmp_path, ApiSettings(ha_default=True))
    alice = project(highly, "alice")
    # Its HA ports (and network, subnet) are the service's: no quota of its pays.
    quota = {"quota": {"port": 0, "network": 0, "subnet": 0}}
    assert highly("PUT", f"/v2.0/quotas/{_project_id(alice)}", quota).status_code == 200
    made = _router(alice)  # the tenant did not ask: the deployment's default
    assert "ha" not in made
    assert highly("GET", f"/v2.0/routers/{made['id']}").json()["router"]["ha"] is True
    assert _router(highly, ha=None)["ha"] is True
    assert _router(highly, ha=False)["ha"] is False
    with Session(engine) as session:
        assert len(ha.member_ports(session, made["id"])) == 2


def test_ha_changes_only_on_an_administratively_down_router(
    admin: Api, engine: Engine, two_hosts: tuple[str, str]
) -> None:
    router = _router(admin)
    path = f"/v2.0/routers/{router['id']}"
    assert error(admin("PUT", path, {"router": {"ha": True}})) == (
        400,
        "BadRequest",
        ACTIVE_ROUTERS_MESSAGE,
    )
    assert admin("GET", path).json()["router"]["ha"] is False and _ha_ports(engine) == []
    # The same value, or null, is no change: allowed while up.
    for same in (False, None):
        unchanged = admin("PUT", path, {"router": {"ha": same, "name": "same"}})
        assert unchanged.status_code == 200 and unchanged.json()["router"]["ha"] is False
    # Down in the same request: the desired state is what counts.
    turned = admin("PUT", path, {"router": {"ha": True, "admin_state_up": False}})
    assert turned.status_code == 200, turned.text
    assert turned.json()["router"]["ha"] is True
    assert turned.json()["router"]["admin_state_up"] is False
    assert turned.json()["router"]["status"] == "BUILD"
    assert len(_ha_ports(engine)) == 2
    # Back up, it keeps its ha; HA to legacy needs it down again.
    assert admin("PUT", path, {"router": {"admin_state_up": True}}).status_code == 200
    assert admin("PUT", path, {"router": {"ha": True}}).status_code == 200
    assert error(admin("PUT", path, {"router": {"ha": False}})) == (
        400,
        "BadRequest",
        ACTIVE_ROUTERS_MESSAGE,
    )
    assert error(admin("PUT", path, {"router": {"ha": False, "admin_state_up": True}}))[0] == 400
    assert len(_ha_ports(engine)) == 2
    assert admin("PUT", path, {"router": {"admin_state_up": False}}).status_code == 200
    legacy = admin("PUT", path, {"router": {"ha": False}})
    assert legacy.status_code == 200 and legacy.json()["router"]["ha"] is False
    # Its project's last HA router gone: so is the HA network, in the same transaction.
    assert _ha_ports(engine) == []
    assert _count(engine, HaNetwork) == 0 and _count(engine, Network) == 0
    assert _count(engine, Subnet) == 0 and _count(engine, IpAllocation) == 0


def test_too_few_hosts_is_refused_and_nothing_is_made(admin: Api, engine: Engine) -> None:
    def refused(available: int, **fields: Any) -> None:
        response = admin("POST", "/v2.0/routers", {"router": {"name": "r", "ha": True, **fields}})
        assert error(response) == (
            409,
            "HANotEnoughAvailableAgents",
            "Not enough l3 agents available to ensure HA. Minimum required 2,"
            f" available {available}.",
        )
        assert admin("GET", "/v2.0/routers").json()["routers"] == []
        assert admin("GET", "/v2.0/networks").json()["networks"] == []
        assert admin("GET", "/v2.0/ports").json()["ports"] == []
        assert _count(engine, HaNetwork) == 0 and _count(engine, RouterPort) == 0

    refused(0)
    # `make run`: the local host alone (its agent on a unix socket).
    _host(engine, "local", local=True)
    refused(1)
    legacy = _router(admin)  # a legacy router is unaffected
    assert legacy["ha"] is False
    assert admin("DELETE", f"/v2.0/routers/{legacy['id']}").status_code == 204
    # A joined host with an underlay: the local host without one cannot reach
    # its tenant networks (placement's rule), so still one host can take a member.
    _host(engine, "h1", "az1")
    refused(1)
    _host(engine, "dead", "az1", alive=False)
    _host(engine, "drained", "az1", drained=True)
    refused(1)
    _host(engine, "h2", "az2")
    # Zone hints: only the hosts in those zones count.
    refused(1, availability_zone_hints=["az2"])
    both = _router(admin, ha=True, availability_zone_hints=["az1", "az2"])
    assert both["ha"] is True
    anywhere = _router(admin, ha=True)
    assert anywhere["ha"] is True
    assert len(_ha_ports(engine)) == 4


def test_turning_ha_on_needs_two_hosts_in_the_routers_zones(admin: Api, engine: Engine) -> None:
    _host(engine, "h1", "az1")
    _host(engine, "h2", "az2")
    router = _router(admin, admin_state_up=False, availability_zone_hints=["az1"])
    path = f"/v2.0/routers/{router['id']}"
    assert error(admin("PUT", path, {"router": {"ha": True}}))[:3] == (
        409,
        "HANotEnoughAvailableAgents",
        "Not enough l3 agents available to ensure HA. Minimum required 2, available 1.",
    )
    assert admin("GET", path).json()["router"]["ha"] is False
    assert _count(engine, Network) == 0 and _count(engine, Port) == 0
    _host(engine, "h3", "az1")
    assert admin("PUT", path, {"router": {"ha": True}}).json()["router"]["ha"] is True


def test_one_hidden_network_per_project_shared_by_its_ha_routers(
    admin: Api, engine: Engine, two_hosts: tuple[str, str]
) -> None:
    alice, bob = project(admin, "alice"), project(admin, "bob")
    alice_id, bob_id = _project_id(alice), _project_id(bob)
    first = _router(admin, ha=True, project_id=alice_id)
    second = _router(admin, ha=True, project_id=alice_id)
    _router(alice)  # a legacy router adds nothing
    networks = admin("GET", "/v2.0/networks").json()["networks"]
    (network,) = networks
    assert network["name"] == f"HA network project {alice_id}"
    assert network["project_id"] == network["tenant_id"] == ""
    assert network["shared"] is False and network["admin_state_up"] is True
    assert network["router:external"] is False
    assert network["provider:network_type"] == "vxlan"
    assert isinstance(network["provider:segmentation_id"], int)
    assert network["mtu"] == 1450
    (subnet,) = admin("GET", "/v2.0/subnets").json()["subnets"]
    assert subnet["id"] in network["subnets"]
    assert subnet["name"] == f"HA subnet project {alice_id}"
    assert (subnet["cidr"], subnet["ip_version"]) == ("169.254.192.0/18", 4)
    assert subnet["enable_dhcp"] is False and subnet["gateway_ip"] is None
    assert subnet["project_id"] == ""
    ports = admin("GET", f"/v2.0/ports?network_id={network['id']}").json()["ports"]
    assert len(ports) == 4
    for port in ports:
        assert port["name"] == f"HA port project {alice_id}"
        assert port["device_owner"] == "network:router_ha_interface"
        assert port["project_id"] == ""
        assert port["security_groups"] == []  # a `network:` port: the service's own
        assert [a["subnet_id"] for a in port["fixed_ips"]] == [subnet["id"]]
    assert sorted(p["device_id"] for p in ports) == sorted([first["id"]] * 2 + [second["id"]] * 2)
    with Session(engine) as session:
        assert session.get(HaNetwork, alice_id) is not None
        found = ha.ha_network(session, alice_id)
        assert found is not None and found.id == network["id"]
        assert ha.ha_network(session, bob_id) is None
        members = ha.member_ports(session, first["id"])
        assert [p.device_id for p in members] == [first["id"]] * 2
        addresses = [int(ipaddress.ip_address(p.fixed_ips[0].ip_address)) for p in members]
        assert addresses == sorted(addresses)  # member 0's is the lower address
        kinds = session.scalars(
            select(RouterPort.port_type).where(RouterPort.port_id.in_([p.id for p in members]))
        ).all()
        assert kinds == [ROUTER_HA_INTERFACE] * 2
        assert ha.member_ports(session, str(uuid.uuid4())) == []

    # The tenant sees none of it, and its quotas count none of it.
    assert alice("GET", "/v2.0/networks").json()["networks"] == []
    assert alice("GET", "/v2.0/subnets").json()["subnets"] == []
    assert alice("GET", "/v2.0/ports").json()["ports"] == []
    assert alice("GET", f"/v2.0/ports?device_id={first['id']}").json()["ports"] == []
    assert error(alice("GET", f"/v2.0/networks/{network['id']}"))[:2] == (404, "NetworkNotFound")
    assert error(alice("GET", f"/v2.0/ports/{ports[0]['id']}"))[:2] == (404, "PortNotFound")
    details = alice("GET", f"/v2.0/quotas/{alice_id}/details").json()["quota"]
    assert (details["network"]["used"], details["subnet"]["used"]) == (0, 0)
    assert details["port"]["used"] == 0 and details["router"]["used"] == 3

    # Another project: its own network, the same range, another segment.
    _router(admin, ha=True, project_id=bob_id)
    by_name = {n["name"]: n for n in admin("GET", "/v2.0/networks").json()["networks"]}
    bobs = by_name[f"HA network project {bob_id}"]
    assert bobs["provider:segmentation_id"] != network["provider:segmentation_id"]
    bobs_subnets = admin("GET", f"/v2.0/subnets?network_id={bobs['id']}").json()["subnets"]
    assert [s["cidr"] for s in bobs_subnets] == ["169.254.192.0/18"]
    assert _count(engine, HaNetwork) == 2 and len(_ha_ports(engine)) == 6


def test_the_ha_network_goes_with_its_projects_last_ha_router(
    admin: Api, engine: Engine, two_hosts: tuple[str, str]
) -> None:
    first, second = _router(admin, ha=True), _router(admin, ha=True)
    assert admin("DELETE", f"/v2.0/routers/{first['id']}").status_code == 204
    assert len(_ha_ports(engine)) == 2 and _count(engine, HaNetwork) == 1
    assert {p.device_id for p in _ha_ports(engine)} == {second["id"]}
    assert admin("DELETE", f"/v2.0/routers/{second['id']}").status_code == 204
    # Nothing left behind.
    for model in (Port, Network, Subnet, IpAllocation, RouterPort, HaNetwork):
        assert _count(engine, model) == 0, model
    # The next HA router makes it again.
    _router(admin, ha=True)
    assert _count(engine, HaNetwork) == 1 and len(_ha_ports(engine)) == 2


def test_ha_ports_and_network_are_the_services(
    admin: Api, engine: Engine, two_hosts: tuple[str, str]
) -> None:
    router = _router(admin, ha=True)
    ports = admin("GET", f"/v2.0/ports?device_id={router['id']}").json()["ports"]
    port = ports[0]
    assert error(admin("DELETE", f"/v2.0/ports/{port['id']}")) == (
        409,
        "ServicePortInUse",
        f"Port {port['id']} cannot be deleted directly via the port API:"
        " has device owner network:router_ha_interface.",
    )
    for change in (
        {"device_owner": "compute:nova"},
        {"device_id": str(uuid.uuid4())},
        {"fixed_ips": [{"ip_address": "169.254.200.1"}]},
        {"mac_address": "fa:16:3e:00:00:01"},
    ):
        (name,) = change
        assert error(admin("PUT", f"/v2.0/ports/{port['id']}", {"port": change})) == (
            409,
            "UnsupportedPortDeviceOwner",
            f"Operation {name} update is not supported for port {port['id']}"
            " with device_owner network:router_ha_interface.",
        )
    assert admin("GET", f"/v2.0/ports/{port['id']}").json()["port"] == port
    renamed = admin("PUT", f"/v2.0/ports/{port['id']}", {"port": {"description": "keepalived"}})
    assert renamed.status_code == 200
    network_id = port["network_id"]
    in_use = admin("DELETE", f"/v2.0/networks/{network_id}")
    assert error(in_use)[:2] == (409, "NetworkInUse")
    assert port["id"] in error(in_use)[2]
    subnet_id = port["fixed_ips"][0]["subnet_id"]
    assert error(admin("DELETE", f"/v2.0/subnets/{subnet_id}"))[:2] == (409, "SubnetInUse")
    # An admin's own port on it keeps the network when the router goes (Neutron's rule).
    extra = admin("POST", "/v2.0/ports", {"port": {"network_id": network_id}})
    assert extra.status_code == 201
    assert admin("DELETE", f"/v2.0/routers/{router['id']}").status_code == 204
    assert _ha_ports(engine) == [] and _count(engine, HaNetwork) == 1
    assert admin("DELETE", f"/v2.0/ports/{extra.json()['port']['id']}").status_code == 204
    assert admin("DELETE", f"/v2.0/networks/{network_id}").status_code == 204
    assert _count(engine, HaNetwork) == 0


def test_router_changes_record_events_and_the_ha_ports_theirs(
    admin: Api, engine: Engine, two_hosts: tuple[str, str]
) -> None:
    def events() -> list[tuple[str, str, str, str]]:
        with Session(engine) as session:
            return [
                (e.resource_type, e.action, e.resource_id, e.project_id)
                for e in session.scalars(select(OutboxEvent).order_by(OutboxEvent.sequence))
            ]

    before = len(events())
    router = _router(admin, ha=True)
    made = events()[before:]
    assert ("router", "create", router["id"], router["project_id"]) in made
    ports = {p.id for p in _ha_ports(engine)}
    assert {(kind, action, rid) for kind, action, rid, _ in made if kind == "port"} == {
        ("port", "create", p) for p in ports
    }
    assert sum(1 for kind, action, *_ in made if (kind, action) == ("network", "create")) == 1
    before = len(events())
    path = f"/v2.0/routers/{router['id']}"
    admin("PUT", path, {"router": {"ha": False, "admin_state_up": False}})
    changed = events()[before:]
    assert ("router", "update", router["id"], router["project_id"]) in changed
    assert {(kind, action, rid) for kind, action, rid, _ in changed if kind == "port"} == {
        ("port", "delete", p) for p in ports
    }
    assert sum(1 for kind, action, *_ in changed if (kind, action) == ("network", "delete")) == 1
    admin("PUT", path, {"router": {"ha": True}})
    before = len(events())
    assert admin("DELETE", path).status_code == 204
    gone = events()[before:]
    assert ("router", "delete", router["id"], router["project_id"]) in gone
    assert sum(1 for kind, action, *_ in gone if (kind, action) == ("port", "delete")) == 2


def test_first_ha_routers_of_a_project_at_once_share_one_network(
    admin: Api, engine: Engine, two_hosts: tuple[str, str]
) -> None:
    """Racing first HA routers of one project: one inserts the HA network,
    the others lose on its key, run again and join it. (No router quota:
    else the project's quota lock would make them wait for each other.)"""
    alice = project(admin, "alice")
    alice_id = _project_id(alice)
    assert admin("PUT", f"/v2.0/quotas/{alice_id}", {"quota": {"router": -1}}).status_code == 200
    body = {"router": {"name": "r", "ha": True, "project_id": alice_id}}
    results = _at_once(*[lambda: admin("POST", "/v2.0/routers", body)] * 6)
    assert sorted(r.status_code for r in results) == [201] * 6, [r.text for r in results]
    assert _count(engine, HaNetwork) == 1 and _count(engine, Network) == 1
    assert len(_ha_ports(engine)) == 12


def test_l3_agents_show_where_a_router_runs_and_each_members_role(
    admin: Api, engine: Engine
) -> None:
    h1, h2 = _host(engine, "h1", "az1"), _host(engine, "h2", "az2")
    h3 = _host(engine, "h3", "az1")
    highly = _router(admin, ha=True)
    legacy = _router(admin)
    hosted = f"/v2.0/routers/{highly['id']}/l3-agents"
    assert admin("GET", hosted).json() == {"agents": []}  # not placed yet
    _place(engine, ha_member_id(highly["id"], 0), "h2", "active")
    _place(engine, ha_member_id(highly["id"], 1), "h1", "standby")
    agents = admin("GET", hosted).json()["agents"]
    by_id = {a["id"]: a for a in admin("GET", "/v2.0/agents").json()["agents"]}
    assert agents == [{**by_id[h2], "ha_state": "active"}, {**by_id[h1], "ha_state": "standby"}]
    assert agents[0]["agent_type"] == "L3 agent" and agents[0]["host"] == "h2"
    # The router runs where its members do.
    shown = admin("GET", f"/v2.0/routers/{highly['id']}").json()["router"]
    assert shown["availability_zones"] == ["az1", "az2"]

    def states() -> list[tuple[str, str | None]]:
        return [(a["host"], a["ha_state"]) for a in admin("GET", hosted).json()["agents"]]

    _place(engine, ha_member_id(highly["id"], 1), "h1", "fault")
    assert states() == [("h2", "active"), ("h1", "standby")]
    _place(engine, ha_member_id(highly["id"], 1), "h1", None)
    assert states() == [("h2", "active"), ("h1", "unknown")]
    # Neutron's rewrite for dead agents: an active member on a dead host is
    # standby while another member's host lives, unknown when none does.
    _set_host(engine, "h2", alive=False)
    assert states() == [("h2", "standby"), ("h1", "unknown")]
    _set_host(engine, "h1", alive=False)
    assert states() == [("h2", "unknown"), ("h1", "unknown")]
    _set_host(engine, "h1", alive=True, drained=True)  # drained is not dead
    _place(engine, ha_member_id(highly["id"], 1), "h1", "active")
    _set_host(engine, "h2", alive=True)
    assert states() == [("h2", "active"), ("h1", "active")]
    # A member not placed, or placed on a host since removed, is on no agent.
    _place(engine, ha_member_id(highly["id"], 1), None, None)
    assert states() == [("h2", "active")]
    _place(engine, ha_member_id(highly["id"], 1), "gone", "standby")
    assert states() == [("h2", "active")]

    legacy_hosted = f"/v2.0/routers/{legacy['id']}/l3-agents"
    assert admin("GET", legacy_hosted).json() == {"agents": []}
    _place(engine, legacy["id"], "h3", None)
    on_h3 = admin("GET", f"/v2.0/agents/{h3}").json()["agent"]
    assert on_h3["configurations"]["appliances"] == 1
    assert admin("GET", legacy_hosted).json() == {"agents": [{**on_h3, "ha_state": None}]}

    # Admins only (Neutron's `get_l3-agents`), before the router is looked up.
    alice = project(admin, "alice")
    owned = _router(alice)
    for router_id in (owned["id"], highly["id"], str(uuid.uuid4())):
        assert error(alice("GET", f"/v2.0/routers/{router_id}/l3-agents")) == (
            403,
            "PolicyNotAuthorized",
            "(rule:get_l3-agents) is disallowed by policy",
        )
    missing = str(uuid.uuid4())
    assert error(admin("GET", f"/v2.0/routers/{missing}/l3-agents")) == (
        404,
        "RouterNotFound",
        f"Router {missing} could not be found",
    )


def test_l3_routers_list_what_an_agent_runs_and_scheduling_is_refused(
    admin: Api, engine: Engine
) -> None:
    h1, h2 = _host(engine, "h1"), _host(engine, "h2")
    highly, legacy, elsewhere = _router(admin, ha=True), _router(admin), _router(admin)
    _place(engine, ha_member_id(highly["id"], 0), "h1", "active")
    _place(engine, ha_member_id(highly["id"], 1), "h2", "standby")
    _place(engine, legacy["id"], "h1", None)
    _place(engine, elsewhere["id"], "h2", None)
    _place(engine, "dhcp-" + str(uuid.uuid4()), "h1", None)  # a DHCP appliance: no router
    # The legacy appliance a router turned HA left behind is not the router any more.
    _place(engine, highly["id"], "h1", None)
    on_h1 = admin("GET", f"/v2.0/agents/{h1}/l3-routers").json()["routers"]
    assert sorted(r["id"] for r in on_h1) == sorted([highly["id"], legacy["id"]])
    assert (
        next(r for r in on_h1 if r["id"] == highly["id"])
        == admin("GET", f"/v2.0/routers/{highly['id']}").json()["router"]
    )
    on_h2 = admin("GET", f"/v2.0/agents/{h2}/l3-routers").json()["routers"]
    assert sorted(r["id"] for r in on_h2) == sorted([highly["id"], elsewhere["id"]])
    missing = str(uuid.uuid4())
    assert error(admin("GET", f"/v2.0/agents/{missing}/l3-routers"))[:2] == (
        404,
        "AgentNotFound",
    )
    alice = project(admin, "alice")
    assert error(alice("GET", f"/v2.0/agents/{h1}/l3-routers")) == (
        403,
        "PolicyNotAuthorized",
        "(rule:get_l3-routers) is disallowed by policy",
    )
    # Manual scheduling: placement is the orchestrator's.
    added = admin("POST", f"/v2.0/agents/{h2}/l3-routers", {"router_id": legacy["id"]})
    assert error(added)[:2] == (400, "BadRequest")
    assert "astara router move" in error(added)[2]
    removed = admin("DELETE", f"/v2.0/agents/{h1}/l3-routers/{legacy['id']}")
    assert error(removed)[:2] == (400, "BadRequest")
    assert error(alice("POST", f"/v2.0/agents/{h2}/l3-routers", {"router_id": legacy["id"]})) == (
        403,
        "PolicyNotAuthorized",
        "(rule:create_l3-router) is disallowed by policy",
    )
    assert error(alice("DELETE", f"/v2.0/agents/{h1}/l3-routers/{legacy['id']}"))[:2] == (
        403,
        "PolicyNotAuthorized",
    )
    assert error(admin("POST", f"/v2.0/agents/{missing}/l3-routers", {"router_id": "x"}))[:2] == (
        404,
        "AgentNotFound",
    )


def _at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Each call's result, the calls started together in threads."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        start.wait(timeout=30)
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_a_new_ha_router_while_the_projects_last_one_goes(
    admin: Api, engine: Engine, two_hosts: tuple[str, str]
) -> None:
    """The last HA router's delete takes the HA network away while another
    create is joining it: both lock the network's `HaNetwork` row, so the
    create waits and makes a new network, or the delete waits and keeps it.
    (Without the lock, one in a few dozen rounds failed with a 409.)"""
    alice_id = _project_id(project(admin, "alice"))
    assert admin("PUT", f"/v2.0/quotas/{alice_id}", {"quota": {"router": -1}}).status_code == 200
    body = {"router": {"name": "next", "ha": True, "project_id": alice_id}}
    last = _router(admin, ha=True, project_id=alice_id)
    for _ in range(40):
        path = f"/v2.0/routers/{last['id']}"
        deleted, created = _at_once(
            lambda path=path: admin("DELETE", path), lambda: admin("POST", "/v2.0/routers", body)
        )
        assert deleted.status_code == 204, deleted.text
        assert created.status_code == 201, created.text
        last = created.json()["router"]
        assert _count(engine, HaNetwork) == 1 and _count(engine, Network) == 1
        assert {p.device_id for p in _ha_ports(engine)} == {last["id"]}
        assert len(_ha_ports(engine)) == 2


@pytest.mark.parametrize("cidr", ["169.254.200.0/24", "169.254.0.0/24"])
def test_an_ha_router_takes_no_subnet_holding_what_its_members_keep(
    admin: Api, two_hosts: tuple[str, str], cidr: str
) -> None:
    """Its HA subnet, and keepalived's role address: its members could not
    route such a subnet, so the API refuses it, before and after `ha`."""
    network = admin.create_network(name="n")
    response = admin(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": network["id"], "cidr": cidr, "ip_version": 4}},
    )
    assert response.status_code == 201, response.text
    subnet = response.json()["subnet"]
    router = _router(admin, ha=True)
    response = admin(
        "PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": subnet["id"]}
    )
    assert response.status_code == 400, response.text
    assert "which HA routers keep for themselves" in error(response)[2]
    # A plain router takes it, and cannot then become HA.
    plain = _router(admin)
    response = admin(
        "PUT", f"/v2.0/routers/{plain['id']}/add_router_interface", {"subnet_id": subnet["id"]}
    )
    assert response.status_code == 200, response.text
    response = admin(
        "PUT", f"/v2.0/routers/{plain['id']}", {"router": {"ha": True, "admin_state_up": False}}
    )
    assert response.status_code == 400, response.text
    assert admin("GET", f"/v2.0/routers/{plain['id']}").json()["router"]["ha"] is False


@pytest.mark.parametrize("cidr", ["169.254.0.0/16", "169.254.168.0/21"])
def test_an_ha_network_range_holding_the_role_or_metadata_address_is_refused(cidr: str) -> None:
    from astara.api.settings import check_ha_network_cidr

    with pytest.raises(ValueError, match="leaves out"):
        check_ha_network_cidr(cidr)
