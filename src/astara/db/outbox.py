"""The transactional outbox: every successful write records an event in the
same transaction, so an event exists exactly when its change does."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.db.models import OutboxEvent


def record(
    session: Session,
    *,
    resource_type: str,
    resource_id: str,
    project_id: str,
    action: str,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> OutboxEvent:
    """Add an event to the session's transaction (committed with it, or not at all)."""
    event = OutboxEvent(
        resource_type=resource_type,
        resource_id=resource_id,
        project_id=project_id,
        action=action,
        created_at=now,
        detail=detail or {},
    )
    session.add(event)
    return event


def since(session: Session, sequence: int, limit: int = 1000) -> list[OutboxEvent]:
    """Committed events after `sequence`, oldest first."""
    query = (
        select(OutboxEvent)
        .where(OutboxEvent.sequence > sequence)
        .order_by(OutboxEvent.sequence)
        .limit(limit)
    )
    return list(session.scalars(query))
