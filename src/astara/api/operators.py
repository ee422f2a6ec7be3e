"""The operators' view of the orchestrator under `/astara/v1`: router states
and history, rebuild, debug (pause) and manage (resume) of a router or a
project, and port plugs. Requests are database writes plus an outbox event;
the orchestrator acts on them (and would on its next resync without the event).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from astara.api.admin import find_project, require_admin
from astara.api.auth import Caller
from astara.api.changes import timestamp
from astara.api.errors import NeutronError
from astara.db import outbox
from astara.db.models import PausedProject, Port, PortBinding, Router, RouterEvent, RouterState

_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def _router(session: Session, router_id: str) -> Router:
    router = session.get(Router, router_id) or session.scalar(
        select(Router).where(Router.name == router_id)
    )
    if router is None:
        raise NeutronError(404, "RouterNotFound", f"Router {router_id} could not be found")
    return router


def _port(session: Session, port_id: str) -> Port:
    port = session.get(Port, port_id) or session.scalar(select(Port).where(Port.name == port_id))
    if port is None:
        raise NeutronError(404, "PortNotFound", f"Port {port_id} could not be found.")
    return port


def router_view(router: Router, state: RouterState | None, paused_project: bool) -> dict[str, Any]:
    return {
        "id": router.id,
        "name": router.name,
        "project_id": router.project_id,
        "status": router.status,
        "state": state.state if state is not None else "creating",
        "attempts": state.attempts if state is not None else 0,
        "last_error": state.last_error if state is not None else None,
        "paused": bool(state is not None and state.paused) or paused_project,
        "config_hash": state.applied_hash if state is not None else None,
    }


def list_routers(session: Session, caller: Caller) -> list[dict[str, Any]]:
    require_admin(caller)
    states = {s.router_id: s for s in session.scalars(select(RouterState))}
    paused = set(session.scalars(select(PausedProject.project_id)))
    routers = session.scalars(select(Router).order_by(Router.project_id, Router.name, Router.id))
    return [router_view(r, states.get(r.id), r.project_id in paused) for r in routers]


def show_router(session: Session, caller: Caller, router_id: str) -> dict[str, Any]:
    require_admin(caller)
    router = _router(session, router_id)
    state = session.get(RouterState, router.id)
    paused = session.get(PausedProject, router.project_id) is not None
    events = session.scalars(
        select(RouterEvent).where(RouterEvent.router_id == router.id).order_by(RouterEvent.id)
    )
    return {
        **router_view(router, state, paused),
        "events": [{"at": timestamp(e.at), "message": e.message} for e in events],
    }


def _state_row(session: Session, router: Router, now: datetime) -> RouterState:
    row = session.get(RouterState, router.id)
    if row is None:
        row = RouterState(
            router_id=router.id,
            project_id=router.project_id,
            state="creating",
            attempts=0,
            paused=False,
            rebuild_requested=False,
            updated_at=now,
        )
        session.add(row)
    return row


def router_request(
    session: Session, caller: Caller, router_id: str, action: str, now: datetime
) -> dict[str, Any]:
    """rebuild, debug or manage one router."""
    require_admin(caller)
    router = _router(session, router_id)
    row = _state_row(session, router, now)
    if action == "rebuild":
        row.rebuild_requested = True
    elif action == "debug":
        row.paused = True
    elif action == "manage":
        row.paused = False
    else:
        raise NeutronError(404, "HTTPNotFound", f"Unknown router action {action}")
    session.add(RouterEvent(router_id=router.id, at=now, message=f"operator: {action}"))
    outbox.record(
        session,
        resource_type="router",
        resource_id=router.id,
        project_id=router.project_id,
        action=action,
        now=now,
    )
    session.flush()
    return show_router(session, caller, router.id)


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


def plug(
    session: Session, caller: Caller, port_id: str, body: Any, now: datetime
) -> dict[str, Any]:
    """Bind a port to a workload namespace; the orchestrator plugs it."""
    require_admin(caller)
    port = _port(session, port_id)
    if not isinstance(body, dict) or not isinstance(body.get("netns"), str):
        raise NeutronError(
            400, "HTTPBadRequest", 'Body must be {"netns": NAME, "ifname": NAME, "dhcp": BOOL}'
        )
    netns, ifname, dhcp = body["netns"], body.get("ifname", "eth0"), body.get("dhcp", False)
    if not isinstance(ifname, str) or not _IFNAME.fullmatch(ifname) or not isinstance(dhcp, bool):
        raise NeutronError(400, "HTTPBadRequest", "ifname: 1-15 characters; dhcp: true or false")
    if port.device_owner.startswith("network:"):
        raise NeutronError(409, "PortInUse", f"Port {port.id} belongs to {port.device_owner}.")
    taken = session.scalar(
        select(PortBinding).where(
            PortBinding.netns == netns, PortBinding.ifname == ifname, PortBinding.port_id != port.id
        )
    )
    if taken is not None:
        raise NeutronError(
            409, "PortInUse", f"{ifname} in {netns} is already port {taken.port_id}."
        )
    binding = session.get(PortBinding, port.id)
    if binding is None:
        binding = PortBinding(port_id=port.id, created_at=now)
        session.add(binding)
    binding.netns, binding.ifname, binding.dhcp = netns, ifname, dhcp
    outbox.record(
        session,
        resource_type="port",
        resource_id=port.id,
        project_id=port.project_id,
        action="plug",
        now=now,
    )
    return {"port_id": port.id, "netns": netns, "ifname": ifname, "dhcp": dhcp}


def unplug(session: Session, caller: Caller, port_id: str, now: datetime) -> None:
    require_admin(caller)
    port = _port(session, port_id)
    if session.get(PortBinding, port.id) is None:
        raise NeutronError(404, "PortNotFound", f"Port {port_id} is not plugged.")
    session.execute(delete(PortBinding).where(PortBinding.port_id == port.id))
    outbox.record(
        session,
        resource_type="port",
        resource_id=port.id,
        project_id=port.project_id,
        action="unplug",
        now=now,
    )
