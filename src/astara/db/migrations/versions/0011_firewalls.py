"""FWaaS v2: firewall rules, policies (ordered rules), groups (policies on
router interfaces), and each project's default group.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _standard() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(255), nullable=False, index=True),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False, server_default="[]"),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "firewall_rules",
        *_standard(),
        sa.Column("protocol", sa.String(16), nullable=True),
        sa.Column("ip_version", sa.Integer(), nullable=False),
        sa.Column("source_ip_address", sa.String(64), nullable=True),
        sa.Column("destination_ip_address", sa.String(64), nullable=True),
        sa.Column("source_port_min", sa.Integer(), nullable=True),
        sa.Column("source_port_max", sa.Integer(), nullable=True),
        sa.Column("destination_port_min", sa.Integer(), nullable=True),
        sa.Column("destination_port_max", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "firewall_policies",
        *_standard(),
        sa.Column("audited", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "firewall_policy_rules",
        sa.Column(
            "firewall_policy_id",
            sa.String(36),
            sa.ForeignKey("firewall_policies.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "firewall_rule_id",
            sa.String(36),
            sa.ForeignKey("firewall_rules.id"),
            primary_key=True,
            index=True,
        ),
        sa.Column("position", sa.Integer(), nullable=False),
    )
    op.create_table(
        "firewall_groups",
        *_standard(),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column(
            "ingress_firewall_policy_id",
            sa.String(36),
            sa.ForeignKey("firewall_policies.id"),
            nullable=True,
            index=True,
        ),
        sa.Column(
            "egress_firewall_policy_id",
            sa.String(36),
            sa.ForeignKey("firewall_policies.id"),
            nullable=True,
            index=True,
        ),
    )
    op.create_table(
        "firewall_group_ports",
        sa.Column(
            "port_id",
            sa.String(36),
            sa.ForeignKey("ports.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "firewall_group_id",
            sa.String(36),
            sa.ForeignKey("firewall_groups.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
    )
    op.create_table(
        "default_firewall_groups",
        sa.Column("project_id", sa.String(255), primary_key=True),
        sa.Column(
            "firewall_group_id",
            sa.String(36),
            sa.ForeignKey("firewall_groups.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
    )


def downgrade() -> None:
    for table in (
        "default_firewall_groups",
        "firewall_group_ports",
        "firewall_groups",
        "firewall_policy_rules",
        "firewall_policies",
        "firewall_rules",
    ):
        op.drop_table(table)
