"""`GET /v2/lbaas/loadbalancers/{id}/stats` and `/listeners/{id}/stats`:
Octavia's five counters (research §3.2), from `listener_statistics`, which
the orchestrator keeps from haproxy's stats socket. A load balancer's are
its listeners' summed; zeros where nothing was read yet."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.db.models import Listener, ListenerStatistics, LoadBalancer

COUNTERS = ("bytes_in", "bytes_out", "active_connections", "total_connections", "request_errors")


def _zero() -> dict[str, int]:
    return dict.fromkeys(COUNTERS, 0)


def listener(session: Session, row: Listener) -> dict[str, Any]:
    found = session.get(ListenerStatistics, row.id)
    shown = _zero() if found is None else {k: getattr(found, k) for k in COUNTERS}
    return {"stats": shown}


def balancer(session: Session, row: LoadBalancer) -> dict[str, Any]:
    shown = _zero()
    found = session.scalars(
        select(ListenerStatistics)
        .join(Listener, Listener.id == ListenerStatistics.listener_id)
        .where(Listener.load_balancer_id == row.id)
    )
    for stat in found:
        for name in COUNTERS:
            shown[name] += getattr(stat, name)
    return {"stats": shown}
