"""The Octavia v2 API: load balancers, their VIP
ports, Octavia's envelopes, statuses and faults, on both prefixes."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from astara.appliance.render.loadbalancer import render_loadbalancer
from astara.appliance.schema import validate_semantics
from astara.db.models import LoadBalancer
from astara.drivers import loadbalancer as lb_driver
from tests.component.conftest import Api, project
from tests.unit.validators import haproxy_check

LBS = "/v2/lbaas/loadbalancers"


def fault(response: Any) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["faultcode"], body["faultstring"]


def tenant_subnet(api: Api, cidr: str = "10.0.0.0/24") -> dict[str, Any]:
    network = api.create_network(name="net")
    created = api(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": network["id"], "ip_version": 4, "cidr": cidr}},
    )
    assert created.status_code == 201, created.text
    subnet: dict[str, Any] = created.json()["subnet"]
    return subnet


def activate(engine: Engine, balancer_id: str) -> None:
    """What the orchestrator will do once the appliance runs it."""
    with Session(engine) as session:
        session.execute(
            update(LoadBalancer)
            .where(LoadBalancer.id == balancer_id)
            .values(provisioning_status="ACTIVE", operating_status="ONLINE")
        )
        session.commit()


def test_a_load_balancer_gets_its_vip_port_and_octavias_shape(admin: Api, engine: Engine) -> None:
    alice = project(admin, "alice")
    subnet = tenant_subnet(alice)
    made = alice("POST", LBS, {"loadbalancer": {"name": "web", "vip_subnet_id": subnet["id"]}})
    assert made.status_code == 201, made.text
    balancer = made.json()["loadbalancer"]
    assert (balancer["provisioning_status"], balancer["operating_status"]) == (
        "PENDING_CREATE",
        "OFFLINE",
    )
    assert balancer["provider"] == "astara" and balancer["listeners"] == []
    assert balancer["tenant_id"] == balancer["project_id"]
    assert "T" in balancer["created_at"] and not balancer["created_at"].endswith("Z")
    port = alice("GET", f"/v2.0/ports/{balancer['vip_port_id']}").json()["port"]
    assert port["device_owner"] == "Octavia" and port["name"] == f"octavia-lb-{balancer['id']}"
    assert port["fixed_ips"][0]["ip_address"] == balancer["vip_address"]
    # Both prefixes; the list's links key is always there.
    listed = alice("GET", "/v2.0/lbaas/loadbalancers").json()
    assert [b["id"] for b in listed["loadbalancers"]] == [balancer["id"]]
    assert listed["loadbalancers_links"] == []
    assert alice("GET", f"{LBS}?name=other").json()["loadbalancers"] == []

    # Immutable while pending; changed once ACTIVE (and pending again).
    url = f"{LBS}/{balancer['id']}"
    assert fault(alice("PUT", url, {"loadbalancer": {"name": "x"}})) == (
        409,
        "Client",
        f"Invalid state PENDING_CREATE of loadbalancer resource {balancer['id']}",
    )
    activate(engine, balancer["id"])
    changed = alice("PUT", url, {"loadbalancer": {"name": "front"}}).json()["loadbalancer"]
    assert (changed["name"], changed["provisioning_status"]) == ("front", "PENDING_UPDATE")

    # Another project's: 403 (Octavia finds it, then its policy refuses); none: 404.
    bob = project(admin, "bob")
    assert fault(bob("GET", url))[0] == 403
    assert fault(bob("GET", f"{LBS}/{'0' * 8}-0000-0000-0000-{'0' * 12}")) == (
        404,
        "Client",
        f"Load Balancer {'0' * 8}-0000-0000-0000-{'0' * 12} not found.",
    )
    assert bob("GET", LBS).json()["loadbalancers"] == []
    assert fault(bob("GET", f"{LBS}?project_id={balancer['project_id']}"))[0] == 403

    activate(engine, balancer["id"])
    # Its VIP port is the service's while it exists.
    assert alice("DELETE", f"/v2.0/ports/{balancer['vip_port_id']}").status_code == 409
    assert alice("DELETE", url).status_code == 204
    # Gone at once, with the VIP port it made.
    assert fault(alice("GET", url))[0] == 404
    assert alice("GET", f"/v2.0/ports/{balancer['vip_port_id']}").status_code == 404


def test_the_vip_is_chosen_as_octavia_chooses_it_and_refused_in_its_words(admin: Api) -> None:
    subnet = tenant_subnet(admin)
    by_network = admin(
        "POST",
        LBS,
        {"loadbalancer": {"vip_network_id": subnet["network_id"], "vip_address": "10.0.0.50"}},
    ).json()["loadbalancer"]
    assert (by_network["vip_subnet_id"], by_network["vip_address"]) == (subnet["id"], "10.0.0.50")
    port = admin(
        "POST", "/v2.0/ports", {"port": {"network_id": subnet["network_id"], "name": "vip"}}
    ).json()["port"]
    by_port = admin("POST", LBS, {"loadbalancer": {"vip_port_id": port["id"]}}).json()[
        "loadbalancer"
    ]
    assert by_port["vip_port_id"] == port["id"]
    assert by_port["vip_address"] == port["fixed_ips"][0]["ip_address"]
    again = admin("POST", LBS, {"loadbalancer": {"vip_port_id": port["id"]}})
    assert fault(again)[2] == (
        f"Validation failure: Port {port['id']} is already used by device lb-{by_port['id']} "
    )
    assert fault(admin("POST", LBS, {"loadbalancer": {"name": "x"}})) == (
        400,
        "Client",
        "Validation failure: VIP must contain one of: vip_port_id, vip_network_id, vip_subnet_id.",
    )
    unknown = "11111111-2222-3333-4444-555555555555"
    assert fault(admin("POST", LBS, {"loadbalancer": {"vip_subnet_id": unknown}}))[2] == (
        f"Subnet {unknown} not found."
    )
    assert fault(admin("POST", LBS, {"loadbalancer": {"vip_subnet_id": "x"}}))[2] == (
        "Invalid input for field/attribute vip_subnet_id. Value: 'x'. Value should be UUID format"
    )
    provider = {"vip_subnet_id": subnet["id"], "provider": "octavia"}
    assert fault(admin("POST", LBS, {"loadbalancer": provider}))[2] == (
        "Provider 'octavia' is not enabled."
    )


LISTENERS = "/v2/lbaas/listeners"


def active_balancer(api: Api, engine: Engine) -> dict[str, Any]:
    subnet = tenant_subnet(api)
    made = api("POST", LBS, {"loadbalancer": {"vip_subnet_id": subnet["id"]}})
    balancer: dict[str, Any] = made.json()["loadbalancer"]
    activate(engine, balancer["id"])
    return balancer


def test_listeners_take_a_port_per_family_and_refuse_what_is_not_served(
    admin: Api, engine: Engine
) -> None:
    balancer = active_balancer(admin, engine)

    def listener(**fields: Any) -> Any:
        body = {"loadbalancer_id": balancer["id"], "protocol": "HTTP", "protocol_port": 80}
        return admin("POST", LISTENERS, {"listener": {**body, **fields}})

    made = listener(connection_limit="100", insert_headers={"X-Forwarded-For": "true"})
    assert made.status_code == 201, made.text
    shown = made.json()["listener"]
    assert (shown["connection_limit"], shown["timeout_client_data"]) == (100, 50000)
    assert shown["loadbalancers"] == [{"id": balancer["id"]}]
    assert shown["provisioning_status"] == "PENDING_CREATE"
    # The load balancer waits for its appliance: no other change meanwhile.
    lb = admin("GET", f"{LBS}/{balancer['id']}").json()["loadbalancer"]
    assert lb["provisioning_status"] == "PENDING_UPDATE"
    assert lb["listeners"] == [{"id": shown["id"]}]
    assert fault(listener(protocol_port=81)) == (
        409,
        "Client",
        f"Load Balancer {balancer['id']} is immutable and cannot be updated.",
    )
    activate(engine, balancer["id"])
    assert fault(listener(protocol="TCP")) == (
        409,
        "Client",
        "Another Listener on this Load Balancer is already using protocol HTTP"
        " and protocol_port 80",
    )
    for protocol in ("TERMINATED_HTTPS", "UDP", "SCTP", "PROMETHEUS"):
        assert fault(listener(protocol=protocol, protocol_port=443))[2] == (
            f"The selected protocol is not allowed in this deployment: {protocol}"
        )
    assert (
        fault(listener(protocol="TCP", protocol_port=22, insert_headers={"X-Real-IP": "true"}))[2]
        == "insert-headers is not a valid option for a TCP protocol listener."
    )
    assert fault(listener(protocol_port=8080, allowed_cidrs=["2001:db8::/64"]))[2] == (
        "Validation failure: CIDR 2001:db8::/64 IP version incompatible with all VIPs"
        f" ['{balancer['vip_address']}'] IP version."
    )
    narrowed = listener(protocol_port=8080, allowed_cidrs=["10.1.2.3/24", "10.1.2.0/24"])
    assert narrowed.json()["listener"]["allowed_cidrs"] == ["10.1.2.0/24"]


def test_pools_members_and_monitors_with_octavias_rules(admin: Api, engine: Engine) -> None:
    balancer = active_balancer(admin, engine)
    lb_id = balancer["id"]
    listener = admin(
        "POST",
        LISTENERS,
        {"listener": {"loadbalancer_id": lb_id, "protocol": "HTTP", "protocol_port": 80}},
    ).json()["listener"]
    activate(engine, lb_id)

    def post(path: str, member: str, **fields: Any) -> Any:
        return admin("POST", f"/v2/lbaas/{path}", {member: fields})

    assert fault(post("pools", "pool", protocol="HTTP", lb_algorithm="ROUND_ROBIN"))[2] == (
        "Validation failure: Must provide at least one of: loadbalancer_id, listener_id"
    )
    assert fault(
        post("pools", "pool", listener_id=listener["id"], protocol="TCP", lb_algorithm="SOURCE_IP")
    )[2] == (
        "Validation failure: The pool protocol 'TCP' is invalid while the listener protocol"
        " is 'HTTP'."
    )
    assert (
        fault(
            post(
                "pools",
                "pool",
                loadbalancer_id=lb_id,
                protocol="HTTP",
                lb_algorithm="SOURCE_IP_PORT",
            )
        )[0]
        == 501
    )
    cookie = {"type": "APP_COOKIE"}
    assert fault(
        post(
            "pools",
            "pool",
            loadbalancer_id=lb_id,
            protocol="HTTP",
            lb_algorithm="ROUND_ROBIN",
            session_persistence=cookie,
        )
    )[2] == (
        'Validation failure: Field "cookie_name" must be specified when using the "APP_COOKIE"'
        " session persistence type."
    )
    made = post(
        "pools",
        "pool",
        listener_id=listener["id"],
        protocol="HTTP",
        lb_algorithm="LEAST_CONNECTIONS",
        session_persistence={"type": "HTTP_COOKIE"},
    )
    assert made.status_code == 201, made.text
    pool = made.json()["pool"]
    assert pool["listeners"] == [{"id": listener["id"]}] and pool["healthmonitor_id"] is None
    shown = admin("GET", f"{LISTENERS}/{listener['id']}").json()["listener"]
    assert shown["default_pool_id"] == pool["id"]
    activate(engine, lb_id)

    members_url = f"/v2/lbaas/pools/{pool['id']}/members"
    member = admin(
        "POST", members_url, {"member": {"address": "10.0.0.21", "protocol_port": 8080}}
    ).json()["member"]
    assert (member["weight"], member["operating_status"]) == (1, "NO_MONITOR")
    assert "pool_id" not in member
    activate(engine, lb_id)
    again = admin("POST", members_url, {"member": {"address": "10.0.0.21", "protocol_port": 8080}})
    assert fault(again) == (
        409,
        "Client",
        "Another member on this pool is already using ip 10.0.0.21 on protocol_port 8080",
    )
    reserved = {"member": {"address": "169.254.169.254", "protocol_port": 80}}
    assert fault(admin("POST", members_url, reserved))[2] == (
        "169.254.169.254 is not a valid option for member address"
    )
    listed = admin("GET", members_url).json()
    assert [m["id"] for m in listed["members"]] == [member["id"]] and listed["members_links"] == []

    monitor = {"pool_id": pool["id"], "type": "TCP", "delay": 3, "timeout": 1, "max_retries": 2}
    assert fault(post("healthmonitors", "healthmonitor", **monitor, url_path="/health"))[2] == (
        "url_path is not a valid option for health monitors of type TCP"
    )
    assert fault(post("healthmonitors", "healthmonitor", **{**monitor, "type": "PING"}))[2] == (
        "The selected type is not allowed in this deployment: PING"
    )
    http = post("healthmonitors", "healthmonitor", **{**monitor, "type": "HTTP"})
    assert http.status_code == 201, http.text
    made_monitor = http.json()["healthmonitor"]
    assert (
        made_monitor["http_method"],
        made_monitor["url_path"],
        made_monitor["expected_codes"],
    ) == (
        "GET",
        "/",
        "200",
    )
    assert made_monitor["pools"] == [{"id": pool["id"]}]
    activate(engine, lb_id)
    assert fault(post("healthmonitors", "healthmonitor", **monitor)) == (
        409,
        "Client",
        "This pool already has a health monitor",
    )
    assert (
        admin("GET", f"/v2/lbaas/pools/{pool['id']}").json()["pool"]["healthmonitor_id"]
        == (made_monitor["id"])
    )
    bad = post("healthmonitors", "healthmonitor", **{**monitor, "expected_codes": "2xx"})
    assert fault(bad)[2].startswith(
        "Invalid input for field/attribute expected_codes. Value: '2xx'."
    )


def test_a_load_balancer_plans_an_appliance_haproxy_accepts(
    admin: Api, engine: Engine, tmp_path: Path
) -> None:
    """What the API made becomes a config the appliance takes and a
    rendering haproxy accepts (the appliance itself: issue 12, next)."""
    balancer = active_balancer(admin, engine)
    lb_id = balancer["id"]
    body = {"loadbalancer_id": lb_id, "protocol": "HTTP", "protocol_port": 80}
    listener = admin("POST", LISTENERS, {"listener": body}).json()["listener"]
    activate(engine, lb_id)
    pool = admin(
        "POST",
        "/v2/lbaas/pools",
        {
            "pool": {
                "listener_id": listener["id"],
                "protocol": "HTTP",
                "lb_algorithm": "ROUND_ROBIN",
            }
        },
    ).json()["pool"]
    activate(engine, lb_id)
    for address in ("10.0.0.21", "10.0.0.22"):
        made = admin(
            "POST",
            f"/v2/lbaas/pools/{pool['id']}/members",
            {"member": {"address": address, "protocol_port": 8000}},
        )
        assert made.status_code == 201, made.text
        activate(engine, lb_id)
    monitor = {"pool_id": pool["id"], "type": "HTTP", "delay": 1, "timeout": 1, "max_retries": 2}
    assert admin("POST", "/v2/lbaas/healthmonitors", {"healthmonitor": monitor}).status_code == 201
    with Session(engine) as session:
        row = session.get(LoadBalancer, lb_id)
        assert row is not None
        planned = lb_driver.plan(session, row)
    assert planned.appliance_id == f"lb-{lb_id}" and planned.ports == [balancer["vip_port_id"]]
    config = planned.config
    assert config is not None and validate_semantics(config) == []
    assert config.routes[0].nexthop == ipaddress.ip_address("10.0.0.1")
    section = config.loadbalancer
    assert section is not None and [p.id for p in section.pools] == [pool["id"]]
    assert {str(m.address) for m in section.pools[0].members} == {"10.0.0.21", "10.0.0.22"}
    path = tmp_path / "haproxy.cfg"
    path.write_text(render_loadbalancer(section, tmp_path))
    assert haproxy_check(path).returncode == 0, path.read_text()


def test_deletes_cascade_or_wait_for_the_children(admin: Api, engine: Engine) -> None:
    balancer = active_balancer(admin, engine)
    lb_id = balancer["id"]
    body = {"loadbalancer_id": lb_id, "protocol": "TCP", "protocol_port": 22}
    listener = admin("POST", LISTENERS, {"listener": body}).json()["listener"]
    activate(engine, lb_id)
    pool = admin(
        "POST",
        "/v2/lbaas/pools",
        {"pool": {"listener_id": listener["id"], "protocol": "TCP", "lb_algorithm": "SOURCE_IP"}},
    ).json()["pool"]
    activate(engine, lb_id)
    assert fault(admin("DELETE", f"{LBS}/{lb_id}")) == (
        400,
        "Client",
        f"Validation failure: Cannot delete Load Balancer {lb_id} - it has children",
    )
    # A pool deleted: its listener has no default pool any more.
    assert admin("DELETE", f"/v2/lbaas/pools/{pool['id']}").status_code == 204
    assert (
        admin("GET", f"{LISTENERS}/{listener['id']}").json()["listener"]["default_pool_id"] is None
    )
    assert admin("GET", f"{LBS}/{lb_id}").json()["loadbalancer"]["provisioning_status"] == (
        "PENDING_UPDATE"
    )
    activate(engine, lb_id)
    assert admin("DELETE", f"{LBS}/{lb_id}?cascade=True").status_code == 204
    assert fault(admin("GET", f"{LISTENERS}/{listener['id']}"))[0] == 404


def test_the_status_tree_and_the_providers(admin: Api, engine: Engine) -> None:
    balancer = active_balancer(admin, engine)
    lb_id = balancer["id"]
    body = {"loadbalancer_id": lb_id, "protocol": "HTTP", "protocol_port": 80, "name": "l"}
    listener = admin("POST", LISTENERS, {"listener": body}).json()["listener"]
    activate(engine, lb_id)
    pool = admin(
        "POST",
        "/v2/lbaas/pools",
        {"pool": {"listener_id": listener["id"], "protocol": "HTTP", "lb_algorithm": "SOURCE_IP"}},
    ).json()["pool"]
    activate(engine, lb_id)
    member = admin(
        "POST",
        f"/v2/lbaas/pools/{pool['id']}/members",
        {"member": {"address": "10.0.0.9", "protocol_port": 80}},
    ).json()["member"]
    tree = admin("GET", f"{LBS}/{lb_id}/status").json()["statuses"]["loadbalancer"]
    assert tree["id"] == lb_id and tree["provisioning_status"] == "PENDING_UPDATE"
    (shown_listener,) = tree["listeners"]
    (shown_pool,) = shown_listener["pools"]
    assert shown_pool["health_monitor"] is None
    assert shown_pool["members"] == [
        {
            "id": member["id"],
            "name": "",
            "operating_status": "NO_MONITOR",
            "provisioning_status": "PENDING_CREATE",
            "address": "10.0.0.9",
            "protocol_port": 80,
        }
    ]
    assert admin("GET", f"{LBS}/{lb_id}/statuses").json() == {"statuses": {"loadbalancer": tree}}
    providers = admin("GET", "/v2/lbaas/providers").json()
    assert [p["name"] for p in providers["providers"]] == ["astara"]


def test_what_would_reach_haproxys_config_is_checked_first(admin: Api, engine: Engine) -> None:
    """A check's path cannot quote, comment or expand a variable in haproxy's
    config; a VIP port must be the load balancer's project's own."""
    balancer = active_balancer(admin, engine)
    pool = admin(
        "POST",
        "/v2/lbaas/pools",
        {
            "pool": {
                "loadbalancer_id": balancer["id"],
                "protocol": "HTTP",
                "lb_algorithm": "ROUND_ROBIN",
            }
        },
    ).json()["pool"]
    activate(engine, balancer["id"])
    for path in ('/"${ASTARA_JOIN_TOKEN}"', "/a#b", "/it's"):
        monitor = {
            "pool_id": pool["id"],
            "type": "HTTP",
            "delay": 1,
            "timeout": 1,
            "max_retries": 1,
            "url_path": path,
        }
        refused = admin("POST", "/v2/lbaas/healthmonitors", {"healthmonitor": monitor})
        assert fault(refused)[2].startswith("Invalid input for field/attribute url_path.")
    # The admin owns the network; Bob's port on it is not the admin's to take.
    shared = admin.create_network(name="shared", shared=True)
    admin(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": shared["id"], "ip_version": 4, "cidr": "10.9.0.0/24"}},
    )
    bob = project(admin, "bob")
    port = bob("POST", "/v2.0/ports", {"port": {"network_id": shared["id"]}}).json()["port"]
    taken = admin("POST", LBS, {"loadbalancer": {"vip_port_id": port["id"]}})
    assert fault(taken)[2] == f"Port {port['id']} not found."
    assert bob("GET", f"/v2.0/ports/{port['id']}").json()["port"]["device_owner"] == ""
