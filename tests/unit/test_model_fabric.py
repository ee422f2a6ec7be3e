"""The fabric's contracts are pure: the API validates a port binding with the
agent's own rules without loading the netlink library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from astara.fabric.dhcpv6 import render_conf
from astara.model.fabric import PortSpec, check_ifname, check_netns_name, check_workload_netns
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
