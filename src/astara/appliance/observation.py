"""What an appliance's namespace holds now, read for the planner (the edge).

Only what `appliance.plan.plan_apply` decides on, read cheaply: whether the
namespace exists, its interfaces (name, MAC, MTU, up), the fabric ends of the
configured interfaces, the live nftables table beside the text and listing
the last load saved, and each daemon's state and files. Addresses and routes
are not read here: the actions that converge them read them when they run.
"""

from __future__ import annotations

from pathlib import Path

from astara.appliance.daemons import ApplianceDaemons
from astara.appliance.plan import (
    RULESET_LISTING,
    RULESET_LOADED,
    FabricEndObserved,
    LinkObserved,
    Observation,
    RulesetObserved,
)
from astara.appliance.render.nftables import TABLE_FAMILY, TABLE_NAME
from astara.appliance.schema import ApplianceConfig
from astara.linux import netlink, netns, nft
from astara.linux.handles import NetlinkHandles
from astara.naming import ROLE_ABBREVIATION, Names


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
        inside = handles(namespace)
        for name in netlink.links_with_prefix(inside, tuple(ROLE_ABBREVIATION.values())):
            state = netlink.link_state(inside, name)
            if state is not None:
                links[name] = LinkObserved(mac=state.mac, mtu=state.mtu, up=state.up)
        ruleset = RulesetObserved(
            live=nft.list_table(TABLE_FAMILY, TABLE_NAME, namespace),
            saved_listing=_read(run_directory / RULESET_LISTING),
            saved_text=_read(run_directory / RULESET_LOADED),
        )
    fabric_ends: dict[str, FabricEndObserved] = {}
    if netns.exists(names.fabric_netns):
        fabric = handles(names.fabric_netns)
        for interface in config.interfaces:
            link = names.appliance_fabric_link(appliance_id, interface.mac)
            state = netlink.link_state(fabric, link)
            if state is None:
                continue
            bridge = netlink.link_index(fabric, names.bridge(interface.network_id))
            fabric_ends[link] = FabricEndObserved(
                mtu=state.mtu,
                up=state.up,
                on_bridge=bridge is not None and state.master == bridge,
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
