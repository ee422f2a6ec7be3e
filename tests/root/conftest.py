"""Root-tier fixtures: a real agent under a unique prefix, removed after the
test however it ends, and the standard router topology.

Addresses used here (TEST-NET and documentation ranges) exist only inside the
namespaces these fixtures create; nothing is routed off the machine.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from astara.linux import cleanup
from astara.testing.agent import AgentProcess, unique_prefix
from astara.testing.lab import Lab
from astara.testing.server import BIN, Cloud, Server

pytestmark = pytest.mark.root

OUTSIDE = "198.51.100.1"
OUTSIDE_V6 = "2001:db8:ff::1"
ROUTER_EXTERNAL = "198.51.100.2"
FLOATING_IP = "198.51.100.50"

MAC = {
    "router_ext": "fa:16:3e:00:01:01",
    "router_n1": "fa:16:3e:00:02:01",
    "router_n2": "fa:16:3e:00:03:01",
    "router_n6": "fa:16:3e:00:04:01",
    "w1": "fa:16:3e:00:02:10",
    "w2": "fa:16:3e:00:03:10",
    "w6": "fa:16:3e:00:04:10",
    "outside": "fa:16:3e:00:01:10",
}


def router_config(
    *, snat: bool = True, floating_ips: dict[str, str] | None = None
) -> dict[str, Any]:
    """The standard router: an external network, two internal IPv4 subnets
    (one dual-stack) with DHCP, and one IPv6-only SLAAC subnet."""
    floating_ips = {FLOATING_IP: "10.1.0.10"} if floating_ips is None else floating_ips
    return {
        "schema_version": 1,
        "kind": "router",
        "interfaces": [
            {
                "mac": MAC["router_ext"],
                "network_id": "ext",
                "role": "external",
                "addresses": [f"{ROUTER_EXTERNAL}/24", "2001:db8:ff::2/64"],
            },
            {
                "mac": MAC["router_n1"],
                "network_id": "n1",
                "role": "internal",
                "addresses": ["10.1.0.1/24", "2001:db8:1::1/64"],
            },
            {
                "mac": MAC["router_n2"],
                "network_id": "n2",
                "role": "internal",
                "addresses": ["10.2.0.1/24"],
            },
            {
                "mac": MAC["router_n6"],
                "network_id": "n6",
                "role": "internal",
                "addresses": ["2001:db8:6::1/64"],
            },
        ],
        "subnets": [
            {
                "cidr": "10.1.0.0/24",
                "interface_mac": MAC["router_n1"],
                "gateway_ip": "10.1.0.1",
                "enable_dhcp": True,
                "dns_nameservers": ["192.0.2.53"],
                "host_routes": [{"destination": "192.0.2.0/24", "nexthop": "10.1.0.254"}],
            },
            {"cidr": "2001:db8:1::/64", "interface_mac": MAC["router_n1"], "ipv6_ra_mode": "slaac"},
            {
                "cidr": "10.2.0.0/24",
                "interface_mac": MAC["router_n2"],
                "gateway_ip": "10.2.0.1",
                "enable_dhcp": True,
            },
            {"cidr": "2001:db8:6::/64", "interface_mac": MAC["router_n6"], "ipv6_ra_mode": "slaac"},
        ],
        "dhcp_hosts": [
            {"mac": MAC["w1"], "ip_address": "10.1.0.10", "hostname": "w1"},
            {"mac": MAC["w2"], "ip_address": "10.2.0.10", "hostname": "w2"},
        ],
        "routes": [
            {"destination": "0.0.0.0/0", "nexthop": OUTSIDE},
            {"destination": "::/0", "nexthop": OUTSIDE_V6},
        ],
        "snat": {"enabled": snat},
        "floating_ips": [{"floating_ip": f, "fixed_ip": x} for f, x in floating_ips.items()],
    }


def running_agent(state_dir: Path, operators_group: str | None = None) -> Iterator[AgentProcess]:
    """A started agent under a unique prefix; everything it made is removed
    after, however the test ends (for fixtures to `yield from`)."""
    process = AgentProcess(state_dir, operators_group=operators_group)
    try:
        process.start()
        yield process
    finally:
        process.remove_everything()
        assert not any(cleanup.leftovers(process.prefix).values())


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path)


@pytest.fixture
def lab(agent: AgentProcess) -> Lab:
    assert agent.client is not None
    return Lab(agent.client, agent.prefix)


def build_standard(lab: Lab) -> Lab:
    """Networks, router r1 and the workloads w1, w2, w6 and outside."""
    lab.network("ext", external=True)
    for network in ("n1", "n2", "n6"):
        lab.network(network)
    lab.router("r1", router_config())
    lab.workload(
        "outside",
        "ext",
        MAC["outside"],
        addresses=(f"{OUTSIDE}/24", f"{OUTSIDE_V6}/64"),
        # IPv6 is routed, not NATed: upstream routes tenant prefixes to the router.
        routes=(("2001:db8:1::/64", "2001:db8:ff::2"), ("2001:db8:6::/64", "2001:db8:ff::2")),
    )
    lab.workload("w1", "n1", MAC["w1"], dhcp=True, slaac=True)
    lab.workload("w2", "n2", MAC["w2"], dhcp=True)
    lab.workload("w6", "n6", MAC["w6"], slaac=True)
    return lab


@pytest.fixture(scope="module")
def standard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The standard topology, built once per module: tests re-apply the
    config they need first, as the orchestrator would."""
    process = AgentProcess(tmp_path_factory.mktemp("agent"))
    try:
        yield build_standard(Lab(process.start(), process.prefix))
    finally:
        process.remove_everything()


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    """A whole `astara serve` (API, orchestrator, local agent) under a unique
    prefix, resyncing every 2 s, removed with everything it made."""
    prefix = unique_prefix("o")
    server = Server(tmp_path / "var", prefix, "--resync-s", "2")
    try:
        server.start()
        yield Cloud(server)
    finally:
        server.stop()
        cleanup.remove_all(prefix)
        assert not any(cleanup.leftovers(prefix).values())


def astara(cloud: Cloud, *args: str) -> str:
    """The real `astara` CLI against the cloud's server; its output."""
    env = {**cloud.server.env(), "ASTARA_STATE_DIR": str(cloud.server.state_dir)}
    result = subprocess.run(
        [str(BIN / "astara"), *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
