"""The operators' view of the orchestrator under `/astara/v1`: appliance
states and history (routers', networks' DHCP appliances `dhcp-<network id>`
and load balancers' `lb-<load balancer id>`), rebuild, debug (pause) and
manage (resume) of an appliance or a project, and a router's move. Requests
are database writes plus an outbox event; the orchestrator acts on them (and
would on its next resync without the event). Port plugs: `astara.api.plugs`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Generic, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from astara.api import hosts
from astara.api.admin import find_project, require_admin
from astara.api.auth import Caller
from astara.api.changes import timestamp
from astara.api.errors import NeutronError
from astara.api.lbaas.load_balancers import status_tree
from astara.db import history, outbox
from astara.db.models import (
    DHCP,
    ApplianceEvent,
    ApplianceState,
    LoadBalancer,
    Network,
    PausedProject,
    Port,
    Router,
    dhcp_network_id,
    ha_member,
    ha_member_id,
)
from astara.drivers import loadbalancer as lb_driver

ACTIONS = ("rebuild", "debug", "manage")

Row = TypeVar("Row", Router, LoadBalancer)


@dataclass(frozen=True)
class _Kind(Generic[Row]):
    """A kind of appliance an operator names by the resource it serves (by
    the resource's id or name): what differs between routers and load
    balancers, so that one finding, listing and acting serves both."""

    name: str  # `ApplianceState.kind`, and the outbox's resource type that wakes it
    model: type[Row]
    appliance_id: Callable[[str], str]  # of the resource's id
    resource_id: Callable[[str], str | None]  # of an appliance id, if it is one
    not_found: Callable[[str], NeutronError]


ROUTER = _Kind(
    "router",
    Router,
    lambda router_id: router_id,
    lambda appliance_id: appliance_id,
    lambda name: NeutronError(404, "RouterNotFound", f"Router {name} could not be found"),
)
LOAD_BALANCER = _Kind(
    "loadbalancer",
    LoadBalancer,
    lb_driver.appliance_id,
    lb_driver.balancer_id,
    lambda name: NeutronError(
        404, "LoadBalancerNotFound", f"Load balancer {name} could not be found."
    ),
)


@dataclass(frozen=True)
class _Target(Generic[Row]):
    """An appliance an operator names: its resource's row, or only the
    orchestrator's record once its tenant deleted it (its appliance may
    still run, paused)."""

    id: str  # the appliance's
    project_id: str
    row: Row | None
    # An HA router's members' records (it has no appliance of its own).
    members: tuple[ApplianceState, ...] = ()


def _find(session: Session, kind: _Kind[Row], name_or_id: str) -> _Target[Row]:
    """The resource by id or name (or by its appliance's id), else the record
    of a deleted one whose appliance remains; else the kind's 404."""
    model = kind.model
    row = session.get(model, name_or_id) or session.scalar(
        select(model).where(model.name == name_or_id)
    )
    resource_id = kind.resource_id(name_or_id)
    if row is None and resource_id not in (None, name_or_id):
        row = session.get(model, resource_id)
    if row is not None:
        return _Target(kind.appliance_id(row.id), row.project_id, row, _members(session, row))
    for appliance_id in dict.fromkeys((kind.appliance_id(name_or_id), name_or_id)):
        record = session.get(ApplianceState, appliance_id)
        if record is not None and record.kind == kind.name:
            return _Target(record.appliance_id, record.project_id, None)
    raise kind.not_found(name_or_id)


def _members(session: Session, row: Router | LoadBalancer) -> tuple[ApplianceState, ...]:
    """An HA router's members' records (those made so far)."""
    if not isinstance(row, Router) or not row.ha:
        return ()
    ids = [ha_member_id(row.id, slot) for slot in (0, 1)]
    found = {
        s.appliance_id: s
        for s in session.scalars(select(ApplianceState).where(ApplianceState.appliance_id.in_(ids)))
    }
    return tuple(found[i] for i in ids if i in found)


def _lifecycle(state: ApplianceState | None, paused_project: bool) -> dict[str, Any]:
    """What the orchestrator's record says of any appliance."""
    return {
        "state": state.state if state is not None else "creating",
        "attempts": state.attempts if state is not None else 0,
        "last_error": state.last_error if state is not None else None,
        "paused": bool(state is not None and state.paused) or paused_project,
        "config_hash": state.applied_hash if state is not None else None,
        # Where its appliance runs, its fencing token, and a move asked for.
        "host": state.host if state is not None else None,
        "epoch": state.epoch if state is not None else 0,
        "move_to": state.move_to if state is not None else None,
    }


def router_view(
    target: _Target[Router], state: ApplianceState | None, paused_project: bool
) -> dict[str, Any]:
    """A router's appliance; an HA router's lifecycle is its active
    member's (or its first's), and each member is shown with its role."""
    router = target.row
    ha = router is not None and router.ha
    if ha:
        serving = [m for m in target.members if m.ha_state == "active"] or list(target.members)
        state = serving[0] if serving else None
    return {
        "id": target.id,
        # The appliance its lifecycle is: the router's, or its active member's.
        "appliance_id": state.appliance_id if ha and state is not None else target.id,
        "name": router.name if router is not None else "",
        "project_id": target.project_id,
        # DELETED: its tenant deleted it; the orchestrator has not removed
        # its appliance yet (a pause does not hold it).
        "status": router.status if router is not None else "DELETED",
        **_lifecycle(state, paused_project),
        **(
            {"ha": True, "members": [_member_view(m, paused_project) for m in target.members]}
            if ha
            else {}
        ),
    }


def _member_view(state: ApplianceState, paused_project: bool) -> dict[str, Any]:
    return {
        "id": state.appliance_id,
        "ha_state": state.ha_state,
        **_lifecycle(state, paused_project),
    }


def balancer_view(
    target: _Target[LoadBalancer], state: ApplianceState | None, paused_project: bool
) -> dict[str, Any]:
    """A load balancer (`id`: its own) and its appliance (`appliance_id`)."""
    balancer = target.row
    return {
        "id": lb_driver.balancer_id(target.id),
        "appliance_id": target.id,
        "name": balancer.name if balancer is not None else "",
        "project_id": target.project_id,
        "vip_address": balancer.vip_address if balancer is not None else None,
        # DELETED: as a router's.
        "provisioning_status": balancer.provisioning_status if balancer is not None else "DELETED",
        "operating_status": balancer.operating_status if balancer is not None else "OFFLINE",
        **_lifecycle(state, paused_project),
    }


def _list(
    session: Session,
    kind: _Kind[Row],
    view: Callable[[_Target[Row], ApplianceState | None, bool], dict[str, Any]],
) -> list[dict[str, Any]]:
    """Every resource of a kind, and the records of deleted ones whose
    appliance remains."""
    states = {
        s.appliance_id: s
        for s in session.scalars(select(ApplianceState).where(ApplianceState.kind == kind.name))
    }
    paused = set(session.scalars(select(PausedProject.project_id)))
    model = kind.model
    rows = session.scalars(select(model).order_by(model.project_id, model.name, model.id))
    targets = [
        _Target(
            kind.appliance_id(r.id),
            r.project_id,
            r,
            tuple(
                states[m]
                for slot in (0, 1)
                if isinstance(r, Router) and r.ha and (m := ha_member_id(r.id, slot)) in states
            ),
        )
        for r in rows
    ]
    listed = {t.id for t in targets} | {m.appliance_id for t in targets for m in t.members}
    deleted = sorted(
        (
            _Target[Row](s.appliance_id, s.project_id, None)
            for s in states.values()
            if s.appliance_id not in listed
        ),
        key=lambda t: (t.project_id, t.id),
    )
    return [view(t, states.get(t.id), t.project_id in paused) for t in targets + deleted]


def _shown(
    session: Session,
    target: _Target[Any] | _Appliance,
    view: Callable[[ApplianceState | None, bool], dict[str, Any]],
) -> dict[str, Any]:
    """One appliance's view (of its record and its project's pause) and its
    history (an HA router's: both members', each line naming its member)."""
    state = session.get(ApplianceState, target.id)
    paused = session.get(PausedProject, target.project_id) is not None
    members = getattr(target, "members", ())
    ids = [m.appliance_id for m in members] or [target.id]
    return {**view(state, paused), "events": _events(session, *ids)}


def _events(session: Session, *appliance_ids: str) -> list[dict[str, str]]:
    events = session.scalars(
        select(ApplianceEvent)
        .where(ApplianceEvent.appliance_id.in_(appliance_ids))
        .order_by(ApplianceEvent.id)
    )
    several = len(appliance_ids) > 1
    return [
        {
            "at": timestamp(e.at),
            "message": f"{e.appliance_id}: {e.message}" if several else e.message,
        }
        for e in events
    ]


def list_routers(session: Session, caller: Caller) -> list[dict[str, Any]]:
    """Every router, and the records of deleted ones whose appliance remains."""
    require_admin(caller)
    return _list(session, ROUTER, router_view)


def show_router(session: Session, caller: Caller, router_id: str) -> dict[str, Any]:
    require_admin(caller)
    target = _find(session, ROUTER, router_id)
    return _shown(session, target, partial(router_view, target))


def list_balancers(session: Session, caller: Caller) -> list[dict[str, Any]]:
    """Every load balancer, and the records of deleted ones whose appliance remains."""
    require_admin(caller)
    return _list(session, LOAD_BALANCER, balancer_view)


def show_balancer(session: Session, caller: Caller, balancer_id: str) -> dict[str, Any]:
    """One load balancer (by id, name or appliance id) with its listeners,
    their pools, monitors and members (the status tree's), and its history."""
    require_admin(caller)
    target = _find(session, LOAD_BALANCER, balancer_id)
    shown = _shown(session, target, partial(balancer_view, target))
    balancer = target.row
    tree = status_tree(session, balancer)["statuses"]["loadbalancer"] if balancer else {}
    return {**shown, "listeners": tree.get("listeners", [])}


def _state_row(
    session: Session, target: _Target[Any] | _Appliance, now: datetime, kind: str
) -> ApplianceState:
    row = session.get(ApplianceState, target.id)
    if row is None:
        row = ApplianceState(
            appliance_id=target.id,
            kind=kind,
            project_id=target.project_id,
            state="creating",
            attempts=0,
            paused=False,
            rebuild_requested=False,
            updated_at=now,
        )
        session.add(row)
    return row


def _act(
    session: Session,
    caller: Caller,
    kind: _Kind[Row],
    name_or_id: str,
    action: str,
    now: datetime,
    show: Callable[[Session, Caller, str], dict[str, Any]],
) -> dict[str, Any]:
    """rebuild, debug or manage the appliance of one resource, or the record
    of a deleted one (its outbox event is the resource's: it wakes it); then
    what `show` shows of it."""
    require_admin(caller)
    if action not in ACTIONS:
        raise NeutronError(404, "HTTPNotFound", f"Unknown {kind.name} action {action}")
    target = _find(session, kind, name_or_id)
    if target.members or (isinstance(target.row, Router) and target.row.ha):
        _refuse_ha(target.id, f"{action} one member at a time: astara appliance {action}")
    row = _state_row(session, target, now, kind.name)
    _request(session, row, action, now, kind.name, kind.resource_id(target.id) or target.id)
    return show(session, caller, target.id)


def router_request(
    session: Session, caller: Caller, router_id: str, action: str, now: datetime
) -> dict[str, Any]:
    """rebuild, debug or manage one router, or the record of a deleted one."""
    return _act(session, caller, ROUTER, router_id, action, now, show_router)


def balancer_request(
    session: Session, caller: Caller, balancer_id: str, action: str, now: datetime
) -> dict[str, Any]:
    """rebuild, debug or manage one load balancer's appliance, as a router's."""
    return _act(session, caller, LOAD_BALANCER, balancer_id, action, now, show_balancer)


def move_router(
    session: Session, caller: Caller, router_id: str, body: Any, now: datetime
) -> dict[str, Any]:
    """`router move --host`: ask the orchestrator to move the router's
    appliance to an up, undrained host (it sets `move_to`; the orchestrator
    acts on it and clears it)."""
    require_admin(caller)
    if not isinstance(body, dict) or not isinstance(body.get("host"), str):
        raise NeutronError(400, "HTTPBadRequest", 'Body must be {"host": NAME}')
    target = _find(session, ROUTER, router_id)
    if isinstance(target.row, Router) and target.row.ha:
        _refuse_ha(
            target.id,
            "the orchestrator places its members, one per host;"
            " rebuild one to place it again: astara appliance rebuild",
        )
    host = hosts.find(session, body["host"])
    if not host.alive or host.drained:
        raise NeutronError(
            409,
            "HostUnavailable",
            f"Host {host.name} is {'down' if not host.alive else 'drained'}:"
            " routers move only to an up, undrained host.",
        )
    row = _state_row(session, target, now, ROUTER.name)
    if row.host != host.name or row.move_to is not None:
        row.move_to = host.name
        history.record(session, row.appliance_id, now, f"operator: move to {host.name}")
        outbox.record(
            session,
            resource_type="router",
            resource_id=target.id,
            project_id=target.project_id,
            action="move",
            now=now,
            detail={"host": host.name},
        )
        session.flush()
    return show_router(session, caller, target.id)


def _refuse_ha(router_id: str, what: str) -> None:
    members = " or ".join(ha_member_id(router_id, slot) for slot in (0, 1))
    raise NeutronError(409, "RouterIsHA", f"Router {router_id} is HA: {what} {members}.")


def _request(
    session: Session,
    row: ApplianceState,
    action: str,
    now: datetime,
    resource_type: str,
    resource_id: str,
) -> None:
    """Record an operator's rebuild, debug or manage on an appliance's row,
    in its history, and as an outbox event on the resource whose event wakes
    it (a router, or a DHCP appliance's network)."""
    if action == "rebuild":
        row.rebuild_requested = True
    else:
        row.paused = action == "debug"
    history.record(session, row.appliance_id, now, f"operator: {action}")
    outbox.record(
        session,
        resource_type=resource_type,
        resource_id=resource_id,
        project_id=row.project_id,
        action=action,
        now=now,
    )
    session.flush()


@dataclass(frozen=True)
class _Appliance:
    """A network's DHCP appliance an operator names: while the network has a
    DHCP port, or only the orchestrator's record until its appliance is gone."""

    id: str
    project_id: str
    network: Network | None
    port: Port | None


def _dhcp_appliance(session: Session, appliance_id: str) -> _Appliance | None:
    network_id = dhcp_network_id(appliance_id)
    if network_id is None:
        return None
    port = session.scalar(
        select(Port).where(Port.device_owner == DHCP, Port.device_id == appliance_id)
    )
    network = session.get(Network, network_id)
    if port is not None:
        return _Appliance(appliance_id, port.project_id, network, port)
    record = session.get(ApplianceState, appliance_id)
    if record is not None:
        return _Appliance(appliance_id, record.project_id, network, None)
    return None


def _member(session: Session, appliance_id: str) -> _Appliance | None:
    """An HA router's member an operator names (while its router or its record exists)."""
    found = ha_member(appliance_id)
    if found is None:
        return None
    owner = session.get(Router, found[0]) or session.get(ApplianceState, appliance_id)
    if owner is None:
        raise NeutronError(
            404, "ApplianceNotFound", f"Appliance {appliance_id} could not be found."
        )
    return _Appliance(appliance_id, owner.project_id, None, None)


def member_view(
    target: _Appliance, state: ApplianceState | None, paused_project: bool
) -> dict[str, Any]:
    router_id, slot = ha_member(target.id) or (target.id, 0)
    return {
        "id": target.id,
        "appliance_id": target.id,
        "kind": "router",
        "router_id": router_id,
        "member": slot,
        "project_id": target.project_id,
        "ha_state": state.ha_state if state is not None else None,
        **_lifecycle(state, paused_project),
    }


def dhcp_view(
    target: _Appliance, state: ApplianceState | None, paused_project: bool
) -> dict[str, Any]:
    network = target.network
    return {
        "id": target.id,
        "appliance_id": target.id,
        "kind": "dhcp",
        "name": network.name if network is not None else "",
        "project_id": target.project_id,
        "network_id": dhcp_network_id(target.id),
        "port_id": target.port.id if target.port is not None else None,
        # DELETED: no DHCP port any more; its appliance is not removed yet.
        "status": target.port.status if target.port is not None else "DELETED",
        **_lifecycle(state, paused_project),
    }


def _balancer_appliance(view: dict[str, Any]) -> dict[str, Any]:
    """A load balancer's view as an appliance's: `id` is the appliance's
    (`loadbalancer_id` the load balancer's), `status` its provisioning status."""
    return {
        "kind": "loadbalancer",
        **view,
        "id": view["appliance_id"],
        "loadbalancer_id": view["id"],
        "status": view["provisioning_status"],
    }


def list_appliances(session: Session, caller: Caller) -> list[dict[str, Any]]:
    """Every appliance: the routers' (as `list_routers`, with `kind`
    "router"), the networks' DHCP appliances (`kind` "dhcp") and the load
    balancers' (as `list_balancers`, `kind` "loadbalancer")."""
    routers = [{"kind": "router", **view} for view in list_routers(session, caller)]
    states = {
        s.appliance_id: s
        for s in session.scalars(select(ApplianceState).where(ApplianceState.kind == "dhcp"))
    }
    paused = set(session.scalars(select(PausedProject.project_id)))
    ids = set(states) | set(
        session.scalars(select(Port.device_id).where(Port.device_owner == DHCP))
    )
    targets = [t for t in (_dhcp_appliance(session, i) for i in ids) if t is not None]
    targets.sort(key=lambda t: (t.project_id, t.id))
    dhcp = [dhcp_view(t, states.get(t.id), t.project_id in paused) for t in targets]
    balancers = [_balancer_appliance(view) for view in list_balancers(session, caller)]
    return routers + dhcp + balancers


def show_appliance(session: Session, caller: Caller, appliance_id: str) -> dict[str, Any]:
    """One appliance with its history: a router's (by id or name), a
    network's DHCP appliance (`dhcp-<network id>`) or a load balancer's
    (`lb-<load balancer id>`)."""
    require_admin(caller)
    if lb_driver.balancer_id(appliance_id) is not None:
        return _balancer_appliance(show_balancer(session, caller, appliance_id))
    member = _member(session, appliance_id)
    if member is not None:
        return _shown(session, member, partial(member_view, member))
    target = _dhcp_appliance(session, appliance_id)
    if target is None:
        if dhcp_network_id(appliance_id) is not None:
            raise NeutronError(
                404, "ApplianceNotFound", f"Appliance {appliance_id} could not be found."
            )
        return {"kind": "router", **show_router(session, caller, appliance_id)}
    return _shown(session, target, partial(dhcp_view, target))


def appliance_request(
    session: Session, caller: Caller, appliance_id: str, action: str, now: datetime
) -> dict[str, Any]:
    """rebuild, debug or manage one appliance (a router's: `router_request`,
    a load balancer's: `balancer_request`)."""
    require_admin(caller)
    if lb_driver.balancer_id(appliance_id) is not None:
        return _balancer_appliance(balancer_request(session, caller, appliance_id, action, now))
    member = _member(session, appliance_id)
    if member is not None:
        if action not in ACTIONS:
            raise NeutronError(404, "HTTPNotFound", f"Unknown appliance action {action}")
        row = _state_row(session, member, now, kind="router")
        router_id, _ = ha_member(member.id) or (member.id, 0)
        _request(session, row, action, now, "router", router_id)
        return show_appliance(session, caller, member.id)
    if dhcp_network_id(appliance_id) is None:
        return {"kind": "router", **router_request(session, caller, appliance_id, action, now)}
    if action not in ACTIONS:
        raise NeutronError(404, "HTTPNotFound", f"Unknown appliance action {action}")
    target = _dhcp_appliance(session, appliance_id)
    if target is None:
        raise NeutronError(
            404, "ApplianceNotFound", f"Appliance {appliance_id} could not be found."
        )
    row = _state_row(session, target, now, kind="dhcp")
    # The outbox names the network (its ids are a resource's): its event wakes
    # the network's DHCP appliance.
    _request(session, row, action, now, "network", dhcp_network_id(target.id) or "")
    return show_appliance(session, caller, target.id)


def project_request(
    session: Session, caller: Caller, name_or_id: str, action: str, now: datetime
) -> dict[str, Any]:
    """debug (pause every router of a project) or manage (resume them)."""
    require_admin(caller)
    project = find_project(session, name_or_id)
    if action == "debug":
        if session.get(PausedProject, project.id) is None:
            session.add(PausedProject(project_id=project.id, at=now))
    elif action == "manage":
        session.execute(delete(PausedProject).where(PausedProject.project_id == project.id))
    else:
        raise NeutronError(404, "HTTPNotFound", f"Unknown project action {action}")
    outbox.record(
        session,
        resource_type="project",
        resource_id=project.id,
        project_id=project.id,
        action=action,
        now=now,
    )
    return {"project": project.name, "paused": action == "debug"}
