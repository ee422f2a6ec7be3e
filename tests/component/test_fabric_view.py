"""What a push reads of the fabric (`l2.fabric_view` for its networks) grows
with the hosts and networks it touches, not with the appliances on them:
every router of a cloud is on its external network."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event

from astara.db.engine import make_engine, session_factory
from astara.db.migrate import upgrade
from astara.db.models import ApplianceState, Host, Router
from astara.orchestrator.l2 import fabric_view
from tests.component.conftest import NOW, Api

ROUTERS = 10  # the default quota
HOSTS = ("h1", "h2")


@pytest.fixture
def engine(postgres: Any) -> Iterator[Engine]:
    """PostgreSQL alone: its driver counts the rows a SELECT returned
    (SQLite's does not)."""
    made = make_engine(postgres.create_database())
    upgrade(made)
    yield made
    made.dispose()


@pytest.fixture
def rows_read(engine: Engine) -> Iterator[list[tuple[str, int]]]:
    """(statement, rows it returned) of every SELECT."""
    seen: list[tuple[str, int]] = []

    def count(_: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, cursor.rowcount))

    event.listen(engine, "after_cursor_execute", count)
    yield seen
    event.remove(engine, "after_cursor_execute", count)


def test_a_push_reads_each_host_of_a_shared_network_once(
    admin: Api, engine: Engine, rows_read: list[tuple[str, int]]
) -> None:
    external = {"network": {"name": "public", "router:external": True}}
    public = admin("POST", "/v2.0/networks", external).json()["network"]["id"]
    subnet = {"network_id": public, "cidr": "172.16.0.0/20", "ip_version": 4}
    assert admin("POST", "/v2.0/subnets", {"subnet": subnet}).status_code == 201
    made = admin(
        "POST",
        "/v2.0/routers",
        {
            "routers": [
                {"name": f"r{n}", "external_gateway_info": {"network_id": public}}
                for n in range(ROUTERS)
            ]
        },
    )
    assert made.status_code == 201, made.text
    sessions = session_factory(engine)
    with sessions.begin() as session:
        for name in HOSTS:
            session.add(
                Host(id=str(uuid.uuid4()), name=name, address=f"https://{name}:1", created_at=NOW)
            )
        for n, router in enumerate(session.query(Router).all()):
            session.add(
                ApplianceState(
                    appliance_id=router.id,
                    project_id=router.project_id,
                    state="active",
                    updated_at=NOW,
                    host=HOSTS[n % len(HOSTS)],
                )
            )
    rows_read.clear()
    with sessions.begin() as session:
        view = fabric_view(session, None, [public])
    assert view.needs == {name: {public} for name in HOSTS}
    most = max(rows_read, key=lambda read: read[1])
    assert most[1] <= len(HOSTS), most
