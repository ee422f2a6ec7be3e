"""NftRuleset.delta: a change of set elements alone is applied as element
operations, and those operations turn the previous ruleset into the new one."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astara.appliance.render.nftables import (
    TABLE_FAMILY,
    TABLE_NAME,
    NftRuleset,
    render_nftables,
)
from astara.appliance.schema import ApplianceConfig, validate_semantics
from tests.unit.configs import representative
from tests.unit.validators import nft_ok, nft_table_json, scratch_netns

Doc = dict[str, Any]
FloatingIps = list[tuple[str, str]]

OPERATION = re.compile(
    rf"^(delete|add) element {TABLE_FAMILY} {TABLE_NAME} ([a-z0-9_]+) \{{ (.+) \}}$"
)
INTERVAL_SETS = {"internal_v4"}


def parse_delta(delta: str) -> list[tuple[str, str, list[str]]]:
    """(operation, set name, elements) for each line; every line must parse."""
    operations = []
    for line in delta.splitlines():
        match = OPERATION.match(line)
        assert match, f"not an element operation: {line!r}"
        operations.append((match[1], match[2], match[3].split(", ")))
    return operations


def apply_delta(elements: dict[str, set[str]], delta: str) -> dict[str, set[str]]:
    """What the kernel would hold after `nft -f delta`, refusing what it refuses:
    deleting an element that is absent, adding a map key that is present, or
    an interval that overlaps one present."""
    state = {name: set(values) for name, values in elements.items()}
    for operation, name, values in parse_delta(delta):
        assert name in state, f"no set {name}"
        for value in values:
            if operation == "delete":
                assert value in state[name], f"delete of absent {value} from {name}"
                state[name].remove(value)
            elif name in INTERVAL_SETS:
                network = ipaddress.ip_network(value)
                clash = [v for v in state[name] if ipaddress.ip_network(v).overlaps(network)]
                assert not clash, f"{value} overlaps {clash} in {name}"
                state[name].add(value)
            else:
                key = value.split(" : ")[0]
                clash = [v for v in state[name] if v.split(" : ")[0] == key]
                assert not clash, f"{name} already maps {key}: {clash}"
                state[name].add(value)
    return state


def elements_of(ruleset: NftRuleset) -> dict[str, set[str]]:
    return {s.name: set(s.elements) for s in ruleset.sets}


def config_with(floating_ips: FloatingIps, mutate: Callable[[Doc], None] | None = None) -> Doc:
    doc = representative()
    doc["floating_ips"] = [{"floating_ip": f, "fixed_ip": x} for f, x in floating_ips]
    if mutate is not None:
        mutate(doc)
    return doc


def ruleset_of(doc: Doc) -> NftRuleset:
    return render_nftables(ApplianceConfig.model_validate(doc))


# Small pools, so that previous and new lists share addresses often.
FLOATING = st.integers(16, 40).map(lambda n: f"203.0.113.{n}")
FIXED = st.sampled_from(["10.0.1", "10.0.2"]).flatmap(
    lambda net: st.integers(2, 20).map(lambda n: f"{net}.{n}")
)
FLOATING_IP_LISTS = st.lists(
    st.tuples(FLOATING, FIXED), max_size=12, unique_by=(lambda p: p[0], lambda p: p[1])
)


@settings(deadline=None, max_examples=300)
@given(previous=FLOATING_IP_LISTS, new=FLOATING_IP_LISTS)
def test_delta_turns_previous_floating_ips_into_new(
    previous: FloatingIps, new: FloatingIps
) -> None:
    previous_doc, new_doc = config_with(previous), config_with(new)
    # The strategy stays inside what the API accepts.
    assert validate_semantics(ApplianceConfig.model_validate(new_doc)) == []
    old_ruleset, new_ruleset = ruleset_of(previous_doc), ruleset_of(new_doc)

    delta = new_ruleset.delta(old_ruleset)

    assert delta is not None
    assert apply_delta(elements_of(old_ruleset), delta) == elements_of(new_ruleset)
    if sorted(previous) == sorted(new):
        assert delta == ""


@settings(deadline=None)
@given(floating_ips=FLOATING_IP_LISTS)
def test_delta_of_a_ruleset_with_itself_is_empty(floating_ips: FloatingIps) -> None:
    ruleset = ruleset_of(config_with(floating_ips))
    assert ruleset.delta(ruleset) == ""


# Prefixes on the internal interface of net-b, some nested, some adjacent.
INTERNAL_ADDRESSES = st.lists(
    st.sampled_from(
        ["10.0.2.1/24", "10.0.2.130/25", "10.0.3.1/24", "10.0.4.1/22", "10.0.6.1/24", "10.0.9.1/24"]
    ),
    unique=True,
)


@settings(deadline=None, max_examples=200)
@given(
    previous=FLOATING_IP_LISTS,
    new=FLOATING_IP_LISTS,
    previous_internal=INTERNAL_ADDRESSES,
    new_internal=INTERNAL_ADDRESSES,
)
def test_delta_follows_internal_prefix_changes(
    previous: FloatingIps,
    new: FloatingIps,
    previous_internal: list[str],
    new_internal: list[str],
) -> None:
    def internal(addresses: list[str]) -> Callable[[Doc], None]:
        return lambda doc: doc["interfaces"][2].update(addresses=addresses)

    old_ruleset = ruleset_of(config_with(previous, internal(previous_internal)))
    new_ruleset = ruleset_of(config_with(new, internal(new_internal)))

    delta = new_ruleset.delta(old_ruleset)

    assert delta is not None
    assert apply_delta(elements_of(old_ruleset), delta) == elements_of(new_ruleset)


def _without_external(doc: Doc) -> None:
    del doc["interfaces"][0]
    doc["snat"]["enabled"] = False
    doc["floating_ips"] = []
    doc["routes"] = []


STRUCTURE_CHANGES: dict[str, Callable[[Doc], None]] = {
    "SNAT disabled": lambda doc: doc["snat"].update(enabled=False),
    "SNAT address chosen": lambda doc: doc["snat"].update(address="203.0.113.3"),
    "external address changed": lambda doc: doc["interfaces"][0].update(
        addresses=["203.0.113.4/24"]
    ),
    "external interface replaced": lambda doc: doc["interfaces"][0].update(mac="fa:16:3e:00:00:02"),
    "external interface removed": _without_external,
}


@settings(deadline=None, max_examples=50)
@given(
    previous=FLOATING_IP_LISTS,
    new=FLOATING_IP_LISTS,
    change=st.sampled_from(sorted(STRUCTURE_CHANGES)),
    forward=st.booleans(),
)
def test_no_delta_when_the_structure_differs(
    previous: FloatingIps, new: FloatingIps, change: str, forward: bool
) -> None:
    plain = ruleset_of(config_with(previous))
    changed = ruleset_of(config_with(new, STRUCTURE_CHANGES[change]))
    if forward:
        assert changed.delta(plain) is None
    else:
        assert plain.delta(changed) is None


# --- the real kernel agrees --------------------------------------------------------------

F1, F2, F3 = "203.0.113.10", "203.0.113.11", "203.0.113.12"
X1, X2, X3 = "10.0.1.5", "10.0.2.7", "10.0.1.6"

KERNEL_CASES: dict[str, tuple[Doc, Doc]] = {
    "floating IP added": (config_with([(F1, X1)]), config_with([(F1, X1), (F2, X2)])),
    "floating IP removed": (config_with([(F1, X1), (F2, X2)]), config_with([(F2, X2)])),
    "floating IP moved to another fixed IP": (
        config_with([(F1, X1), (F2, X2)]),
        config_with([(F1, X3), (F2, X2)]),
    ),
    "fixed IP given another floating IP": (config_with([(F1, X1)]), config_with([(F3, X1)])),
    "two floating IPs swap fixed IPs": (
        config_with([(F1, X1), (F2, X2)]),
        config_with([(F1, X2), (F2, X1)]),
    ),
    "all floating IPs removed": (config_with([(F1, X1), (F2, X2), (F3, X3)]), config_with([])),
    "first floating IPs": (config_with([]), config_with([(F1, X1), (F2, X2)])),
    "internal prefixes merged and split": (
        config_with([(F1, X1)], lambda doc: doc["interfaces"][2].update(addresses=["10.0.2.1/24"])),
        config_with(
            [(F2, X1)],
            lambda doc: doc["interfaces"][2].update(addresses=["10.0.2.1/24", "10.0.3.1/24"]),
        ),
    ),
}


def normalised(objects: list[dict[str, Any]]) -> list[str]:
    """The table's objects without kernel handles, elements in a stable order."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "handle"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    result = []
    for obj in strip(objects):
        for body in obj.values():
            if isinstance(body, dict) and "elem" in body:
                body["elem"] = sorted(json.dumps(e, sort_keys=True) for e in body["elem"])
        result.append(json.dumps(obj, sort_keys=True))
    return result


@pytest.mark.root
@pytest.mark.parametrize("case", list(KERNEL_CASES))
def test_kernel_after_delta_equals_kernel_after_full_load(case: str, tmp_path: Path) -> None:
    previous_doc, new_doc = KERNEL_CASES[case]
    previous, new = ruleset_of(previous_doc), ruleset_of(new_doc)
    delta = new.delta(previous)
    assert delta, "the case must change elements only, and change some"
    files = {"previous.nft": previous.text(), "delta.nft": delta, "new.nft": new.text()}
    for name, text in files.items():
        (tmp_path / name).write_text(text)

    with scratch_netns() as by_delta, scratch_netns() as by_full_load:
        nft_ok(by_delta, "-f", str(tmp_path / "previous.nft"))
        before = nft_table_json(by_delta, TABLE_FAMILY, TABLE_NAME)
        nft_ok(by_delta, "-f", str(tmp_path / "delta.nft"))
        after_delta = nft_table_json(by_delta, TABLE_FAMILY, TABLE_NAME)

        nft_ok(by_full_load, "-f", str(tmp_path / "new.nft"))
        after_full_load = nft_table_json(by_full_load, TABLE_FAMILY, TABLE_NAME)

    assert normalised(before) != normalised(after_full_load)
    assert normalised(after_delta) == normalised(after_full_load)
