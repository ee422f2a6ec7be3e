"""Workload ports' security in the host's fabric namespace: the scripts of
`astara.model.port_firewall`, run through libnftables, and conntrack's
entries ended when what allowed them goes.

br_netfilter's switches are per namespace: off, bridged packets would skip
the inet hooks and every port would be open. They are set (and read back)
before any port is filtered; a kernel without br_netfilter refuses port
security rather than pretending to enforce it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path

from astara.linux import netns, nft
from astara.linux.inside import entered
from astara.linux.run import run
from astara.model import port_firewall
from astara.naming import Names

BRIDGE_NETFILTER = {
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
}


class FirewallUnavailable(RuntimeError):
    """This host cannot filter bridged traffic (no br_netfilter)."""


def _read(key: str) -> str:
    return Path("/proc/sys/" + key.replace(".", "/")).read_text().strip()


def ensure(names: Names) -> None:
    """br_netfilter on in the fabric namespace, and the tables and hooks made."""
    if not Path("/proc/sys/net/bridge").exists():
        raise FirewallUnavailable(
            "port security needs the kernel's br_netfilter (modprobe br_netfilter)"
        )
    netns.set_sysctls(names.fabric_netns, BRIDGE_NETFILTER)
    with entered(names.fabric_netns):
        seen = {key: _read(key) for key in BRIDGE_NETFILTER}
    if seen != BRIDGE_NETFILTER:
        raise FirewallUnavailable(f"bridged traffic is not filtered in the fabric: {seen}")
    apply(names, port_firewall.skeleton())


def apply(names: Names, script: str) -> None:
    """Run `script` in one transaction (NftRefused or CommandError: nothing changed)."""
    if script.strip():
        nft.run_commands(script, names.fabric_netns)


def forget_flows(names: Names, addresses: Iterable[str]) -> None:
    """End the tracked flows from and to `addresses` (prefixes: each of their
    addresses, for a host prefix; a wider one's flows by its network): what
    other rules still allow is picked up again as new by the next packet."""
    for prefix in sorted(set(addresses)):
        network = ipaddress.ip_network(prefix, strict=False)
        family = "ipv4" if network.version == 4 else "ipv6"
        target = (
            str(network.network_address)
            if network.num_addresses == 1
            else f"{network.network_address}/{network.prefixlen}"
        )
        if network.num_addresses != 1:
            # conntrack -D takes addresses only: a wider prefix ends every
            # flow of its family (rare: an address group's range left).
            run(["conntrack", "-D", "-f", family], netns=names.fabric_netns, check=False)
            continue
        for side in ("-s", "-d"):
            run(
                ["conntrack", "-D", "-f", family, side, target],
                netns=names.fabric_netns,
                check=False,
            )
