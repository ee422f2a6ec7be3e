"""Many hosts: hosts, join tokens and revoked certificates; networks'
provider attributes (network_type, physical_network, segmentation_id);
routers' availability_zone_hints; an appliance's host, epoch and move; a
port binding's host

Networks that existed before become `vxlan` with no VNI yet: `astara
serve` gives each one a VNI from its range at start (see
`astara.api.segments`).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("underlay_address", sa.String(length=64), nullable=True),
        sa.Column("physnets", sa.JSON(), nullable=False),
        sa.Column("availability_zone", sa.String(length=255), nullable=False),
        sa.Column("drained", sa.Boolean(), nullable=False),
        sa.Column("alive", sa.Boolean(), nullable=False),
        sa.Column("last_heartbeat", sa.DateTime(), nullable=True),
        sa.Column("reported", sa.JSON(), nullable=False),
        sa.Column("cert_serial", sa.String(length=40), nullable=True),
        sa.Column("cert_not_after", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hosts")),
        sa.UniqueConstraint("name", name=op.f("uq_hosts_name")),
    )
    op.create_table(
        "join_tokens",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.Column("used_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_join_tokens")),
    )
    op.create_table(
        "revoked_certificates",
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("host_name", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=False),
        sa.Column("not_after", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_revoked_certificates")),
    )
    with op.batch_alter_table("networks") as batch:
        batch.add_column(
            sa.Column("network_type", sa.String(length=16), nullable=False, server_default="vxlan")
        )
        batch.add_column(sa.Column("physical_network", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("segmentation_id", sa.Integer(), nullable=True))
        batch.create_unique_constraint("uq_networks_segment", ["network_type", "segmentation_id"])
        batch.create_unique_constraint("uq_networks_physnet", ["network_type", "physical_network"])
    with op.batch_alter_table("routers") as batch:
        batch.add_column(
            sa.Column("availability_zone_hints", sa.JSON(), nullable=False, server_default="[]")
        )
    with op.batch_alter_table("appliance_states") as batch:
        batch.add_column(sa.Column("host", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("epoch", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("move_to", sa.String(length=64), nullable=True))
        batch.create_index(op.f("ix_appliance_states_host"), ["host"], unique=False)
    with op.batch_alter_table("port_bindings") as batch:
        batch.add_column(sa.Column("host", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("port_bindings") as batch:
        batch.drop_column("host")
    with op.batch_alter_table("appliance_states") as batch:
        batch.drop_index(op.f("ix_appliance_states_host"))
        batch.drop_column("move_to")
        batch.drop_column("epoch")
        batch.drop_column("host")
    with op.batch_alter_table("routers") as batch:
        batch.drop_column("availability_zone_hints")
    with op.batch_alter_table("networks") as batch:
        batch.drop_constraint("uq_networks_physnet", type_="unique")
        batch.drop_constraint("uq_networks_segment", type_="unique")
        batch.drop_column("segmentation_id")
        batch.drop_column("physical_network")
        batch.drop_column("network_type")
    op.drop_table("revoked_certificates")
    op.drop_table("join_tokens")
    op.drop_table("hosts")
