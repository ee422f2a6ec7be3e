"""The appliance config contract: schema errors, semantic rules, config_hash."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from astara.appliance.schema import (
    ApplianceConfig,
    FieldError,
    config_hash,
    validate_semantics,
)
from tests.unit.configs import (
    EXTERNAL_MAC,
    NET_A_MAC,
    NET_B_MAC,
    dhcp_representative,
    representative,
)

Doc = dict[str, Any]
Mutation = Callable[[Doc], None]
Loc = tuple[str | int, ...]


def _walk(doc: Any, path: Loc) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def set_at(path: Loc, value: Any) -> Mutation:
    def mutate(doc: Doc) -> None:
        _walk(doc, path[:-1])[path[-1]] = value

    return mutate


def append_at(path: Loc, value: Any) -> Mutation:
    return lambda doc: _walk(doc, path).append(value)


def delete_at(path: Loc) -> Mutation:
    def mutate(doc: Doc) -> None:
        del _walk(doc, path[:-1])[path[-1]]

    return mutate


def each(*mutations: Mutation) -> Mutation:
    def mutate(doc: Doc) -> None:
        for mutation in mutations:
            mutation(doc)

    return mutate


def mutated(mutation: Mutation) -> ApplianceConfig:
    doc = representative()
    mutation(doc)
    return ApplianceConfig.model_validate(doc)


def new_interface(mac: str, network_id: str, role: str = "internal", **extra: Any) -> Doc:
    return {"mac": mac, "network_id": network_id, "role": role, **extra}


# Without an external interface, SNAT, floating IPs and the default routes go too.
no_external = each(
    delete_at(("interfaces", 0)),
    set_at(("snat", "enabled"), False),
    set_at(("floating_ips",), []),
    set_at(("routes",), []),
)

# --- semantic rules ----------------------------------------------------------------------


def test_the_baseline_is_valid() -> None:
    config = ApplianceConfig.model_validate(representative())
    assert validate_semantics(config) == []
    assert validate_semantics(config, {"ext-net", "net-a", "net-b"}) == []


@dataclass(frozen=True)
class Rule:
    mutation: Mutation
    errors: list[tuple[Loc, str]]
    known_networks: set[str] | None = field(default=None)
    network_mtus: dict[str, int] | None = field(default=None)


DUP = "value_error.duplicate"
VALUE = "value_error"

RULES: dict[str, Rule] = {
    # interfaces
    "link-local interface address": Rule(
        append_at(("interfaces", 2, "addresses"), "fe80::1/64"),
        [(("interfaces", 2, "addresses", 1), VALUE)],
    ),
    "interface MTU above its network's": Rule(
        set_at(("interfaces", 2, "mtu"), 9000),
        [(("interfaces", 2, "mtu"), VALUE)],
        network_mtus={"net-b": 1500},
    ),
    "route to a connected subnet": Rule(
        append_at(("routes",), {"destination": "10.0.2.0/24", "nexthop": "10.0.1.254"}),
        [(("routes", 2, "destination"), VALUE)],
    ),
    "route via the management network": Rule(
        each(
            append_at(
                ("interfaces",),
                new_interface(
                    "fa:16:3e:00:09:01", "mgmt", "management", addresses=["192.168.99.1/24"]
                ),
            ),
            append_at(("routes",), {"destination": "172.30.0.0/16", "nexthop": "192.168.99.7"}),
        ),
        [(("routes", 2, "nexthop"), VALUE)],
    ),
    "duplicate interface MAC": Rule(
        append_at(("interfaces",), new_interface(NET_A_MAC, "net-c")),
        [(("interfaces", 3, "mac"), DUP)],
    ),
    "unknown network": Rule(
        lambda doc: None,
        [(("interfaces", 2, "network_id"), "value_error.unknown_network")],
        known_networks={"ext-net", "net-a"},
    ),
    "two external interfaces": Rule(
        append_at(("interfaces",), new_interface("fa:16:3e:00:03:01", "net-c", "external")),
        [(("interfaces", 3, "role"), VALUE)],
    ),
    "duplicate address on one interface": Rule(
        append_at(("interfaces", 1, "addresses"), "10.0.1.1/24"),
        [(("interfaces", 1, "addresses", 2), DUP)],
    ),
    "same address on two interfaces": Rule(
        append_at(
            ("interfaces",),
            new_interface("fa:16:3e:00:03:01", "net-c", addresses=["10.0.1.1/24"]),
        ),
        [
            (("interfaces", 3, "addresses", 0), DUP),
            (("interfaces", 3, "addresses", 0), "value_error.overlap"),
        ],
    ),
    "network address": Rule(
        set_at(("interfaces", 2, "addresses"), ["10.0.2.0/24"]),
        [(("interfaces", 2, "addresses", 0), VALUE)],
    ),
    "broadcast address": Rule(
        set_at(("interfaces", 2, "addresses"), ["10.0.2.255/24"]),
        [(("interfaces", 2, "addresses", 0), VALUE)],
    ),
    "multicast address": Rule(
        append_at(
            ("interfaces",),
            new_interface("fa:16:3e:00:03:01", "net-c", addresses=["224.0.0.5/24"]),
        ),
        [(("interfaces", 3, "addresses", 0), VALUE)],
    ),
    "loopback address": Rule(
        append_at(
            ("interfaces",),
            new_interface("fa:16:3e:00:03:01", "net-c", addresses=["127.0.0.5/8"]),
        ),
        [(("interfaces", 3, "addresses", 0), VALUE)],
    ),
    "unspecified address": Rule(
        append_at(
            ("interfaces",),
            new_interface("fa:16:3e:00:03:01", "net-c", addresses=["::/128"]),
        ),
        [(("interfaces", 3, "addresses", 0), VALUE)],
    ),
    "IPv4 prefixes overlap across interfaces": Rule(
        append_at(("interfaces", 2, "addresses"), "10.0.1.129/25"),
        [(("interfaces", 2, "addresses", 1), "value_error.overlap")],
    ),
    "IPv6 prefixes overlap across interfaces": Rule(
        append_at(("interfaces", 2, "addresses"), "2001:db8::1/32"),
        [
            (("interfaces", 2, "addresses", 1), "value_error.overlap"),
            (("interfaces", 2, "addresses", 1), "value_error.overlap"),
        ],
    ),
    # subnets
    "duplicate subnet": Rule(
        append_at(("subnets",), {"cidr": "10.0.1.0/24", "interface_mac": NET_A_MAC}),
        [(("subnets", 3, "cidr"), DUP)],
    ),
    "subnet on no interface": Rule(
        set_at(("subnets", 1, "interface_mac"), "fa:16:3e:99:99:99"),
        [(("subnets", 1, "interface_mac"), VALUE)],
    ),
    "interface has no address in the subnet": Rule(
        append_at(("subnets",), {"cidr": "10.0.9.0/24", "interface_mac": NET_B_MAC}),
        [(("subnets", 3, "cidr"), VALUE)],
    ),
    "interface address without the subnet's prefix length": Rule(
        set_at(("interfaces", 2, "addresses"), ["10.0.2.1/32"]),
        # Without the /24, 10.0.2.0/24 is connected nowhere: its floating IP has no home.
        [(("subnets", 1, "cidr"), VALUE), (("floating_ips", 1, "fixed_ip"), VALUE)],
    ),
    "gateway of the other IP version": Rule(
        set_at(("subnets", 0, "gateway_ip"), "2001:db8:2::1"),
        [(("subnets", 0, "gateway_ip"), VALUE)],
    ),
    "host route mixes IP versions": Rule(
        set_at(("subnets", 0, "host_routes", 0, "destination"), "2001:db8:9::/48"),
        [(("subnets", 0, "host_routes", 0), VALUE)],
    ),
    "DNS server of the other IP version": Rule(
        append_at(("subnets", 0, "dns_nameservers"), "2001:db8::53"),
        [(("subnets", 0, "dns_nameservers", 2), VALUE)],
    ),
    "DHCP on the external interface": Rule(
        append_at(
            ("subnets",),
            {"cidr": "203.0.113.0/24", "interface_mac": EXTERNAL_MAC, "enable_dhcp": True},
        ),
        [(("subnets", 3), VALUE)],
    ),
    "router advertisements on the external interface": Rule(
        append_at(
            ("subnets",),
            {"cidr": "2001:db8:ff::/64", "interface_mac": EXTERNAL_MAC, "ipv6_ra_mode": "slaac"},
        ),
        [(("subnets", 3), VALUE)],
    ),
    "DHCP on a SLAAC subnet": Rule(
        set_at(("subnets", 2, "enable_dhcp"), True),
        [(("subnets", 2, "enable_dhcp"), VALUE)],
    ),
    "DHCPv6 without a DHCPv6 mode": Rule(
        each(
            set_at(("subnets", 2, "ipv6_ra_mode"), None),
            set_at(("subnets", 2, "enable_dhcp"), True),
        ),
        [(("subnets", 2, "enable_dhcp"), VALUE)],
    ),
    "DHCPv6 stateful mode without enable_dhcp": Rule(
        set_at(("subnets", 2, "ipv6_ra_mode"), "dhcpv6-stateful"),
        [(("subnets", 2, "enable_dhcp"), VALUE)],
    ),
    "DHCPv6 stateless mode without enable_dhcp": Rule(
        set_at(("subnets", 2, "ipv6_ra_mode"), "dhcpv6-stateless"),
        [(("subnets", 2, "enable_dhcp"), VALUE)],
    ),
    "DHCPv6 stateless needs a /64": Rule(
        each(
            set_at(("interfaces", 1, "addresses", 1), "2001:db8:1::1/80"),
            set_at(("subnets", 2, "cidr"), "2001:db8:1::/80"),
            set_at(("subnets", 2, "ipv6_ra_mode"), "dhcpv6-stateless"),
            set_at(("subnets", 2, "enable_dhcp"), True),
        ),
        [(("subnets", 2, "cidr"), VALUE)],
    ),
    "DHCPv6 stateful in a prefix shorter than dnsmasq serves": Rule(
        each(
            set_at(("interfaces", 1, "addresses", 1), "2001:db8:1::1/56"),
            set_at(("subnets", 2, "cidr"), "2001:db8:1::/56"),
            set_at(("subnets", 2, "ipv6_ra_mode"), "dhcpv6-stateful"),
            set_at(("subnets", 2, "enable_dhcp"), True),
        ),
        [(("subnets", 2, "cidr"), VALUE)],
    ),
    "DHCPv6 mode on an IPv4 subnet": Rule(
        set_at(("subnets", 1, "ipv6_ra_mode"), "dhcpv6-stateful"),
        [(("subnets", 1, "ipv6_ra_mode"), VALUE)],
    ),
    "SLAAC on an IPv4 subnet": Rule(
        set_at(("subnets", 1, "ipv6_ra_mode"), "slaac"),
        [(("subnets", 1, "ipv6_ra_mode"), VALUE)],
    ),
    "SLAAC needs a /64": Rule(
        set_at(("subnets", 2, "cidr"), "2001:db8:1::/56"),
        # The interface's /64 address is not an address of the /56 either.
        [(("subnets", 2, "cidr"), VALUE), (("subnets", 2, "cidr"), VALUE)],
    ),
    # dhcp_hosts
    "duplicate DHCP host MAC for IPv6": Rule(
        each(
            set_at(("subnets", 2, "ipv6_ra_mode"), "dhcpv6-stateful"),
            set_at(("subnets", 2, "enable_dhcp"), True),
            append_at(("dhcp_hosts",), {"mac": "fa:16:3e:10:00:05", "ip_address": "2001:db8:1::5"}),
            append_at(("dhcp_hosts",), {"mac": "fa:16:3e:10:00:05", "ip_address": "2001:db8:1::6"}),
        ),
        [(("dhcp_hosts", 4, "mac"), DUP)],
    ),
    "duplicate DHCP host MAC": Rule(
        append_at(("dhcp_hosts",), {"mac": "fa:16:3e:10:00:05", "ip_address": "10.0.1.9"}),
        [(("dhcp_hosts", 3, "mac"), DUP)],
    ),
    "duplicate DHCP host address": Rule(
        append_at(("dhcp_hosts",), {"mac": "fa:16:3e:10:00:09", "ip_address": "10.0.1.5"}),
        [(("dhcp_hosts", 3, "ip_address"), DUP)],
    ),
    "DHCP host in no subnet": Rule(
        append_at(("dhcp_hosts",), {"mac": "fa:16:3e:10:00:09", "ip_address": "10.0.9.9"}),
        [(("dhcp_hosts", 3, "ip_address"), VALUE)],
    ),
    "DHCP host in a subnet without DHCP": Rule(
        set_at(("subnets", 1, "enable_dhcp"), False),
        [(("dhcp_hosts", 2, "ip_address"), VALUE)],
    ),
    "DHCP host in a SLAAC subnet": Rule(
        append_at(("dhcp_hosts",), {"mac": "fa:16:3e:10:00:09", "ip_address": "2001:db8:1::9"}),
        [(("dhcp_hosts", 3, "ip_address"), VALUE)],
    ),
    # routes
    "route mixes IP versions": Rule(
        append_at(("routes",), {"destination": "172.20.0.0/16", "nexthop": "2001:db8:ff::1"}),
        [(("routes", 2), VALUE)],
    ),
    "duplicate route": Rule(
        append_at(("routes",), {"destination": "0.0.0.0/0", "nexthop": "10.0.1.254"}),
        [(("routes", 2, "destination"), DUP)],
    ),
    "route nexthop on no connected network": Rule(
        append_at(("routes",), {"destination": "172.20.0.0/16", "nexthop": "192.0.2.1"}),
        [(("routes", 2, "nexthop"), VALUE)],
    ),
    "route nexthop is the appliance's own address": Rule(
        append_at(("routes",), {"destination": "172.20.0.0/16", "nexthop": "10.0.1.1"}),
        [(("routes", 2, "nexthop"), VALUE)],
    ),
    "IPv6 route nexthop is the appliance's own address": Rule(
        set_at(("routes", 1, "nexthop"), "2001:db8:ff::2"),
        [(("routes", 1, "nexthop"), VALUE)],
    ),
    # snat
    "SNAT without an external interface": Rule(
        each(no_external, set_at(("snat", "enabled"), True)),
        [(("snat", "enabled"), VALUE)],
    ),
    "SNAT without an external IPv4 address": Rule(
        each(
            set_at(("interfaces", 0, "addresses"), ["2001:db8:ff::2/64"]),
            set_at(("routes",), [{"destination": "::/0", "nexthop": "2001:db8:ff::1"}]),
        ),
        [(("snat", "enabled"), VALUE)],
    ),
    "SNAT address not on the external interface": Rule(
        set_at(("snat", "address"), "203.0.113.99"),
        [(("snat", "address"), VALUE)],
    ),
    "SNAT address on an internal interface": Rule(
        set_at(("snat", "address"), "10.0.1.1"),
        [(("snat", "address"), VALUE)],
    ),
    # floating_ips
    "floating IPs without an external interface": Rule(
        each(
            no_external,
            set_at(("floating_ips",), [{"floating_ip": "203.0.113.10", "fixed_ip": "10.0.1.5"}]),
        ),
        [(("floating_ips",), VALUE)],
    ),
    "duplicate floating IP": Rule(
        set_at(("floating_ips", 1, "floating_ip"), "203.0.113.10"),
        [(("floating_ips", 1, "floating_ip"), DUP)],
    ),
    "fixed IP with two floating IPs": Rule(
        set_at(("floating_ips", 1, "fixed_ip"), "10.0.1.5"),
        [(("floating_ips", 1, "fixed_ip"), DUP)],
    ),
    "floating IP is the appliance's own address": Rule(
        set_at(("floating_ips", 0, "floating_ip"), "203.0.113.2"),
        [(("floating_ips", 0, "floating_ip"), VALUE)],
    ),
    "floating IP inside an internal subnet": Rule(
        set_at(("floating_ips", 0, "floating_ip"), "10.0.2.50"),
        [(("floating_ips", 0, "floating_ip"), VALUE)],
    ),
    "fixed IP on the external network": Rule(
        set_at(("floating_ips", 0, "fixed_ip"), "203.0.113.50"),
        [(("floating_ips", 0, "fixed_ip"), VALUE)],
    ),
    "fixed IP in no connected network": Rule(
        set_at(("floating_ips", 1, "fixed_ip"), "192.0.2.7"),
        [(("floating_ips", 1, "fixed_ip"), VALUE)],
    ),
}


@pytest.mark.parametrize("case", list(RULES))
def test_each_semantic_rule_reports_the_field(case: str) -> None:
    rule = RULES[case]
    errors = validate_semantics(mutated(rule.mutation), rule.known_networks, rule.network_mtus)
    assert [(e.loc, e.type) for e in errors] == rule.errors, [e.msg for e in errors]
    assert all(e.msg for e in errors)


# Close to a rule's edge, and valid: the rules must not reach past it.
VALID_VARIANTS: dict[str, Mutation] = {
    "all networks known": lambda doc: None,
    "point-to-point /31 on the network address": append_at(
        ("interfaces",),
        new_interface("fa:16:3e:00:03:01", "net-c", addresses=["10.0.3.0/31"]),
    ),
    "gateway and host route next hop outside the subnet (Neutron hands them out)": each(
        set_at(("subnets", 0, "gateway_ip"), "10.0.2.1"),
        set_at(("subnets", 0, "host_routes", 0, "nexthop"), "10.0.2.254"),
    ),
    "host /32": append_at(
        ("interfaces",),
        new_interface("fa:16:3e:00:03:01", "net-c", addresses=["10.0.3.7/32"]),
    ),
    "the IPv6 subnet-router anycast address (Neutron's default IPv6 gateway)": append_at(
        ("interfaces", 2, "addresses"), "2001:db8:2::/64"
    ),
    "nested prefixes on one interface": append_at(("interfaces", 2, "addresses"), "10.0.2.130/25"),
    "a second interface on one network (dual stack: an IPv6 port beside the IPv4 one)": (
        append_at(
            ("interfaces",),
            new_interface("fa:16:3e:00:03:01", "net-a", addresses=["2001:db8:a::1/64"]),
        )
    ),
    "management interface": append_at(
        ("interfaces",),
        new_interface("fa:16:3e:00:03:01", "mgmt", "management", addresses=["192.0.2.10/24"]),
    ),
    "subnet without gateway or DHCP": append_at(
        ("subnets",), {"cidr": "2001:db8:ff::/64", "interface_mac": EXTERNAL_MAC}
    ),
    "DHCPv6 stateful, dual-stack hosts": each(
        set_at(("subnets", 2, "ipv6_ra_mode"), "dhcpv6-stateful"),
        set_at(("subnets", 2, "enable_dhcp"), True),
        append_at(("dhcp_hosts",), {"mac": "fa:16:3e:10:00:05", "ip_address": "2001:db8:1::5"}),
    ),
    "DHCPv6 stateful in a prefix longer than /64": each(
        set_at(("interfaces", 1, "addresses", 1), "2001:db8:1::1/112"),
        set_at(("subnets", 2, "cidr"), "2001:db8:1::/112"),
        set_at(("subnets", 2, "ipv6_ra_mode"), "dhcpv6-stateful"),
        set_at(("subnets", 2, "enable_dhcp"), True),
    ),
    "DHCPv6 stateless": each(
        set_at(("subnets", 2, "ipv6_ra_mode"), "dhcpv6-stateless"),
        set_at(("subnets", 2, "enable_dhcp"), True),
    ),
    "SNAT with an explicit external address": each(
        append_at(("interfaces", 0, "addresses"), "203.0.113.3/24"),
        set_at(("snat", "address"), "203.0.113.3"),
    ),
    "SNAT disabled": set_at(("snat", "enabled"), False),
    "no external interface and nothing needing one": no_external,
    "route via an internal nexthop": append_at(
        ("routes",), {"destination": "172.20.0.0/16", "nexthop": "10.0.2.254"}
    ),
    "floating IP outside the external subnet": set_at(
        ("floating_ips", 0, "floating_ip"), "198.51.100.10"
    ),
}


@pytest.mark.parametrize("case", list(VALID_VARIANTS))
def test_valid_variants_have_no_errors(case: str) -> None:
    config = mutated(VALID_VARIANTS[case])
    networks = {i.network_id for i in config.interfaces}
    assert validate_semantics(config, networks) == []


def test_every_broken_rule_is_reported_together() -> None:
    config = mutated(
        each(
            set_at(("subnets", 0, "gateway_ip"), "2001:db8:2::1"),
            set_at(("floating_ips", 1, "floating_ip"), "203.0.113.10"),
            set_at(("snat", "address"), "203.0.113.99"),
        )
    )
    locs = [e.loc for e in validate_semantics(config)]
    assert locs == [
        ("subnets", 0, "gateway_ip"),
        ("snat", "address"),
        ("floating_ips", 1, "floating_ip"),
    ]


# --- kind "dhcp": a network's DHCP server routes nothing -------------------------------


def test_the_dhcp_baseline_is_valid() -> None:
    config = ApplianceConfig.model_validate(dhcp_representative())
    assert config.kind == "dhcp" and not config.forwarding
    assert validate_semantics(config, {"net-a"}) == []


# Each: the mutation, where the kind rule reports it, and what else it breaks.
DHCP_RULES: dict[str, tuple[Mutation, Loc, set[Loc]]] = {
    "an external interface": (
        set_at(("interfaces", 0, "role"), "external"),
        ("interfaces", 0, "role"),
        {("subnets", 0)},  # DHCP is served on internal interfaces only
    ),
    "a route": (
        set_at(("routes",), [{"destination": "172.16.0.0/16", "nexthop": "10.0.1.254"}]),
        ("routes",),
        set(),
    ),
    "SNAT": (set_at(("snat",), {"enabled": True}), ("snat", "enabled"), {("snat", "enabled")}),
    "a floating IP": (
        set_at(("floating_ips",), [{"floating_ip": "203.0.113.10", "fixed_ip": "10.0.1.5"}]),
        ("floating_ips",),
        {("floating_ips",)},
    ),
    "forwarding": (set_at(("forwarding",), True), ("forwarding",), set()),
    "forwarding by default": (delete_at(("forwarding",)), ("forwarding",), set()),
}


@pytest.mark.parametrize("case", list(DHCP_RULES))
def test_a_dhcp_appliance_that_would_route_is_refused(case: str) -> None:
    mutation, loc, also = DHCP_RULES[case]
    doc = dhcp_representative()
    mutation(doc)
    errors = validate_semantics(ApplianceConfig.model_validate(doc))
    assert [e.loc for e in errors if "routes nothing" in e.msg] == [loc], [e.msg for e in errors]
    assert {e.loc for e in errors if "routes nothing" not in e.msg} <= also, errors
    # The same document as a router is no DHCP appliance: the rule does not apply.
    doc["kind"] = "router"
    assert not any(
        "routes nothing" in e.msg for e in validate_semantics(ApplianceConfig.model_validate(doc))
    )


def test_a_router_may_forward_nothing() -> None:
    """`forwarding` false is valid for a router (one set down keeps serving DHCP)."""
    doc = representative()
    doc["forwarding"] = False
    assert validate_semantics(ApplianceConfig.model_validate(doc)) == []


def test_forwarding_is_part_of_the_hash() -> None:
    doc = representative()
    doc["forwarding"] = False
    assert config_hash(ApplianceConfig.model_validate(doc)) != config_hash(
        ApplianceConfig.model_validate(representative())
    )


def test_field_error_has_the_fastapi_shape() -> None:
    error = FieldError(("interfaces", 0, "mac"), "duplicate MAC", "value_error.duplicate")
    assert error.as_dict() == {
        "loc": ["body", "interfaces", 0, "mac"],
        "msg": "duplicate MAC",
        "type": "value_error.duplicate",
    }


# --- schema errors -----------------------------------------------------------------------


SCHEMA_ERRORS: dict[str, tuple[Mutation, Loc, str]] = {
    "extra top-level field": (set_at(("colour",), "blue"), ("colour",), "extra_forbidden"),
    "extra interface field": (
        set_at(("interfaces", 0, "ip"), "203.0.113.2"),
        ("interfaces", 0, "ip"),
        "extra_forbidden",
    ),
    "extra SNAT field (typo)": (
        set_at(("snat", "enable"), True),
        ("snat", "enable"),
        "extra_forbidden",
    ),
    "schema version 2": (set_at(("schema_version",), 2), ("schema_version",), "literal_error"),
    "schema version as text": (
        set_at(("schema_version",), "1"),
        ("schema_version",),
        "literal_error",
    ),
    "unknown kind": (set_at(("kind",), "firewall"), ("kind",), "literal_error"),
    "no interfaces": (set_at(("interfaces",), []), ("interfaces",), "too_short"),
    "MAC with five octets": (
        set_at(("interfaces", 0, "mac"), "fa:16:3e:00:00"),
        ("interfaces", 0, "mac"),
        "value_error",
    ),
    "MAC with dashes": (
        set_at(("interfaces", 0, "mac"), "fa-16-3e-00-00-01"),
        ("interfaces", 0, "mac"),
        "value_error",
    ),
    "MAC with a non-hex digit": (
        set_at(("interfaces", 0, "mac"), "fa:16:3e:00:00:0g"),
        ("interfaces", 0, "mac"),
        "value_error",
    ),
    "MAC with a trailing newline": (
        set_at(("interfaces", 0, "mac"), "fa:16:3e:00:00:01\n"),
        ("interfaces", 0, "mac"),
        "value_error",
    ),
    "multicast MAC": (
        set_at(("interfaces", 0, "mac"), "01:00:5e:00:00:01"),
        ("interfaces", 0, "mac"),
        "value_error",
    ),
    "broadcast MAC": (
        set_at(("interfaces", 0, "mac"), "ff:ff:ff:ff:ff:ff"),
        ("interfaces", 0, "mac"),
        "value_error",
    ),
    "all-zero MAC": (
        set_at(("interfaces", 0, "mac"), "00:00:00:00:00:00"),
        ("interfaces", 0, "mac"),
        "value_error",
    ),
    "multicast DHCP host MAC": (
        set_at(("dhcp_hosts", 0, "mac"), "33:33:00:00:00:01"),
        ("dhcp_hosts", 0, "mac"),
        "value_error",
    ),
    "network id with a space": (
        set_at(("interfaces", 0, "network_id"), "ext net"),
        ("interfaces", 0, "network_id"),
        "value_error",
    ),
    "network id with a trailing newline": (
        set_at(("interfaces", 0, "network_id"), "ext-net\n"),
        ("interfaces", 0, "network_id"),
        "value_error",
    ),
    "network id of 65 characters": (
        set_at(("interfaces", 0, "network_id"), "n" * 65),
        ("interfaces", 0, "network_id"),
        "value_error",
    ),
    "unknown role": (
        set_at(("interfaces", 0, "role"), "transit"),
        ("interfaces", 0, "role"),
        "enum",
    ),
    "MTU below IPv6's minimum": (
        set_at(("interfaces", 0, "mtu"), 1279),
        ("interfaces", 0, "mtu"),
        "greater_than_equal",
    ),
    "address that is not one": (
        append_at(("interfaces", 0, "addresses"), "203.0.113.300/24"),
        ("interfaces", 0, "addresses", 2),
        "ip_v4_interface",
    ),
    "subnet with host bits": (
        set_at(("subnets", 0, "cidr"), "10.0.1.1/24"),
        ("subnets", 0, "cidr"),
        "ip_v4_network",
    ),
    "lease shorter than two minutes": (
        set_at(("subnets", 0, "lease_time_s"), 119),
        ("subnets", 0, "lease_time_s"),
        "greater_than_equal",
    ),
    "unknown RA mode": (
        set_at(("subnets", 2, "ipv6_ra_mode"), "dhcpv6"),
        ("subnets", 2, "ipv6_ra_mode"),
        "enum",
    ),
    "IPv6 floating IP": (
        set_at(("floating_ips", 0, "floating_ip"), "2001:db8:ff::10"),
        ("floating_ips", 0, "floating_ip"),
        "ip_v4_address",
    ),
    "IPv6 SNAT address": (
        set_at(("snat", "address"), "2001:db8:ff::2"),
        ("snat", "address"),
        "ip_v4_address",
    ),
    "hostname with a dot": (
        set_at(("dhcp_hosts", 0, "hostname"), "web.example"),
        ("dhcp_hosts", 0, "hostname"),
        "value_error",
    ),
    "hostname with a trailing newline": (
        set_at(("dhcp_hosts", 0, "hostname"), "web-1\n"),
        ("dhcp_hosts", 0, "hostname"),
        "value_error",
    ),
    "hostname ending in a hyphen": (
        set_at(("dhcp_hosts", 0, "hostname"), "web-"),
        ("dhcp_hosts", 0, "hostname"),
        "value_error",
    ),
}


@pytest.mark.parametrize("case", list(SCHEMA_ERRORS))
def test_schema_errors(case: str) -> None:
    mutation, loc, error_type = SCHEMA_ERRORS[case]
    doc = representative()
    mutation(doc)
    with pytest.raises(ValidationError) as raised:
        ApplianceConfig.model_validate(doc)
    # Union-typed fields append the member's name to the location; the field's own
    # location comes first.
    assert any(
        e["loc"][: len(loc)] == loc and e["type"] == error_type for e in raised.value.errors()
    ), raised.value.errors()


# dnsmasq reads these dhcp-host fields as a lease time ("123", "10m", "infinite")
# or as "never answer this host" ("ignore"), so they cannot be hostnames.
@pytest.mark.parametrize(
    "hostname", ["123", "7", "10m", "12h", "2D", "1w", "30s", "infinite", "ignore"]
)
def test_hostnames_dnsmasq_would_misread_are_refused(hostname: str) -> None:
    doc = representative()
    doc["dhcp_hosts"][0]["hostname"] = hostname
    with pytest.raises(ValidationError, match="dnsmasq"):
        ApplianceConfig.model_validate(doc)


@pytest.mark.parametrize("hostname", ["web-1", "1web", "m", "h1", "10-m", "a" * 63])
def test_ordinary_hostnames_are_accepted(hostname: str) -> None:
    doc = representative()
    doc["dhcp_hosts"][0]["hostname"] = hostname
    assert ApplianceConfig.model_validate(doc).dhcp_hosts[0].hostname == hostname


def test_macs_are_normalised_to_lower_case() -> None:
    doc = representative()
    doc["interfaces"][0]["mac"] = EXTERNAL_MAC.upper()
    config = ApplianceConfig.model_validate(doc)
    assert config.interfaces[0].mac == EXTERNAL_MAC
    assert config.interface_by_mac(EXTERNAL_MAC) is config.interfaces[0]


def test_the_config_is_frozen() -> None:
    config = ApplianceConfig.model_validate(representative())
    with pytest.raises(ValidationError):
        config.kind = "router"


def test_the_config_round_trips_through_json() -> None:
    config = ApplianceConfig.model_validate(representative())
    assert ApplianceConfig.model_validate_json(config.model_dump_json()) == config


# --- config_hash -------------------------------------------------------------------------


def test_equal_configs_have_equal_hashes() -> None:
    first = ApplianceConfig.model_validate(representative())
    second = ApplianceConfig.model_validate(representative())
    assert first is not second
    assert config_hash(first) == config_hash(second)
    assert len(config_hash(first)) == 64
    assert int(config_hash(first), 16) >= 0


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@settings(deadline=None, max_examples=50)
@given(rng=st.randoms(use_true_random=False))
def test_hash_is_independent_of_key_order(rng: random.Random) -> None:
    baseline = config_hash(ApplianceConfig.model_validate(representative()))
    shuffled = _shuffled(representative(), rng)
    assert config_hash(ApplianceConfig.model_validate(shuffled)) == baseline


# Same content, other spelling: the hash is of the content.
SAME_CONTENT: dict[str, Mutation] = {
    "upper-case MAC": set_at(("interfaces", 0, "mac"), EXTERNAL_MAC.upper()),
    "long-form IPv6 address": set_at(
        ("interfaces", 1, "addresses", 1), "2001:0db8:0001:0000:0000:0000:0000:0001/64"
    ),
    "explicit defaults": each(
        set_at(("interfaces", 0, "mtu"), None),
        set_at(("subnets", 0, "lease_time_s"), 86400),
        set_at(("snat", "address"), None),
    ),
    "omitted defaults": each(delete_at(("schema_version",)), delete_at(("kind",))),
}


@pytest.mark.parametrize("case", list(SAME_CONTENT))
def test_hash_is_of_content_not_spelling(case: str) -> None:
    baseline = config_hash(ApplianceConfig.model_validate(representative()))
    assert config_hash(mutated(SAME_CONTENT[case])) == baseline


CHANGES: dict[str, Mutation] = {
    "interface MAC": set_at(("interfaces", 2, "mac"), "fa:16:3e:00:02:02"),
    "interface network": set_at(("interfaces", 2, "network_id"), "net-c"),
    "interface role": set_at(("interfaces", 2, "role"), "management"),
    "interface address": set_at(("interfaces", 2, "addresses", 0), "10.0.2.2/24"),
    "interface prefix length": set_at(("interfaces", 2, "addresses", 0), "10.0.2.1/25"),
    "interface MTU": set_at(("interfaces", 2, "mtu"), 1500),
    "address order": set_at(("interfaces", 1, "addresses"), ["2001:db8:1::1/64", "10.0.1.1/24"]),
    "subnet gateway": set_at(("subnets", 0, "gateway_ip"), "10.0.1.254"),
    "subnet DHCP": set_at(("subnets", 0, "enable_dhcp"), False),
    "subnet DNS server": set_at(("subnets", 0, "dns_nameservers", 1), "192.0.2.55"),
    "subnet host route": set_at(("subnets", 0, "host_routes"), []),
    "subnet lease time": set_at(("subnets", 1, "lease_time_s"), 3601),
    "subnet RA mode": set_at(("subnets", 2, "ipv6_ra_mode"), None),
    "DHCP host hostname": set_at(("dhcp_hosts", 1, "hostname"), "web-2"),
    "DHCP host address": set_at(("dhcp_hosts", 1, "ip_address"), "10.0.1.7"),
    "one more DHCP host": append_at(
        ("dhcp_hosts",), {"mac": "fa:16:3e:10:00:09", "ip_address": "10.0.1.9"}
    ),
    "route nexthop": set_at(("routes", 0, "nexthop"), "203.0.113.254"),
    "SNAT toggled": set_at(("snat", "enabled"), False),
    "SNAT address": set_at(("snat", "address"), "203.0.113.2"),
    "floating IP": set_at(("floating_ips", 0, "floating_ip"), "203.0.113.12"),
    "fixed IP": set_at(("floating_ips", 0, "fixed_ip"), "10.0.1.6"),
    "floating IP removed": delete_at(("floating_ips", 1)),
}


def test_hash_changes_with_any_change() -> None:
    baseline = config_hash(ApplianceConfig.model_validate(representative()))
    hashes = {case: config_hash(mutated(mutation)) for case, mutation in CHANGES.items()}
    assert baseline not in hashes.values(), [c for c, h in hashes.items() if h == baseline]
    # and no two different changes collide
    assert len(set(hashes.values())) == len(hashes)
