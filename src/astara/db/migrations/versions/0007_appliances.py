"""router_states and router_events become appliance_states and
appliance_events: the orchestrator's records are per appliance (a router's,
or a network's DHCP appliance `dhcp-<network id>`), with the appliance's kind

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import SchemaItem

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_STATE_COLUMNS = (
    "project_id, state, attempts, retry_at, last_error, applied_hash, removing,"
    " updated_at, paused, rebuild_requested"
)


def _states(name: str, id_column: str, id_length: int, kind: bool) -> None:
    columns: list[SchemaItem] = [
        sa.Column(id_column, sa.String(length=id_length), nullable=False),
        *([sa.Column("kind", sa.String(length=16), nullable=False)] if kind else []),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retry_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("applied_hash", sa.String(length=64), nullable=True),
        sa.Column("removing", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("rebuild_requested", sa.Boolean(), nullable=False),
    ]
    op.create_table(name, *columns, sa.PrimaryKeyConstraint(id_column, name=op.f(f"pk_{name}")))
    op.create_index(op.f(f"ix_{name}_project_id"), name, ["project_id"], unique=False)


def _events(name: str, id_column: str, id_length: int) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column(id_column, sa.String(length=id_length), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
    )
    op.create_index(op.f(f"ix_{name}_{id_column}"), name, [id_column], unique=False)


def _drop(name: str, *indexed: str) -> None:
    for column in indexed:
        op.drop_index(op.f(f"ix_{name}_{column}"), table_name=name)
    op.drop_table(name)


def upgrade() -> None:
    _states("appliance_states", "appliance_id", 64, kind=True)
    _events("appliance_events", "appliance_id", 64)
    # Every record so far is a router's.
    op.execute(
        f"INSERT INTO appliance_states (appliance_id, kind, {_STATE_COLUMNS})"
        f" SELECT router_id, 'router', {_STATE_COLUMNS} FROM router_states"
    )
    op.execute(
        "INSERT INTO appliance_events (id, appliance_id, at, message)"
        " SELECT id, router_id, at, message FROM router_events"
    )
    _drop("router_events", "router_id")
    _drop("router_states", "project_id")
    if op.get_bind().dialect.name == "postgresql":
        # Ids were copied: the sequence continues after them.
        op.execute(
            "SELECT setval(pg_get_serial_sequence('appliance_events', 'id'),"
            " COALESCE((SELECT MAX(id) FROM appliance_events), 0) + 1, false)"
        )


def downgrade() -> None:
    _states("router_states", "router_id", 36, kind=False)
    _events("router_events", "router_id", 36)
    # A DHCP appliance's record has no place in a router table: it is dropped
    # (the orchestrator removes its appliance as an orphan).
    op.execute(
        f"INSERT INTO router_states (router_id, {_STATE_COLUMNS})"
        f" SELECT appliance_id, {_STATE_COLUMNS} FROM appliance_states WHERE kind = 'router'"
    )
    op.execute(
        "INSERT INTO router_events (id, router_id, at, message)"
        " SELECT id, appliance_id, at, message FROM appliance_events"
        " WHERE appliance_id NOT LIKE 'dhcp-%'"
    )
    _drop("appliance_events", "appliance_id")
    _drop("appliance_states", "project_id")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "SELECT setval(pg_get_serial_sequence('router_events', 'id'),"
            " COALESCE((SELECT MAX(id) FROM router_events), 0) + 1, false)"
        )
