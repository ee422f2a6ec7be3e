"""The orchestrator's host registry on the database (SQLite and PostgreSQL):
the local host is known by its socket, and a renamed one keeps what is
placed and bound there."""

from __future__ import annotations

from pathlib import Path

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
        hosts.adopt("new-name", client, address)
        hosts.adopt("new-name", client, address)  # a restart changes nothing
        with sessions.begin() as session:
            assert list(session.scalars(select(Host.name))) == ["new-name"]
            state = session.get(ApplianceState, "r1")
            assert state is not None and (state.host, state.epoch) == ("new-name", 1)
        assert hosts.local == "new-name"
        assert set(hosts.infos()) == {"new-name"}
    finally:
        hosts.close()
        client.close()
