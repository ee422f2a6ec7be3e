"""The orchestrator's host registry on the database (SQLite and PostgreSQL):
the local host is known by its socket, and a renamed one keeps what is
placed and bound there."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from astara.agent.client import AgentClient
from astara.db.engine import session_factory
from astara.db.models import ApplianceState, Host
from astara.orchestrator.hosts import Hosts
from tests.component.conftest import NOW


def test_a_renamed_local_host_is_one_host_with_what_it_runs(engine: Engine, tmp_path: Path) -> None:
    sessions = session_factory(engine)
    address = f"unix:{tmp_path / 'agent.sock'}"
    client = AgentClient(address)
    hosts = Hosts(sessions, clock=lambda: NOW)
    try:
        hosts.adopt("old-name", client, address)
        with sessions.begin() as session:
            session.add(
                ApplianceState(
                    appliance_id="r1",
                    kind="router",
                    project_id="p",
                    state="active",
                    attempts=0,
                    updated_at=NOW,
                    paused=False,
                    rebuild_requested=False,
                    host="old-name",
                    epoch=1,
                )
            )
            # Applied before appliances had hosts (migration 0008): on the local one.
            session.add(
                ApplianceState(
                    appliance_id="r0",
                    kind="router",
                    project_id="p",
                    state="active",
                    attempts=0,
                    updated_at=NOW,
                    paused=False,
                    rebuild_requested=False,
                    applied_hash="0" * 64,
                )
            )
        hosts.adopt("new-name", client, address)
        hosts.adopt("new-name", client, address)  # a restart changes nothing
        with sessions.begin() as session:
            assert list(session.scalars(select(Host.name))) == ["new-name"]
            state = session.get(ApplianceState, "r1")
            assert state is not None and (state.host, state.epoch) == ("new-name", 1)
            legacy = session.get(ApplianceState, "r0")
            assert legacy is not None and legacy.host == "new-name"
        assert hosts.local == "new-name"
        assert set(hosts.infos()) == {"new-name"}
    finally:
        hosts.close()
        client.close()


def test_the_local_host_never_takes_a_joined_host_s_name(engine: Engine, tmp_path: Path) -> None:
    sessions = session_factory(engine)
    with sessions.begin() as session:
        session.add(
            Host(
                id="00000000-0000-0000-0000-000000000002",
                name="h2",
                address="https://192.0.2.12:9698",
                physnets={},
                availability_zone="nova",
                drained=False,
                alive=True,
                reported={},
                created_at=NOW,
            )
        )
    address = f"unix:{tmp_path / 'agent.sock'}"
    client = AgentClient(address)
    hosts = Hosts(sessions, clock=lambda: NOW)
    try:
        with pytest.raises(ValueError, match="joined host"):
            hosts.adopt("h2", client, address)
        with sessions.begin() as session:
            (row,) = session.scalars(select(Host)).all()
            assert (row.name, row.address) == ("h2", "https://192.0.2.12:9698")
    finally:
        hosts.close()
        client.close()
