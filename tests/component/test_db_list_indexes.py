"""Migration 0009 (the indexes the tenant API's SQL lists and port creates
need) goes up and down on SQLite and PostgreSQL and builds what the models say."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from astara.db.engine import make_engine, sqlite_url
from astara.db.migrate import alembic_config, upgrade
from astara.db.models import Base

ADDED = {
    ("ports", "ix_ports_network_id_device_owner", ("network_id", "device_owner")),
    ("floating_ips", "ix_floating_ips_router_id", ("router_id",)),
    ("floating_ips", "ix_floating_ips_floating_port_id", ("floating_port_id",)),
}


def indexes(engine: Engine) -> set[tuple[str, str, tuple[str, ...]]]:
    found = set()
    inspector = inspect(engine)
    for table in ("ports", "floating_ips"):
        for index in inspector.get_indexes(table):
            found.add((table, str(index["name"]), tuple(str(c) for c in index["column_names"])))
    return found


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0009_adds_the_list_indexes_and_takes_them_away(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        sqlite_url(tmp_path)
        if backend == "sqlite"
        else request.getfixturevalue("postgres").create_database()
    )
    engine = make_engine(url)
    try:
        upgrade(engine, "0008")
        assert not ADDED & indexes(engine)
        upgrade(engine)
        assert indexes(engine) >= ADDED
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        command.downgrade(alembic_config(engine), "0008")
        assert not ADDED & indexes(engine)
        upgrade(engine)
        assert indexes(engine) >= ADDED
    finally:
        engine.dispose()
