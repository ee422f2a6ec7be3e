"""Hosts as operators see them (`/astara/v1/hosts`, `astara host ...`):
their state, heartbeat, underlay, physnets, zone, capacity and what runs
there; drain, undrain and remove. Each change is a database write plus an
outbox event (resource "host"), so the orchestrator looks at once.

- drain: no new appliance is placed on the host; what runs there stays until
  an operator moves it (`astara router move`) or the host is removed.
- remove: its certificate is revoked (kept in `revoked_certificates` until it
  would have expired) and its row deleted; appliances placed there keep the
  removed host's name, and the orchestrator rebuilds them elsewhere. The local
  host (the agent `astara serve` runs on its unix socket) cannot be removed:
  `astara serve` registers it again at every start; drain it instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from astara.api.admin import require_admin
from astara.api.auth import Caller
from astara.api.changes import timestamp
from astara.api.errors import NeutronError
from astara.db import outbox
from astara.db.models import ApplianceState, Host, PortBinding, RevokedCertificate

UP, DOWN, DRAINED = "up", "down", "drained"


def is_local(host: Host) -> bool:
    return host.address.startswith("unix:")


def state(host: Host) -> str:
    """up, down (its agent stopped answering heartbeats) or drained (up, but
    taking no new appliances)."""
    if not host.alive:
        return DOWN
    return DRAINED if host.drained else UP


def find(session: Session, name_or_id: str) -> Host:
    host = session.scalar(select(Host).where(Host.name == name_or_id)) or session.get(
        Host, name_or_id
    )
    if host is None:
        raise NeutronError(404, "HostNotFound", f"Host {name_or_id} could not be found.")
    return host


def _time(value: datetime | None) -> str | None:
    return timestamp(value) if value is not None else None


def appliances_on(session: Session, host: Host) -> list[ApplianceState]:
    return list(
        session.scalars(
            select(ApplianceState)
            .where(ApplianceState.host == host.name)
            .order_by(ApplianceState.appliance_id)
        )
    )


def ports_on(session: Session, host: Host) -> list[PortBinding]:
    """The ports plugged on `host` (on the local host: also those whose binding names none)."""
    where = PortBinding.host == host.name
    if is_local(host):
        where = or_(where, PortBinding.host.is_(None))
    return list(session.scalars(select(PortBinding).where(where).order_by(PortBinding.port_id)))


def view(session: Session, host: Host) -> dict[str, Any]:
    return {
        "id": host.id,
        "name": host.name,
        "state": state(host),
        "alive": host.alive,
        "drained": host.drained,
        "local": is_local(host),
        "address": host.address,
        "underlay_address": host.underlay_address,
        "physnets": dict(host.physnets or {}),
        "availability_zone": host.availability_zone,
        "last_heartbeat": _time(host.last_heartbeat),
        "created_at": _time(host.created_at),
        "capacity": (host.reported or {}).get("capacity"),
        "reported": dict(host.reported or {}),
        "appliances": len(appliances_on(session, host)),
    }


def list_hosts(session: Session, caller: Caller) -> list[dict[str, Any]]:
    require_admin(caller)
    return [view(session, h) for h in session.scalars(select(Host).order_by(Host.name))]


def show_host(session: Session, caller: Caller, name_or_id: str) -> dict[str, Any]:
    """One host with the appliances placed on it and the ports plugged there."""
    require_admin(caller)
    host = find(session, name_or_id)
    return {
        **view(session, host),
        "appliances": [
            {
                "id": a.appliance_id,
                "kind": a.kind,
                "project_id": a.project_id,
                "state": a.state,
                "epoch": a.epoch,
                "move_to": a.move_to,
            }
            for a in appliances_on(session, host)
        ],
        "ports": [
            {"port_id": b.port_id, "netns": b.netns, "ifname": b.ifname}
            for b in ports_on(session, host)
        ],
    }


def _event(session: Session, host: Host, action: str, now: datetime) -> None:
    outbox.record_host(session, host.id, host.name, action, now)


def set_drained(
    session: Session, caller: Caller, name_or_id: str, drained: bool, now: datetime
) -> dict[str, Any]:
    """drain (no new placements) or undrain a host."""
    require_admin(caller)
    host = find(session, name_or_id)
    if host.drained != drained:
        host.drained = drained
        _event(session, host, "drain" if drained else "undrain", now)
        session.flush()
    return show_host(session, caller, host.name)


def remove_host(session: Session, caller: Caller, name_or_id: str, now: datetime) -> None:
    """Revoke the host's certificate and forget the host (see the module's doc)."""
    require_admin(caller)
    host = find(session, name_or_id)
    if is_local(host):
        raise NeutronError(
            409,
            "HostIsLocal",
            f"Host {host.name} is the local agent of astara serve, registered again at every"
            " start: drain it instead.",
        )
    if host.cert_serial is not None and session.get(RevokedCertificate, host.cert_serial) is None:
        session.add(
            RevokedCertificate(
                serial=host.cert_serial,
                host_name=host.name,
                revoked_at=now,
                # A certificate without a recorded expiry is kept revoked for good.
                not_after=host.cert_not_after or datetime.max,
            )
        )
    _event(session, host, "remove", now)
    session.delete(host)
    session.flush()
