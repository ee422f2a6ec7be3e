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
import logging
from collections.abc import Iterable
from pathlib import Path

from astara.linux import netns, nft
from astara.linux.inside import NETNS_DIR, entered
from astara.linux.run import CommandError, run
from astara.model import port_firewall
from astara.naming import Names

log = logging.getLogger(__name__)

BRIDGE_NETFILTER = {
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
    # Tagged frames through the inet hooks too (the ports' chains drop them).
    "net.bridge.bridge-nf-filter-vlan-tagged": "1",
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


def forget_flows(names: Names, prefixes: Iterable[str]) -> None:
    """End the tracked flows from and to `prefixes`: what other rules still
    allow is picked up again as new by its next packet (conntrack's loose
    TCP pickup; UDP and ICMP start anew), the rest is dropped. Best effort:
    a flow left is one the next rule check would still have to allow."""
    for prefix in sorted(set(prefixes)):
        network = ipaddress.ip_network(prefix, strict=False)
        family = "ipv4" if network.version == 4 else "ipv6"
        target = str(network.network_address) if network.num_addresses == 1 else str(network)
        for side in ("-s", "-d"):
            _conntrack(names, ["-D", "-f", family, side, target])


def forget_zones(names: Names, zones: Iterable[int]) -> None:
    """End every tracked flow of the networks with these conntrack zones
    (after a rule or a port's groups changed: what is still allowed passes
    again, as in `forget_flows`)."""
    for zone in sorted(set(zones)):
        for family in ("ipv4", "ipv6"):
            _conntrack(names, ["-D", "-f", family, "-w", str(zone)])


def _conntrack(names: Names, argv: list[str]) -> None:
    try:
        run(["conntrack", *argv], netns=names.fabric_netns, check=False)
    except (OSError, CommandError) as error:  # missing, or the namespace gone
        log.warning("conntrack %s failed: %s", " ".join(argv), error)


def fabric_inode(names: Names) -> int | None:
    """The fabric namespace's identity (None: there is none): a new one
    holds none of the tables, sets or chains an earlier one did."""
    try:
        return (NETNS_DIR / names.fabric_netns).stat().st_ino
    except FileNotFoundError:
        return None
