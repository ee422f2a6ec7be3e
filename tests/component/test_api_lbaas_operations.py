"""Octavia's API beyond the objects one by one (issue 12): the fully
populated create, the batch member update, quotas, statistics, failover,
and the flavor and availability-zone lists."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from astara.appliance.lbstats import health
from astara.appliance.render.loadbalancer import render_loadbalancer
from astara.db.models import (
    ApplianceEvent,
    ApplianceState,
    Host,
    Listener,
    LoadBalancer,
    OutboxEvent,
    Port,
)
from astara.drivers import loadbalancer as lb_driver
from astara.orchestrator.appliances import zone_hints
from astara.orchestrator.events import affected
from astara.orchestrator.lifecycle import State
from astara.orchestrator.statuses import accumulate, write_lb_stats, write_lb_statuses
from tests.component.conftest import Api, project
from tests.component.test_api_lbaas import LBS, activate, fault, tenant_subnet
from tests.unit.validators import haproxy_check

NOW = datetime(2026, 12, 4, 12, 0, 0)


def graph_body(subnet_id: str) -> dict[str, Any]:
    """Octavia's own example of a fully populated load balancer, as far as
    this deployment serves it (no TLS termination)."""
    return {
        "loadbalancer": {
            "name": "lb1",
            "vip_subnet_id": subnet_id,
            "tags": ["t"],
            "listeners": [
                {
                    "name": "http",
                    "protocol": "HTTP",
                    "protocol_port": 80,
                    "default_pool": {
                        "name": "rr_pool",
                        "protocol": "HTTP",
                        "lb_algorithm": "ROUND_ROBIN",
                        "session_persistence": {"type": "HTTP_COOKIE"},
                        "healthmonitor": {
                            "type": "HTTP",
                            "delay": 3,
                            "timeout": 1,
                            "max_retries": 2,
                            "url_path": "/index.html",
                            "expected_codes": "200,201,202",
                        },
                        "members": [
                            {"address": "10.0.0.16", "protocol_port": 80},
                            {"address": "10.0.0.19", "protocol_port": 80, "weight": 5},
                        ],
                    },
                    "l7policies": [
                        {
                            "name": "api",
                            "action": "REDIRECT_TO_POOL",
                            "redirect_pool": {"name": "spare"},
                            "rules": [
                                {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/api"}
                            ],
                        },
                        {
                            "action": "REDIRECT_TO_URL",
                            "redirect_url": "https://www.example.com/",
                            "rules": [
                                {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/old"}
                            ],
                        },
                    ],
                },
                {
                    "name": "tcp",
                    "protocol": "TCP",
                    "protocol_port": 8443,
                    "default_pool": {"name": "tcp_pool"},
                },
            ],
            "pools": [
                {
                    "name": "tcp_pool",
                    "protocol": "TCP",
                    "lb_algorithm": "LEAST_CONNECTIONS",
                    "healthmonitor": {"type": "TCP", "delay": "3", "timeout": 1, "max_retries": 2},
                    "members": [{"address": "10.0.0.51", "protocol_port": 443}],
                },
                {"name": "spare", "protocol": "HTTP", "lb_algorithm": "SOURCE_IP"},
            ],
        }
    }


def counts(engine: Engine) -> tuple[int, int]:
    with Session(engine) as session:
        balancers = session.scalar(select(func.count()).select_from(LoadBalancer)) or 0
        vips = select(func.count()).select_from(Port).where(Port.device_owner == "Octavia")
        ports = session.scalar(vips) or 0
    return balancers, ports


def test_a_fully_populated_create_makes_everything_in_one_call(
    admin: Api, engine: Engine, tmp_path: Path
) -> None:
    alice = project(admin, "alice")
    subnet = tenant_subnet(alice)
    made = alice("POST", LBS, graph_body(subnet["id"]))
    assert made.status_code == 201, made.text
    balancer = made.json()["loadbalancer"]
    assert balancer["provisioning_status"] == "PENDING_CREATE"
    by_name = {p["name"]: p for p in balancer["pools"]}
    assert set(by_name) == {"rr_pool", "tcp_pool", "spare"}
    rr = by_name["rr_pool"]
    # Full objects, Octavia's full response: no `loadbalancers`, a monitor object.
    assert "loadbalancers" not in rr and "healthmonitor_id" not in rr
    assert rr["healthmonitor"]["url_path"] == "/index.html" and "pools" not in rr["healthmonitor"]
    assert sorted((m["address"], m["weight"]) for m in rr["members"]) == [
        ("10.0.0.16", 1),
        ("10.0.0.19", 5),
    ]
    assert {m["operating_status"] for m in rr["members"]} == {"OFFLINE"}  # monitored
    assert rr["session_persistence"]["type"] == "HTTP_COOKIE"
    assert by_name["spare"]["healthmonitor"] is None
    listeners = {i["name"]: i for i in balancer["listeners"]}
    assert listeners["http"]["default_pool_id"] == rr["id"]
    assert listeners["tcp"]["default_pool_id"] == by_name["tcp_pool"]["id"]
    assert "loadbalancers" not in listeners["http"]
    api, old = listeners["http"]["l7policies"]  # in full, in position order, with their rules
    assert (api["name"], api["position"], api["redirect_pool_id"]) == (
        "api",
        1,
        by_name["spare"]["id"],
    )
    assert [r["value"] for r in api["rules"]] == ["/api"] and "type" in api["rules"][0]
    assert (old["action"], old["position"], old["redirect_http_code"]) == (
        "REDIRECT_TO_URL",
        2,
        302,
    )
    every = [*balancer["listeners"], *balancer["pools"], *rr["members"]]
    assert {o["provisioning_status"] for o in every} == {"PENDING_CREATE"}
    # A show answers the usual shape.
    shown = alice("GET", f"{LBS}/{balancer['id']}").json()["loadbalancer"]
    assert {i["id"] for i in shown["listeners"]} == {i["id"] for i in balancer["listeners"]}
    # What the appliance gets, haproxy accepts.
    with Session(engine) as session:
        row = session.get(LoadBalancer, balancer["id"])
        assert row is not None
        config = lb_driver.plan(session, row).config
    assert config is not None and config.loadbalancer is not None
    assert len(config.loadbalancer.listeners) == 2 and len(config.loadbalancer.pools) == 3
    http = next(i for i in config.loadbalancer.listeners if i.port == 80)
    assert [p.action for p in http.l7policies] == ["REDIRECT_TO_POOL", "REDIRECT_TO_URL"]
    path = tmp_path / "haproxy.cfg"
    path.write_text(render_loadbalancer(config.loadbalancer, tmp_path))
    assert haproxy_check(path).returncode == 0, path.read_text()


def test_a_fully_populated_create_is_refused_whole(admin: Api, engine: Engine) -> None:
    subnet = tenant_subnet(admin)
    before = counts(engine)

    def refused(change: Any) -> tuple[int, str, str]:
        body = graph_body(subnet["id"])
        change(body["loadbalancer"])
        return fault(admin("POST", LBS, body))

    def unnamed(lb: dict[str, Any]) -> None:
        del lb["pools"][1]["name"]

    def twice(lb: dict[str, Any]) -> None:
        lb["pools"][1]["name"] = "tcp_pool"

    def dangling(lb: dict[str, Any]) -> None:
        lb["listeners"][1]["default_pool"] = {"name": "nowhere"}

    def no_protocol(lb: dict[str, Any]) -> None:
        del lb["pools"][1]["protocol"]

    def bad_member(lb: dict[str, Any]) -> None:
        lb["pools"][0]["members"].append({"address": "169.254.169.254", "protocol_port": 80})

    def same_port(lb: dict[str, Any]) -> None:
        lb["listeners"][1]["protocol_port"] = 80

    assert refused(unnamed)[2] == (
        "Validation failure: Pools must be named when creating a fully populated loadbalancer."
    )
    assert refused(twice)[2] == (
        "Validation failure: Pool names must be unique when creating a fully populated"
        " loadbalancer."
    )
    assert refused(dangling)[2] == (
        "Validation failure: Pool 'nowhere' was referenced but no full definition was found."
    )
    assert refused(no_protocol)[2] == (
        "Validation failure: Pool definition for 'spare' missing required attribute: protocol"
    )
    assert refused(bad_member)[:2] == (400, "Client")
    assert refused(same_port)[0] == 409
    # Nothing was left behind: no load balancer, no VIP port.
    assert counts(engine) == before


def test_quotas_octavias_shape_and_enforcement(admin: Api, engine: Engine) -> None:
    alice = project(admin, "alice")
    subnet = tenant_subnet(alice)
    pid = subnet["project_id"]
    shown = alice("GET", f"/v2/lbaas/quotas/{pid}").json()["quota"]
    assert shown == {
        "project_id": pid,
        "tenant_id": pid,
        "load_balancer": 10,
        "loadbalancer": 10,
        "listener": -1,
        "pool": -1,
        "health_monitor": -1,
        "healthmonitor": -1,
        "member": -1,
        "l7policy": -1,
        "l7rule": -1,
    }
    assert alice("GET", "/v2/lbaas/quotas").json() == {"quotas": [], "quotas_links": []}
    assert fault(alice("PUT", f"/v2/lbaas/quotas/{pid}", {"quota": {"load_balancer": 5}}))[0] == 403
    bob = project(admin, "bob")
    assert fault(bob("GET", f"/v2/lbaas/quotas/{pid}"))[0] == 403
    bad = admin("PUT", f"/v2/lbaas/quotas/{pid}", {"quota": {"listener": -2}})
    assert fault(bad)[0] == 400
    assert fault(admin("PUT", f"/v2/lbaas/quotas/{pid}", {"quota": {"router": 1}}))[0] == 400
    set_ = admin("PUT", f"/v2/lbaas/quotas/{pid}", {"quota": {"loadbalancer": 1, "member": 2}})
    assert set_.status_code == 202 and set_.json()["quota"]["load_balancer"] == 1
    listed = admin("GET", "/v2/lbaas/quotas").json()["quotas"]
    assert listed == [
        {
            "project_id": pid,
            "tenant_id": pid,
            "load_balancer": 1,
            "loadbalancer": 1,
            "listener": None,
            "pool": None,
            "health_monitor": None,
            "healthmonitor": None,
            "member": 2,
            "l7policy": None,
            "l7rule": None,
        }
    ]
    # Neutron's quotas neither show nor reset Octavia's.
    neutron = admin("GET", f"/v2.0/quotas/{pid}").json()["quota"]
    assert "load_balancer" not in neutron and "lbaas:member" not in neutron
    assert admin("DELETE", f"/v2.0/quotas/{pid}").status_code == 204
    assert admin("GET", f"/v2/lbaas/quotas/{pid}").json()["quota"]["member"] == 2

    # Three members in one fully populated create: over the limit of 2, nothing made.
    before = counts(engine)
    too_many = alice("POST", LBS, graph_body(subnet["id"]))
    assert fault(too_many) == (403, "Client", "Quota has been met for resources: Member")
    assert counts(engine) == before
    first = alice("POST", LBS, {"loadbalancer": {"vip_subnet_id": subnet["id"]}})
    assert first.status_code == 201
    second = alice("POST", LBS, {"loadbalancer": {"vip_subnet_id": subnet["id"]}})
    assert fault(second) == (403, "Client", "Quota has been met for resources: Load Balancer")
    assert counts(engine) == (before[0] + 1, before[1] + 1)  # no VIP port left behind

    # Null: back to the default; DELETE: all back, 404 once none are set.
    admin("PUT", f"/v2/lbaas/quotas/{pid}", {"quota": {"member": None}})
    assert admin("GET", f"/v2/lbaas/quotas/{pid}").json()["quota"]["member"] == -1
    assert admin("DELETE", f"/v2/lbaas/quotas/{pid}").status_code == 202
    assert admin("GET", "/v2/lbaas/quotas").json()["quotas"] == []
    assert fault(admin("DELETE", f"/v2/lbaas/quotas/{pid}")) == (
        404,
        "Client",
        f"Quotas {pid} not found.",
    )
    defaults = alice("GET", f"/v2/lbaas/quotas/{pid}/default").json()["quota"]
    assert defaults["load_balancer"] == 10 and defaults["project_id"] == pid


def member_pool(api: Api, engine: Engine) -> tuple[str, str]:
    subnet = tenant_subnet(api)
    body = graph_body(subnet["id"])
    body["loadbalancer"]["listeners"] = body["loadbalancer"]["listeners"][:1]
    body["loadbalancer"]["pools"] = []
    del body["loadbalancer"]["listeners"][0]["l7policies"]  # (its redirect pool is gone)
    balancer = api("POST", LBS, body).json()["loadbalancer"]
    activate(engine, balancer["id"])
    return balancer["id"], balancer["pools"][0]["id"]


def test_the_batch_member_update_replaces_a_pools_members(admin: Api, engine: Engine) -> None:
    lb_id, pool_id = member_pool(admin, engine)
    url = f"/v2/lbaas/pools/{pool_id}/members"

    def listed() -> dict[tuple[str, int], dict[str, Any]]:
        found = admin("GET", url).json()["members"]
        return {(m["address"], m["protocol_port"]): m for m in found}

    before = listed()
    # 10.0.0.16 kept with a new weight, 10.0.0.19 removed, 10.0.0.30 made.
    given = [
        {"address": "10.0.0.16", "protocol_port": 80, "weight": 7},
        {"address": "10.0.0.30", "protocol_port": 80},
    ]
    assert admin("PUT", url, {"members": given}).status_code == 202
    after = listed()
    assert set(after) == {("10.0.0.16", 80), ("10.0.0.30", 80)}
    assert after[("10.0.0.16", 80)]["id"] == before[("10.0.0.16", 80)]["id"]
    assert after[("10.0.0.16", 80)]["weight"] == 7
    assert after[("10.0.0.30", 80)]["provisioning_status"] == "PENDING_CREATE"
    shown = admin("GET", f"{LBS}/{lb_id}").json()["loadbalancer"]
    assert shown["provisioning_status"] == "PENDING_UPDATE"
    # Pending: refused.
    assert fault(admin("PUT", url, {"members": given}))[0] == 409
    activate(engine, lb_id)
    # Additive only: nothing removed.
    extra = [{"address": "10.0.0.31", "protocol_port": 80}]
    assert admin("PUT", f"{url}?additive_only=true", {"members": extra}).status_code == 202
    assert set(listed()) == {("10.0.0.16", 80), ("10.0.0.30", 80), ("10.0.0.31", 80)}
    activate(engine, lb_id)
    # Twice in one request, a reserved address, a missing subnet: refused, nothing changed.
    twice = [given[0], given[0]]
    assert fault(admin("PUT", url, {"members": twice}))[2] == (
        "Validation failure: Member must be updated only once in the same request."
    )
    reserved = [*given, {"address": "169.254.169.254", "protocol_port": 80}]
    assert fault(admin("PUT", url, {"members": reserved}))[0] == 400
    nowhere = [{"address": "10.0.0.40", "protocol_port": 80, "subnet_id": str(uuid.uuid4())}]
    assert fault(admin("PUT", url, {"members": nowhere}))[0] == 400
    assert fault(admin("PUT", url, {"member": given}))[0] == 400
    assert len(listed()) == 3
    # The same members again: nothing to do, the load balancer stays ACTIVE.
    same = [
        {"address": a, "protocol_port": p, "weight": m["weight"]} for (a, p), m in listed().items()
    ]
    assert admin("PUT", url, {"members": same}).status_code == 202
    assert admin("GET", f"{LBS}/{lb_id}").json()["loadbalancer"]["provisioning_status"] == "ACTIVE"


def test_failover_rebuilds_the_appliance_admins_only(admin: Api, engine: Engine) -> None:
    alice = project(admin, "alice")
    subnet = tenant_subnet(alice)
    balancer = alice("POST", LBS, {"loadbalancer": {"vip_subnet_id": subnet["id"]}}).json()[
        "loadbalancer"
    ]
    url = f"{LBS}/{balancer['id']}/failover"
    assert fault(admin("PUT", url)) == (
        409,
        "Client",
        f"Invalid state PENDING_CREATE of loadbalancer resource {balancer['id']}",
    )
    activate(engine, balancer["id"])
    appliance_id = lb_driver.appliance_id(balancer["id"])
    with Session(engine) as session:
        session.add(
            ApplianceState(
                appliance_id=appliance_id,
                kind="loadbalancer",
                project_id=balancer["project_id"],
                state="active",
                updated_at=NOW,
            )
        )
        session.commit()
    assert fault(alice("PUT", url))[0] == 403
    answered = admin("PUT", url)
    assert answered.status_code == 202 and answered.content == b""
    shown = alice("GET", f"{LBS}/{balancer['id']}").json()["loadbalancer"]
    assert shown["provisioning_status"] == "PENDING_UPDATE"
    with Session(engine) as session:
        state = session.get(ApplianceState, appliance_id)
        assert state is not None and state.rebuild_requested
        said = session.scalars(
            select(ApplianceEvent.message).where(ApplianceEvent.appliance_id == appliance_id)
        ).all()
    assert said == ["failover asked through the Octavia API"]
    # A resync that saw the old appliance running leaves it PENDING_UPDATE
    # (its config is unchanged: only the rebuild having run makes it ACTIVE).
    with Session(engine) as session:
        row = session.get(LoadBalancer, balancer["id"])
        assert row is not None
        plan = lb_driver.plan(session, row)
        write_lb_statuses(session, appliance_id, State.ACTIVE, plan)
        session.commit()
    shown = alice("GET", f"{LBS}/{balancer['id']}").json()["loadbalancer"]
    assert shown["provisioning_status"] == "PENDING_UPDATE"


def test_statistics_accumulate_across_haproxy_restarts(admin: Api, engine: Engine) -> None:
    # The arithmetic: growth since the last read; a counter that went down restarted.
    totals = accumulate({}, {}, {"bytes_in": 100, "active_connections": 3})
    assert totals["bytes_in"] == 100 and totals["active_connections"] == 3
    grown = accumulate(totals, {"bytes_in": 100}, {"bytes_in": 150})
    assert grown["bytes_in"] == 150 and grown["active_connections"] == 0
    assert accumulate(grown, {"bytes_in": 150}, {"bytes_in": 20})["bytes_in"] == 170

    alice = project(admin, "alice")
    lb_id, _ = member_pool(alice, engine)
    with Session(engine) as session:
        listener_id = session.scalars(
            select(Listener.id).where(Listener.load_balancer_id == lb_id)
        ).one()
    url = f"/v2/lbaas/listeners/{listener_id}/stats"
    zero = {
        "bytes_in": 0,
        "bytes_out": 0,
        "active_connections": 0,
        "total_connections": 0,
        "request_errors": 0,
    }
    assert alice("GET", url).json() == {"stats": zero}
    assert alice("GET", f"{LBS}/{lb_id}/stats").json() == {"stats": zero}

    def read(bin_: int, stot: int, scur: int, process: int | None = None) -> None:
        rows = [
            {
                "pxname": listener_id,
                "svname": "FRONTEND",
                "status": "OPEN",
                "bin": str(bin_),
                "bout": str(2 * bin_),
                "scur": str(scur),
                "stot": str(stot),
                "ereq": "1",
            }
        ]
        with Session(engine) as session:
            write_lb_stats(session, lb_driver.appliance_id(lb_id), health(rows, process), NOW)
            session.commit()

    read(1000, 10, 2)
    read(1500, 14, 1)
    read(200, 2, 0)  # haproxy restarted: its counters began again
    expected = {
        "bytes_in": 1700,
        "bytes_out": 3400,
        "active_connections": 0,
        "total_connections": 16,
        "request_errors": 1,
    }
    assert alice("GET", url).json() == {"stats": expected}
    assert alice("GET", f"{LBS}/{lb_id}/stats").json() == {"stats": expected}
    # Known by its process: a reload's new worker that has already passed the
    # old one's last reading is counted whole, not as growth.
    read(100, 1, 0, process=41)
    read(300, 3, 0, process=41)
    read(500, 5, 0, process=42)
    grown = alice("GET", url).json()["stats"]
    assert (grown["bytes_in"], grown["total_connections"]) == (1700 + 300 + 500, 16 + 3 + 5)
    bob = project(admin, "bob")
    assert fault(bob("GET", url))[0] == 403
    assert fault(bob("GET", f"{LBS}/{lb_id}/stats"))[0] == 403
    assert fault(alice("GET", f"{LBS}/{uuid.uuid4()}/stats"))[0] == 404


def test_flavors_and_availability_zones(admin: Api, engine: Engine) -> None:
    alice = project(admin, "alice")
    assert alice("GET", "/v2/lbaas/flavors").json() == {"flavors": [], "flavors_links": []}
    assert admin("GET", "/v2/lbaas/flavorprofiles").json() == {
        "flavorprofiles": [],
        "flavorprofile_links": [],
    }
    assert admin("GET", "/v2/lbaas/availabilityzoneprofiles").json() == {
        "availability_zone_profiles": [],
        "availability_zone_profile_links": [],
    }
    with Session(engine) as session:
        for name, zone in (("h1", "zone-a"), ("h2", "zone-b")):
            session.add(
                Host(
                    id=str(uuid.uuid4()),
                    name=name,
                    address=f"https://{name}:1",
                    created_at=NOW,
                    availability_zone=zone,
                    alive=name == "h1",
                )
            )
        session.commit()
    zones = alice("GET", "/v2/lbaas/availabilityzones").json()
    assert zones == {
        "availability_zones": [
            {
                "name": "zone-a",
                "description": "",
                "enabled": True,
                "availability_zone_profile_id": None,
            },
            {
                "name": "zone-b",
                "description": "",
                "enabled": False,
                "availability_zone_profile_id": None,
            },
        ],
        "availability_zones_links": [],
    }
    named = alice("GET", "/v2/lbaas/availabilityzones?name=zone-b").json()
    assert [z["name"] for z in named["availability_zones"]] == ["zone-b"]
    subnet = tenant_subnet(alice)
    body = {"vip_subnet_id": subnet["id"], "availability_zone": "zone-c"}
    assert fault(alice("POST", LBS, {"loadbalancer": body}))[2] == (
        "Validation failure: Invalid availability zone."
    )
    body["availability_zone"] = "zone-a"
    made = alice("POST", LBS, {"loadbalancer": body}).json()["loadbalancer"]
    assert made["availability_zone"] == "zone-a"
    # Its appliance is placed in that zone only (the router's hints, the same way).
    with Session(engine) as session:
        assert zone_hints(session, lb_driver.appliance_id(made["id"])) == ["zone-a"]
        zoneless = alice("POST", LBS, {"loadbalancer": {"vip_subnet_id": subnet["id"]}}).json()
        assert zone_hints(session, lb_driver.appliance_id(zoneless["loadbalancer"]["id"])) == []
    flavored = {"vip_subnet_id": subnet["id"], "flavor_id": str(uuid.uuid4())}
    assert fault(alice("POST", LBS, {"loadbalancer": flavored}))[2] == (
        "Validation failure: Invalid flavor_id."
    )


def test_the_vip_port_gets_a_group_of_the_load_balancers_own(admin: Api, engine: Engine) -> None:
    alice = project(admin, "alice")
    subnet = tenant_subnet(alice)
    balancer = alice("POST", LBS, {"loadbalancer": {"vip_subnet_id": subnet["id"]}}).json()[
        "loadbalancer"
    ]
    port = alice("GET", f"/v2.0/ports/{balancer['vip_port_id']}").json()["port"]
    [group_id] = port["security_groups"]  # its only group: not the project's default
    # The service's: the tenant sees its id on the port, and nothing more.
    assert alice("GET", f"/v2.0/security-groups/{group_id}").status_code == 404
    group = admin("GET", f"/v2.0/security-groups/{group_id}").json()["security_group"]
    assert group["name"] == f"lb-{balancer['id']}"

    assert group["stateful"] is False  # nothing tracked in the appliance: replies have rules
    replies = {("tcp", 32768, None), ("icmp", 3, None), ("icmp", 11, None)}

    def ingress() -> set[tuple[str, int, str | None]]:
        rules = admin("GET", f"/v2.0/security-group-rules?security_group_id={group_id}").json()
        found = {
            (r["protocol"], r["port_range_min"], r["remote_ip_prefix"])
            for r in rules["security_group_rules"]
            if r["direction"] == "ingress"
        }
        assert replies <= found
        return found - replies

    def vip_security() -> list[dict[str, Any]] | None:
        with Session(engine) as session:
            row = session.get(LoadBalancer, balancer["id"])
            assert row is not None
            config = lb_driver.plan(session, row).config
        assert config is not None and config.loadbalancer is not None
        rules = config.loadbalancer.vip_security
        return None if rules is None else [r.model_dump(mode="json") for r in rules]

    assert ingress() == set() and len(vip_security() or []) == 3  # the replies' rules
    activate(engine, balancer["id"])
    body = {
        "loadbalancer_id": balancer["id"],
        "protocol": "HTTP",
        "protocol_port": 80,
        "allowed_cidrs": ["10.1.0.0/16", "10.2.0.0/16"],
    }
    listener = alice("POST", "/v2/lbaas/listeners", {"listener": body}).json()["listener"]
    assert ingress() == {("tcp", 80, "10.1.0.0/16"), ("tcp", 80, "10.2.0.0/16")}
    listened = [r for r in vip_security() or [] if r["port_range_min"] == 80]
    assert listened == [
        {
            "ethertype": "IPv4",
            "protocol": 6,
            "port_range_min": 80,
            "port_range_max": 80,
            "remote_prefix": cidr,
        }
        for cidr in ("10.1.0.0/16", "10.2.0.0/16")
    ]
    revision = admin("GET", f"/v2.0/security-groups/{group_id}").json()["security_group"]
    # A change that leaves the rules as they are changes nothing in the group.
    activate(engine, balancer["id"])
    alice("PUT", f"/v2/lbaas/listeners/{listener['id']}", {"listener": {"name": "web"}})
    again = admin("GET", f"/v2.0/security-groups/{group_id}").json()["security_group"]
    assert again["revision_number"] == revision["revision_number"]
    activate(engine, balancer["id"])
    url = f"/v2/lbaas/listeners/{listener['id']}"
    alice("PUT", url, {"listener": {"allowed_cidrs": None}})
    assert ingress() == {("tcp", 80, None)}
    activate(engine, balancer["id"])
    assert alice("DELETE", url).status_code == 204
    assert ingress() == set()
    activate(engine, balancer["id"])
    assert alice("DELETE", f"{LBS}/{balancer['id']}").status_code == 204
    assert admin("GET", f"/v2.0/security-groups/{group_id}").status_code == 404

    # A port the tenant gave keeps its own groups beside the load balancer's, then alone.
    own = alice(
        "POST", "/v2.0/ports", {"port": {"network_id": subnet["network_id"], "name": "vip"}}
    ).json()["port"]
    given = alice("POST", LBS, {"loadbalancer": {"vip_port_id": own["id"]}}).json()["loadbalancer"]
    groups = alice("GET", f"/v2.0/ports/{own['id']}").json()["port"]["security_groups"]
    assert len(groups) == 2 and own["security_groups"][0] in groups
    activate(engine, given["id"])
    assert alice("DELETE", f"{LBS}/{given['id']}").status_code == 204
    after = alice("GET", f"/v2.0/ports/{own['id']}").json()["port"]
    assert after["security_groups"] == own["security_groups"]

    # Port security off: no group, nothing filtered.
    bare = alice(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": subnet["network_id"], "port_security_enabled": False}},
    ).json()["port"]
    unfiltered = alice("POST", LBS, {"loadbalancer": {"vip_port_id": bare["id"]}}).json()
    with Session(engine) as session:
        row = session.get(LoadBalancer, unfiltered["loadbalancer"]["id"])
        assert row is not None
        planned = lb_driver.plan(session, row).config
    assert planned is not None and planned.loadbalancer is not None
    assert planned.loadbalancer.vip_security is None


def test_members_off_the_vip_network_get_the_appliance_a_port_there(
    admin: Api, engine: Engine
) -> None:
    alice = project(admin, "alice")
    lb_id, pool_id = member_pool(alice, engine)
    balancer = alice("GET", f"{LBS}/{lb_id}").json()["loadbalancer"]
    far = alice("POST", "/v2.0/networks", {"network": {"name": "far"}}).json()["network"]
    far_subnet = alice(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": far["id"], "ip_version": 4, "cidr": "10.9.0.0/24"}},
    ).json()["subnet"]
    # A second subnet of the VIP's own network: reached through its gateway, no port.
    near = {"network_id": balancer["vip_network_id"], "ip_version": 4, "cidr": "10.8.0.0/24"}
    near_subnet = alice("POST", "/v2.0/subnets", {"subnet": near}).json()["subnet"]
    members_url = f"/v2/lbaas/pools/{pool_id}/members"

    def member_ports() -> list[dict[str, Any]]:
        found = alice("GET", "/v2.0/ports?device_owner=Octavia").json()["ports"]
        return [p for p in found if "-member-" in p["name"]]

    def add(address: str, subnet_id: str) -> str:
        body = {"address": address, "protocol_port": 80, "subnet_id": subnet_id}
        made = alice("POST", members_url, {"member": body})
        assert made.status_code == 201, made.text
        activate(engine, lb_id)
        member_id: str = made.json()["member"]["id"]
        return member_id

    first = add("10.9.0.10", far_subnet["id"])
    second = add("10.9.0.11", far_subnet["id"])
    add("10.8.0.10", near_subnet["id"])
    [port] = member_ports()
    assert port["name"] == f"octavia-lb-{lb_id}-member-{far_subnet['id']}"
    assert (port["device_id"], port["port_security_enabled"]) == (f"lb-{lb_id}", False)
    assert port["fixed_ips"][0]["subnet_id"] == far_subnet["id"]
    # The service's while the load balancer needs it.
    assert alice("DELETE", f"/v2.0/ports/{port['id']}").status_code == 409
    with Session(engine) as session:
        row = session.get(LoadBalancer, lb_id)
        assert row is not None
        planned = lb_driver.plan(session, row)
    assert planned.config is not None
    assert port["id"] in planned.ports and far["id"] in planned.networks
    [member_side] = [i for i in planned.config.interfaces if i.mac == port["mac_address"]]
    assert [str(a) for a in member_side.addresses] == [f"{port['fixed_ips'][0]['ip_address']}/24"]
    # Gone with the last member on its subnet.
    assert alice("DELETE", f"{members_url}/{first}").status_code == 204
    activate(engine, lb_id)
    assert len(member_ports()) == 1
    assert alice("DELETE", f"{members_url}/{second}").status_code == 204
    activate(engine, lb_id)
    assert member_ports() == []

    # The VIP's address changes with the load balancer, not under it.
    moved = {"port": {"fixed_ips": [{"subnet_id": balancer["vip_subnet_id"]}]}}
    refused = alice("PUT", f"/v2.0/ports/{balancer['vip_port_id']}", moved)
    assert refused.status_code == 409 and "fixed_ips" in refused.json()["NeutronError"]["message"]

    # A cascade delete takes the member ports too.
    add("10.9.0.12", far_subnet["id"])
    assert len(member_ports()) == 1
    assert alice("DELETE", f"{LBS}/{lb_id}?cascade=true").status_code == 204
    assert member_ports() == []


def last_event_wakes(engine: Engine) -> set[str]:
    with Session(engine) as session:
        event = session.scalars(select(OutboxEvent).order_by(OutboxEvent.sequence.desc())).first()
        assert event is not None
        return affected(session, event)


def test_a_load_balancers_ports_are_its_own(admin: Api, engine: Engine) -> None:
    """No project can make a port that joins a load balancer's appliance,
    nor move one out of it; the service's ports are found as such even
    renamed; member subnets must not overlap its other subnets."""
    alice = project(admin, "alice")
    lb_id, pool_id = member_pool(alice, engine)
    balancer = alice("GET", f"{LBS}/{lb_id}").json()["loadbalancer"]
    mallory = project(admin, "mallory")
    own = mallory.create_network(name="mine")
    mallory("POST", "/v2.0/subnets", {"subnet": {"network_id": own["id"], "ip_version": 4,
                                                 "cidr": "10.0.0.0/24"}})  # fmt: skip
    claim = {"network_id": own["id"], "device_owner": "Octavia", "device_id": f"lb-{lb_id}"}
    refused = mallory("POST", "/v2.0/ports", {"port": claim})
    assert refused.status_code == 403, refused.text
    mine = mallory("POST", "/v2.0/ports", {"port": {"network_id": own["id"]}}).json()["port"]
    owner = {"port": {"device_owner": "Octavia", "device_id": f"lb-{lb_id}"}}
    assert mallory("PUT", f"/v2.0/ports/{mine['id']}", owner).status_code == 403
    # Alice herself cannot claim or release one either (only the service does).
    vip_url = f"/v2.0/ports/{balancer['vip_port_id']}"
    assert alice("PUT", vip_url, {"port": {"device_id": ""}}).status_code == 409
    with Session(engine) as session:
        row = session.get(LoadBalancer, lb_id)
        assert row is not None
        assert len(lb_driver.plan(session, row).ports) == 1  # the VIP's alone

    # A member subnet overlapping the VIP's: refused, nothing made.
    far = alice.create_network(name="far")
    overlapping = alice(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": far["id"], "ip_version": 4, "cidr": "10.0.0.0/16"}},
    ).json()["subnet"]
    activate(engine, lb_id)
    body = {"address": "10.0.9.9", "protocol_port": 80, "subnet_id": overlapping["id"]}
    made = alice("POST", f"/v2/lbaas/pools/{pool_id}/members", {"member": body})
    assert fault(made)[:2] == (400, "Client") and "overlaps" in fault(made)[2]

    # Renamed, the service's ports are still the service's: gone with it.
    alice("PUT", vip_url, {"port": {"name": "renamed"}})
    assert alice("DELETE", f"{LBS}/{lb_id}?cascade=true").status_code == 204
    assert alice("GET", vip_url).status_code == 404

    # The VIP's group is the service's own project's: no project's quota pays.
    listed = admin("GET", "/v2.0/security-groups").json()["security_groups"]
    lb_groups = [g for g in listed if g["name"].startswith("lb-")]
    assert lb_groups == []  # (deleted with it)
    alice("POST", LBS, {"loadbalancer": {"vip_subnet_id": balancer["vip_subnet_id"]}})
    listed = admin("GET", "/v2.0/security-groups").json()["security_groups"]
    [lb_group] = [g for g in listed if g["name"].startswith("lb-")]
    admin_project = admin("GET", "/v2.0/quotas/project").json()["project"]["project_id"]
    assert lb_group["project_id"] not in (admin_project, balancer["project_id"])


def test_changes_to_the_vips_groups_wake_its_appliance(admin: Api, engine: Engine) -> None:
    alice = project(admin, "alice")
    subnet = tenant_subnet(alice)
    own = alice(
        "POST", "/v2.0/ports", {"port": {"network_id": subnet["network_id"], "name": "vip"}}
    ).json()["port"]
    [default] = own["security_groups"]
    balancer = alice("POST", LBS, {"loadbalancer": {"vip_port_id": own["id"]}}).json()[
        "loadbalancer"
    ]
    appliance_id = f"lb-{balancer['id']}"
    rule = {"security_group_id": default, "direction": "ingress", "protocol": "tcp",
            "port_range_min": 22, "port_range_max": 22}  # fmt: skip
    made = alice("POST", "/v2.0/security-group-rules", {"security_group_rule": rule})
    assert made.status_code == 201, made.text
    assert appliance_id in last_event_wakes(engine)
    # A port joining a group the VIP's default group names as remote (itself).
    alice("POST", "/v2.0/ports", {"port": {"network_id": subnet["network_id"]}})
    assert appliance_id in last_event_wakes(engine)
    # A change of one of its own ports wakes it.
    alice("PUT", f"/v2.0/ports/{own['id']}", {"port": {"name": "still-the-vip"}})
    assert appliance_id in last_event_wakes(engine)
