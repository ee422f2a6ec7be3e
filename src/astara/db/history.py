"""An appliance's history (`ApplianceEvent`): every transition and request,
and why, for `astara router show` and `astara appliance show`. The
orchestrator and the operators' API both write it; both keep it to the newest
`KEPT` events per appliance here."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from astara.db.models import ApplianceEvent

KEPT = 200  # events kept per appliance


def record(session: Session, appliance_id: str, at: datetime, message: str) -> None:
    """Add one event to the session's transaction, dropping the oldest beyond `KEPT`."""
    session.add(ApplianceEvent(appliance_id=appliance_id, at=at, message=message))
    trim(session, appliance_id)


def trim(session: Session, appliance_id: str, kept: int = KEPT) -> None:
    """Drop an appliance's oldest events beyond the newest `kept` (pending ones count)."""
    session.flush()
    cutoff = session.scalar(
        select(ApplianceEvent.id)
        .where(ApplianceEvent.appliance_id == appliance_id)
        .order_by(ApplianceEvent.id.desc())
        .offset(kept)
        .limit(1)
    )
    if cutoff is not None:
        session.execute(
            delete(ApplianceEvent).where(
                ApplianceEvent.appliance_id == appliance_id, ApplianceEvent.id <= cutoff
            )
        )
