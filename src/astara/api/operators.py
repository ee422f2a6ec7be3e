"""The operators' view of the orchestrator under `/astara/v1`: appliance
states and history (routers', and networks' DHCP appliances `dhcp-<network
id>`), rebuild, debug (pause) and manage (resume) of an appliance or a
project, and port plugs. Requests are database writes plus an outbox event;
the orchestrator acts on them (and would on its next resync without the event).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, delete, select
from sqlalchemy.orm import Session

from astara.api.admin import find_project, require_admin
from astara.api.auth import Caller
from astara.api.changes import timestamp
from astara.api.errors import NeutronError
from astara.db import history, outbox
from astara.db.models import (
    DHCP,
    ApplianceEvent,
    ApplianceState,
    Host,
    LoadBalancer,
    Network,
    PausedProject,
    Port,
    PortBinding,
    Router,
    dhcp_network_id,
)
from astara.drivers import loadbalancer as lb_driver
from astara.model.fabric import check_ifname, check_netns_name, check_workload_netns
from astara.naming import Names

# The binding table's column: a longer name passes PortSpec but does not fit.
_NETNS_COLUMN = PortBinding.__table__.c.netns.type
_NETNS_MAX = _NETNS_COLUMN.length if isinstance(_NETNS_COLUMN, String) else None


@dataclass(frozen=True)
class _Target:
    """A router an operator names: its Neutron row, or only the orchestrator's
    record once its tenant deleted it (its appliance may still run, paused)."""

    id: str
    project_id: str
    router: Router | None


def _router(session: Session, router_id: str) -> _Target:
    router = session.get(Router, router_id) or session.scalar(
        select(Router).where(Router.name == router_id)
    )
    if router is not None:
        return _Target(router.id, router.project_id, router)
    record = session.get(ApplianceState, router_id)
    if record is not None and record.kind == "router":
        return _Target(record.appliance_id, record.project_id, None)
    raise NeutronError(404, "RouterNotFound", f"Router {router_id} could not be found")


def _port(session: Session, port_id: str) -> Port:
    port = session.get(Port, port_id) or session.scalar(select(Port).where(Port.name == port_id))
    if port is None:
        raise NeutronError(404, "PortNotFound", f"Port {port_id} could not be found.")
    return port


def router_view(
    target: _Target, state: ApplianceState | None, paused_project: bool
) -> dict[str, Any]:
    router = target.router
    return {
        "id": target.id,
        "name": router.name if router is not None else "",
        "project_id": target.project_id,
        # DELETED: its tenant deleted it; the orchestrator has not removed
        # its appliance yet (a pause does not hold it).
        "status": router.status if router is not None else "DELETED",
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


def list_routers(session: Session, caller: Caller) -> list[dict[str, Any]]:
    """Every router, and the records of deleted ones whose appliance remains."""
    require_admin(caller)
    states = {
        s.appliance_id: s
        for s in session.scalars(select(ApplianceState).where(ApplianceState.kind == "router"))
    }
    paused = set(session.scalars(select(PausedProject.project_id)))
    routers = session.scalars(select(Router).order_by(Router.project_id, Router.name, Router.id))
    targets = [_Target(r.id, r.project_id, r) for r in routers]
    listed = {t.id for t in targets}
    deleted = sorted(
        (
            _Target(s.appliance_id, s.project_id, None)
            for s in states.values()
            if s.appliance_id not in listed
        ),
        key=lambda t: (t.project_id, t.id),
    )
    return [router_view(t, states.get(t.id), t.project_id in paused) for t in targets + deleted]


def show_router(session: Session, caller: Caller, router_id: str) -> dict[str, Any]:
    require_admin(caller)
    target = _router(session, router_id)
    state = session.get(ApplianceState, target.id)
    paused = session.get(PausedProject, target.project_id) is not None
    return {**router_view(target, state, paused), "events": _events(session, target.id)}


def _events(session: Session, appliance_id: str) -> list[dict[str, str]]:
    events = session.scalars(
        select(ApplianceEvent)
        .where(ApplianceEvent.appliance_id == appliance_id)
        .order_by(ApplianceEvent.id)
    )
    return [{"at": timestamp(e.at), "message": e.message} for e in events]


def _state_row(
    session: Session, target: _Target | _Appliance, now: datetime, kind: str = "router"
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


def router_request(
    session: Session, caller: Caller, router_id: str, action: str, now: datetime
) -> dict[str, Any]:
    """rebuild, debug or manage one router, or the record of a deleted one."""
    require_admin(caller)
    if action not in ("rebuild", "debug", "manage"):
        raise NeutronError(404, "HTTPNotFound", f"Unknown router action {action}")
    target = _router(session, router_id)
    _request(session, _state_row(session, target, now), action, now, "router", target.id)
    return show_router(session, caller, target.id)


def move_router(
    session: Session, caller: Caller, router_id: str, body: Any, now: datetime
) -> dict[str, Any]:
    """`router move --host`: ask the orchestrator to move the router's
    appliance to an up, undrained host (it sets `move_to`; the orchestrator
    acts on it and clears it)."""
    require_admin(caller)
    if not isinstance(body, dict) or not isinstance(body.get("host"), str):
        raise NeutronError(400, "HTTPBadRequest", 'Body must be {"host": NAME}')
    target = _router(session, router_id)
    host = _host(session, body["host"])
    if not host.alive or host.drained:
        raise NeutronError(
            409,
            "HostUnavailable",
            f"Host {host.name} is {'down' if not host.alive else 'drained'}:"
            " routers move only to an up, undrained host.",
        )
    row = _state_row(session, target, now)
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


def _host(session: Session, name: str) -> Host:
    host = session.scalar(select(Host).where(Host.name == name))
    if host is None:
        raise NeutronError(404, "HostNotFound", f"Host {name} could not be found.")
    return host


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


def dhcp_view(
    target: _Appliance, state: ApplianceState | None, paused_project: bool
) -> dict[str, Any]:
    network = target.network
    return {
        "id": target.id,
        "kind": "dhcp",
        "name": network.name if network is not None else "",
        "project_id": target.project_id,
        "network_id": dhcp_network_id(target.id),
        "port_id": target.port.id if target.port is not None else None,
        # DELETED: no DHCP port any more; its appliance is not removed yet.
        "status": target.port.status if target.port is not None else "DELETED",
        "state": state.state if state is not None else "creating",
        "attempts": state.attempts if state is not None else 0,
        "last_error": state.last_error if state is not None else None,
        "paused": bool(state is not None and state.paused) or paused_project,
        "config_hash": state.applied_hash if state is not None else None,
    }


def list_appliances(session: Session, caller: Caller) -> list[dict[str, Any]]:
    """Every appliance: the routers' (as `list_routers`, with `kind`
    "router") and the networks' DHCP appliances (`kind` "dhcp")."""
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
    return routers + dhcp


def balancer_view(session: Session, appliance_id: str) -> dict[str, Any] | None:
    """A load balancer's appliance (`lb-<id>`) with its history, while the
    load balancer or the orchestrator's record of it exists; None for
    another kind of id."""
    balancer_id = lb_driver.balancer_id(appliance_id)
    if balancer_id is None:
        return None
    balancer = session.get(LoadBalancer, balancer_id)
    state = session.get(ApplianceState, appliance_id)
    if balancer is not None:
        project_id = balancer.project_id
    elif state is not None:
        project_id = state.project_id
    else:
        raise NeutronError(
            404, "ApplianceNotFound", f"Appliance {appliance_id} could not be found."
        )
    paused = session.get(PausedProject, project_id)
    return {
        "id": appliance_id,
        "kind": "loadbalancer",
        "name": balancer.name if balancer is not None else "",
        "project_id": project_id,
        "loadbalancer_id": balancer_id,
        # DELETED: its tenant deleted it; its appliance is not removed yet.
        "status": balancer.provisioning_status if balancer is not None else "DELETED",
        "state": state.state if state is not None else "creating",
        "attempts": state.attempts if state is not None else 0,
        "last_error": state.last_error if state is not None else None,
        "paused": bool(state is not None and state.paused) or paused is not None,
        "config_hash": state.applied_hash if state is not None else None,
        "host": state.host if state is not None else None,
        "events": _events(session, appliance_id),
    }


def show_appliance(session: Session, caller: Caller, appliance_id: str) -> dict[str, Any]:
    """One appliance with its history: a router's (by id or name), a
    network's DHCP appliance (`dhcp-<network id>`) or a load balancer's
    (`lb-<id>`)."""
    require_admin(caller)
    balancer = balancer_view(session, appliance_id)
    if balancer is not None:
        return balancer
    target = _dhcp_appliance(session, appliance_id)
    if target is None:
        if dhcp_network_id(appliance_id) is not None:
            raise NeutronError(
                404, "ApplianceNotFound", f"Appliance {appliance_id} could not be found."
            )
        return {"kind": "router", **show_router(session, caller, appliance_id)}
    state = session.get(ApplianceState, target.id)
    paused = session.get(PausedProject, target.project_id) is not None
    return {**dhcp_view(target, state, paused), "events": _events(session, target.id)}


def appliance_request(
    session: Session, caller: Caller, appliance_id: str, action: str, now: datetime
) -> dict[str, Any]:
    """rebuild, debug or manage one appliance (a router's: `router_request`)."""
    require_admin(caller)
    shown = balancer_view(session, appliance_id)
    if shown is not None:
        if action not in ("rebuild", "debug", "manage"):
            raise NeutronError(404, "HTTPNotFound", f"Unknown appliance action {action}")
        balancer = _Appliance(appliance_id, shown["project_id"], None, None)
        row = _state_row(session, balancer, now, kind="loadbalancer")
        # The outbox names the load balancer: its event wakes its appliance.
        _request(session, row, action, now, "loadbalancer", shown["loadbalancer_id"])
        return show_appliance(session, caller, appliance_id)
    if dhcp_network_id(appliance_id) is None:
        return {"kind": "router", **router_request(session, caller, appliance_id, action, now)}
    if action not in ("rebuild", "debug", "manage"):
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


def plug(
    session: Session,
    caller: Caller,
    port_id: str,
    body: Any,
    now: datetime,
    names: Names | None = None,
) -> dict[str, Any]:
    """Bind a port to a workload namespace; the orchestrator plugs it. With
    the agent's `names`, the namespace is checked against its prefix too."""
    require_admin(caller)
    port = _port(session, port_id)
    if not isinstance(body, dict) or not isinstance(body.get("netns"), str):
        raise NeutronError(
            400, "HTTPBadRequest", 'Body must be {"netns": NAME, "ifname": NAME, "dhcp": BOOL}'
        )
    netns, ifname, dhcp = body["netns"], body.get("ifname", "eth0"), body.get("dhcp", False)
    # The host to plug it on (binding:host_id); none: the local host.
    host = body.get("host")
    if host is not None:
        if not isinstance(host, str):
            raise NeutronError(400, "HTTPBadRequest", "host: must be a host's name")
        host = _host(session, host).name
    if not isinstance(ifname, str):
        raise NeutronError(400, "HTTPBadRequest", "ifname: must be a string")
    if not isinstance(dhcp, bool):
        raise NeutronError(400, "HTTPBadRequest", "dhcp: must be true or false")
    # PortSpec's own rules: a binding the agent would refuse must never be
    # stored, or every fabric pass of the orchestrator fails on it.
    for field, value, check in (
        ("netns", netns, check_netns_name),
        ("ifname", ifname, check_ifname),
    ):
        try:
            check(value)
        except ValueError as error:
            raise NeutronError(400, "HTTPBadRequest", f"{field}: {error}") from None
    if names is not None:
        try:
            check_workload_netns(names, netns)
        except ValueError as error:
            raise NeutronError(400, "HTTPBadRequest", f"netns: {error}") from None
    if _NETNS_MAX is not None and len(netns) > _NETNS_MAX:
        raise NeutronError(400, "HTTPBadRequest", f"netns: at most {_NETNS_MAX} characters")
    if port.device_owner.startswith("network:"):
        raise NeutronError(409, "PortInUse", f"Port {port.id} belongs to {port.device_owner}.")
    taken = session.scalar(
        select(PortBinding).where(
            PortBinding.netns == netns,
            PortBinding.ifname == ifname,
            PortBinding.port_id != port.id,
            # Namespaces are per host: the same name on two hosts is two namespaces.
            PortBinding.host.is_(None) if host is None else PortBinding.host == host,
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
    binding.host = host
    outbox.record(
        session,
        resource_type="port",
        resource_id=port.id,
        project_id=port.project_id,
        action="plug",
        now=now,
    )
    return {"port_id": port.id, "netns": netns, "ifname": ifname, "dhcp": dhcp, "host": host}


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
