"""Names of the Linux objects Astara creates: short, stable, prefixed."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astara.naming import IFNAMSIZ, Names, appliance_interface

PREFIXES = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True)
IDS = st.text(min_size=1, max_size=64)
MACS = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
# What the kernel takes as an interface name, and more: no separators to quote.
LINK_NAME = re.compile(r"[a-z0-9]{1,15}")

LinkOf = Callable[[Names, str], str]
LINK_KINDS: dict[str, LinkOf] = {
    "bridge": lambda names, object_id: names.bridge(object_id),
    "port": lambda names, object_id: names.port_fabric_link(object_id),
    "vxlan": lambda names, object_id: names.vxlan(object_id),
    "appliance": lambda names, object_id: names.appliance_fabric_link(
        object_id, "fa:16:3e:00:00:01"
    ),
}


# Pinned: a deployed agent finds its links again by these names after an
# upgrade, so a change of the naming scheme must be deliberate.
@pytest.mark.parametrize(
    ("prefix", "kind", "object_id", "expected"),
    [
        ("ast", "bridge", "net-a", "astb1d509e1a7b4"),
        ("ast", "port", "port-1", "astp133c41404c7"),
        ("ast", "appliance", "r1", "asta7eee6a1a0bd"),
        ("ast", "vxlan", "net-a", "astv1d509e1a7b4"),
        ("t1x9zz", "bridge", "net-a", "t1x9zzb1d509e1a"),
        ("t1x9zz", "port", "port-1", "t1x9zzp133c4140"),
        ("t1x9zz", "appliance", "r1", "t1x9zza7eee6a1a"),
        ("a", "bridge", "net-a", "ab1d509e1a7b473"),
    ],
)
def test_link_names_are_stable(prefix: str, kind: str, object_id: str, expected: str) -> None:
    assert LINK_KINDS[kind](Names(prefix), object_id) == expected


def test_default_prefix_is_ast() -> None:
    assert Names().prefix == "ast"
    assert Names().bridge("net-a").startswith("astb")


@settings(deadline=None)
@given(prefix=PREFIXES, object_id=IDS, mac=MACS)
def test_every_link_name_fits_ifnamsiz_and_carries_the_prefix(
    prefix: str, object_id: str, mac: str
) -> None:
    names = Names(prefix)
    for name in (
        names.bridge(object_id),
        names.port_fabric_link(object_id),
        names.vxlan(object_id),
        names.appliance_fabric_link(object_id, mac),
    ):
        assert len(name) <= IFNAMSIZ
        assert name.startswith(prefix)
        assert LINK_NAME.fullmatch(name), name


@settings(deadline=None)
@given(prefix=PREFIXES, object_id=IDS, mac=MACS)
def test_names_are_deterministic(prefix: str, object_id: str, mac: str) -> None:
    first, second = Names(prefix), Names(prefix)
    assert first.bridge(object_id) == second.bridge(object_id)
    assert first.port_fabric_link(object_id) == second.port_fabric_link(object_id)
    assert first.appliance_fabric_link(object_id, mac) == second.appliance_fabric_link(
        object_id, mac
    )
    assert first.appliance_netns(object_id) == second.appliance_netns(object_id)


@pytest.mark.parametrize("prefix", ["a", "ast", "t1x9zz"])
@pytest.mark.parametrize("kind", sorted(LINK_KINDS))
def test_different_ids_give_different_names(prefix: str, kind: str) -> None:
    names = Names(prefix)
    ids = [f"object-{n}" for n in range(3000)] + [f"{n:08x}-uuid" for n in range(3000)]
    links = {LINK_KINDS[kind](names, object_id) for object_id in ids}
    assert len(links) == len(ids)


def test_kinds_never_share_a_name() -> None:
    names = Names()
    ids = [f"object-{n}" for n in range(1000)]
    bridges = {names.bridge(i) for i in ids}
    ports = {names.port_fabric_link(i) for i in ids}
    appliances = {names.appliance_fabric_link(i, "fa:16:3e:00:00:01") for i in ids}
    assert not bridges & ports
    assert not bridges & appliances
    assert not ports & appliances


def test_appliance_link_depends_on_appliance_and_mac() -> None:
    names = Names()
    base = names.appliance_fabric_link("r1", "fa:16:3e:00:00:01")
    assert names.appliance_fabric_link("r2", "fa:16:3e:00:00:01") != base
    assert names.appliance_fabric_link("r1", "fa:16:3e:00:00:02") != base
    # The MAC is taken as an address, not as text.
    assert names.appliance_fabric_link("r1", "FA:16:3E:00:00:01") == base


def test_same_id_under_two_prefixes_gives_two_names() -> None:
    assert Names("ast").bridge("net-a") != Names("tst").bridge("net-a")


@pytest.mark.parametrize(
    ("role", "mac", "expected"),
    [
        ("external", "fa:16:3e:00:00:01", "extfa163e000001"),
        ("internal", "fa:16:3e:ab:cd:ef", "intfa163eabcdef"),
        ("management", "FA:16:3E:AB:CD:EF", "mgtfa163eabcdef"),
    ],
)
def test_appliance_interface_is_role_and_mac(role: str, mac: str, expected: str) -> None:
    name = appliance_interface(role, mac)
    assert name == expected
    assert len(name) <= IFNAMSIZ


@settings(deadline=None)
@given(role=st.sampled_from(["external", "internal", "management"]), mac=MACS)
def test_appliance_interface_always_fits(role: str, mac: str) -> None:
    assert LINK_NAME.fullmatch(appliance_interface(role, mac))


def test_appliance_interface_refuses_an_unknown_role() -> None:
    with pytest.raises(KeyError):
        appliance_interface("transit", "fa:16:3e:00:00:01")


def test_namespaces_carry_the_prefix() -> None:
    names = Names("t1")
    assert names.fabric_netns == "t1-fabric"
    assert names.appliance_netns("r1") == "t1-appliance-r1"
    assert names.owns_netns("t1-appliance-r1")
    assert names.owns_netns(names.fabric_netns)
    # Another agent's prefix that merely starts with ours is not ours.
    assert not names.owns_netns("t12-appliance-r1")
    assert not names.owns_netns("t1")
    assert not names.owns_netns("ast-fabric")


@pytest.mark.parametrize("prefix", ["a", "ast", "t1", "abcdef", "z99999"])
def test_good_prefixes_are_accepted(prefix: str) -> None:
    assert Names(prefix).prefix == prefix


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param("", id="empty"),
        pytest.param("abcdefg", id="seven-characters"),
        pytest.param("1ab", id="leading-digit"),
        pytest.param("Ast", id="upper-case"),
        pytest.param("as-t", id="hyphen"),
        pytest.param("as_t", id="underscore"),
        pytest.param("as t", id="space"),
        pytest.param("as/t", id="slash"),
        pytest.param("äst", id="non-ascii"),
        pytest.param("ast\n", id="trailing-newline"),
    ],
)
def test_bad_prefixes_are_rejected(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Names(prefix)
