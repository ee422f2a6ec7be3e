"""Which integrity errors are lost races (run the transaction again) and which
are real errors (reported once): classified on errors the real SQLite and
PostgreSQL databases raise, and through the transaction runner."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from threading import Barrier, Thread
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.schema import CreateTable

from astara.api.app import create_app
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.api.http import races
from astara.api.http.dependencies import TransactionDep, authenticated_router
from astara.api.http.races import Constraint, Violation
from astara.api.http.transaction import INTERNAL_ERROR, run_transaction
from astara.db.engine import make_engine, session_factory
from astara.db.migrate import upgrade
from astara.db.models import (
    ApplianceState,
    Credential,
    DefaultFirewallGroup,
    DefaultSecurityGroup,
    FloatingIp,
    IpAllocation,
    Project,
    QuotaLock,
)
from tests.component.conftest import NOW, Api, error

CALLER = Caller("p1", "p1", is_admin=True)
Rows = Callable[[], list[Any]]


def integrity_error(engine: Engine, rows: Rows) -> IntegrityError:
    """The error the real database raises when `rows` are inserted."""
    with pytest.raises(IntegrityError) as caught, Session(engine) as session, session.begin():
        session.add_all(rows())
        session.flush()
    return caught.value


def two_ports(admin: Api) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    network = admin.create_network(name="races")
    body = {"network_id": network["id"], "cidr": "10.7.0.0/24", "ip_version": 4}
    subnet = admin("POST", "/v2.0/subnets", {"subnet": body}).json()["subnet"]
    first, second = (
        admin("POST", "/v2.0/ports", {"port": {"network_id": network["id"]}}).json()["port"]
        for _ in range(2)
    )
    return network["id"], subnet["id"], first, second


def quota_lock(project_id: str) -> Rows:
    return lambda: [QuotaLock(project_id=project_id, creates=1)]


def nameless_project() -> list[Any]:
    return [Project(id=uuid.uuid4().hex, name=None, is_admin=False, created_at=NOW)]


def test_a_duplicate_address_on_a_subnet_is_a_lost_race(admin: Api, engine: Engine) -> None:
    network_id, subnet_id, first, second = two_ports(admin)
    taken = first["fixed_ips"][0]["ip_address"]
    found = races.violation(
        integrity_error(
            engine,
            lambda: [
                IpAllocation(
                    port_id=second["id"],
                    ip_address=taken,
                    subnet_id=subnet_id,
                    network_id=network_id,
                    position=1,
                )
            ],
        )
    )
    assert found == Violation(Constraint.UNIQUE, "uq_ip_allocations_subnet_id_ip_address")
    assert found.lost_race


def test_a_second_insert_of_a_project_s_quota_lock_is_a_lost_race(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        session.add_all(quota_lock("p1")())
    found = races.violation(integrity_error(engine, quota_lock("p1")))
    assert found == Violation(Constraint.UNIQUE, "pk_quota_locks") and found.lost_race


def test_a_projects_second_default_security_group_is_a_lost_race(
    admin: Api, engine: Engine
) -> None:
    """Two first requests of a project each make its default group: the
    second row for the project breaks the primary key, and runs again."""
    groups = admin("GET", "/v2.0/security-groups").json()["security_groups"]
    (default,) = [g for g in groups if g["name"] == "default"]
    other = admin("POST", "/v2.0/security-groups", {"security_group": {"name": "x"}}).json()
    found = races.violation(
        integrity_error(
            engine,
            lambda: [
                DefaultSecurityGroup(
                    project_id=default["project_id"],
                    security_group_id=other["security_group"]["id"],
                )
            ],
        )
    )
    assert found == Violation(Constraint.UNIQUE, "pk_default_security_groups")
    assert found.lost_race


def test_a_projects_second_default_firewall_group_is_a_lost_race(
    admin: Api, engine: Engine
) -> None:
    """The same for FWaaS: the second `default` group of a project runs again
    (and finds the first)."""
    groups = admin("GET", "/v2.0/fwaas/firewall_groups").json()["firewall_groups"]
    (default,) = groups
    other = admin("POST", "/v2.0/fwaas/firewall_groups", {"firewall_group": {"name": "x"}})
    found = races.violation(
        integrity_error(
            engine,
            lambda: [
                DefaultFirewallGroup(
                    project_id=default["project_id"],
                    firewall_group_id=other.json()["firewall_group"]["id"],
                )
            ],
        )
    )
    assert found == Violation(Constraint.UNIQUE, "pk_default_firewall_groups")
    assert found.lost_race


def test_a_dangling_foreign_key_is_not_a_race(admin: Api, engine: Engine) -> None:
    network_id, _, first, _ = two_ports(admin)
    error = integrity_error(
        engine,
        lambda: [
            IpAllocation(
                port_id=first["id"],
                ip_address="10.7.0.200",
                subnet_id=str(uuid.uuid4()),  # no such subnet
                network_id=network_id,
                position=1,
            )
        ],
    )
    found = races.violation(error)
    assert found.constraint is Constraint.FOREIGN_KEY and not found.lost_race
    assert not races.is_lost_race(error)


def test_a_missing_value_is_not_a_race(engine: Engine) -> None:
    found = races.violation(integrity_error(engine, nameless_project))
    assert found.constraint is Constraint.NOT_NULL and not found.lost_race


def test_a_unique_constraint_no_request_races_on_is_not_a_race(admin: Api, engine: Engine) -> None:
    with Session(engine) as session:
        existing = session.scalars(select(Credential)).first()
        assert existing is not None
        digest, project_id = existing.token_sha256, existing.project_id
    found = races.violation(
        integrity_error(
            engine,
            lambda: [
                Credential(
                    id=str(uuid.uuid4()),
                    project_id=project_id,
                    token_sha256=digest,
                    created_at=NOW,
                )
            ],
        )
    )
    assert found == Violation(Constraint.UNIQUE, "uq_credentials_token_sha256")
    assert not found.lost_race


@pytest.mark.parametrize(
    ("error_name", "message", "expected"),
    [
        (
            "SQLITE_CONSTRAINT_UNIQUE",
            "UNIQUE constraint failed: ports.network_id, ports.mac_address",
            Violation(Constraint.UNIQUE, "uq_ports_network_id_mac_address"),
        ),
        (
            "SQLITE_CONSTRAINT_PRIMARYKEY",
            "UNIQUE constraint failed: quotas.project_id, quotas.resource",
            Violation(Constraint.UNIQUE, "pk_quotas"),
        ),
        (  # the columns in another order are another (unknown) index
            "SQLITE_CONSTRAINT_UNIQUE",
            "UNIQUE constraint failed: ports.mac_address, ports.network_id",
            Violation(Constraint.UNIQUE, None),
        ),
        (
            "SQLITE_CONSTRAINT_UNIQUE",
            "UNIQUE constraint failed: index 'ix_something'",
            Violation(Constraint.UNIQUE, None),
        ),
        (
            "SQLITE_CONSTRAINT_FOREIGNKEY",
            "FOREIGN KEY constraint failed",
            Violation(Constraint.FOREIGN_KEY, None),
        ),
        (
            "SQLITE_CONSTRAINT_CHECK",
            "CHECK constraint failed: x",
            Violation(Constraint.OTHER, None),
        ),
    ],
)
def test_sqlite_errors_map_to_the_constraint_names_postgresql_reports(
    error_name: str, message: str, expected: Violation
) -> None:
    assert races.sqlite_violation(error_name, message) == expected


# --- the runner ---------------------------------------------------------------------------


def test_a_real_error_runs_once_and_is_reported_as_itself(engine: Engine) -> None:
    sessions = session_factory(engine)
    calls = []

    def work(session: Session, caller: Caller) -> None:
        calls.append(caller)
        session.add_all(nameless_project())
        session.flush()

    with pytest.raises(NeutronError) as caught:
        run_transaction(sessions, CALLER, work)
    assert len(calls) == 1
    assert (caught.value.status, caught.value.message) == (500, INTERNAL_ERROR)


def test_a_lost_race_runs_again_until_it_succeeds(engine: Engine) -> None:
    sessions = session_factory(engine)
    with sessions.begin() as session:
        session.add_all(quota_lock("p1")())
    calls = []

    def work(session: Session, caller: Caller) -> str:
        calls.append(caller)
        if len(calls) <= 3:  # the first three runs collide with the committed row
            session.add_all(quota_lock("p1")())
            session.flush()
        session.add_all(quota_lock(f"p{len(calls)}")())
        return "done"

    assert run_transaction(sessions, CALLER, work) == "done"
    assert len(calls) == 4
    with sessions.begin() as session:
        assert set(session.scalars(select(QuotaLock.project_id))) == {"p1", "p4"}


def test_a_race_lost_every_time_stops_after_the_bounded_attempts(engine: Engine) -> None:
    sessions = session_factory(engine)
    with sessions.begin() as session:
        session.add_all(quota_lock("p1")())
    calls = []

    def work(session: Session, caller: Caller) -> None:
        calls.append(caller)
        session.add_all(quota_lock("p1")())
        session.flush()

    with pytest.raises(NeutronError) as caught:
        run_transaction(sessions, CALLER, work, attempts=4)
    assert len(calls) == 4
    assert (caught.value.status, caught.value.kind) == (409, "Conflict")


def test_a_row_changed_under_the_transaction_runs_it_again(engine: Engine) -> None:
    sessions = session_factory(engine)
    calls = []

    def work(session: Session, caller: Caller) -> int:
        calls.append(caller)
        if len(calls) == 1:
            raise StaleDataError("another writer deleted the row")
        return len(calls)

    assert run_transaction(sessions, CALLER, work) == 2


def test_a_deadlock_postgresql_broke_runs_again(postgres: Any) -> None:
    """Two transactions that lock two rows in opposite orders: PostgreSQL
    ends one of them (a real deadlock), and that one is a lost race, run
    again; it then succeeds."""
    engine = make_engine(postgres.create_database())
    try:
        upgrade(engine)
        sessions = session_factory(engine)
        with sessions.begin() as session:
            for name in ("a", "b"):
                session.execute(
                    text("INSERT INTO quota_locks (project_id, creates) VALUES (:p, 0)"),
                    {"p": name},
                )
        both_hold_one = Barrier(2)
        runs: dict[str, int] = {"a": 0, "b": 0}
        failures: list[BaseException] = []

        def crossing(first: str, second: str) -> None:
            def work(session: Session, caller: Caller) -> None:
                runs[first] += 1
                bump = text("UPDATE quota_locks SET creates = creates + 1 WHERE project_id = :p")
                session.execute(bump, {"p": first})
                if runs[first] == 1:
                    both_hold_one.wait(10)  # each holds its first row; then each wants the other's
                session.execute(bump, {"p": second})

            try:
                run_transaction(sessions, CALLER, work)
            except BaseException as failure:  # reported below
                failures.append(failure)

        threads = [Thread(target=crossing, args=pair) for pair in (("a", "b"), ("b", "a"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert failures == []
        assert sorted(runs.values()) == [1, 2]  # one was ended, and ran again
        with sessions.begin() as session:
            counts = dict(
                session.execute(text("SELECT project_id, creates FROM quota_locks")).all()
            )
        assert counts == {"a": 2, "b": 2}
    finally:
        engine.dispose()


# --- through the app ------------------------------------------------------------------------


def test_a_route_s_real_integrity_error_is_neutron_s_generic_500(
    admin: Api, engine: Engine
) -> None:
    """A route written the way every route is (the public dependencies)."""
    app = create_app(engine)
    extra = authenticated_router(prefix="/test")
    calls = []

    @extra.post("/nameless-project")
    async def nameless(run: TransactionDep) -> None:
        def work(session: Session, caller: Caller) -> None:
            calls.append(caller)
            session.add_all(nameless_project())
            session.flush()

        await run(work)

    @extra.get("/crash")
    async def crash() -> None:
        raise RuntimeError("a bug, with a secret in its message")

    app.include_router(extra)
    client = TestClient(app, raise_server_exceptions=False)
    headers = {"X-Auth-Token": admin.token}
    response = client.post("/test/nameless-project", headers=headers)
    assert error(response) == (500, "HTTPInternalServerError", INTERNAL_ERROR)
    assert len(calls) == 1
    response = client.get("/test/crash", headers=headers)
    assert error(response) == (500, "HTTPInternalServerError", INTERNAL_ERROR)
    assert "secret" not in response.text
    assert client.post("/test/nameless-project").status_code == 401
    assert len(calls) == 1


def test_an_appliance_state_row_added_twice_is_a_lost_race(engine: Engine) -> None:
    """An operator's request and the orchestrator both add an appliance's
    first state row: the loser runs again (the table was renamed in 0007)."""

    def row() -> list[Any]:
        return [
            ApplianceState(
                appliance_id="r1", kind="router", project_id="p1", state="creating", updated_at=NOW
            )
        ]

    with Session(engine) as session, session.begin():
        session.add_all(row())
    found = races.violation(integrity_error(engine, row))
    assert found == Violation(Constraint.UNIQUE, "pk_appliance_states") and found.lost_race


def test_a_long_constraint_name_is_known_by_the_name_postgresql_gives_it() -> None:
    """PostgreSQL keeps 63 characters of a name: SQLAlchemy shortens a longer
    one, and the classifier maps the short one back."""
    ddl = str(CreateTable(FloatingIp.__table__).compile(dialect=postgresql.dialect()))
    long_name = "uq_floating_ips_fixed_port_id_fixed_ip_address_floating_network_id"
    short = races.postgres_name(long_name)
    assert len(short) <= 63 and f"CONSTRAINT {short} " in ddl
    found = races.postgres_violation("23505", short)
    assert found == Violation(Constraint.UNIQUE, long_name) and found.lost_race
