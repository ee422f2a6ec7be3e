"""A router's history (`RouterEvent`): every transition and request, and why,
for `astara router show`. The orchestrator and the operators' API both write
it; both keep it to the newest `KEPT` events per router here."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from astara.db.models import RouterEvent

KEPT = 200  # events kept per router


def record(session: Session, router_id: str, at: datetime, message: str) -> None:
    """Add one event to the session's transaction, dropping the oldest beyond `KEPT`."""
    session.add(RouterEvent(router_id=router_id, at=at, message=message))
    trim(session, router_id)


def trim(session: Session, router_id: str, kept: int = KEPT) -> None:
    """Drop a router's oldest events beyond the newest `kept` (pending ones count)."""
    session.flush()
    cutoff = session.scalar(
        select(RouterEvent.id)
        .where(RouterEvent.router_id == router_id)
        .order_by(RouterEvent.id.desc())
        .offset(kept)
        .limit(1)
    )
    if cutoff is not None:
        session.execute(
            delete(RouterEvent).where(RouterEvent.router_id == router_id, RouterEvent.id <= cutoff)
        )
