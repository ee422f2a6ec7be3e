"""HA routers' pure parts: the deployment settings (`ha_default`,
`ha_network_cidr`) and how they reach the API workers, and the `ha_state`
each member shows (Neutron's names, its rewrite for dead agents)."""

from __future__ import annotations

import pytest

from astara.api.l3_agents import member_states
from astara.api.settings import ApiSettings
from astara.api.workers import parser, settings_arguments, settings_of


@pytest.mark.parametrize(
    ("members", "shown"),
    [
        # The role each host reported, in Neutron's words.
        ([("active", True), ("standby", True)], ["active", "standby"]),
        ([("standby", True), ("active", True)], ["standby", "active"]),
        ([("active", True), ("fault", True)], ["active", "standby"]),
        ([(None, True), (None, True)], ["unknown", "unknown"]),
        ([("active", True), ("gibberish", True)], ["active", "unknown"]),
        # An active member on a dead host: standby while another member's host lives...
        ([("active", False), ("standby", True)], ["standby", "standby"]),
        ([("active", False), (None, True)], ["standby", "unknown"]),
        # ...unknown when none does (maybe only the controller's link is down).
        ([("active", False), ("standby", False)], ["unknown", "standby"]),
        ([("active", False)], ["unknown"]),
        # Only an active member is rewritten: the others say what was reported.
        ([("standby", False), ("active", True)], ["standby", "active"]),
        ([("fault", False), ("active", True)], ["standby", "active"]),
        ([("active", True)], ["active"]),
        ([], []),
    ],
)
def test_member_states(members: list[tuple[str | None, bool]], shown: list[str]) -> None:
    assert member_states(members) == shown


def test_ha_settings_defaults_and_their_checks() -> None:
    settings = ApiSettings()
    assert settings.ha_default is False
    assert settings.ha_network_cidr == "169.254.192.0/18"
    assert ApiSettings(ha_network_cidr="10.255.0.0/30").ha_network_cidr == "10.255.0.0/30"
    for wrong, reason in (
        ("169.254.192.1/18", "network address"),  # host bits: not a network address
        ("169.254.192.0", "network address"),  # no prefix (Neutron requires the '/')
        ("nonsense/18", "network address"),
        ("fd00::/64", "IPv4"),
        ("10.0.0.0/31", "/30 or shorter"),
    ):
        with pytest.raises(ValueError, match=reason):
            ApiSettings(ha_network_cidr=wrong)


@pytest.mark.parametrize(
    "settings",
    [
        ApiSettings(),
        ApiSettings(vni_min=7, vni_max=70, path_mtu=9000),
        ApiSettings(ha_default=True, ha_network_cidr="10.255.0.0/24"),
    ],
)
def test_api_workers_get_the_same_settings(settings: ApiSettings) -> None:
    """`astara serve --workers N` starts workers with its settings on their
    command line: each worker's API applies the same ones."""
    args = parser().parse_args(["--fd", "3", "--parent", "1", *settings_arguments(settings)])
    assert settings_of(args) == settings
