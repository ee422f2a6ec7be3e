"""Carry out a floating IP delta (`appliance.floating`) in an appliance's
namespace (the edge).

The elements go in by one transaction (libnftables, `nft.run_commands`)
over the table as the agent last left it: the namespace's nft genid must be
the one remembered before, and after the commit it must be the very next
one (only this commit happened in between), or the genid is forgotten and
the next observation lists the table and repairs it in full. Local routes
are removed and added over netlink (or by one `ip -batch` when many),
without reading the others; conntrack and gratuitous ARP as a full apply
does them (`appliance.execute`).
"""

from __future__ import annotations

from astara.appliance.actions import (
    Action,
    Announce,
    ChangeFloatingElements,
    ChangeFloatingRoutes,
    DeltaPlan,
    Done,
    ForgetConntrack,
)
from astara.appliance.execute import Target, execute
from astara.appliance.genid import (
    read_genid,
    remember_own_commit,
    remembered_genid,
    save_ruleset_text,
)
from astara.linux import nft, routes
from astara.linux.handles import NetlinkHandles

# Up to this many local routes go one netlink request each; more, in one
# `ip -batch` (one process, whatever the number).
FEW_ROUTES = 64


class NotAsLeft(RuntimeError):
    """The table is not vouched for as the agent left it: apply in full."""


def execute_change(plan: DeltaPlan, target: Target) -> list[Done]:
    """Run the delta's plan; raises NotAsLeft before anything changed if the
    genid moved, or the failing step's error (the caller applies in full,
    which converges whatever this left)."""
    namespace = target.namespace
    before = read_genid(namespace)
    if before is None or before != remembered_genid(target.run_directory):
        raise NotAsLeft(f"the nft genid of {namespace} moved since the agent's last commit")
    done: list[Done] = []
    others: list[Action] = []
    for action in plan:
        match action:
            case ChangeFloatingElements():
                nft.run_commands(action.commands, namespace)
                save_ruleset_text(target.run_directory, action.ruleset)
                remember_own_commit(target.run_directory, before, read_genid(namespace))
                done.append(Done(action))
            case ChangeFloatingRoutes():
                if len(action.added) + len(action.removed) <= FEW_ROUTES:
                    routes.change_local(namespace, action.device, action.added, action.removed)
                else:
                    routes.change(
                        namespace,
                        "local",
                        added=[_local(a, action.device) for a in action.added],
                        removed=[_local(a, action.device) for a in action.removed],
                    )
                if action.added or action.removed:
                    done.append(Done(action))
            case ForgetConntrack() | Announce():
                others.append(action)
    if others:
        with NetlinkHandles() as handles:
            done += execute(tuple(others), target, handles)
    return done


def _local(address: str, device: str) -> routes.Route:
    """What `routes.Route.local` makes of the address, from its text."""
    return routes.Route(f"{address}/32", device=device, kind="local")
