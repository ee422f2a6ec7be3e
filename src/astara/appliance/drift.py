"""Whether an appliance still is what its config in force made it: the
cheap check a watch runs when the kernel says something changed.

It reads only what events can tell about (links, addresses and routes inside
the namespace, the fabric ends of its veth pairs, its daemons) and routes
only when a route changed, so it costs a few netlink requests; the nftables
table is not listed (no netlink event tells about it). What counts as right
is what `appliance.plan` and `appliance.execute` make: an interface present
with its MAC, up, with its MTU, its fabric end up on its network's bridge;
exactly the configured permanent addresses; exactly the configured routes.
`compare` decides (pure); `drift` reads, then compares.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from astara.appliance.actions import DaemonName
from astara.appliance.daemons import ApplianceDaemons
from astara.appliance.render import expected_daemons
from astara.appliance.schema import HA_ROLE_ADDRESS, ApplianceConfig, Role
from astara.linux import monitor, netlink, netns, routes
from astara.naming import Names, appliance_interface

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class Seen:
    """What a check read: inside the namespace (by interface name), at the
    fabric ends (by fabric link name), the daemons, and the routes if read."""

    links: Mapping[str, netlink.LinkState] = field(default_factory=dict)
    addresses: Mapping[str, frozenset[Address]] = field(default_factory=dict)
    fabric_ends: Mapping[str, tuple[netlink.LinkState, bool]] = field(
        default_factory=dict
    )  # (state, attached to its network's bridge)
    daemons_running: Mapping[str, bool] = field(default_factory=dict)
    main_routes: frozenset[routes.Route] | None = None
    local_routes: frozenset[routes.Route] | None = None


def wanted_routes(
    config: ApplianceConfig,
) -> tuple[frozenset[routes.Route], frozenset[routes.Route]]:
    """The main and local table routes an apply makes (`SyncRoutes`,
    `SyncFloatingRoutes`)."""
    external = config.external_interface()
    device = appliance_interface(external.role.value, external.mac) if external else None
    main = frozenset(
        routes.Route.via(r.destination, r.nexthop, device if r.onlink else None)
        for r in config.routes
    )
    local = (
        frozenset(routes.Route.local(f.floating_ip, device) for f in config.floating_ips)
        if device
        else frozenset()
    )
    return main, local


def compare(
    names: Names,
    appliance_id: str,
    config: ApplianceConfig,
    seen: Seen,
    network_mtus: Mapping[str, int],
    withdrawn: Collection[str] = (),
    daemons_expected: Mapping[DaemonName, bool] | None = None,
    standby: Collection[str] = (),
) -> list[str]:
    """What differs from the config in force, in words; [] if nothing.
    `withdrawn`: interfaces meant to be down (fenced). `daemons_expected`:
    which daemons should run (default: as `config` alone says, on a host
    that serves no metadata). `standby`: interfaces meant to be off the
    wire (their fabric end down: an HA router's standby member)."""
    problems = []
    for interface in config.interfaces:
        name = appliance_interface(interface.role.value, interface.mac)
        mtu = interface.mtu or network_mtus.get(interface.network_id)
        link = seen.links.get(name)
        if link is None or link.mac != interface.mac:
            problems.append(f"interface {name} is missing")
        else:
            if not link.up and name not in withdrawn:
                problems.append(f"interface {name} is down")
            if mtu is not None and link.mtu != mtu:
                problems.append(f"interface {name} has MTU {link.mtu}, not {mtu}")
            held = seen.addresses.get(name, frozenset())
            if interface.role is Role.ha:
                held -= {HA_ROLE_ADDRESS}  # keepalived's, while the member is active
            if held != frozenset(interface.addresses):
                problems.append(f"interface {name} has other addresses than configured")
        fabric_link = names.appliance_fabric_link(appliance_id, interface.mac)
        end = seen.fabric_ends.get(fabric_link)
        on_wire = name not in standby
        if end is None:
            problems.append(f"fabric link {fabric_link} is missing")
        elif end[0].up and not on_wire:
            problems.append(f"fabric link {fabric_link} is on the wire on a standby member")
        elif end[0].up != on_wire or not end[1] or (mtu is not None and end[0].mtu != mtu):
            problems.append(f"fabric link {fabric_link} is down, detached or resized")
    # Routes through a withdrawn (down) interface are gone with it: the
    # kernel removes them; the apply that brings it up makes them again.
    main, local = wanted_routes(config)
    if seen.main_routes is not None and not withdrawn and seen.main_routes != main:
        problems.append("routes differ from the configured ones")
    if seen.local_routes is not None and not withdrawn and seen.local_routes != local:
        problems.append("floating IP routes differ from the configured ones")
    if daemons_expected is None:
        daemons_expected = expected_daemons(config, metadata=False)
    for daemon, wanted in daemons_expected.items():
        if wanted and not seen.daemons_running.get(daemon, False):
            problems.append(f"{daemon} is not running")
    return problems


def drift(
    *,
    names: Names,
    appliance_id: str,
    config: ApplianceConfig,
    network_mtus: Mapping[str, int],
    daemons: ApplianceDaemons,
    withdrawn: Collection[str] = (),
    read_routes: bool = False,
    standby: Collection[str] = (),
) -> list[str]:
    """Read the appliance as it is and compare: its problems, [] if none."""
    namespace = names.appliance_netns(appliance_id)
    if not netns.exists(namespace):
        return [f"namespace {namespace} is missing"]
    links: dict[str, netlink.LinkState] = {}
    addresses: dict[str, frozenset[Address]] = {}
    try:
        with netlink.netns(namespace) as inside:
            for interface in config.interfaces:
                name = appliance_interface(interface.role.value, interface.mac)
                state = netlink.link_state(inside, name)
                if state is not None:
                    links[name] = state
                    addresses[name] = frozenset(
                        netlink.addresses(inside, name, permanent_only=True)
                    )
    except FileNotFoundError:
        return [f"namespace {namespace} is missing"]
    fabric_ends: dict[str, tuple[netlink.LinkState, bool]] = {}
    if netns.exists(names.fabric_netns):
        with netlink.netns(names.fabric_netns) as fabric:
            for interface in config.interfaces:
                link = names.appliance_fabric_link(appliance_id, interface.mac)
                end = netlink.link_state(fabric, link)
                if end is not None:
                    bridge = netlink.link_index(fabric, names.bridge(interface.network_id))
                    fabric_ends[link] = (end, bridge is not None and end.master == bridge)
    placed = monitor.identity(namespace)
    seen = Seen(
        links=links,
        addresses=addresses,
        fabric_ends=fabric_ends,
        daemons_running={
            name: (pid := d.pid()) is not None and _netns_of(pid) == placed
            for name, d in daemons.all().items()
        },
        main_routes=frozenset(routes.current(namespace, "main")) if read_routes else None,
        local_routes=frozenset(routes.current(namespace, "local")) if read_routes else None,
    )
    return compare(
        names,
        appliance_id,
        config,
        seen,
        network_mtus,
        withdrawn,
        daemons.expected(config),
        standby,
    )


def stop_misplaced(daemons: ApplianceDaemons, namespace: str) -> list[str]:
    """Stop the appliance's daemons that run outside its namespace as it is
    now: left in one deleted behind our back (`ip netns del` kills nothing),
    they would keep it alive, and pass for running to the next apply. The
    names of those stopped."""
    placed = monitor.identity(namespace)
    stopped = []
    for name, daemon in daemons.all().items():
        pid = daemon.pid()
        if pid is not None and _netns_of(pid) != placed:
            daemon.stop()
            stopped.append(name)
    return stopped


def _netns_of(pid: int) -> tuple[int, int] | None:
    try:
        found = os.stat(f"/proc/{pid}/ns/net")
    except (FileNotFoundError, ProcessLookupError):
        return None
    return found.st_dev, found.st_ino
