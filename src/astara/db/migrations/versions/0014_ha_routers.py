"""HA routers (Neutron's l3-ha): a router's `ha`, each project's HA network,
and the role an HA router's member last reported.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("routers") as table:
        table.add_column(sa.Column("ha", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("appliance_states") as table:
        table.add_column(sa.Column("ha_state", sa.String(16), nullable=True))
    op.create_table(
        "ha_networks",
        sa.Column("project_id", sa.String(255), primary_key=True),
        sa.Column(
            "network_id",
            sa.String(36),
            sa.ForeignKey("networks.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
    )


def downgrade() -> None:
    op.drop_table("ha_networks")
    with op.batch_alter_table("appliance_states") as table:
        table.drop_column("ha_state")
    with op.batch_alter_table("routers") as table:
        table.drop_column("ha")
