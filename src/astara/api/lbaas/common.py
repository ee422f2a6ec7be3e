"""What every Octavia object shares: its common attributes and view, the
load balancer's immutability while a change is on its way, and the statuses
a change sets (the object's and its load balancer's)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import update
from sqlalchemy.orm import Session

from astara.api import changes
from astara.api.auth import Caller
from astara.api.lbaas import errors
from astara.db.models import LoadBalancer, LoadBalancerObject

PENDING = ("PENDING_CREATE", "PENDING_UPDATE", "PENDING_DELETE")
Row = TypeVar("Row", bound=LoadBalancerObject)


def timestamp(value: datetime | None) -> str | None:
    """Octavia's time format: ISO 8601 without a zone."""
    return value.strftime("%Y-%m-%dT%H:%M:%S") if value is not None else None


def object_view(row: LoadBalancerObject) -> dict[str, Any]:
    """The attributes every object shows (`tenant_id` is `project_id`, as Octavia's)."""
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "admin_state_up": row.admin_state_up,
        "project_id": row.project_id,
        "tenant_id": row.project_id,
        "provisioning_status": row.provisioning_status,
        "operating_status": row.operating_status,
        "tags": sorted(row.tags or []),
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
    }


def get(session: Session, caller: Caller, model: type[Row], object_id: str, resource: str) -> Row:
    """An object the caller may see: another project's is 403 (Octavia
    finds it, then its policy refuses), a missing one 404."""
    row = session.get(model, object_id)
    if row is None:
        raise errors.not_found(resource, object_id)
    if not caller.is_admin and row.project_id != caller.project_id:
        raise errors.forbidden()
    return row


def set_common(row: LoadBalancerObject, values: dict[str, Any]) -> None:
    """A PUT's common attributes: a null name or description is empty, a
    null admin state false (Octavia's reading), tags replaced when given."""
    for name in ("name", "description"):
        if name in values:
            setattr(row, name, values[name] or "")
    if "admin_state_up" in values:
        row.admin_state_up = values["admin_state_up"] is True
    if values.get("tags") is not None:
        row.tags = sorted(set(values["tags"]))


def balancer_for_change(session: Session, caller: Caller, balancer_id: str) -> LoadBalancer:
    """The load balancer a child object's change goes through: locked (a row
    lock on PostgreSQL, the write lock on SQLite), the caller's, and ACTIVE
    (else 409: Octavia's clients wait for ACTIVE between changes)."""
    session.execute(
        update(LoadBalancer)
        .where(LoadBalancer.id == balancer_id)
        .values(revision_number=LoadBalancer.revision_number)
    )
    session.expire_all()
    balancer = session.get(LoadBalancer, balancer_id)
    if balancer is None or balancer.provisioning_status == "DELETED":
        raise errors.not_found("Load Balancer", balancer_id)
    if not caller.is_admin and balancer.project_id != caller.project_id:
        raise errors.forbidden()
    if balancer.provisioning_status in PENDING:
        raise errors.immutable("Load Balancer", balancer.id)
    return balancer


def changed(
    session: Session,
    balancer: LoadBalancer,
    row: LoadBalancerObject,
    kind: str,
    action: str,
    now: datetime,
) -> None:
    """A child's change recorded: it is PENDING_<action>, its load balancer
    PENDING_UPDATE, until the appliance runs the config that has it."""
    row.provisioning_status = f"PENDING_{action.upper()}"
    row.updated_at = now
    balancer.provisioning_status = "PENDING_UPDATE"
    changes.update(session, "loadbalancer", balancer, {}, now)
    changes.record(session, kind, row, action, now)


def removed(
    session: Session, balancer: LoadBalancer, row: LoadBalancerObject, kind: str, now: datetime
) -> None:
    """A child gone from the API at once (a GET finds it no more, which is
    what Octavia's clients wait for); its load balancer PENDING_UPDATE until
    the appliance runs the config without it."""
    session.delete(row)
    session.flush()
    balancer.provisioning_status = "PENDING_UPDATE"
    changes.update(session, "loadbalancer", balancer, {}, now)
    changes.record(session, kind, row, "delete", now, {"loadbalancer_id": balancer.id})
