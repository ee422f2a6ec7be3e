"""Security groups, their rules, address groups, and a port's security
(groups, allowed address pairs, port_security_enabled) in the tenant API,
against SQLite and PostgreSQL: Neutron's defaults, validation and errors."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.component.conftest import Api, error, project

SG = "/v2.0/security-groups"
RULES = "/v2.0/security-group-rules"
AG = "/v2.0/address-groups"


def made(response: Any, member: str) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    found: dict[str, Any] = response.json()[member]
    return found


def group(api: Api, **fields: Any) -> dict[str, Any]:
    return made(api("POST", SG, {"security_group": fields}), "security_group")


def rule(api: Api, group_id: str, **fields: Any) -> Any:
    body = {"security_group_id": group_id, "direction": "ingress", **fields}
    return api("POST", RULES, {"security_group_rule": body})


def defaults(api: Api) -> dict[str, Any]:
    listed = api("GET", SG, params={"name": "default"}).json()["security_groups"]
    assert len(listed) == 1
    found: dict[str, Any] = listed[0]
    return found


def shape(rules: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {(r["direction"], r["ethertype"], r["protocol"], r["remote_group_id"]) for r in rules}


def test_a_project_gets_its_default_group_on_first_use_with_neutrons_rules(admin: Api) -> None:
    alice = project(admin, "alice")
    default = defaults(alice)
    assert (default["name"], default["description"]) == ("default", "Default security group")
    assert default["stateful"] is True and default["shared"] is False
    me = default["id"]
    assert shape(default["security_group_rules"]) == {
        ("egress", "IPv4", None, None),
        ("egress", "IPv6", None, None),
        ("ingress", "IPv4", None, me),
        ("ingress", "IPv6", None, me),
    }
    assert all(r["belongs_to_default_sg"] for r in default["security_group_rules"])
    # Listing again does not make another; a new group gets the egress rules only.
    assert len(alice("GET", SG).json()["security_groups"]) == 1
    web = group(alice, name="web", description="front")
    assert shape(web["security_group_rules"]) == {
        ("egress", "IPv4", None, None),
        ("egress", "IPv6", None, None),
    }
    assert not any(r["belongs_to_default_sg"] for r in web["security_group_rules"])
    assert {g["name"] for g in alice("GET", SG).json()["security_groups"]} == {"default", "web"}


def test_the_default_group_cannot_be_renamed_duplicated_or_removed_by_its_project(
    admin: Api,
) -> None:
    alice = project(admin, "alice")
    default = defaults(alice)
    assert error(alice("PUT", f"{SG}/{default['id']}", {"security_group": {"name": "x"}}))[:2] == (
        409,
        "SecurityGroupCannotUpdateDefault",
    )
    assert error(alice("POST", SG, {"security_group": {"name": "Default"}})) == (
        409,
        "SecurityGroupDefaultAlreadyExists",
        "Default security group already exists.",
    )
    web = group(alice, name="web")
    renamed = alice("PUT", f"{SG}/{web['id']}", {"security_group": {"name": "default"}})
    assert error(renamed)[:2] == (409, "SecurityGroupDefaultAlreadyExists")
    assert error(alice("DELETE", f"{SG}/{default['id']}"))[:2] == (
        409,
        "SecurityGroupCannotRemoveDefault",
    )
    # Its description may change; an admin may remove it, and it comes back on next use.
    described = alice("PUT", f"{SG}/{default['id']}", {"security_group": {"description": "d"}})
    assert described.json()["security_group"]["description"] == "d"
    assert admin("DELETE", f"{SG}/{default['id']}").status_code == 204
    assert defaults(alice)["id"] != default["id"]


def test_groups_and_rules_are_private_to_their_project(admin: Api) -> None:
    alice, bob = project(admin, "alice"), project(admin, "bob")
    web = group(alice, name="web")
    ssh = made(
        rule(alice, web["id"], protocol="tcp", port_range_min=22, port_range_max=22),
        "security_group_rule",
    )
    assert error(bob("GET", f"{SG}/{web['id']}"))[:2] == (404, "SecurityGroupNotFound")
    assert error(bob("GET", f"{RULES}/{ssh['id']}"))[:2] == (404, "SecurityGroupRuleNotFound")
    assert error(bob("DELETE", f"{RULES}/{ssh['id']}"))[:2] == (404, "SecurityGroupRuleNotFound")
    assert error(rule(bob, web["id"]))[:2] == (404, "SecurityGroupNotFound")
    # Bob's own group may not name Alice's as its remote.
    mine = group(bob, name="mine")
    assert error(rule(bob, mine["id"], remote_group_id=web["id"]))[:2] == (
        404,
        "SecurityGroupNotFound",
    )
    assert web["id"] not in {g["id"] for g in bob("GET", SG).json()["security_groups"]}
    assert ssh["id"] not in {r["id"] for r in bob("GET", RULES).json()["security_group_rules"]}
    # An admin's rule in Alice's group is Alice's.
    added = made(
        rule(admin, web["id"], protocol="udp", port_range_min=53, port_range_max=53),
        "security_group_rule",
    )
    assert added["project_id"] == web["project_id"]
    assert added["id"] in {r["id"] for r in alice("GET", RULES).json()["security_group_rules"]}


@pytest.mark.parametrize(
    ("fields", "kind", "message"),
    [
        ({"protocol": "bogus"}, "SecurityGroupRuleInvalidProtocol", "protocol bogus not supported"),
        ({"protocol": 256}, "SecurityGroupRuleInvalidProtocol", "protocol 256 not supported"),
        ({"ethertype": "IPv5"}, "SecurityGroupRuleInvalidEtherType", "'IPv5' not supported"),
        ({"port_range_min": 22}, "SecurityGroupProtocolRequiredWithPorts", "Must also specify"),
        (
            {"protocol": "tcp", "port_range_min": 0, "port_range_max": 5},
            "SecurityGroupInvalidPortValue",
            "Invalid value for port 0.",
        ),
        (
            {"protocol": "tcp", "port_range_min": 90, "port_range_max": 80},
            "SecurityGroupInvalidPortRange",
            "port_range_min must be <= port_range_max",
        ),
        (
            {"protocol": "udp", "port_range_min": 53},
            "SecurityGroupInvalidPortRange",
            "port_range_min must be <= port_range_max",
        ),
        (
            {"protocol": "tcp", "port_range_min": 1, "port_range_max": 70000},
            "SecurityGroupInvalidPortValue",
            "Invalid value for port 70000.",
        ),
        (
            {"protocol": "icmp", "port_range_min": 300},
            "SecurityGroupInvalidIcmpValue",
            "Invalid value for ICMP type (port_range_min) 300. It must be 0 to 255.",
        ),
        (
            {"protocol": "icmp", "port_range_max": 0},
            "SecurityGroupMissingIcmpType",
            "ICMP code (port-range-max) 0 is provided but ICMP type (port-range-min) is missing.",
        ),
        (
            {"protocol": "gre", "port_range_min": 1, "port_range_max": 2},
            "SecurityGroupInvalidProtocolForPort",
            "Invalid protocol 47 for port range",
        ),
        (
            {"remote_ip_prefix": "10.0.0.0/33"},
            "InvalidCIDR",
            "Invalid CIDR 10.0.0.0/33 given as IP prefix.",
        ),
        (
            {"remote_ip_prefix": "2001:db8::/64"},
            "SecurityGroupRuleParameterConflict",
            "Conflicting value ethertype IPv4 for CIDR 2001:db8::/64",
        ),
        (
            {"protocol": "ipv6-icmp"},
            "SecurityGroupEthertypeConflictWithProtocol",
            "Invalid ethertype IPv4 for protocol ipv6-icmp.",
        ),
        (
            {"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": "SELF"},
            "SecurityGroupMultipleRemoteEntites",
            "Only one of",
        ),
        ({"direction": "sideways"}, "InvalidInput", "'sideways' is not in"),
        ({"remote_group_id": "nope"}, "InvalidInput", "'nope' is not a valid UUID"),
    ],
)
def test_a_bad_rule_gets_neutrons_error_and_changes_nothing(
    admin: Api, fields: dict[str, Any], kind: str, message: str
) -> None:
    web = group(admin, name="web")
    if fields.get("remote_group_id") == "SELF":
        fields = {**fields, "remote_group_id": web["id"]}
    status, found_kind, found_message = error(rule(admin, web["id"], **fields))
    assert (status, found_kind) == (400, kind) and message in found_message
    shown = admin("GET", f"{SG}/{web['id']}").json()["security_group"]
    assert shown["security_group_rules"] == web["security_group_rules"]


def test_rules_are_made_canonical_as_neutron_stores_them(admin: Api) -> None:
    web = group(admin, name="web")
    every = made(
        rule(admin, web["id"], protocol="TCP", port_range_min=1, port_range_max=65535),
        "security_group_rule",
    )
    assert (every["protocol"], every["port_range_min"], every["port_range_max"]) == (
        "tcp",
        None,
        None,
    )
    legacy = made(rule(admin, web["id"], ethertype="ipv6", protocol="icmp"), "security_group_rule")
    assert (legacy["ethertype"], legacy["protocol"]) == ("IPv6", "ipv6-icmp")
    number = made(
        rule(admin, web["id"], ethertype="IPv6", protocol="1", port_range_min=128),
        "security_group_rule",
    )
    assert (number["protocol"], number["port_range_min"], number["port_range_max"]) == (
        "58",
        128,
        None,
    )
    host = made(
        rule(admin, web["id"], protocol=17, remote_ip_prefix="10.1.2.3"), "security_group_rule"
    )
    assert (host["protocol"], host["remote_ip_prefix"], host["normalized_cidr"]) == (
        "17",
        "10.1.2.3/32",
        "10.1.2.3/32",
    )
    bits = made(
        rule(
            admin,
            web["id"],
            protocol="udp",
            port_range_min=5,
            port_range_max=5,
            remote_ip_prefix="10.1.2.3/24",
        ),
        "security_group_rule",
    )
    assert (bits["remote_ip_prefix"], bits["normalized_cidr"]) == ("10.1.2.3/24", "10.1.2.0/24")
    anyone = made(rule(admin, web["id"], protocol="any"), "security_group_rule")
    assert anyone["protocol"] is None


def test_the_same_rule_twice_is_a_conflict_whatever_its_spelling(admin: Api) -> None:
    web = group(admin, name="web")
    first = made(
        rule(admin, web["id"], protocol="tcp", port_range_min=80, port_range_max=80),
        "security_group_rule",
    )
    again = rule(admin, web["id"], protocol="6", port_range_min=80, port_range_max=80)
    assert error(again) == (
        409,
        "SecurityGroupRuleExists",
        f"Security group rule already exists. Rule id is {first['id']}.",
    )
    # Any address is no prefix: the group's own egress rule exists already.
    egress = rule(admin, web["id"], direction="egress", remote_ip_prefix="0.0.0.0/0")
    assert error(egress)[:2] == (409, "SecurityGroupRuleExists")
    # Within one bulk POST, and the bulk is all or nothing.
    one = {"security_group_id": web["id"], "direction": "ingress", "protocol": "udp"}
    bulk = admin("POST", RULES, {"security_group_rules": [one, dict(one)]})
    assert error(bulk) == (
        409,
        "DuplicateSecurityGroupRuleInPost",
        "Duplicate Security Group Rule in POST.",
    )
    udp = admin("GET", RULES, params={"security_group_id": web["id"], "protocol": "udp"})
    assert udp.json()["security_group_rules"] == []


def test_rules_list_filter_show_and_delete(admin: Api) -> None:
    web = group(admin, name="web")
    ssh = made(
        rule(admin, web["id"], protocol="tcp", port_range_min=22, port_range_max=22),
        "security_group_rule",
    )
    listed = admin("GET", RULES, params={"security_group_id": web["id"], "direction": "ingress"})
    assert [r["id"] for r in listed.json()["security_group_rules"]] == [ssh["id"]]
    assert admin("GET", f"{RULES}/{ssh['id']}").json()["security_group_rule"] == ssh
    assert "tags" not in ssh
    before = admin("GET", f"{SG}/{web['id']}").json()["security_group"]["revision_number"]
    assert admin("DELETE", f"{RULES}/{ssh['id']}").status_code == 204
    assert error(admin("GET", f"{RULES}/{ssh['id']}"))[:2] == (404, "SecurityGroupRuleNotFound")
    after = admin("GET", f"{SG}/{web['id']}").json()["security_group"]
    assert after["revision_number"] > before and ssh["id"] not in str(after)
    # A rule is never changed: Neutron has no rule update.
    change = admin(
        "PUT",
        f"{RULES}/{after['security_group_rules'][0]['id']}",
        {"security_group_rule": {"protocol": "tcp"}},
    )
    assert error(change)[:2] == (400, "HTTPBadRequest")


def test_deleting_a_group_takes_its_rules_and_the_rules_that_name_it(admin: Api) -> None:
    web, db = group(admin, name="web"), group(admin, name="db")
    from_web = made(
        rule(
            admin,
            db["id"],
            remote_group_id=web["id"],
            protocol="tcp",
            port_range_min=5432,
            port_range_max=5432,
        ),
        "security_group_rule",
    )
    assert admin("DELETE", f"{SG}/{web['id']}").status_code == 204
    assert error(admin("GET", f"{RULES}/{from_web['id']}"))[:2] == (
        404,
        "SecurityGroupRuleNotFound",
    )
    left = admin("GET", RULES, params={"security_group_id": web["id"]}).json()
    assert left["security_group_rules"] == []


def test_stateful_cannot_change_under_a_port_and_a_bound_group_is_in_use(admin: Api) -> None:
    network = admin.create_network(name="n")
    web = group(admin, name="web", stateful=False)
    assert web["stateful"] is False
    port = made(
        admin(
            "POST",
            "/v2.0/ports",
            {"port": {"network_id": network["id"], "security_groups": [web["id"]]}},
        ),
        "port",
    )
    assert port["security_groups"] == [web["id"]]
    flip = admin("PUT", f"{SG}/{web['id']}", {"security_group": {"stateful": True}})
    assert error(flip) == (409, "SecurityGroupInUse", f"Security Group {web['id']} in use.")
    assert error(admin("DELETE", f"{SG}/{web['id']}"))[:2] == (409, "SecurityGroupInUse")
    listed = admin("GET", "/v2.0/ports", params={"security_groups": web["id"]}).json()["ports"]
    assert [p["id"] for p in listed] == [port["id"]]
    assert admin("DELETE", f"/v2.0/ports/{port['id']}").status_code == 204
    assert admin("DELETE", f"{SG}/{web['id']}").status_code == 204


def test_ports_get_the_default_group_unless_they_name_theirs_or_are_the_services(
    admin: Api,
) -> None:
    alice = project(admin, "alice")
    network = alice.create_network(name="n")
    alice(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": network["id"], "cidr": "10.0.0.0/24", "ip_version": 4}},
    )
    plain = made(alice("POST", "/v2.0/ports", {"port": {"network_id": network["id"]}}), "port")
    default = defaults(alice)
    assert plain["security_groups"] == [default["id"]]
    web, db = group(alice, name="web"), group(alice, name="db")
    both = made(
        alice(
            "POST",
            "/v2.0/ports",
            {"port": {"network_id": network["id"], "security_groups": [web["id"], db["id"]]}},
        ),
        "port",
    )
    assert both["security_groups"] == sorted([web["id"], db["id"]])
    none = made(
        alice(
            "POST", "/v2.0/ports", {"port": {"network_id": network["id"], "security_groups": []}}
        ),
        "port",
    )
    assert none["security_groups"] == []
    router = made(alice("POST", "/v2.0/routers", {"router": {"name": "r"}}), "router")
    subnet_id = plain["fixed_ips"][0]["subnet_id"]
    alice("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": subnet_id})
    interface = alice("GET", "/v2.0/ports", params={"device_owner": "network:router_interface"})
    assert [p["security_groups"] for p in interface.json()["ports"]] == [[]]
    # Shown the same by show, list and the update's answer.
    for port in (plain, both, none):
        assert (
            alice("GET", f"/v2.0/ports/{port['id']}").json()["port"]["security_groups"]
            == port["security_groups"]
        )
    listed = {p["id"]: p["security_groups"] for p in alice("GET", "/v2.0/ports").json()["ports"]}
    assert listed[both["id"]] == both["security_groups"]
    moved = alice("PUT", f"/v2.0/ports/{both['id']}", {"port": {"security_groups": [web["id"]]}})
    assert moved.json()["port"]["security_groups"] == [web["id"]]


def test_a_port_names_only_its_own_projects_groups(admin: Api) -> None:
    alice, bob = project(admin, "alice"), project(admin, "bob")
    network = alice.create_network(name="n")
    theirs = group(bob, name="theirs")
    asked = alice(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": network["id"], "security_groups": [theirs["id"]]}},
    )
    assert error(asked) == (
        404,
        "SecurityGroupNotFound",
        f"Security group {theirs['id']} does not exist",
    )
    # A group named twice is bound once (Neutron merges repeats).
    mine = group(alice, name="mine")
    twice = alice(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": network["id"], "security_groups": [mine["id"]] * 2}},
    )
    assert made(twice, "port")["security_groups"] == [mine["id"]]
    alice("DELETE", f"/v2.0/ports/{twice.json()['port']['id']}")
    assert alice("GET", "/v2.0/ports").json()["ports"] == []


def test_port_security_off_means_no_groups_and_no_pairs(admin: Api) -> None:
    network = admin.create_network(name="n")
    web = group(admin, name="web")
    base = {"network_id": network["id"], "port_security_enabled": False}
    refused = admin("POST", "/v2.0/ports", {"port": {**base, "security_groups": [web["id"]]}})
    assert error(refused)[:2] == (400, "PortSecurityAndIPRequiredForSecurityGroups")
    paired = admin(
        "POST",
        "/v2.0/ports",
        {"port": {**base, "allowed_address_pairs": [{"ip_address": "10.0.0.9"}]}},
    )
    assert error(paired) == (
        409,
        "AddressPairAndPortSecurityRequired",
        "Port Security must be enabled in order to have allowed address pairs on a port.",
    )
    open_port = made(admin("POST", "/v2.0/ports", {"port": base}), "port")
    assert (open_port["security_groups"], open_port["allowed_address_pairs"]) == ([], [])
    # Turned on, it may take groups; turned off again only without them.
    url = f"/v2.0/ports/{open_port['id']}"
    on = admin(
        "PUT", url, {"port": {"port_security_enabled": True, "security_groups": [web["id"]]}}
    )
    assert on.json()["port"]["security_groups"] == [web["id"]]
    assert error(admin("PUT", url, {"port": {"port_security_enabled": False}}))[:2] == (
        409,
        "PortSecurityPortHasSecurityGroup",
    )
    pairs = admin(
        "PUT",
        url,
        {"port": {"security_groups": [], "allowed_address_pairs": [{"ip_address": "10.0.0.9"}]}},
    )
    assert pairs.status_code == 200
    assert error(admin("PUT", url, {"port": {"port_security_enabled": False}}))[:2] == (
        409,
        "AddressPairAndPortSecurityRequired",
    )
    off = admin("PUT", url, {"port": {"port_security_enabled": False, "allowed_address_pairs": []}})
    assert off.json()["port"]["port_security_enabled"] is False
    assert (
        admin("GET", "/v2.0/ports", params={"port_security_enabled": "false"}).json()["ports"][0][
            "id"
        ]
        == open_port["id"]
    )


def test_allowed_address_pairs_are_kept_with_the_ports_mac_by_default(admin: Api) -> None:
    network = admin.create_network(name="n")
    pairs = [
        {"ip_address": "10.0.0.9"},
        {"ip_address": "10.1.0.0/16", "mac_address": "FA:16:3E:00:00:99"},
        {"ip_address": "2001:db8::5"},
    ]
    port = made(
        admin(
            "POST",
            "/v2.0/ports",
            {"port": {"network_id": network["id"], "allowed_address_pairs": pairs}},
        ),
        "port",
    )
    mac = port["mac_address"]
    expected = [
        {"ip_address": "10.0.0.9", "mac_address": mac},
        {"ip_address": "10.1.0.0/16", "mac_address": "fa:16:3e:00:00:99"},
        {"ip_address": "2001:db8::5", "mac_address": mac},
    ]
    assert port["allowed_address_pairs"] == expected
    assert (
        admin("GET", f"/v2.0/ports/{port['id']}").json()["port"]["allowed_address_pairs"]
        == expected
    )
    listed = admin("GET", "/v2.0/ports").json()["ports"]
    assert next(p for p in listed if p["id"] == port["id"])["allowed_address_pairs"] == expected


@pytest.mark.parametrize(
    ("pairs", "status", "kind", "message"),
    [
        (
            [{"mac_address": "fa:16:3e:00:00:01"}],
            400,
            "AllowedAddressPairsMissingIP",
            "AllowedAddressPair must contain ip_address",
        ),
        (
            [{"ip_address": "10.0.0.1"}, {"ip_address": "10.0.0.1"}],
            400,
            "DuplicateAddressPairInRequest",
            "duplicate address pair",
        ),
        (
            [{"ip_address": f"10.0.0.{i}"} for i in range(11)],
            400,
            "AllowedAddressPairExhausted",
            "exceeds the maximum 10",
        ),
        (
            [{"ip_address": "10.0.0.1", "vlan": 5}],
            400,
            "HTTPBadRequest",
            "Unrecognized attribute(s) 'vlan'",
        ),
        (
            [{"ip_address": "10.0.0.1/33"}],
            400,
            "HTTPBadRequest",
            "'10.0.0.1/33' is not a valid IP address or CIDR",
        ),
        ([{"ip_address": "nope"}], 400, "HTTPBadRequest", "'nope' is not a valid IP address"),
        (
            [{"ip_address": "10.0.0.1", "mac_address": "zz"}],
            400,
            "HTTPBadRequest",
            "'zz' is not a valid MAC address",
        ),
        ("10.0.0.1", 400, "HTTPBadRequest", "Allowed address pairs must be a list."),
    ],
)
def test_bad_address_pairs_are_refused(
    admin: Api, pairs: Any, status: int, kind: str, message: str
) -> None:
    network = admin.create_network(name="n")
    refused = admin(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": network["id"], "allowed_address_pairs": pairs}},
    )
    found = error(refused)
    assert found[:2] == (status, kind) and message in found[2]
    assert admin("GET", "/v2.0/ports").json()["ports"] == []


def test_address_groups_hold_cidrs_and_are_in_use_while_a_rule_names_them(admin: Api) -> None:
    alice, bob = project(admin, "alice"), project(admin, "bob")
    offices = made(
        alice(
            "POST",
            AG,
            {"address_group": {"name": "offices", "addresses": ["10.1.0.0/16", "192.0.2.7"]}},
        ),
        "address_group",
    )
    assert offices["addresses"] == ["10.1.0.0/16", "192.0.2.7/32"]
    url = f"{AG}/{offices['id']}"
    added = alice("PUT", f"{url}/add_addresses", {"addresses": ["2001:db8::/64"]})
    assert added.json()["address_group"]["addresses"] == [
        "10.1.0.0/16",
        "192.0.2.7/32",
        "2001:db8::/64",
    ]
    again = alice("PUT", f"{url}/add_addresses", {"addresses": ["2001:db8::/64"]})
    assert error(again)[:2] == (400, "AddressesAlreadyExist")
    gone = alice("PUT", f"{url}/remove_addresses", {"addresses": ["192.0.2.7/32"]})
    assert gone.json()["address_group"]["addresses"] == ["10.1.0.0/16", "2001:db8::/64"]
    missing = alice("PUT", f"{url}/remove_addresses", {"addresses": ["192.0.2.8"]})
    assert error(missing)[:2] == (404, "AddressesNotFound")
    assert error(alice("PUT", f"{url}/add_addresses", {"addresses": ["nope"]}))[:2] == (
        400,
        "InvalidInput",
    )
    assert error(alice("PUT", f"{url}/frobnicate", {"addresses": []}))[:2] == (404, "HTTPNotFound")
    assert error(bob("GET", url))[:2] == (404, "AddressGroupNotFound")
    assert error(bob("PUT", f"{url}/add_addresses", {"addresses": ["10.9.0.0/16"]}))[:2] == (
        404,
        "AddressGroupNotFound",
    )
    renamed = alice("PUT", url, {"address_group": {"name": "hq"}})
    assert renamed.json()["address_group"]["name"] == "hq"
    assert error(alice("PUT", url, {"address_group": {"addresses": []}}))[:2] == (
        400,
        "HTTPBadRequest",
    )
    web = group(alice, name="web")
    named = made(
        rule(alice, web["id"], remote_address_group_id=offices["id"]), "security_group_rule"
    )
    assert named["remote_address_group_id"] == offices["id"]
    assert error(rule(bob, group(bob, name="b")["id"], remote_address_group_id=offices["id"]))[
        :2
    ] == (404, "AddressGroupNotFound")
    assert error(alice("DELETE", url))[:2] == (409, "AddressGroupInUse")
    assert alice("DELETE", f"{RULES}/{named['id']}").status_code == 204
    assert alice("DELETE", url).status_code == 204


def test_security_group_quotas_are_enforced(admin: Api) -> None:
    alice = project(admin, "alice")
    alice_id = defaults(alice)["project_id"]
    assert (
        admin(
            "PUT",
            f"/v2.0/quotas/{alice_id}",
            {"quota": {"security_group": 2, "security_group_rule": 7}},
        ).status_code
        == 200
    )
    web = group(alice, name="web")  # default + web: 2 groups, 4 + 2 rules
    assert error(alice("POST", SG, {"security_group": {"name": "x"}}))[:2] == (409, "OverQuota")
    assert rule(alice, web["id"], protocol="tcp").status_code == 201
    assert error(rule(alice, web["id"], protocol="udp"))[:2] == (409, "OverQuota")
    details = alice("GET", f"/v2.0/quotas/{alice_id}/details").json()["quota"]
    assert details["security_group"]["used"] == 2 and details["security_group_rule"]["used"] == 7


def test_two_first_requests_of_a_project_make_one_default_group(admin: Api) -> None:
    """Concurrent first requests end with one default group (the lost race
    itself is shown in test_api_races)."""
    import threading

    alice = project(admin, "alice")
    network = alice.create_network(name="n")
    answers: list[Any] = []

    def make_port() -> None:
        answers.append(alice("POST", "/v2.0/ports", {"port": {"network_id": network["id"]}}))

    threads = [threading.Thread(target=make_port) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [201] * 4
    groups = {tuple(a.json()["port"]["security_groups"]) for a in answers}
    assert groups == {(defaults(alice)["id"],)}


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    protocol=st.one_of(
        st.none(), st.sampled_from(["tcp", "udp", "icmp", "6", "17", "1", "58", "gre", "sctp"])
    ),
    low=st.one_of(st.none(), st.integers(-1, 65536)),
    high=st.one_of(st.none(), st.integers(-1, 65536)),
    ethertype=st.sampled_from(["IPv4", "IPv6"]),
)
def test_any_rule_is_stored_as_answered_or_refused_with_a_400(
    admin: Api, protocol: Any, low: Any, high: Any, ethertype: str
) -> None:
    """Whatever the mix, a rule is either made (and shown again as it was
    answered) or refused with a 400 that names Neutron's error; never a 5xx."""
    if not hasattr(admin, "fuzz_group"):
        admin.fuzz_group = group(admin, name="fuzz")["id"]  # type: ignore[attr-defined]
    group_id = admin.fuzz_group  # type: ignore[attr-defined]
    answer = rule(
        admin,
        group_id,
        protocol=protocol,
        port_range_min=low,
        port_range_max=high,
        ethertype=ethertype,
    )
    assert answer.status_code in (201, 400, 409), answer.text
    if answer.status_code == 201:
        made_rule = answer.json()["security_group_rule"]
        assert admin("GET", f"{RULES}/{made_rule['id']}").json()["security_group_rule"] == made_rule
        assert admin("DELETE", f"{RULES}/{made_rule['id']}").status_code == 204


def test_pairs_that_are_the_same_once_written_canonically_are_duplicates(admin: Api) -> None:
    network = admin.create_network(name="n")
    mac = "fa:16:3e:00:00:07"
    for pairs in (
        [{"ip_address": "10.0.0.1"}, {"ip_address": "10.0.0.1", "mac_address": mac}],
        [{"ip_address": "2001:db8::1"}, {"ip_address": "2001:DB8::1"}],
    ):
        body = {"network_id": network["id"], "mac_address": mac, "allowed_address_pairs": pairs}
        assert error(admin("POST", "/v2.0/ports", {"port": body}))[:2] == (
            400,
            "DuplicateAddressPairInRequest",
        )
    port = made(
        admin("POST", "/v2.0/ports", {"port": {"network_id": network["id"], "mac_address": mac}}),
        "port",
    )
    same = [{"ip_address": "10.0.0.0/24"}, {"ip_address": "10.0.0.0/24", "mac_address": mac}]
    update = admin("PUT", f"/v2.0/ports/{port['id']}", {"port": {"allowed_address_pairs": same}})
    assert error(update)[:2] == (400, "DuplicateAddressPairInRequest")
    # A CIDR's host bits are kept (Neutron accepts them); a plain address stays plain.
    kept = [{"ip_address": "10.0.0.1/24"}, {"ip_address": "2001:DB8::0:1"}]
    shown = admin("PUT", f"/v2.0/ports/{port['id']}", {"port": {"allowed_address_pairs": kept}})
    assert [p["ip_address"] for p in shown.json()["port"]["allowed_address_pairs"]] == [
        "10.0.0.1/24",
        "2001:db8::1",
    ]


@pytest.mark.parametrize(
    "text",
    [
        'fe80::1%x y"}\n/64',
        "10.0.0.0/255.255.255.0",
        "10.0.0.0/0024",
        "10.0.0.0/" + "0" * 70 + "24",
        "10.0.0.1 ",
        "\uff110.0.0.1",  # a fullwidth digit
    ],
)
def test_addresses_are_an_address_and_a_decimal_length_and_nothing_else(
    admin: Api, text: str
) -> None:
    """No IPv6 scope, no netmask spelling, no padding, no whitespace: what is
    stored is what the fabric's ruleset takes as it is."""
    network = admin.create_network(name="n")
    web = group(admin, name="web")
    ethertype = "IPv6" if ":" in text else "IPv4"
    assert error(rule(admin, web["id"], ethertype=ethertype, remote_ip_prefix=text))[:2] == (
        400,
        "InvalidCIDR",
    )
    assert error(admin("POST", AG, {"address_group": {"addresses": [text]}}))[0] == 400
    pairs = {"network_id": network["id"], "allowed_address_pairs": [{"ip_address": text}]}
    assert error(admin("POST", "/v2.0/ports", {"port": pairs}))[0] == 400


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    protocol=st.one_of(
        st.text(max_size=6), st.integers(), st.floats(allow_nan=False, allow_infinity=False)
    ),
    low=st.one_of(
        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6), st.integers()
    ),
    prefix=st.one_of(st.none(), st.text(max_size=20)),
)
def test_no_rule_input_is_a_server_error(admin: Api, protocol: Any, low: Any, prefix: Any) -> None:
    if not hasattr(admin, "fuzz_group"):
        admin.fuzz_group = group(admin, name="fuzz")["id"]  # type: ignore[attr-defined]
    answer = rule(
        admin,
        admin.fuzz_group,
        protocol=protocol,
        port_range_min=low,
        port_range_max=low,
        remote_ip_prefix=prefix,
    )  # type: ignore[attr-defined]
    assert answer.status_code in (201, 400, 409), answer.text
    if answer.status_code == 201:
        admin("DELETE", f"{RULES}/{answer.json()['security_group_rule']['id']}")


def test_a_huge_overflowing_port_bound_is_a_400(admin: Api) -> None:
    web = group(admin, name="web")
    body = (
        '{"security_group_rule": {"security_group_id": "' + web["id"] + '", "direction":'
        ' "ingress", "protocol": "tcp", "port_range_min": 1e400, "port_range_max": 5}}'
    )
    answer = admin.client.post(
        RULES,
        content=body,
        headers={"X-Auth-Token": admin.token, "Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text


def test_deleting_a_group_changes_the_groups_whose_rules_named_it(admin: Api) -> None:
    web, db = group(admin, name="web"), group(admin, name="db")
    made(rule(admin, db["id"], remote_group_id=web["id"]), "security_group_rule")
    before = admin("GET", f"{SG}/{db['id']}").json()["security_group"]
    assert admin("DELETE", f"{SG}/{web['id']}").status_code == 204
    after = admin("GET", f"{SG}/{db['id']}").json()["security_group"]
    assert after["revision_number"] > before["revision_number"]
    assert len(after["security_group_rules"]) == len(before["security_group_rules"]) - 1
    events = admin("GET", "/astara/v1/events").json()["events"]
    assert any(
        e["resource_type"] == "security_group"
        and e["resource_id"] == db["id"]
        and e["action"] == "update"
        for e in events
    )


def test_a_project_is_deleted_with_its_default_group_but_not_with_its_address_groups(
    admin: Api,
) -> None:
    alice = project(admin, "alice")
    defaults(alice)  # made on first use
    network = alice.create_network(name="n")
    port = made(alice("POST", "/v2.0/ports", {"port": {"network_id": network["id"]}}), "port")
    in_use = admin("DELETE", "/astara/v1/projects/alice")
    assert in_use.status_code == 409 and "port" in in_use.text
    alice("DELETE", f"/v2.0/ports/{port['id']}")
    alice("DELETE", f"/v2.0/networks/{network['id']}")
    offices = made(
        alice("POST", AG, {"address_group": {"addresses": ["10.0.0.0/8"]}}), "address_group"
    )
    kept = admin("DELETE", "/astara/v1/projects/alice")
    assert kept.status_code == 409 and "address_group" in kept.text
    alice("DELETE", f"{AG}/{offices['id']}")
    alice_id = defaults(alice)["project_id"]
    assert admin("DELETE", "/astara/v1/projects/alice").status_code == 204
    assert admin("GET", SG, params={"project_id": alice_id}).json()["security_groups"] == []


def test_null_groups_mean_the_default_and_service_ports_get_none(admin: Api) -> None:
    network = admin.create_network(name="n")
    default = defaults(admin)
    null = made(
        admin(
            "POST", "/v2.0/ports", {"port": {"network_id": network["id"], "security_groups": None}}
        ),
        "port",
    )
    assert null["security_groups"] == [default["id"]]
    web = group(admin, name="web")
    service = made(
        admin(
            "POST",
            "/v2.0/ports",
            {
                "port": {
                    "network_id": network["id"],
                    "device_owner": "network:router_interface",
                    "security_groups": [web["id"]],
                }
            },
        ),
        "port",
    )
    assert service["security_groups"] == []
    named = admin("PUT", f"{SG}/{default['id']}", {"security_group": {"name": "default"}})
    assert error(named)[:2] == (409, "SecurityGroupDefaultAlreadyExists")


def test_an_admins_list_for_a_project_makes_that_projects_default_group(admin: Api) -> None:
    alice = project(admin, "alice")
    alice_id = alice("GET", "/v2.0/quotas/project").json()["project"]["project_id"]
    listed = admin("GET", SG, params={"project_id": alice_id}).json()["security_groups"]
    assert [(g["name"], g["project_id"]) for g in listed] == [("default", alice_id)]
    assert admin("GET", SG, params={"project_id": "nobody"}).json()["security_groups"] == []


def test_a_new_groups_egress_rules_count_against_the_rule_quota(admin: Api) -> None:
    alice = project(admin, "alice")
    alice_id = defaults(alice)["project_id"]  # default: 4 rules
    admin("PUT", f"/v2.0/quotas/{alice_id}", {"quota": {"security_group_rule": 5}})
    assert error(alice("POST", SG, {"security_group": {"name": "web"}}))[:2] == (409, "OverQuota")
    assert [g["name"] for g in alice("GET", SG).json()["security_groups"]] == ["default"]
