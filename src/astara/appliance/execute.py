"""Carry out a plan (`appliance.plan`) inside an appliance's namespace (the edge).

Actions run in the plan's order, each through `astara.linux`; the first that
fails stops the run (the caller restores the last good config). Nothing is
decided here beyond what a "make exactly this" action finds to change when it
runs. Returns what changed something, for the API's `actions` and the log.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from astara.appliance.actions import (
    RULESET_LISTING,
    RULESET_LOADED,
    Action,
    Announce,
    Changes,
    ConfigureNamespace,
    CreateNamespace,
    Done,
    ForgetConntrack,
    LoadRuleset,
    PinNeighbour,
    Plan,
    PlugInterface,
    ReloadDaemon,
    RemoveLink,
    StartDaemon,
    StopDaemon,
    SyncAddresses,
    SyncFloatingRoutes,
    SyncRoutes,
    appliance_sysctls,
)
from astara.appliance.daemons import ApplianceDaemons
from astara.appliance.genid import read_genid, remember_genid
from astara.appliance.render.nftables import TABLE_FAMILY, TABLE_NAME
from astara.linux import garp, netlink, netns, nft, routes
from astara.linux.files import write_atomic
from astara.linux.handles import NetlinkHandles
from astara.linux.run import run

# `conntrack` commands run at once when floating IPs go.
CONNTRACK_FORKS = 8


@dataclass(frozen=True)
class Target:
    """Where a plan runs: the appliance's namespace and files, the fabric."""

    namespace: str
    fabric_netns: str
    run_directory: Path
    daemons: ApplianceDaemons


def execute(plan: Plan, target: Target, handles: NetlinkHandles) -> list[Done]:
    done: list[Done] = []
    fresh = False  # the namespace was made by this run: nothing else runs in it
    for action in plan:
        outcome = _run(action, target, handles, fresh)
        if outcome is not None:
            done.append(outcome)
            fresh = fresh or isinstance(outcome.action, CreateNamespace)
    return done


def _run(action: Action, target: Target, handles: NetlinkHandles, fresh: bool) -> Done | None:
    namespace = target.namespace
    match action:
        case CreateNamespace() | ConfigureNamespace():
            created = netns.create(namespace, appliance_sysctls(action.forwarding))
            # Configuring is upkeep; it is news only if the namespace had
            # vanished since it was observed.
            return Done(CreateNamespace(namespace, action.forwarding)) if created else None
        case LoadRuleset():
            nft.load(action.commands, namespace)
            # The listing last: a crash before it leaves a mismatch, so the next
            # apply replaces the table instead of trusting a delta.
            # Runtime files (here and the daemons'): not durable, see write_atomic.
            write_atomic(target.run_directory / RULESET_LOADED, action.ruleset, durable=False)
            # The genid before the listing: a commit by anyone in between
            # moves it past the remembered one, so it is never trusted wrongly.
            genid = read_genid(namespace)
            listing = nft.list_table(TABLE_FAMILY, TABLE_NAME, namespace)
            write_atomic(target.run_directory / RULESET_LISTING, listing, durable=False)
            remember_genid(target.run_directory, genid)
            return Done(action)
        case RemoveLink():
            netlink.delete_link(handles(namespace), action.name)
            return Done(action)
        case PlugInterface():
            netlink.ensure_veth(
                fabric=handles(target.fabric_netns),
                fabric_name=action.fabric_link,
                bridge=action.bridge,
                peer=handles(namespace),
                peer_netns=namespace,
                peer_name=action.name,
                mac=action.mac,
                mtu=action.mtu,
                on_wire=action.on_wire,
            )
            return Done(action)
        case SyncAddresses():
            added, removed = netlink.sync_addresses(
                handles(namespace), action.link, action.addresses, kept=action.kept
            )
            return _changed(action, added, removed)
        case PinNeighbour():
            pinned = netlink.pin_neighbour(
                handles(namespace), action.link, str(action.address), action.mac
            )
            return Done(action) if pinned else None
        case SyncRoutes():
            main = [
                routes.Route.via(destination, nexthop, onlink_device)
                for destination, nexthop, onlink_device in action.routes
            ]
            return _changed(action, *_sync_routes(namespace, "main", main, fresh))
        case SyncFloatingRoutes():
            device = action.device
            local = [routes.Route.local(a, device) for a in action.addresses] if device else []
            return _changed(action, *_sync_routes(namespace, "local", local, fresh))
        case StartDaemon():
            target.daemons.start(action.daemon, action.files, fresh=fresh)
            return Done(action)
        case ReloadDaemon():
            target.daemons.reload(action.daemon, action.files)
            return Done(action)
        case StopDaemon():
            target.daemons.remove(action.daemon)
            return Done(action)
        case ForgetConntrack():
            # Connections through a floating IP that was removed or moved must
            # not outlive it: their entries still hold the old translation.
            # One `conntrack -D` per address and direction, forked in
            # parallel: each is a fork, an exec and a table walk, which on a
            # busy host take tens of ms, one after the other for nothing.
            # The same for the flows of networks whose firewall changed.
            commands = action.commands()
            with ThreadPoolExecutor(min(len(commands), CONNTRACK_FORKS) or 1) as pool:
                list(pool.map(lambda argv: run(argv, netns=namespace, check=False), commands))
            return Done(action)
        case Announce():
            garp.announce(namespace, action.interface, action.mac, action.addresses)
            return Done(action)


def _sync_routes(
    namespace: str, table: str, desired: list[routes.Route], fresh: bool
) -> tuple[int, int]:
    """`routes.sync`, except in a namespace this run made: it holds no route
    of Astara's yet, so there is nothing to read (two `ip` commands per
    table) and what is wanted goes in as one batch, or nothing runs."""
    if not fresh:
        return routes.sync(namespace, table, desired)
    commands = [route.command("replace", table) for route in sorted(set(desired))]
    if commands:
        run(["ip", "-n", namespace, "-batch", "-"], input_text="\n".join(commands) + "\n")
    return len(commands), 0


def _changed(action: Action, added: int, removed: int) -> Done | None:
    changes = Changes(added, removed)
    return Done(action, changes) if changes else None


def remove_appliance(
    *, namespace: str, fabric_netns: str, fabric_links: list[str], daemons: ApplianceDaemons
) -> None:
    """Stop the daemons, remove the namespace and any fabric end left of its
    veth pairs."""
    daemons.stop()
    # Deleting the namespace destroys the veths inside it and with them
    # their fabric ends; the loop below only catches a half-made pair.
    netns.delete(namespace)
    if fabric_links and netns.exists(fabric_netns):
        with netlink.netns(fabric_netns) as fabric:
            for link in fabric_links:
                netlink.delete_link(fabric, link)
