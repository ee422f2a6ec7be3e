"""The transactional outbox: every successful write records an event in the
same transaction, so an event exists exactly when its change does. Events
are kept a while after the orchestrator read them (`prune`), for `astara
events`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from astara.db.models import Base, OutboxEvent

# A Core insert into the table, built once: the event is written at once,
# in the session's transaction, without the unit of work's bookkeeping
# (every write of the API records one).
_INSERT = insert(Base.metadata.tables[OutboxEvent.__tablename__])


def record(
    session: Session,
    *,
    resource_type: str,
    resource_id: str,
    project_id: str,
    action: str,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> None:
    """Write an event in the session's transaction (committed with it, or
    not at all). Events are numbered in the order they are recorded."""
    session.execute(
        _INSERT,
        {
            "resource_type": resource_type,
            "resource_id": resource_id,
            "project_id": project_id,
            "action": action,
            "created_at": now,
            "detail": detail or {},
        },
    )


def record_host(session: Session, host_id: str, name: str, action: str, now: datetime) -> None:
    """A host's event (drained, removed, down, up, fenced): every orchestrator
    wakes its own appliances there from it."""
    record(
        session,
        resource_type="host",
        resource_id=host_id,
        project_id="",
        action=action,
        now=now,
        detail={"name": name},
    )


def since(session: Session, sequence: int, limit: int = 1000) -> list[OutboxEvent]:
    """Committed events after `sequence`, oldest first."""
    query = (
        select(OutboxEvent)
        .where(OutboxEvent.sequence > sequence)
        .order_by(OutboxEvent.sequence)
        .limit(limit)
    )
    return list(session.scalars(query))


def prune(session: Session, *, read_up_to: int, keep: int, before: datetime) -> int:
    """Delete the events up to `read_up_to` (read already) that are neither
    among the newest `keep` nor created at or after `before`; how many."""
    # The newest event beyond the newest `keep`: it and older ones may go.
    # The newest of all always stays: SQLite numbers the next one after it,
    # and a sequence used again would never be read.
    prunable = session.scalar(
        select(OutboxEvent.sequence)
        .order_by(OutboxEvent.sequence.desc())
        .offset(max(keep, 1))
        .limit(1)
    )
    if prunable is None:
        return 0  # no more than `keep` events
    result = session.execute(
        delete(OutboxEvent).where(
            OutboxEvent.sequence <= min(prunable, read_up_to),
            OutboxEvent.created_at < before,
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
