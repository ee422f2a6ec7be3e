"""How every resource change is recorded: the revision and time bumped, and
an outbox event in the same transaction."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from astara.db import outbox
from astara.db.models import Router, StandardAttributes

# A change to what a router's appliance must run makes the router BUILD until
# the orchestrator has applied it (then ACTIVE): the status tells the truth.
BUILD = "BUILD"


@functools.lru_cache(maxsize=4096)
def timestamp(value: datetime) -> str:
    """Neutron's time format: UTC, whole seconds, trailing Z. Cached: the
    rows of a list share few distinct times, and formatting is not cheap."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def standard_view(row: StandardAttributes) -> dict[str, Any]:
    """The standard attributes every resource shows (§1.3)."""
    return {
        "id": row.id,
        "tenant_id": row.project_id,
        "project_id": row.project_id,
        "description": row.description,
        "tags": sorted(row.tags or []),
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
        "revision_number": row.revision_number,
    }


def record(
    session: Session,
    resource_type: str,
    row: StandardAttributes,
    action: str,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> None:
    """`detail` says what a deleted object was attached to, so that the
    orchestrator finds whom it concerned once the row is gone."""
    outbox.record(
        session,
        resource_type=resource_type,
        resource_id=row.id,
        project_id=row.project_id,
        action=action,
        now=now,
        detail=detail,
    )


def update(
    session: Session,
    resource_type: str,
    row: StandardAttributes,
    values: dict[str, Any],
    now: datetime,
    columns: dict[str, str] | None = None,
) -> None:
    """Set `values` (API names, mapped through `columns`), bump the revision."""
    for name, value in values.items():
        setattr(row, (columns or {}).get(name, name), value)
    row.updated_at = now
    row.revision_number += 1
    record(session, resource_type, row, "update", now)


def mark_build(session: Session, router_id: str | None, now: datetime) -> None:
    """What `router_id`'s appliance must run changed through another resource
    (a floating IP): BUILD until applied, and an event that says so."""
    router = session.get(Router, router_id) if router_id is not None else None
    if router is not None:
        router.status = BUILD
        outbox.record(
            session,
            resource_type="router",
            resource_id=router.id,
            project_id=router.project_id,
            action="refresh",
            now=now,
        )
