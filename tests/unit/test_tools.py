"""A program that is not installed is a typed MissingTool naming it, also
behind `ip netns exec` and `env`; tools' version banners are parsed."""

from __future__ import annotations

import pytest

from astara.appliance.checks import parse_version
from astara.linux.run import MissingTool, programs, run

ABSENT = "astara-no-such-tool"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["nft", "-f", "-"], ["nft"]),
        (["ip", "-n", "x", "link"], ["ip"]),
        (["ip", "netns", "exec", "ns", "sysctl", "-q"], ["ip", "sysctl"]),
        (
            ["ip", "netns", "exec", "ns", "env", "A=1", "B=2", "busybox", "udhcpc"],
            ["ip", "env", "busybox"],
        ),
        (["env", "-i", "x"], ["env"]),
    ],
)
def test_programs_of_a_command_line(argv: list[str], expected: list[str]) -> None:
    assert programs(argv) == expected


@pytest.mark.parametrize("argv", [[ABSENT, "--version"], ["env", "A=1", ABSENT]])
def test_a_missing_program_is_a_missing_tool(argv: list[str]) -> None:
    with pytest.raises(MissingTool) as missing:
        run(argv)
    assert missing.value.tool == ABSENT
    assert isinstance(missing.value, FileNotFoundError)  # what callers caught before
    assert f"{ABSENT} is not installed" in str(missing.value)


@pytest.mark.parametrize(
    ("banner", "version"),
    [
        ("ip utility, iproute2-6.1.0, libbpf 1.1.2", "6.1.0"),
        ("nftables v1.0.6 (Lester Gooch #5)", "1.0.6"),
        ("Dnsmasq version 2.90  Copyright (c) 2000-2024 Simon Kelley", "2.90"),
        ("Version: 2.19", "2.19"),
        ("conntrack v1.4.7 (conntrack-tools)", "1.4.7"),
        ("sysctl from procps-ng 4.0.2", "4.0.2"),
        ("BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1) multi-call binary.", "1.35.0"),
        ("no version here", None),
    ],
)
def test_parse_version(banner: str, version: str | None) -> None:
    assert parse_version(banner) == version
