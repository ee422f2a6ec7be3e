"""Floating IPs changed alone, decided as a delta (`appliance.floating`), without root.

Whatever the delta decides must be what the full path would: the same
config, the same hash, the same ruleset text; and anything it cannot vouch
for cheaply goes to the full path (None).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import replace
from typing import Any

import pytest

from astara.appliance.actions import (
    Announce,
    ChangeFloatingElements,
    ChangeFloatingRoutes,
    ForgetConntrack,
    ruleset_digest,
)
from astara.appliance.floating import Change, Known, plan_change, read_body
from astara.appliance.render.nftables import render_nftables
from astara.appliance.schema import ApplianceConfig, config_hash
from astara.naming import appliance_interface
from tests.unit.configs import EXTERNAL_MAC, NETWORK_MTUS, representative

EXTERNAL = appliance_interface("external", EXTERNAL_MAC)


def known() -> Known:
    config = ApplianceConfig.model_validate(representative())
    return Known.of(config, config_hash(config))


def with_floating_ips(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    document = representative()
    document["floating_ips"] = [{"floating_ip": f, "fixed_ip": x} for f, x in pairs]
    return document


def planned(document: dict[str, Any], base: Known | None = None) -> Change | None:
    body = read_body(json.dumps(document).encode())
    assert body is not None
    return plan_change(
        base or known(),
        body,
        known_networks=set(NETWORK_MTUS),
        network_mtus=NETWORK_MTUS,
    )


IN_FORCE = [("203.0.113.10", "10.0.1.5"), ("203.0.113.11", "10.0.2.7")]


def assert_as_full_path(change: Change, document: dict[str, Any]) -> None:
    """The delta's config, hash and ruleset are the full path's."""
    parsed = ApplianceConfig.model_validate(document)
    assert change.config == parsed
    assert change.digest == config_hash(parsed)
    elements = [a for a in change.plan if isinstance(a, ChangeFloatingElements)]
    if elements:
        assert elements[0].ruleset == ruleset_digest(render_nftables(parsed).text())


def test_the_texts_kept_make_the_full_hash_and_rendering() -> None:
    config = ApplianceConfig.model_validate(representative())
    base = Known.of(config, config_hash(config))
    head, tail = base.hash_text
    canonical = head + ",".join(base.floating.hashed) + tail
    assert hashlib.sha256(canonical.encode()).hexdigest() == config_hash(config)
    elements = (base.floating.dnat, base.floating.snat)
    assert render_nftables(config, elements).text() == render_nftables(config).text()


def test_one_floating_ip_added_is_one_element_one_route_one_announcement() -> None:
    document = with_floating_ips([*IN_FORCE, ("203.0.113.12", "10.0.1.6")])
    change = planned(document)
    assert change is not None
    assert_as_full_path(change, document)
    elements, routes, announce = change.plan
    assert isinstance(elements, ChangeFloatingElements)
    assert elements.commands == (
        "add element inet astara floating_dnat { 203.0.113.12 : 10.0.1.6 }\n"
        "add element inet astara floating_snat { 10.0.1.6 : 203.0.113.12 }\n"
    )
    assert routes == ChangeFloatingRoutes(EXTERNAL, added=("203.0.113.12",), removed=())
    assert announce == Announce(EXTERNAL, EXTERNAL_MAC, (ipaddress.IPv4Address("203.0.113.12"),))


def test_a_removed_floating_ip_loses_its_elements_route_and_connections() -> None:
    document = with_floating_ips(IN_FORCE[1:])
    change = planned(document)
    assert change is not None
    assert_as_full_path(change, document)
    elements, routes, forget = change.plan
    assert isinstance(elements, ChangeFloatingElements)
    assert elements.commands.startswith("delete element inet astara floating_dnat")
    assert routes == ChangeFloatingRoutes(EXTERNAL, added=(), removed=("203.0.113.10",))
    assert forget == ForgetConntrack((ipaddress.IPv4Address("203.0.113.10"),))


def test_a_moved_floating_ip_keeps_its_route_and_forgets_its_connections() -> None:
    document = with_floating_ips([("203.0.113.10", "10.0.1.9"), IN_FORCE[1]])
    change = planned(document)
    assert change is not None
    assert_as_full_path(change, document)
    elements, routes, forget, announce = change.plan
    assert isinstance(elements, ChangeFloatingElements)
    assert elements.commands.index("delete element") < elements.commands.index("add element")
    assert routes == ChangeFloatingRoutes(EXTERNAL, added=(), removed=())
    assert isinstance(forget, ForgetConntrack) and isinstance(announce, Announce)


def test_the_same_floating_ips_in_another_order_change_only_the_hash() -> None:
    document = with_floating_ips(IN_FORCE[::-1])
    change = planned(document)
    assert change is not None and change.plan == ()
    assert_as_full_path(change, document)


def test_a_change_on_top_of_a_change_starts_from_the_first() -> None:
    first = planned(with_floating_ips([*IN_FORCE, ("203.0.113.12", "10.0.1.6")]))
    assert first is not None
    base = known().with_change(first)
    document = with_floating_ips([IN_FORCE[1], ("203.0.113.12", "10.0.1.6")])
    second = planned(document, base)
    assert second is not None
    assert_as_full_path(second, document)
    assert set(second.removed) == {IN_FORCE[0]} and not second.added


@pytest.mark.parametrize(
    ("why", "pairs"),
    [
        ("a floating IP twice", [*IN_FORCE, ("203.0.113.10", "10.0.1.6")]),
        ("a fixed IP twice", [*IN_FORCE, ("203.0.113.12", "10.0.1.5")]),
        ("the same pair twice", [*IN_FORCE, IN_FORCE[0]]),
        ("not an address", [*IN_FORCE, ("203.0.113.x", "10.0.1.6")]),
        ("not as the schema writes it", [*IN_FORCE, ("203.0.113.012", "10.0.1.6")]),
        ("a fixed IP in no internal subnet", [*IN_FORCE, ("203.0.113.12", "10.9.9.9")]),
        ("an address of the appliance", [*IN_FORCE, ("203.0.113.2", "10.0.1.6")]),
        ("an IPv6 address", [*IN_FORCE, ("2001:db8::5", "10.0.1.6")]),
    ],
)
def test_what_the_full_validation_would_refuse_goes_to_the_full_path(
    why: str, pairs: list[tuple[str, str]]
) -> None:
    assert planned(with_floating_ips(pairs)) is None, why


def test_any_other_change_goes_to_the_full_path() -> None:
    document = with_floating_ips([*IN_FORCE, ("203.0.113.12", "10.0.1.6")])
    document["routes"] = []
    assert planned(document) is None
    document = representative()
    document["snat"] = {"enabled": not document.get("snat", {}).get("enabled", False)}
    assert planned(document) is None
    assert read_body(b"[]") is None and read_body(b"{") is None
    assert read_body(b'{"floating_ips": {}}') is None
    for entry in (
        {"floating_ip": "203.0.113.12"},
        {"floating_ip": "203.0.113.12", "fixed_ip": "10.0.1.6", "extra": 1},
        {"floating_ip": "203.0.113.12", "fixed_ip": 167772422},
        ["203.0.113.12", "10.0.1.6"],
    ):
        document = representative()
        document["floating_ips"].append(entry)
        assert planned(document) is None, entry


def test_the_other_fields_may_be_spelled_as_the_schema_reads_them() -> None:
    """Defaults left out: the same config, so still a delta."""
    document = with_floating_ips([*IN_FORCE, ("203.0.113.12", "10.0.1.6")])
    parsed = ApplianceConfig.model_validate(document).model_dump(mode="json")
    explicit = {**parsed, "floating_ips": document["floating_ips"]}
    change = planned(explicit)
    assert change is not None
    assert_as_full_path(change, document)


def _through_body(document: dict[str, Any], indent: int | None) -> Known:
    """The representative config in force, applied from this body by a
    delta (so the body's bytes are known)."""
    base = known()
    body = read_body(json.dumps(document, indent=indent).encode(), base)
    assert body is not None and body.raw is not None
    change = plan_change(base, body, known_networks=set(NETWORK_MTUS), network_mtus=NETWORK_MTUS)
    assert change is not None
    return base.with_change(change)


MANY = [(f"203.0.113.{20 + i}", f"10.0.1.{20 + i}") for i in range(40)]


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize(
    ("why", "edit"),
    [
        ("one added at the end", lambda p: [*p, ("203.0.113.90", "10.0.2.90")]),
        ("one added at the start", lambda p: [("203.0.113.90", "10.0.2.90"), *p]),
        ("one added in the middle", lambda p: [*p[:7], ("203.0.113.90", "10.0.2.90"), *p[7:]]),
        ("the first removed", lambda p: p[1:]),
        ("the last removed", lambda p: p[:-1]),
        ("one in the middle removed", lambda p: p[:5] + p[6:]),
        ("one moved", lambda p: [*p[:3], (p[3][0], "10.0.2.93"), *p[4:]]),
        ("two swapped", lambda p: [*p[:2], p[3], p[2], *p[4:]]),
        ("all removed", lambda p: []),
        ("all replaced", lambda p: [("203.0.113.90", "10.0.2.90")]),
    ],
)
def test_a_body_read_by_its_difference_is_read_as_the_whole_would_be(
    why: str, edit: Any, indent: int | None
) -> None:
    document = with_floating_ips(MANY)
    by_bytes_base = _through_body(document, indent)
    by_json_base = replace(by_bytes_base, raw=None)
    changed = with_floating_ips(edit(MANY))
    body = json.dumps(changed, indent=indent).encode()
    by_bytes, by_json = read_body(body, by_bytes_base), read_body(body, by_json_base)
    assert by_bytes is not None and by_json is not None
    assert by_bytes.rest is None, why  # read by the difference alone
    assert by_bytes.entries == by_json.entries
    assert by_bytes.raw is not None and by_bytes.raw == by_json.raw
    kwargs: dict[str, Any] = {"known_networks": set(NETWORK_MTUS), "network_mtus": NETWORK_MTUS}
    from_bytes = plan_change(by_bytes_base, by_bytes, **kwargs)
    from_json = plan_change(by_json_base, by_json, **kwargs)
    assert from_bytes is not None and from_json is not None
    assert (from_bytes.config, from_bytes.digest, from_bytes.plan) == (
        from_json.config,
        from_json.digest,
        from_json.plan,
    )
    assert_as_full_path(from_bytes, changed)


@pytest.mark.parametrize("indent", [None, 2])
def test_the_body_of_a_full_apply_is_read_by_difference_too(indent: int | None) -> None:
    """The config in force applied in full from a body (parsed by the
    schema): the next body is read by its difference from that one, as
    after a delta, and plans the same change as when read whole."""
    body = json.dumps(with_floating_ips(MANY), indent=indent).encode()
    config = ApplianceConfig.model_validate_json(body)
    from_full = Known.of(config, config_hash(config), body)
    read_whole = Known.of(config, config_hash(config))
    changed = with_floating_ips([*MANY[:5], *MANY[6:], ("203.0.113.90", "10.0.2.90")])
    new_body = json.dumps(changed, indent=indent).encode()
    by_bytes, by_json = read_body(new_body, from_full), read_body(new_body, read_whole)
    assert by_bytes is not None and by_bytes.rest is None  # by the difference alone
    assert by_json is not None and by_json.rest is not None
    kwargs: dict[str, Any] = {"known_networks": set(NETWORK_MTUS), "network_mtus": NETWORK_MTUS}
    from_bytes = plan_change(from_full, by_bytes, **kwargs)
    assert from_bytes is not None
    assert from_bytes == plan_change(read_whole, by_json, **kwargs)
    assert_as_full_path(from_bytes, changed)


def test_a_difference_outside_the_floating_ips_is_read_whole() -> None:
    document = with_floating_ips(MANY)
    base = _through_body(document, None)
    changed = with_floating_ips([*MANY, ("203.0.113.90", "10.0.2.90")])
    changed["routes"] = changed["routes"][:1]
    body = read_body(json.dumps(changed).encode(), base)
    assert body is not None and body.rest is not None  # parsed whole
    assert (
        plan_change(base, body, known_networks=set(NETWORK_MTUS), network_mtus=NETWORK_MTUS) is None
    )
    broken = json.dumps(document).encode().replace(b'"}]', b'"},]')
    body = read_body(broken, base)
    assert body is None
