"""Applying that fails part-way (after validation passed): a new appliance
leaves nothing behind, an existing one goes back to its last good config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from astara.appliance.actions import LoadRuleset, RulesetMode
from astara.appliance.apply import ApplianceManager, ApplyFailed, ApplyResult, NetworkInfo
from astara.appliance.schema import ApplianceConfig, config_hash
from astara.fabric.networks import ensure_network
from astara.linux import cleanup, netlink, netns
from astara.model.fabric import NetworkSpec
from astara.naming import Names
from astara.testing.agent import unique_prefix

pytestmark = pytest.mark.root

EXTERNAL = {"mac": "fa:16:3e:00:01:01", "network_id": "ext", "role": "external"}


def config(*interfaces: dict[str, object]) -> ApplianceConfig:
    return ApplianceConfig.model_validate(
        {"interfaces": list(interfaces), "snat": {"enabled": True}}
    )


@pytest.fixture
def names() -> Iterator[Names]:
    names = Names(unique_prefix())
    try:
        yield names
    finally:
        cleanup.remove_all(names.prefix)


def manager(names: Names, tmp_path: Path) -> ApplianceManager:
    # "ghost" is a network the lookup claims but whose bridge does not exist:
    # validation passes, plugging into it fails.
    networks = {"ext": NetworkInfo(mtu=1500), "ghost": NetworkInfo(mtu=1500)}
    return ApplianceManager(names, tmp_path / "state", tmp_path / "run", networks.get)


def ruleset_loads(result: ApplyResult) -> list[RulesetMode]:
    """How the apply loaded the ruleset: planned, and carried out."""
    planned = [a.mode for a in result.plan if isinstance(a, LoadRuleset)]
    assert planned == [d.action.mode for d in result.done if isinstance(d.action, LoadRuleset)]
    return planned


def test_failed_create_leaves_nothing(names: Names, tmp_path: Path) -> None:
    ensure_network(names, "ext", NetworkSpec())
    appliances = manager(names, tmp_path)
    bad = config(
        {**EXTERNAL, "addresses": ["198.51.100.2/24"]},
        {
            "mac": "fa:16:3e:00:02:01",
            "network_id": "ghost",
            "role": "internal",
            "addresses": ["10.1.0.1/24"],
        },
    )
    prepared = appliances.prepare("r1", bad)
    with pytest.raises(ApplyFailed, match=r"bridge \w+ is missing"):
        appliances.apply("r1", prepared)
    assert not netns.exists(names.appliance_netns("r1"))
    assert not appliances.directory("r1").exists()
    assert not appliances.run_directory("r1").exists()
    assert appliances.ids() == []


def test_failed_change_restores_the_last_good_config(names: Names, tmp_path: Path) -> None:
    ensure_network(names, "ext", NetworkSpec())
    appliances = manager(names, tmp_path)
    good = config({**EXTERNAL, "addresses": ["198.51.100.2/24"]})
    appliances.apply("r1", appliances.prepare("r1", good))
    bad = config(
        {**EXTERNAL, "addresses": ["198.51.100.3/24"]},
        {
            "mac": "fa:16:3e:00:02:01",
            "network_id": "ghost",
            "role": "internal",
            "addresses": ["10.1.0.1/24"],
        },
    )
    with pytest.raises(ApplyFailed):
        appliances.apply("r1", appliances.prepare("r1", bad))
    observed = appliances.observe("r1")
    assert observed["config_hash"] == config_hash(good)
    assert observed["generation"] == 1
    assert "apply failed" in (observed["last_error"] or "")
    # The running appliance holds the good config's address again, not the bad one's.
    with netlink.netns(names.appliance_netns("r1")) as inside:
        assert {str(a) for a in netlink.addresses(inside, "extfa163e000101")} == {"198.51.100.2/24"}
    # A later good apply clears the error.
    appliances.apply("r1", appliances.prepare("r1", good))
    assert appliances.observe("r1")["state"] == "active"


def test_a_ruleset_loaded_by_another_rendering_is_replaced_not_patched(
    names: Names, tmp_path: Path
) -> None:
    """After an upgrade that renders differently, or a crash between loading a
    ruleset and recording its config, element deltas would patch the wrong
    base: the table is replaced instead."""
    ensure_network(names, "ext", NetworkSpec())
    ensure_network(names, "n1", NetworkSpec())
    appliances = manager(names, tmp_path)
    appliances.networks = {"ext": NetworkInfo(1500), "n1": NetworkInfo(1500)}.get
    internal = {"mac": "fa:16:3e:00:02:01", "network_id": "n1", "role": "internal"}

    def with_floating(*addresses: str) -> ApplianceConfig:
        return ApplianceConfig.model_validate(
            {
                "interfaces": [
                    {**EXTERNAL, "addresses": ["198.51.100.2/24"]},
                    {**internal, "addresses": ["10.1.0.1/24"]},
                ],
                "floating_ips": [
                    {"floating_ip": a, "fixed_ip": f"10.1.0.{i + 10}"}
                    for i, a in enumerate(addresses)
                ],
            }
        )

    appliances.apply("r1", appliances.prepare("r1", with_floating("198.51.100.50")))
    result = appliances.apply(
        "r1", appliances.prepare("r1", with_floating("198.51.100.50", "198.51.100.51"))
    )
    assert ruleset_loads(result) == [RulesetMode.delta]

    (appliances.run_directory("r1") / "nftables.nft").write_text("# loaded by an older agent\n")
    result = appliances.apply("r1", appliances.prepare("r1", with_floating("198.51.100.50")))
    assert ruleset_loads(result) == [RulesetMode.replace_table]
    assert appliances.observe("r1")["state"] == "active"
