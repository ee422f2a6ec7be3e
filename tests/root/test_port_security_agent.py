"""The agent's port security state against the real kernel: what it holds
after a group gains a remote set, after the fabric namespace is made anew,
and after a restart (a new manager on the same store)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from astara.agent.security import PortSecurityManager
from astara.agent.store import JsonStore
from astara.linux import netns
from astara.linux.run import run
from astara.model import port_firewall
from astara.model.fabric import AddressSetSpec, PortSpec, SecurityGroupSpec
from astara.naming import Names
from astara.testing.agent import unique_prefix

pytestmark = pytest.mark.root

PORT = PortSpec.model_validate(
    {
        "network_id": "net",
        "mac": "fa:16:3e:00:00:01",
        "netns": "unused",
        "security": {
            "groups": ["web"],
            "allowed": [{"mac": "fa:16:3e:00:00:01", "ip": "10.0.0.5/32"}],
        },
    }
)
ICMP_FROM_SET = {"direction": "ingress", "ethertype": "IPv4", "protocol": 1, "remote_set": "g-x"}


@pytest.fixture
def names() -> Iterator[Names]:
    found = Names(unique_prefix("f"))
    netns.create(found.fabric_netns)
    try:
        yield found
    finally:
        netns.delete(found.fabric_netns)


def ruleset(names: Names) -> str:
    return run(["nft", "list", "ruleset"], netns=names.fabric_netns).stdout


def manager(names: Names, store: Path) -> PortSecurityManager:
    return PortSecurityManager(names, JsonStore(store), lambda: {"p1": PORT})


def test_a_rule_naming_a_new_set_is_enforced_on_a_group_in_use(
    names: Names, tmp_path: Path
) -> None:
    security = manager(names, tmp_path)
    security.put_group("web", SecurityGroupSpec())
    security.port_changed("p1", PORT)
    security.put_set("g-x", AddressSetSpec.model_validate({"addresses": ["10.0.0.9/32"]}))
    # The group, already in the kernel, gains a rule naming the set.
    security.put_group("web", SecurityGroupSpec.model_validate({"rules": [ICMP_FROM_SET]}))
    held = ruleset(names)
    assert f"ip saddr @{port_firewall.set_name('g-x', 4)}" in held
    assert "elements = { 10.0.0.9 }" in held


def test_a_new_fabric_namespace_and_a_restart_get_everything_made_again(
    names: Names, tmp_path: Path
) -> None:
    security = manager(names, tmp_path)
    security.put_set("g-x", AddressSetSpec.model_validate({"addresses": ["10.0.0.9/32"]}))
    security.put_group("web", SecurityGroupSpec.model_validate({"rules": [ICMP_FROM_SET]}))
    security.port_changed("p1", PORT)
    # The fabric namespace goes and comes back (its last network went, a new one came).
    netns.delete(names.fabric_netns)
    netns.create(names.fabric_netns)
    security.put_set("g-x", AddressSetSpec.model_validate({"addresses": ["10.0.0.8/32"]}))
    security.port_changed("p1", PORT)
    held = ruleset(names)
    assert "from_1" in held and "elements = { 10.0.0.8 }" in held and "zone_1" in held
    # A restart: a new manager on the same store, in a namespace that lost everything.
    netns.delete(names.fabric_netns)
    netns.create(names.fabric_netns)
    manager(names, tmp_path).restore()
    held = ruleset(names)
    assert "from_1" in held and "elements = { 10.0.0.8 }" in held and "ct zone set 1" in held
    assert f"ip saddr @{port_firewall.set_name('g-x', 4)}" in held
