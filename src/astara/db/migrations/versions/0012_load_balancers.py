"""Octavia v2: load balancers, listeners, pools, members, health monitors.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _object() -> list[sa.Column[object]]:
    """The columns every Octavia object has (`models.LoadBalancerObject`)."""
    return [
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(255), nullable=False, index=True),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False, server_default="[]"),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("provisioning_status", sa.String(16), nullable=False),
        sa.Column("operating_status", sa.String(16), nullable=False),
    ]


def _parent(table: str, column: str, **options: object) -> sa.Column[object]:
    return sa.Column(
        column,
        sa.String(36),
        sa.ForeignKey(f"{table}.id", ondelete="CASCADE"),
        nullable=False,
        **options,  # type: ignore[arg-type]
    )


def upgrade() -> None:
    op.create_table(
        "load_balancers",
        *_object(),
        sa.Column(
            "vip_port_id",
            sa.String(36),
            sa.ForeignKey("ports.id", ondelete="SET NULL"),
            nullable=True,
            unique=True,
        ),
        sa.Column("vip_subnet_id", sa.String(36), nullable=False),
        sa.Column("vip_network_id", sa.String(36), nullable=False),
        sa.Column("vip_address", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
    )
    op.create_table(
        "pools",
        *_object(),
        _parent("load_balancers", "load_balancer_id", index=True),
        sa.Column("protocol", sa.String(32), nullable=False),
        sa.Column("lb_algorithm", sa.String(32), nullable=False),
        sa.Column("session_persistence", sa.JSON(), nullable=True),
    )
    op.create_table(
        "listeners",
        *_object(),
        _parent("load_balancers", "load_balancer_id", index=True),
        sa.Column("protocol", sa.String(32), nullable=False),
        sa.Column("protocol_port", sa.Integer(), nullable=False),
        sa.Column("port_family", sa.String(8), nullable=False),
        sa.Column("connection_limit", sa.Integer(), nullable=False),
        sa.Column(
            "default_pool_id",
            sa.String(36),
            sa.ForeignKey("pools.id", ondelete="SET NULL"),
            nullable=True,
            index=True,
        ),
        sa.Column("insert_headers", sa.JSON(), nullable=False),
        sa.Column("timeout_client_data", sa.Integer(), nullable=False),
        sa.Column("timeout_member_connect", sa.Integer(), nullable=False),
        sa.Column("timeout_member_data", sa.Integer(), nullable=False),
        sa.Column("timeout_tcp_inspect", sa.Integer(), nullable=False),
        sa.Column("allowed_cidrs", sa.JSON(), nullable=True),
        sa.UniqueConstraint("load_balancer_id", "port_family", "protocol_port"),
    )
    op.create_table(
        "members",
        *_object(),
        _parent("pools", "pool_id", index=True),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("protocol_port", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("backup", sa.Boolean(), nullable=False),
        sa.Column("subnet_id", sa.String(36), nullable=True),
        sa.Column("monitor_address", sa.String(64), nullable=True),
        sa.Column("monitor_port", sa.Integer(), nullable=True),
        sa.UniqueConstraint("pool_id", "address", "protocol_port"),
    )
    op.create_table(
        "health_monitors",
        *_object(),
        _parent("pools", "pool_id", unique=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("delay", sa.Integer(), nullable=False),
        sa.Column("timeout", sa.Integer(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("max_retries_down", sa.Integer(), nullable=False),
        sa.Column("http_method", sa.String(16), nullable=True),
        sa.Column("url_path", sa.String(2048), nullable=True),
        sa.Column("expected_codes", sa.String(64), nullable=True),
        sa.Column("http_version", sa.String(8), nullable=True),
        sa.Column("domain_name", sa.String(255), nullable=True),
    )


def downgrade() -> None:
    for table in ("health_monitors", "members", "listeners", "pools", "load_balancers"):
        op.drop_table(table)
