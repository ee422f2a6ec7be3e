"""the orchestrator's state: router lifecycle records and history, port
bindings, paused projects

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "router_states",
        sa.Column("router_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retry_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("applied_hash", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("rebuild_requested", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("router_id", name=op.f("pk_router_states")),
    )
    op.create_index(
        op.f("ix_router_states_project_id"), "router_states", ["project_id"], unique=False
    )
    op.create_table(
        "router_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("router_id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_router_events")),
    )
    op.create_index(
        op.f("ix_router_events_router_id"), "router_events", ["router_id"], unique=False
    )
    op.create_table(
        "port_bindings",
        sa.Column("port_id", sa.String(length=36), nullable=False),
        sa.Column("netns", sa.String(length=64), nullable=False),
        sa.Column("ifname", sa.String(length=15), nullable=False),
        sa.Column("dhcp", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["port_id"],
            ["ports.id"],
            name=op.f("fk_port_bindings_port_id_ports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("port_id", name=op.f("pk_port_bindings")),
    )
    op.create_table(
        "paused_projects",
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_paused_projects")),
    )


def downgrade() -> None:
    op.drop_table("paused_projects")
    op.drop_table("port_bindings")
    op.drop_index(op.f("ix_router_events_router_id"), table_name="router_events")
    op.drop_table("router_events")
    op.drop_index(op.f("ix_router_states_project_id"), table_name="router_states")
    op.drop_table("router_states")
