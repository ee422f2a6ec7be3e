"""Octavia's quotas: `/v2/lbaas/quotas` (research §2), enforced on every
create of a load-balancer object.

Stored in the same `quotas` table as Neutron's, under resource names of
their own (`lbaas:<name>`), so neither API shows or resets the other's.
A limit of -1 is unlimited; a project without a row has the defaults.
Defaults are Octavia's (unlimited), except load balancers themselves: each
costs a namespace and a haproxy, so a project gets 10 unless an operator
says otherwise (as Neutron's router quota).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from astara.api import quotas as neutron_quotas
from astara.api.auth import Caller
from astara.api.lbaas import errors
from astara.db.models import (
    HealthMonitor,
    L7Policy,
    L7Rule,
    Listener,
    LoadBalancer,
    Member,
    Pool,
    Quota,
)

PREFIX = "lbaas:"
MAX_QUOTA = 2_000_000_000
# name: (model, the name in Octavia's "Quota has been met" message, default)
RESOURCES: dict[str, tuple[Any, str, int]] = {
    "load_balancer": (LoadBalancer, "Load Balancer", 10),
    "listener": (Listener, "Listener", -1),
    "pool": (Pool, "Pool", -1),
    "health_monitor": (HealthMonitor, "Health Monitor", -1),
    "member": (Member, "Member", -1),
    "l7policy": (L7Policy, "L7 Policy", -1),
    "l7rule": (L7Rule, "L7 Rule", -1),
}
# Both spellings are shown and accepted (Octavia's deprecated ones first).
ALIASES = {"loadbalancer": "load_balancer", "healthmonitor": "health_monitor"}


def defaults() -> dict[str, int]:
    return {name: default for name, (_, _, default) in RESOURCES.items()}


def _rows(session: Session, project_id: str) -> dict[str, int]:
    found = session.scalars(
        select(Quota).where(Quota.project_id == project_id, Quota.resource.startswith(PREFIX))
    )
    return {row.resource.removeprefix(PREFIX): row.limit for row in found}


def limits(session: Session, project_id: str) -> dict[str, int]:
    return {**defaults(), **_rows(session, project_id)}


def view(project_id: str, values: dict[str, Any]) -> dict[str, Any]:
    shown = {"project_id": project_id, "tenant_id": project_id, **values}
    for alias, name in ALIASES.items():
        shown[alias] = values.get(name)
    return shown


def check(session: Session, resource: str, project_id: str, count: int = 1) -> None:
    """Refuse a create of `count` more of `resource` past the project's
    limit: 403 `Quota has been met for resources: <Name>`. A limited count
    takes the project's quota lock first (Neutron's: creates in a project
    are counted one after another)."""
    model, shown, default = RESOURCES[resource]
    row = session.get(Quota, (project_id, PREFIX + resource))
    limit = default if row is None else row.limit
    if limit < 0 or count <= 0:
        return
    neutron_quotas.lock(session, project_id)
    used = session.scalar(
        select(func.count()).select_from(model).where(model.project_id == project_id)
    )
    if (used or 0) + count > limit:
        raise errors.quota(shown)


def _may_read(caller: Caller, project_id: str) -> None:
    if not caller.is_admin and caller.project_id != project_id:
        raise errors.forbidden()


def _admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise errors.forbidden()


def listing(session: Session, caller: Caller) -> dict[str, Any]:
    """Projects with a limit of their own: their rows as set (null: the
    default); a project's own only, unless admin."""
    rows = select(Quota.project_id).where(Quota.resource.startswith(PREFIX))
    if not caller.is_admin:
        rows = rows.where(Quota.project_id == caller.project_id)
    projects = sorted(set(session.scalars(rows)))
    shown = []
    for project_id in projects:
        own = _rows(session, project_id)
        shown.append(view(project_id, {name: own.get(name) for name in RESOURCES}))
    return {"quotas": shown, "quotas_links": []}


def show(session: Session, caller: Caller, project_id: str) -> dict[str, Any]:
    if project_id == "defaults":
        return {"quota": view(project_id, defaults())}
    _may_read(caller, project_id)
    return {"quota": view(project_id, limits(session, project_id))}


def show_defaults(caller: Caller, project_id: str) -> dict[str, Any]:
    _may_read(caller, project_id)
    return {"quota": view(project_id, defaults())}


def update(session: Session, caller: Caller, project_id: str, body: Any) -> dict[str, Any]:
    """Each given limit set (-1 to 2,000,000,000; null: back to the
    default); the others unchanged. All checked before any is written."""
    _admin(caller)
    if not isinstance(body, dict) or "quota" not in body:
        raise errors.OctaviaError(400, 'Missing argument: "quota"')
    given = body["quota"]
    if not isinstance(given, dict):
        raise errors.OctaviaError(
            400, f"Invalid input for field/attribute quota. Value: '{given}'."
        )
    values: dict[str, int | None] = {}
    for key, value in given.items():
        name = ALIASES.get(key, key)
        if name not in RESOURCES:
            raise errors.OctaviaError(
                400,
                f"Invalid input for field/attribute quota. Value: '{given}'. "
                f"Unknown attribute for argument quota: {key}",
            )
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= MAX_QUOTA
        ):
            raise errors.OctaviaError(
                400,
                f"Invalid input for field/attribute {key}. Value: '{value}'. Value should be"
                f" an integer from -1 to {MAX_QUOTA}",
            )
        values[name] = value
    for name, value in values.items():
        row = session.get(Quota, (project_id, PREFIX + name))
        if value is None:
            if row is not None:
                session.delete(row)
        elif row is None:
            session.add(Quota(project_id=project_id, resource=PREFIX + name, limit=value))
        else:
            row.limit = value
    session.flush()
    return {"quota": view(project_id, limits(session, project_id))}


def reset(session: Session, caller: Caller, project_id: str) -> None:
    """All of the project's limits back to the defaults; 404 if it had none."""
    _admin(caller)
    if not _rows(session, project_id):
        raise errors.OctaviaError(404, f"Quotas {project_id} not found.")
    session.execute(
        delete(Quota).where(Quota.project_id == project_id, Quota.resource.startswith(PREFIX))
    )
