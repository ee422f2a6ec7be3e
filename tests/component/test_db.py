"""The database layer on a real SQLite file: migrations, constraints that make
concurrent allocation safe, and the outbox's transactional guarantee."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import IntegrityError

from astara.db import outbox
from astara.db.engine import make_engine, session_factory, sqlite_url
from astara.db.migrate import alembic_config, upgrade
from astara.db.models import (
    ApplianceEvent,
    ApplianceState,
    Base,
    IpAllocation,
    Network,
    OutboxEvent,
    Port,
    Subnet,
)

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC).replace(tzinfo=None)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(sqlite_url(tmp_path))
    upgrade(engine)
    yield engine
    engine.dispose()


def standard(**fields: object) -> dict[str, object]:
    return {
        "id": str(uuid.uuid4()),
        "project_id": "p1",
        "created_at": NOW,
        "updated_at": NOW,
        **fields,
    }


def make_subnet(engine: Engine) -> tuple[str, str]:
    with session_factory(engine).begin() as session:
        network = Network(**standard(name="n"))
        subnet = Subnet(
            **standard(
                network_id=network.id, ip_version=4, cidr="10.0.0.0/24", gateway_ip="10.0.0.1"
            )
        )
        session.add_all([network, subnet])
    return network.id, subnet.id


def test_migrations_build_exactly_the_models(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_migrations_go_down_and_up_again(engine: Engine) -> None:
    command.downgrade(alembic_config(engine), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(engine)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())


def test_sqlite_runs_in_wal_mode_with_foreign_keys(engine: Engine) -> None:
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_one_address_goes_to_exactly_one_of_many_concurrent_requests(engine: Engine) -> None:
    network_id, subnet_id = make_subnet(engine)
    sessions = session_factory(engine)
    outcomes: list[str] = []
    start = threading.Barrier(20)

    def claim(index: int) -> None:
        port = Port(**standard(network_id=network_id, mac_address=f"fa:16:3e:00:00:{index:02x}"))
        port.fixed_ips = [
            IpAllocation(ip_address="10.0.0.5", subnet_id=subnet_id, network_id=network_id)
        ]
        start.wait()
        try:
            with sessions.begin() as session:
                session.add(port)
            outcomes.append("won")
        except IntegrityError:
            outcomes.append("lost")

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["lost"] * 19 + ["won"]
    with sessions() as session:
        assert session.scalar(select(IpAllocation).where(IpAllocation.ip_address == "10.0.0.5"))
        assert len(session.scalars(select(Port)).all()) == 1  # the losers wrote nothing


def test_a_mac_is_unique_per_network(engine: Engine) -> None:
    network_id, _ = make_subnet(engine)
    sessions = session_factory(engine)
    with sessions.begin() as session:
        session.add(Port(**standard(network_id=network_id, mac_address="fa:16:3e:00:00:01")))
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(Port(**standard(network_id=network_id, mac_address="fa:16:3e:00:00:01")))


def test_deleting_a_port_releases_its_addresses(engine: Engine) -> None:
    network_id, subnet_id = make_subnet(engine)
    sessions = session_factory(engine)
    port = Port(**standard(network_id=network_id, mac_address="fa:16:3e:00:00:01"))
    port.fixed_ips = [
        IpAllocation(ip_address="10.0.0.9", subnet_id=subnet_id, network_id=network_id)
    ]
    with sessions.begin() as session:
        session.add(port)
    with sessions.begin() as session:
        session.execute(text("DELETE FROM ports WHERE id = :id"), {"id": port.id})
    with sessions() as session:
        assert session.scalars(select(IpAllocation)).all() == []


def test_events_commit_and_roll_back_with_their_change(engine: Engine) -> None:
    sessions = session_factory(engine)
    with pytest.raises(RuntimeError), sessions.begin() as session:
        network = Network(**standard(name="lost"))
        session.add(network)
        outbox.record(
            session,
            resource_type="network",
            resource_id=network.id,
            project_id="p1",
            action="create",
            now=NOW,
        )
        raise RuntimeError("the request failed after the write")
    with sessions() as session:
        assert session.scalars(select(Network)).all() == []
        assert session.scalars(select(OutboxEvent)).all() == []

    ids = []
    for name in ("a", "b", "c"):
        with sessions.begin() as session:
            network = Network(**standard(name=name))
            session.add(network)
            outbox.record(
                session,
                resource_type="network",
                resource_id=network.id,
                project_id="p1",
                action="create",
                now=NOW,
            )
            ids.append(network.id)
    with sessions() as session:
        events = outbox.since(session, 0)
        assert [e.resource_id for e in events] == ids
        assert [e.sequence for e in events] == sorted({e.sequence for e in events})
        assert [e.resource_id for e in outbox.since(session, events[0].sequence)] == ids[1:]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_router_records_become_appliance_records_and_back(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """0007 carries every router's record and history over (kind "router"),
    the event ids keep counting after them, and a downgrade brings the
    routers' back (a DHCP appliance's record has no place there)."""
    url = (
        sqlite_url(tmp_path)
        if backend == "sqlite"
        else request.getfixturevalue("postgres").create_database()
    )
    engine = make_engine(url)
    try:
        upgrade(engine, "0006")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO router_states (router_id, project_id, state, attempts,"
                    " last_error, updated_at, paused, rebuild_requested, removing)"
                    " VALUES ('r1', 'p1', 'error', 5, 'boom', :now, true, false, false)"
                ),
                {"now": NOW},
            )
            for message in ("one", "two"):
                connection.execute(
                    text(
                        "INSERT INTO router_events (router_id, at, message)"
                        " VALUES ('r1', :now, :message)"
                    ),
                    {"now": NOW, "message": message},
                )
        upgrade(engine)
        with session_factory(engine).begin() as session:
            row = session.get(ApplianceState, "r1")
            assert row is not None
            assert (row.kind, row.state, row.attempts, row.last_error, row.paused) == (
                "router",
                "error",
                5,
                "boom",
                True,
            )
            session.add(
                ApplianceState(
                    appliance_id="dhcp-n1",
                    kind="dhcp",
                    project_id="p1",
                    state="active",
                    updated_at=NOW,
                )
            )
            session.add(ApplianceEvent(appliance_id="r1", at=NOW, message="three"))
            session.add(ApplianceEvent(appliance_id="dhcp-n1", at=NOW, message="dhcp"))
        with session_factory(engine).begin() as session:
            events = session.scalars(
                select(ApplianceEvent.message)
                .where(ApplianceEvent.appliance_id == "r1")
                .order_by(ApplianceEvent.id)
            ).all()
            assert events == ["one", "two", "three"]
        command.downgrade(alembic_config(engine), "0006")
        with engine.connect() as connection:
            states = connection.execute(text("SELECT router_id FROM router_states")).all()
            assert [s[0] for s in states] == ["r1"]
            messages = connection.execute(
                text("SELECT message FROM router_events ORDER BY id")
            ).all()
            assert [m[0] for m in messages] == ["one", "two", "three"]
    finally:
        engine.dispose()


def test_ports_made_before_security_groups_are_bound_to_their_projects_default(
    tmp_path: Path,
) -> None:
    """Upgrading to 0010: each project with filtered ports gets its default
    group (Neutron's four rules) and those ports are bound to it; the
    service's ports and ports without port security are not."""
    engine = make_engine(sqlite_url(tmp_path))
    try:
        command.upgrade(alembic_config(engine), "0009")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO networks (id, project_id, description, created_at, updated_at,"
                    " revision_number, tags, name, admin_state_up, status, shared, external, mtu,"
                    " port_security_enabled, network_type) VALUES ('n1', 'p1', '', :now, :now,"
                    " 1, '[]', 'n', 1, 'ACTIVE', 0, 0, 1500, 1, 'vxlan')"
                ),
                {"now": NOW},
            )
            for port_id, project, owner, secured, mac in (
                ("vm1", "p1", "compute:nova", 1, "fa:16:3e:00:00:01"),
                ("vm2", "p1", "", 1, "fa:16:3e:00:00:02"),
                ("open", "p1", "", 0, "fa:16:3e:00:00:03"),
                ("gw", "p1", "network:router_interface", 1, "fa:16:3e:00:00:04"),
                ("other", "p2", "", 1, "fa:16:3e:00:00:05"),
            ):
                connection.execute(
                    text(
                        "INSERT INTO ports (id, project_id, description, created_at, updated_at,"
                        " revision_number, tags, network_id, name, admin_state_up, status,"
                        " mac_address, device_id, device_owner, port_security_enabled)"
                        " VALUES (:id, :project, '', :now, :now, 1, '[]', 'n1', '', 1, 'DOWN',"
                        " :mac, '', :owner, :secured)"
                    ),
                    {
                        "id": port_id,
                        "project": project,
                        "now": NOW,
                        "mac": mac,
                        "owner": owner,
                        "secured": secured,
                    },
                )
        command.upgrade(alembic_config(engine), "head")
        with engine.connect() as connection:
            defaults = dict(
                connection.execute(
                    text("SELECT project_id, security_group_id FROM default_security_groups")
                ).all()
            )
            assert set(defaults) == {"p1", "p2"}
            bound = dict(
                connection.execute(
                    text("SELECT port_id, security_group_id FROM port_security_groups")
                ).all()
            )
            assert bound == {"vm1": defaults["p1"], "vm2": defaults["p1"], "other": defaults["p2"]}
            rules = connection.execute(
                text(
                    "SELECT direction, ethertype, remote_group_id FROM security_group_rules"
                    " WHERE security_group_id = :g"
                ),
                {"g": defaults["p1"]},
            ).all()
            assert sorted(rules) == [
                ("egress", "IPv4", None),
                ("egress", "IPv6", None),
                ("ingress", "IPv4", defaults["p1"]),
                ("ingress", "IPv6", defaults["p1"]),
            ]
    finally:
        engine.dispose()
