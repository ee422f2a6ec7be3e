"""How every resource change is recorded: the revision and time bumped, and
an outbox event in the same transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from astara.db import outbox
from astara.db.models import StandardAttributes


def record(
    session: Session, resource_type: str, row: StandardAttributes, action: str, now: datetime
) -> None:
    outbox.record(
        session,
        resource_type=resource_type,
        resource_id=row.id,
        project_id=row.project_id,
        action=action,
        now=now,
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
