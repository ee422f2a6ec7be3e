"""The fabric's contracts are pure: the API validates a port binding with the
agent's own rules without loading the netlink library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from astara.fabric.dhcpv6 import render_conf
from astara.model.fabric import (
    NetworkSpec,
    PortSpec,
    SegmentSpec,
    check_ifname,
    check_netns_name,
    check_workload_netns,
)
from astara.naming import Names


@pytest.mark.parametrize("module", ["astara.api.app", "astara.model.fabric"])
def test_importing_does_not_load_pyroute2(module: str) -> None:
    # A fresh interpreter: this test process may have loaded pyroute2 already.
    code = (
        f"import sys, {module}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'pyroute2')\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "", f"{module} loaded {result.stdout.strip()}"


def test_the_check_itself_sees_pyroute2() -> None:
    code = "import sys, astara.fabric.ports; print('pyroute2' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "True"


@pytest.mark.parametrize("name", ["", "1eth", "a.b", "x" * 16, "lo"])
def test_bad_interface_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        check_ifname(name)


def test_netns_names() -> None:
    assert check_netns_name("ast-w1.a_b") == "ast-w1.a_b"
    with pytest.raises(ValueError):
        check_netns_name("a/b")
    names = Names("ast")
    assert check_workload_netns(names, "ast-w1") == "ast-w1"
    for netns in ("other-w1", "ast-fabric", "ast-appliance-r1"):
        with pytest.raises(ValueError):
            check_workload_netns(names, netns)


def test_port_spec_next_hop_must_be_on_an_address() -> None:
    with pytest.raises(ValueError, match="nexthop"):
        PortSpec.model_validate(
            {
                "network_id": "n1",
                "mac": "fa:16:3e:00:00:01",
                "netns": "ast-w1",
                "routes": [{"destination": "0.0.0.0/0", "nexthop": "10.0.0.1"}],
            }
        )


def _spec(**fields: object) -> PortSpec:
    return PortSpec.model_validate(
        {"network_id": "n1", "mac": "fa:16:3e:00:00:01", "netns": "ast-w1", **fields}
    )


def test_dhcpv6_owns_the_ipv6_addresses() -> None:
    with pytest.raises(ValueError, match="dhcpv6"):
        _spec(dhcpv6=True, addresses=["2001:db8::5/64"])
    # IPv4 beside it is fine: another client, another family.
    assert _spec(dhcpv6=True, addresses=["10.0.0.5/24"]).dhcpv6


@pytest.mark.parametrize(("slaac", "line"), [(True, "slaac hwaddr"), (False, "ipv6ra_noautoconf")])
def test_dhcpcd_conf_forms_slaac_addresses_only_when_asked(slaac: bool, line: str) -> None:
    conf = render_conf(_spec(dhcpv6=True, slaac=slaac), Path("/etc/netns/ast-w1/resolv.conf"))
    lines = conf.splitlines()
    assert line in lines
    # IPv6 only, a DUID dnsmasq can match by MAC, DNS asked for, and the hook's
    # targets: this interface and this namespace's resolv.conf.
    for expected in (
        "ipv6only",
        "duid ll",
        "option dhcp6_name_servers, dhcp6_domain_search",
        "env ASTARA_IFNAME=eth0",
        "env ASTARA_RESOLV_CONF=/etc/netns/ast-w1/resolv.conf",
    ):
        assert expected in lines


# --- segments ---------------------------------------------------------------------------


def test_a_network_is_local_by_default() -> None:
    spec = NetworkSpec()
    assert spec.segment == SegmentSpec(type="local")
    assert spec.model_dump(mode="json")["segment"] == {
        "type": "local",
        "vni": None,
        "physnet": None,
        "remotes": [],
    }


@pytest.mark.parametrize(
    "segment",
    [
        {"type": "vxlan", "vni": 1},
        {"type": "vxlan", "vni": 16777215, "remotes": ["192.0.2.2", "2001:db8::2"]},
        {"type": "flat", "physnet": "public"},
        {"type": "local"},
    ],
)
def test_valid_segments(segment: dict[str, object]) -> None:
    spec = NetworkSpec.model_validate({"mtu": 1450, "segment": segment})
    assert spec.segment.type == segment["type"]
    # What the agent stores reads back the same.
    assert NetworkSpec.model_validate(spec.model_dump(mode="json")) == spec


@pytest.mark.parametrize(
    ("segment", "reason"),
    [
        ({"type": "vxlan"}, "needs a vni"),
        ({"type": "vxlan", "vni": 0}, "greater than or equal to 1"),
        ({"type": "vxlan", "vni": 16777216}, "less than or equal to 16777215"),
        ({"type": "vxlan", "vni": 5, "physnet": "public"}, "has no physnet"),
        ({"type": "vxlan", "vni": 5, "remotes": ["192.0.2.2", "192.0.2.2"]}, "unique"),
        ({"type": "vxlan", "vni": 5, "remotes": ["host-b"]}, "remotes"),
        ({"type": "flat"}, "needs a physnet"),
        ({"type": "flat", "physnet": "public", "vni": 5}, "no vni and no remotes"),
        ({"type": "flat", "physnet": "public", "remotes": ["192.0.2.2"]}, "no vni"),
        ({"type": "flat", "physnet": "a b"}, "physnet"),
        ({"type": "local", "vni": 5}, "a local segment"),
        ({"type": "local", "remotes": ["192.0.2.2"]}, "a local segment"),
        ({"type": "vlan", "vni": 5}, "type"),
        ({"type": "vxlan", "vni": 5, "group": "239.1.1.1"}, "Extra inputs"),
    ],
)
def test_invalid_segments(segment: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        NetworkSpec.model_validate({"segment": segment})
