"""FWaaS v2 in the tenant API (`/v2.0/fwaas/...`), against SQLite and
PostgreSQL: Neutron's shapes, defaults, ordering actions and errors, the
default group, sharing between projects, and what a router's plan holds."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from astara.db.models import Router
from astara.drivers import router as router_driver
from tests.component.conftest import Api, error, project
from tests.component.test_api_security_groups import made

RULES = "/v2.0/fwaas/firewall_rules"
POLICIES = "/v2.0/fwaas/firewall_policies"
GROUPS = "/v2.0/fwaas/firewall_groups"


def rule(api: Api, **fields: Any) -> dict[str, Any]:
    return made(api("POST", RULES, {"firewall_rule": fields}), "firewall_rule")


def policy(api: Api, **fields: Any) -> dict[str, Any]:
    return made(api("POST", POLICIES, {"firewall_policy": fields}), "firewall_policy")


def group(api: Api, **fields: Any) -> Any:
    return api("POST", GROUPS, {"firewall_group": fields})


def router_interface(api: Api, cidr: str = "10.0.0.0/24") -> tuple[str, str]:
    """A router and one of its interfaces: (router id, port id)."""
    network = api.create_network(name="net")
    subnet = api(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": network["id"], "ip_version": 4, "cidr": cidr}},
    ).json()["subnet"]
    router = made(api("POST", "/v2.0/routers", {"router": {"name": "r"}}), "router")
    added = api(
        "PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": subnet["id"]}
    )
    assert added.status_code == 200, added.text
    return router["id"], added.json()["port_id"]


def test_a_project_gets_its_default_group_on_first_list(admin: Api) -> None:
    alice = project(admin, "alice")
    groups = alice("GET", GROUPS).json()["firewall_groups"]
    assert [(g["name"], g["status"], g["ports"]) for g in groups] == [("default", "INACTIVE", [])]
    default = groups[0]
    assert default["description"] == "Default firewall group" and default["admin_state_up"]
    policies = {p["id"]: p for p in alice("GET", POLICIES).json()["firewall_policies"]}
    ingress = policies[default["ingress_firewall_policy_id"]]
    egress = policies[default["egress_firewall_policy_id"]]
    assert (ingress["name"], egress["name"]) == ("default ingress", "default egress")
    rules = {r["id"]: r for r in alice("GET", RULES).json()["firewall_rules"]}
    assert [(rules[r]["name"], rules[r]["action"]) for r in ingress["firewall_rules"]] == [
        ("default ingress ipv4", "deny"),
        ("default ingress ipv6", "deny"),
    ]
    assert [(rules[r]["ip_version"], rules[r]["action"]) for r in egress["firewall_rules"]] == [
        (4, "allow"),
        (6, "allow"),
    ]
    # Listed again: still one; another project sees none of it.
    assert len(alice("GET", GROUPS).json()["firewall_groups"]) == 1
    bob = project(admin, "bob")
    assert default["id"] not in {g["id"] for g in bob("GET", GROUPS).json()["firewall_groups"]}
    assert bob("GET", f"{GROUPS}/{default['id']}").status_code == 404

    # The default objects are the API's: reserved names, restricted changes.
    assert error(group(alice, name="default")) == (
        409,
        "FirewallDefaultParameterExists",
        "Operation cannot be performed since 'default' is a reserved name for Firewall Group.",
    )
    assert error(alice("POST", POLICIES, {"firewall_policy": {"name": "default egress"}}))[:2] == (
        409,
        "FirewallDefaultParameterExists",
    )
    changed = alice("PUT", f"{POLICIES}/{ingress['id']}", {"firewall_policy": {"name": "x"}})
    assert error(changed)[:2] == (409, "FirewallDefaultObjectUpdateRestricted")
    renamed = alice("PUT", f"{GROUPS}/{default['id']}", {"firewall_group": {"name": "x"}})
    assert error(renamed)[:2] == (409, "FirewallDefaultObjectUpdateRestricted")
    assert error(alice("DELETE", f"{GROUPS}/{default['id']}")) == (
        409,
        "FirewallGroupCannotRemoveDefault",
        "Deleting default firewall group not allowed.",
    )
    # An admin may remove it: its policies go with it, their rules stay (and
    # the project's next list makes it a new default group).
    assert admin("DELETE", f"{GROUPS}/{default['id']}").status_code == 204
    assert alice("GET", f"{POLICIES}/{ingress['id']}").status_code == 404
    for old in ingress["firewall_rules"]:
        assert alice("GET", f"{RULES}/{old}").json()["firewall_rule"]["firewall_policy_id"] is None
    (renewed,) = alice("GET", GROUPS).json()["firewall_groups"]
    assert renewed["name"] == "default" and renewed["id"] != default["id"]


def test_rules_are_read_and_refused_as_neutron_does(admin: Api) -> None:
    made_rule = rule(
        admin,
        name="web",
        protocol="tcp",
        action="ALLOW",
        destination_port="8000:8080",
        source_port=22,
        source_ip_address="10.0.0.1",
        ip_version="4",
    )
    assert (made_rule["action"], made_rule["ip_version"], made_rule["enabled"]) == (
        "allow",
        4,
        True,
    )
    assert (made_rule["destination_port"], made_rule["source_port"]) == ("8000:8080", "22")
    assert made_rule["source_ip_address"] == "10.0.0.1"  # as written, not made a /32
    assert made_rule["shared"] is False and made_rule["firewall_policy_id"] is None
    defaults = rule(admin)
    assert (defaults["action"], defaults["protocol"], defaults["ip_version"]) == ("deny", None, 4)

    def refused(**fields: Any) -> tuple[int, str, str]:
        return error(admin("POST", RULES, {"firewall_rule": fields}))

    assert refused(protocol="TCP") == (
        400,
        "InvalidInput",
        "Invalid input for protocol. Reason: TCP is not in valid_values.",
    )
    assert refused(action="permit")[:2] == (400, "InvalidInput")
    assert refused(ip_version=5)[:2] == (400, "InvalidInput")
    assert refused(destination_port="80") == (
        400,
        "FirewallRuleWithPortWithoutProtocolInvalid",
        "Source/destination port requires a protocol.",
    )
    assert refused(protocol="icmp", destination_port="80")[1] == "FirewallRuleInvalidICMPParameter"
    assert refused(ip_version=6, source_ip_address="10.0.0.0/8") == (
        400,
        "FirewallIpAddressConflict",
        "Invalid input - IP addresses do not agree with IP Version.",
    )
    assert refused(protocol="tcp", destination_port="90:80")[2].endswith(
        "First port in a port range must be lower than the second port."
    )
    assert refused(protocol="tcp", destination_port="1:2:3")[2].endswith(
        "Port range must be two integers separated by a colon."
    )
    assert refused(protocol="tcp", destination_port="70000")[2].endswith(
        "Invalid port: 70000, the port must be in the range [0, 65535]."
    )
    assert refused(source_ip_address="10.0.0.300")[2].endswith(
        "'10.0.0.300' is neither a valid IP address, nor is it a valid IP subnet."
    )
    assert refused(position=1) == (
        400,
        "HTTPBadRequest",
        "Attribute 'position' not allowed in POST",
    )
    bulk = admin("POST", RULES, {"firewall_rules": [{"name": "a"}]})
    assert error(bulk) == (400, "HTTPBadRequest", "Bulk operation not supported")
    # An update is checked merged with what the rule was.
    mixed = admin("PUT", f"{RULES}/{made_rule['id']}", {"firewall_rule": {"protocol": "icmp"}})
    assert error(mixed)[1] == "FirewallRuleInvalidICMPParameter"
    assert admin("GET", f"{RULES}/{made_rule['id']}").json()["firewall_rule"]["protocol"] == "tcp"


def test_policies_order_their_rules_and_the_actions_reorder_them(admin: Api) -> None:
    alice = project(admin, "alice")
    a, b, c, d = (rule(alice, name=n)["id"] for n in "abcd")
    made_policy = policy(alice, name="p", firewall_rules=[a, b], audited=True)
    assert made_policy["firewall_rules"] == [a, b] and made_policy["audited"] is True
    url = f"{POLICIES}/{made_policy['id']}"

    def insert(**body: Any) -> Any:
        return alice("PUT", f"{url}/insert_rule", body)

    # No reference: first. The answer is the policy itself, not wrapped.
    answer = insert(firewall_rule_id=c, insert_before=None, insert_after=None)
    assert answer.status_code == 200, answer.text
    assert answer.json()["firewall_rules"] == [c, a, b] and answer.json()["audited"] is False
    # insert_before wins over insert_after (OSC sends "" for what is not given).
    assert insert(firewall_rule_id=d, insert_before=b, insert_after=c).json()["firewall_rules"] == [
        c,
        a,
        d,
        b,
    ]
    removed = alice("PUT", f"{url}/remove_rule", {"firewall_rule_id": a})
    assert removed.json()["firewall_rules"] == [c, d, b]
    assert insert(firewall_rule_id=a, insert_before="", insert_after=b).json()[
        "firewall_rules"
    ] == [c, d, b, a]
    # Show names the policies a rule is in; the list does not.
    assert alice("GET", f"{RULES}/{a}").json()["firewall_rule"]["firewall_policy_id"] == [
        made_policy["id"]
    ]
    listed = {r["id"]: r for r in alice("GET", RULES).json()["firewall_rules"]}
    assert listed[a]["firewall_policy_id"] is None

    assert error(insert(firewall_rule_id=a))[:2] == (409, "FirewallRuleAlreadyAssociated")
    assert error(insert()) == (
        400,
        "FirewallRuleInfoMissing",
        "Missing rule info argument for insert/remove rule operation.",
    )
    assert error(insert(firewall_rule_id="nope"))[:2] == (404, "FirewallRuleNotFound")
    e = rule(alice, name="e")["id"]
    assert error(insert(firewall_rule_id=e, insert_before=e))[:2] == (
        400,
        "FirewallRuleNotAssociatedWithPolicy",
    )
    assert error(alice("PUT", f"{url}/remove_rule", {"firewall_rule_id": e}))[:2] == (
        400,
        "FirewallRuleNotAssociatedWithPolicy",
    )
    assert alice("GET", url).json()["firewall_policy"]["firewall_rules"] == [c, d, b, a]
    # A PUT replaces the list; without `audited: true` it clears `audited`.
    replaced = alice("PUT", url, {"firewall_policy": {"firewall_rules": [b], "audited": True}})
    assert replaced.json()["firewall_policy"]["firewall_rules"] == [b]
    assert replaced.json()["firewall_policy"]["audited"] is True
    renamed = alice("PUT", url, {"firewall_policy": {"name": "q"}})
    assert renamed.json()["firewall_policy"]["audited"] is False
    repeated = alice("PUT", url, {"firewall_policy": {"firewall_rules": [b, b]}})
    assert error(repeated)[:2] == (400, "InvalidInput")

    # In use: a rule in a policy, a policy in a group.
    assert error(alice("DELETE", f"{RULES}/{b}")) == (
        409,
        "FirewallRuleInUse",
        f"Firewall rule {b} is being used.",
    )
    assert group(alice, name="g", egress_firewall_policy_id=made_policy["id"]).status_code == 201
    assert error(alice("DELETE", url))[:2] == (409, "FirewallPolicyInUse")
    assert alice("DELETE", f"{RULES}/{a}").status_code == 204


def test_groups_take_router_interfaces_only_and_each_once(admin: Api) -> None:
    alice = project(admin, "alice")
    router_id, port_id = router_interface(alice)
    network = alice.create_network(name="other")
    compute = alice(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": network["id"], "device_owner": "compute:nova"}},
    ).json()["port"]
    plain = alice("POST", "/v2.0/ports", {"port": {"network_id": network["id"]}}).json()["port"]
    assert error(group(alice, ports=[compute["id"]])) == (
        409,
        "FirewallGroupPortNotSupported",
        f"Port {compute['id']} is not supported by firewall driver 'astara'.",
    )
    assert error(group(alice, ports=[plain["id"]])) == (
        409,
        "FirewallGroupPortInvalid",
        f"Port {plain['id']} of firewall group is invalid.",
    )
    bob = project(admin, "bob")
    assert error(group(bob, ports=[port_id]))[:2] == (404, "PortNotFound")

    first = made(group(alice, name="g1", ports=[port_id]), "firewall_group")
    assert first["status"] == "INACTIVE"  # ports, but no policy
    assert error(group(alice, name="g2", ports=[port_id])) == (
        409,
        "FirewallGroupPortInUse",
        f"Port(s) ['{port_id}'] provided already associated with other firewall group(s).",
    )
    assert error(alice("DELETE", f"{GROUPS}/{first['id']}")) == (
        409,
        "FirewallGroupInUse",
        f"Firewall group {first['id']} is still active.",
    )
    cleared = alice("PUT", f"{GROUPS}/{first['id']}", {"firewall_group": {"ports": []}})
    assert cleared.json()["firewall_group"]["ports"] == []
    assert alice("DELETE", f"{GROUPS}/{first['id']}").status_code == 204
    # Removing the interface takes its port out of its group.
    again = made(group(alice, name="g3", ports=[port_id]), "firewall_group")
    removed = alice(
        "PUT", f"/v2.0/routers/{router_id}/remove_router_interface", {"port_id": port_id}
    )
    assert removed.status_code == 200, removed.text
    assert alice("GET", f"{GROUPS}/{again['id']}").json()["firewall_group"]["ports"] == []


def test_a_networks_owner_cannot_filter_another_projects_router(admin: Api) -> None:
    """The owner of a shared network sees other projects' ports on it, their
    router interfaces too: it may not put them in its groups."""
    alice, bob = project(admin, "alice"), project(admin, "bob")
    shared = admin.create_network(name="shared", shared=True)
    alice_id = alice("GET", "/v2.0/quotas/project").json()["project"]["project_id"]
    subnet = admin(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": shared["id"], "ip_version": 4, "cidr": "10.9.0.0/24"}},
    ).json()["subnet"]
    router = made(bob("POST", "/v2.0/routers", {"router": {"name": "r"}}), "router")
    port = bob(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": shared["id"], "fixed_ips": [{"subnet_id": subnet["id"]}]}},
    ).json()["port"]
    added = bob(
        "PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"port_id": port["id"]}
    )
    assert added.status_code == 200, added.text
    # The network's owner (the admin here) sees Bob's interface, and may not
    # filter it for a project of its choosing; nor may Alice.
    taken = admin(
        "POST", GROUPS, {"firewall_group": {"ports": [port["id"]], "project_id": alice_id}}
    )
    assert error(taken) == (
        409,
        "FirewallGroupPortInvalidProject",
        f"Operation cannot be performed as port {port['id']} is in an invalid project {alice_id}.",
    )
    assert error(group(alice, ports=[port["id"]]))[0] == 404
    assert made(group(bob, ports=[port["id"]]), "firewall_group")["ports"] == [port["id"]]


def test_sharing_is_an_admins_and_a_projects_objects_stay_its_own(admin: Api) -> None:
    alice, bob = project(admin, "alice"), project(admin, "bob")
    assert error(alice("POST", RULES, {"firewall_rule": {"shared": True}}))[:2] == (
        403,
        "PolicyNotAuthorized",
    )
    shared_rule = rule(admin, name="shared", shared=True)
    own = rule(alice, name="own")
    # Bob sees the shared rule, not Alice's; he may use the shared one, not change it.
    seen = {r["name"] for r in bob("GET", RULES).json()["firewall_rules"]}
    assert "shared" in seen and "own" not in seen
    changed = bob("PUT", f"{RULES}/{shared_rule['id']}", {"firewall_rule": {"name": "x"}})
    assert error(changed)[:2] == (403, "PolicyNotAuthorized")
    assert policy(bob, firewall_rules=[shared_rule["id"]])["firewall_rules"] == [shared_rule["id"]]
    foreign = bob("POST", POLICIES, {"firewall_policy": {"firewall_rules": [own["id"]]}})
    assert error(foreign)[:2] == (409, "FirewallRuleConflict")
    alices = policy(alice, firewall_rules=[own["id"]])
    used = group(bob, ingress_firewall_policy_id=alices["id"])
    assert error(used)[:2] == (404, "FirewallPolicyConflict")
    # A shared policy may hold shared rules only.
    sharing = admin("PUT", f"{POLICIES}/{alices['id']}", {"firewall_policy": {"shared": True}})
    assert error(sharing)[:2] == (409, "FirewallPolicySharingConflict")


def test_a_groups_rules_reach_its_routers_plan_in_order(admin: Api, engine: Engine) -> None:
    alice = project(admin, "alice")
    router_id, port_id = router_interface(alice)
    web = rule(alice, protocol="tcp", destination_port="80", action="allow")
    ssh = rule(alice, protocol="tcp", destination_port="22", action="reject", enabled=False)
    six = rule(alice, ip_version=6, protocol="icmp", action="allow")
    inbound = policy(alice, firewall_rules=[web["id"], ssh["id"], six["id"]])
    made_group = made(
        group(alice, name="g", ports=[port_id], ingress_firewall_policy_id=inbound["id"]),
        "firewall_group",
    )
    # Pending until the router runs it: the API made the router BUILD.
    assert made_group["status"] == "PENDING_CREATE"
    assert alice("GET", f"/v2.0/routers/{router_id}").json()["router"]["status"] == "BUILD"
    with Session(engine) as session:
        router = session.get(Router, router_id)
        assert router is not None
        config = router_driver.plan(session, router).config
        assert config is not None
        (firewall,) = config.firewalls
        assert firewall.id == made_group["id"] and firewall.enabled and firewall.egress == []
        # Disabled rules are left out; the order is the policy's.
        assert [(r.protocol, r.ip_version, r.action.value) for r in firewall.ingress] == [
            ("tcp", 4, "allow"),
            ("icmp", 6, "allow"),
        ]
        port_mac = alice("GET", f"/v2.0/ports/{port_id}").json()["port"]["mac_address"]
        assert firewall.interfaces == [port_mac]
        # The router has run it: the group is ACTIVE; set down, DOWN.
        router.status = "ACTIVE"
        session.commit()
    shown = alice("GET", f"{GROUPS}/{made_group['id']}").json()["firewall_group"]
    assert shown["status"] == "ACTIVE"
    down = alice(
        "PUT", f"{GROUPS}/{made_group['id']}", {"firewall_group": {"admin_state_up": False}}
    )
    assert down.json()["firewall_group"]["status"] == "PENDING_UPDATE"
    with Session(engine) as session:
        router = session.get(Router, router_id)
        assert router is not None
        config = router_driver.plan(session, router).config
        assert config is not None and config.firewalls[0].enabled is False
        router.status = "ACTIVE"
        session.commit()
    shown = alice("GET", f"{GROUPS}/{made_group['id']}").json()["firewall_group"]
    assert shown["status"] == "DOWN"
    # Without a policy it filters nothing (INACTIVE), as Neutron's agent does.
    body = {"firewall_group": {"admin_state_up": True, "ingress_firewall_policy_id": None}}
    assert alice("PUT", f"{GROUPS}/{made_group['id']}", body).status_code == 200
    shown = alice("GET", f"{GROUPS}/{made_group['id']}").json()["firewall_group"]
    assert shown["status"] == "INACTIVE" and shown["ports"] == [port_id]
    with Session(engine) as session:
        router = session.get(Router, router_id)
        assert router is not None
        config = router_driver.plan(session, router).config
        assert config is not None and config.firewalls == []


def test_firewall_quotas_and_a_projects_removal(admin: Api) -> None:
    alice = project(admin, "alice")
    alice_id = alice("GET", "/v2.0/quotas/project").json()["project"]["project_id"]
    quota = alice("GET", f"/v2.0/quotas/{alice_id}").json()["quota"]
    assert (quota["firewall_group"], quota["firewall_policy"], quota["firewall_rule"]) == (
        10,
        10,
        100,
    )
    admin("PUT", f"/v2.0/quotas/{alice_id}", {"quota": {"firewall_rule": 5}})
    extra = rule(alice)  # the default group's four rules count too
    assert error(alice("POST", RULES, {"firewall_rule": {}}))[:2] == (409, "OverQuota")
    # The default objects do not keep a project; what it made does.
    assert error(admin("DELETE", "/astara/v1/projects/alice"))[0] == 409
    assert alice("DELETE", f"{RULES}/{extra['id']}").status_code == 204
    assert admin("DELETE", "/astara/v1/projects/alice").status_code == 204
    left = admin("GET", RULES, params={"project_id": alice_id}).json()["firewall_rules"]
    assert left == []
