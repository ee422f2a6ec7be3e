"""Workload ports: a veth from a network's bridge into a named namespace.

This is how tests, demos and operators stand up "instances": the namespace
gets an interface with the port's MAC, addressed statically, by DHCP (busybox
udhcpc with Astara's hook, which touches only that interface and the
namespace's own resolv.conf), by SLAAC, and/or by DHCPv6 (dhcpcd: see
`astara.fabric.dhcpv6`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from astara.fabric import dhcpv6
from astara.linux import netlink, netns, routes
from astara.linux.process import Daemon
from astara.model.fabric import PortSpec, check_workload_netns
from astara.naming import Names

NETNS_ETC = Path("/etc/netns")
DHCP_SCRIPT = Path(__file__).with_name("udhcpc.sh")


@dataclass(frozen=True)
class PortPaths:
    state_dir: Path

    @property
    def dhcp_pidfile(self) -> Path:
        return self.state_dir / "udhcpc.pid"

    @property
    def dhcp_script(self) -> Path:
        return self.state_dir / "udhcpc.sh"

    @property
    def dhcpv6(self) -> dhcpv6.Dhcpv6Paths:
        return dhcpv6.Dhcpv6Paths(self.state_dir)


class PortError(ValueError):
    """A port that cannot be plugged as asked; nothing was changed."""


def _workload_sysctls(spec: PortSpec) -> dict[str, str]:
    # With DHCPv6, dhcpcd reads the router advertisements (and forms the SLAAC
    # addresses) itself: the kernel must not act on them too.
    accept_ra = "1" if spec.slaac and not spec.dhcpv6 else "0"
    return {
        f"net.ipv6.conf.{spec.ifname}.accept_ra": accept_ra,
        f"net.ipv6.conf.{spec.ifname}.autoconf": accept_ra,
        f"net.ipv6.conf.{spec.ifname}.router_solicitation_interval": "1",
    }


# New workload namespaces skip duplicate address detection: every address in
# them was allocated by the control plane, and DAD only delays tests and boots.
WORKLOAD_NETNS_SYSCTLS = {
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
}


def resolv_conf(netns_name: str) -> Path:
    return NETNS_ETC / netns_name / "resolv.conf"


def would_create(spec: PortSpec) -> dict[str, bool]:
    """What plugging `spec` now would create, for the agent to record first."""
    return {
        "created_netns": not netns.exists(spec.netns),
        "created_etc": _writes_resolv_conf(spec) and not resolv_conf(spec.netns).exists(),
    }


def _writes_resolv_conf(spec: PortSpec) -> bool:
    return spec.dhcp or spec.dhcpv6


def plug(
    names: Names, port_id: str, spec: PortSpec, network_mtu: int, paths: PortPaths, new: bool
) -> dict[str, bool]:
    """Make the port exist as specified. Returns what the agent must remember
    to undo: whether it created the namespace and its /etc/netns directory.
    If plugging a new port fails, whatever this attempt made is removed."""
    try:
        check_workload_netns(names, spec.netns)
    except ValueError as error:
        raise PortError(str(error)) from None
    mtu = spec.mtu or network_mtu
    created = {
        "created_netns": netns.create(spec.netns, WORKLOAD_NETNS_SYSCTLS),
        "created_etc": False,
    }
    try:
        _converge(names, port_id, spec, mtu, paths, created)
    except Exception:
        if new:
            unplug(names, port_id, spec, paths, created, netns_still_used=False)
        raise
    return created


def _converge(
    names: Names, port_id: str, spec: PortSpec, mtu: int, paths: PortPaths, created: dict[str, bool]
) -> None:
    if _writes_resolv_conf(spec) and not resolv_conf(spec.netns).exists():
        resolv_conf(spec.netns).parent.mkdir(parents=True, exist_ok=True)
        resolv_conf(spec.netns).touch()
        created["created_etc"] = True
    with netlink.netns(names.fabric_netns) as fabric, netlink.netns(spec.netns) as workload:
        replugged = netlink.ensure_veth(
            fabric=fabric,
            fabric_name=names.port_fabric_link(port_id),
            bridge=names.bridge(spec.network_id),
            peer=workload,
            peer_netns=spec.netns,
            peer_name=spec.ifname,
            mac=spec.mac,
            mtu=mtu,
        )
        netns.set_sysctls(spec.netns, _workload_sysctls(spec))
        # The DHCP clients own their family's addresses.
        families = tuple(
            family for family, dynamic in ((4, spec.dhcp), (6, spec.dhcpv6)) if not dynamic
        )
        netlink.sync_addresses(workload, spec.ifname, spec.addresses, families)
    routes.sync(
        spec.netns, "main", [routes.Route.via(r.destination, r.nexthop) for r in spec.routes]
    )
    dhcp = Daemon(spec.netns, paths.dhcp_pidfile, str(paths.dhcp_pidfile))
    if replugged:
        dhcp.stop()  # its socket was bound to the interface that is gone
    if spec.dhcp and dhcp.pid() is None:
        paths.state_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DHCP_SCRIPT, paths.dhcp_script)
        paths.dhcp_script.chmod(0o755)
        dhcp.start(
            [
                "env",
                f"ASTARA_RESOLV_CONF={resolv_conf(spec.netns)}",
                "busybox",
                "udhcpc",
                "-i",
                spec.ifname,
                "-s",
                str(paths.dhcp_script),
                "-p",
                str(paths.dhcp_pidfile),
                "-b",  # background once the first try is over, leased or not
                "-t",
                "4",
                "-T",
                "1",
                "-A",
                "2",
                "-O",
                "staticroutes",
            ]
        )
    elif not spec.dhcp:
        dhcp.stop()
    dhcpv6.converge(spec, paths.dhcpv6, resolv_conf(spec.netns), restart=replugged)


def block(names: Names, port_id: str) -> None:
    """The port's end at the bridge down: nothing passes it (a port whose
    security could not be applied is closed, not open)."""
    if netns.exists(names.fabric_netns):
        with netlink.netns(names.fabric_netns) as fabric:
            link = names.port_fabric_link(port_id)
            if netlink.link_index(fabric, link) is not None:
                netlink.set_link(fabric, link, state="down")


def unplug(
    names: Names,
    port_id: str,
    spec: PortSpec,
    paths: PortPaths,
    created: dict[str, bool],
    netns_still_used: bool,
) -> None:
    """Remove the port and whatever the agent created for it."""
    Daemon(spec.netns, paths.dhcp_pidfile, str(paths.dhcp_pidfile)).stop()
    dhcpv6.stop(spec, paths.dhcpv6)
    if netns.exists(names.fabric_netns):
        with netlink.netns(names.fabric_netns) as fabric:
            netlink.delete_link(fabric, names.port_fabric_link(port_id))
    if netns.exists(spec.netns) and not netns_still_used:
        if created.get("created_netns"):
            netns.delete(spec.netns)
        else:
            with netlink.netns(spec.netns) as workload:
                netlink.delete_link(workload, spec.ifname)
    if created.get("created_etc") and not netns_still_used:
        shutil.rmtree(resolv_conf(spec.netns).parent, ignore_errors=True)
    shutil.rmtree(paths.state_dir, ignore_errors=True)


def observe(names: Names, port_id: str, spec: PortSpec, paths: PortPaths) -> dict[str, object]:
    state = None
    addresses: list[str] = []
    if netns.exists(spec.netns):
        with netlink.netns(spec.netns) as ns:
            state = netlink.link_state(ns, spec.ifname)
            addresses = sorted(str(a) for a in netlink.addresses(ns, spec.ifname))
    dhcp_pid = Daemon(spec.netns, paths.dhcp_pidfile, str(paths.dhcp_pidfile)).pid()
    dhcpv6_pid = dhcpv6.pid(spec, paths.dhcpv6)
    return {
        "netns": spec.netns,
        "ifname": spec.ifname,
        "fabric_link": names.port_fabric_link(port_id),
        "present": state is not None and state.mac == spec.mac,
        "up": bool(state and state.up),
        "mtu": state.mtu if state else None,
        "addresses": addresses,
        "dhcp_client": {"expected": spec.dhcp, "pid": dhcp_pid, "running": dhcp_pid is not None},
        "dhcpv6_client": {
            "expected": spec.dhcpv6,
            "pid": dhcpv6_pid,
            "running": dhcpv6_pid is not None,
        },
        "counters": state.counters if state else {},
    }
