"""What an appliance's namespace holds now (the edge): read for the planner,
and reported with its problems to whoever asks (`observe_running`).

Only what `appliance.plan.plan_apply` decides on, read cheaply: whether the
namespace exists, its interfaces (name, MAC, MTU, up), the fabric ends of the
configured interfaces, the live nftables table beside the text and listing
the last load saved, and each daemon's state and files. Addresses and routes
are not read here: the actions that converge them read them when they run.
Links are read over raw rtnetlink (`linux.rtlink`: a few attributes each,
where pyroute2 decodes every one in Python); `observe_for_apply`'s
`handles` are left for the apply that follows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from astara.appliance import lbstats
from astara.appliance.actions import RULESET_LOADED
from astara.appliance.daemons import ApplianceDaemons
from astara.appliance.genid import observe_table
from astara.appliance.plan import (
    FabricEndObserved,
    LinkObserved,
    Observation,
    RulesetObserved,
)
from astara.appliance.render.nftables import TABLE_FAMILY, TABLE_NAME
from astara.appliance.schema import ApplianceConfig
from astara.linux import netns, nft, rtlink
from astara.linux.handles import NetlinkHandles
from astara.naming import ROLE_ABBREVIATION, Names, appliance_interface


def observe_for_apply(
    *,
    names: Names,
    appliance_id: str,
    config: ApplianceConfig,
    handles: NetlinkHandles,
    run_directory: Path,
    daemons: ApplianceDaemons,
) -> Observation:
    namespace = names.appliance_netns(appliance_id)
    exists = netns.exists(namespace)
    links: dict[str, LinkObserved] = {}
    ruleset = RulesetObserved()
    if exists:
        roles = tuple(ROLE_ABBREVIATION.values())
        for name, found in rtlink.links(namespace).items():
            if name.startswith(roles):
                state = found.state
                links[name] = LinkObserved(mac=state.mac, mtu=state.mtu, up=state.up)
        live, saved_listing = observe_table(namespace, run_directory)
        ruleset = RulesetObserved(
            live=live,
            saved_listing=saved_listing,
            saved_text=_read(run_directory / RULESET_LOADED),
        )
    fabric_ends: dict[str, FabricEndObserved] = {}
    if netns.exists(names.fabric_netns):
        fabric = names.fabric_netns
        bridges: dict[str, int | None] = {}
        for interface in config.interfaces:
            link = names.appliance_fabric_link(appliance_id, interface.mac)
            end = rtlink.link(fabric, link)
            if end is None:
                continue
            if interface.network_id not in bridges:
                bridge_link = rtlink.link(fabric, names.bridge(interface.network_id))
                bridges[interface.network_id] = bridge_link.index if bridge_link else None
            bridge = bridges[interface.network_id]
            fabric_ends[link] = FabricEndObserved(
                mtu=end.state.mtu,
                up=end.state.up,
                on_bridge=bridge is not None and end.state.master == bridge,
            )
    return Observation(
        namespace_exists=exists,
        links=links,
        fabric_ends=fabric_ends,
        ruleset=ruleset,
        daemons=daemons.observe(),
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def observe_running(
    *,
    namespace: str,
    config: ApplianceConfig | None,
    status: dict[str, Any],
    run_directory: Path,
    daemons: ApplianceDaemons,
    nftables_verified: bool = False,
) -> dict[str, Any]:
    """What runs, not what was asked, with the problems found (the agent's
    answer for an appliance). `nftables_verified` skips listing the table
    when an apply has just compared it."""
    problems: list[str] = []
    interfaces: list[dict[str, Any]] = []
    present = netns.exists(namespace)
    if not present:
        problems.append(f"namespace {namespace} is missing")
    if config is not None and present:
        found = rtlink.links(namespace)
        for interface in config.interfaces:
            name = appliance_interface(interface.role.value, interface.mac)
            state = found[name].state if name in found else None
            if state is None or state.mac != interface.mac:
                problems.append(f"interface {name} is missing")
            elif not state.up:
                problems.append(f"interface {name} is down")
            interfaces.append(
                {
                    "name": name,
                    "mac": interface.mac,
                    "role": interface.role.value,
                    "network_id": interface.network_id,
                    "present": state is not None,
                    "up": bool(state and state.up),
                    "mtu": state.mtu if state else None,
                    "counters": state.counters if state else {},
                }
            )
        if not nftables_verified:
            live, applied = observe_table(namespace, run_directory)
            if not live:
                problems.append("nftables table is missing")
            elif applied != live:
                problems.append("nftables table differs from the applied ruleset")
    running: dict[str, Any] = {}
    if config is not None:
        expected = {name.value: wanted for name, wanted in daemons.expected(config).items()}
        for daemon_name, daemon in daemons.all().items():
            pid = daemon.pid()
            running[daemon_name] = {
                "expected": expected[daemon_name],
                "pid": pid,
                "running": pid is not None,
            }
            if expected[daemon_name] and pid is None:
                problems.append(f"{daemon_name} is not running")
    if status.get("last_error"):
        problems.append(status["last_error"])
    balancer: dict[str, Any] | None = None
    if config is not None and config.loadbalancer is not None:
        stats_socket = run_directory / "stats.sock"
        process = lbstats.serving_process(stats_socket)
        balancer = lbstats.health(lbstats.read_stat(stats_socket), process)
    return {
        "namespace": namespace,
        "state": "active" if not problems else "degraded",
        "problems": problems,
        **status,
        "interfaces": interfaces,
        "daemons": running,
        "floating_ips": len(config.floating_ips) if config else 0,
        **({"loadbalancer": balancer} if balancer is not None else {}),
    }


def live_ruleset(namespace: str) -> str:
    """The appliance's nftables table as the kernel lists it; "" if missing."""
    return nft.list_table(TABLE_FAMILY, TABLE_NAME, namespace) if netns.exists(namespace) else ""
