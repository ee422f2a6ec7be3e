"""Cheap truth: observing an unchanged appliance reads the namespace's nft
genid instead of listing its ruleset, and a ruleset edited by hand (which
moves the genid) is still found and repaired."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from astara.appliance.apply import ApplianceManager, NetworkInfo
from astara.appliance.render.nftables import TABLE_FAMILY, TABLE_NAME
from astara.appliance.schema import ApplianceConfig
from astara.fabric.networks import ensure_network
from astara.linux import cleanup, nft
from astara.linux.run import run
from astara.model.fabric import NetworkSpec
from astara.naming import Names
from astara.testing.agent import unique_prefix

pytestmark = pytest.mark.root

DRIFT = "nftables table differs from the applied ruleset"


@pytest.fixture
def names() -> Iterator[Names]:
    names = Names(unique_prefix())
    try:
        yield names
    finally:
        cleanup.remove_all(names.prefix)


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The namespaces whose table was listed (`nft list table`), in order."""
    listed: list[str] = []
    real = nft.list_table

    def list_table(family: str, table: str, netns: str) -> str:
        listed.append(netns)
        return real(family, table, netns)

    monkeypatch.setattr(nft, "list_table", list_table)
    return listed


def router() -> ApplianceConfig:
    return ApplianceConfig.model_validate(
        {
            "interfaces": [
                {
                    "mac": "fa:16:3e:00:01:01",
                    "network_id": "ext",
                    "role": "external",
                    "addresses": ["198.51.100.2/24"],
                }
            ],
            "snat": {"enabled": True},
        }
    )


def first_chain(namespace: str) -> str:
    listing = run(["nft", "list", "chains", TABLE_FAMILY], netns=namespace).stdout
    found = re.search(r"chain (\w+) \{", listing)
    assert found is not None, listing
    return found.group(1)


def problems(appliances: ApplianceManager, appliance_id: str) -> list[Any]:
    return list(appliances.observe(appliance_id)["problems"])


def test_an_unchanged_ruleset_is_not_listed_and_a_hand_edit_is_repaired(
    names: Names, tmp_path: Path, listings: list[str]
) -> None:
    ensure_network(names, "ext", NetworkSpec())
    appliances = ApplianceManager(
        names, tmp_path / "state", tmp_path / "run", {"ext": NetworkInfo(mtu=1500)}.get
    )
    namespace = names.appliance_netns("r1")
    appliances.apply("r1", appliances.prepare("r1", router()))
    listings.clear()

    # Unchanged: the genid stands for the listing; nothing is listed.
    assert problems(appliances, "r1") == []
    assert problems(appliances, "r1") == []
    assert listings == []

    # Edited by hand: the genid moved, so the table is listed and found changed,
    # at every observation until an apply repairs it.
    chain = first_chain(namespace)
    run(
        ["nft", "add", "rule", TABLE_FAMILY, TABLE_NAME, chain, "ip saddr 203.0.113.7 drop"],
        netns=namespace,
    )
    assert DRIFT in problems(appliances, "r1")
    assert DRIFT in problems(appliances, "r1")
    assert listings == [namespace, namespace]

    result = appliances.apply("r1", appliances.prepare("r1", router()))
    assert result.actions == ["nftables: table replaced"]
    assert "203.0.113.7" not in nft.list_table(TABLE_FAMILY, TABLE_NAME, namespace)
    listings.clear()
    assert problems(appliances, "r1") == []
    assert listings == []  # the agent's own load moved the genid, and remembered it

    # A rule deleted by hand is found too.
    handles = run(
        ["nft", "-a", "list", "chain", TABLE_FAMILY, TABLE_NAME, chain], netns=namespace
    ).stdout
    handle = re.findall(r"# handle (\d+)", handles)[-1]
    run(
        ["nft", "delete", "rule", TABLE_FAMILY, TABLE_NAME, chain, "handle", handle],
        netns=namespace,
    )
    assert DRIFT in problems(appliances, "r1")
    appliances.apply("r1", appliances.prepare("r1", router()))
    assert problems(appliances, "r1") == []


def test_a_commit_elsewhere_in_the_namespace_costs_one_listing(
    names: Names, tmp_path: Path, listings: list[str]
) -> None:
    """Another table's commit moves the genid too: the table is listed once,
    found unchanged, and the new genid remembered."""
    ensure_network(names, "ext", NetworkSpec())
    appliances = ApplianceManager(
        names, tmp_path / "state", tmp_path / "run", {"ext": NetworkInfo(mtu=1500)}.get
    )
    namespace = names.appliance_netns("r1")
    appliances.apply("r1", appliances.prepare("r1", router()))
    before = nft.genid(namespace)
    run(["nft", "add", "table", "ip", "bystander"], netns=namespace)
    assert nft.genid(namespace)[1] != before[1]
    assert nft.genid(namespace)[0] == before[0]
    listings.clear()
    assert problems(appliances, "r1") == []
    assert problems(appliances, "r1") == []
    assert listings == [namespace]
