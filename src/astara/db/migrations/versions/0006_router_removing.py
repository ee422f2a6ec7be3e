"""router_states.removing: the failures counted are about removing an appliance

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("router_states") as batch:
        batch.add_column(
            sa.Column("removing", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("router_states") as batch:
        batch.drop_column("removing")
