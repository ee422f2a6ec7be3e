"""Octavia v2, second part: L7 policies and rules, listener statistics
(accumulated across haproxy's reloads and restarts), a load balancer's
availability zone, and whether its VIP port is one the service made.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
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


def upgrade() -> None:
    op.create_table(
        "l7policies",
        *_object(),
        sa.Column(
            "listener_id",
            sa.String(36),
            sa.ForeignKey("listeners.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column(
            "redirect_pool_id",
            sa.String(36),
            sa.ForeignKey("pools.id", ondelete="SET NULL"),
            nullable=True,
            index=True,
        ),
        sa.Column("redirect_url", sa.String(255), nullable=True),
        sa.Column("redirect_prefix", sa.String(255), nullable=True),
        sa.Column("redirect_http_code", sa.Integer(), nullable=True),
    )
    op.create_table(
        "l7rules",
        *_object(),
        sa.Column(
            "l7policy_id",
            sa.String(36),
            sa.ForeignKey("l7policies.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("type", sa.String(36), nullable=False),
        sa.Column("compare_type", sa.String(36), nullable=False),
        sa.Column("key", sa.String(255), nullable=True),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("invert", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "listener_statistics",
        sa.Column(
            "listener_id",
            sa.String(36),
            sa.ForeignKey("listeners.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
        sa.Column("active_connections", sa.Integer(), nullable=False),
        sa.Column("total_connections", sa.BigInteger(), nullable=False),
        sa.Column("request_errors", sa.BigInteger(), nullable=False),
        sa.Column("seen", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    with op.batch_alter_table("load_balancers") as table:
        table.add_column(sa.Column("availability_zone", sa.String(255), nullable=True))
        table.add_column(
            sa.Column("vip_port_made", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    # The VIP ports made so far are those named as the service names them.
    op.execute(
        "UPDATE load_balancers SET vip_port_made = EXISTS (SELECT 1 FROM ports"
        " WHERE ports.id = load_balancers.vip_port_id"
        " AND ports.name = 'octavia-lb-' || load_balancers.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("load_balancers") as table:
        table.drop_column("vip_port_made")
        table.drop_column("availability_zone")
    for name in ("listener_statistics", "l7rules", "l7policies"):
        op.drop_table(name)
