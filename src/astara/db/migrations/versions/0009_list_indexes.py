"""Indexes for the tenant API in SQL: a network's ports by kind (its DHCP
port, its router interfaces), and floating IPs by router and by their own
port. The columns lists filter and join on (project, network, device,
subnet) were indexed already.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_ports_network_id_device_owner", "ports", ["network_id", "device_owner"], unique=False
    )
    op.create_index("ix_floating_ips_router_id", "floating_ips", ["router_id"], unique=False)
    op.create_index(
        "ix_floating_ips_floating_port_id", "floating_ips", ["floating_port_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_floating_ips_floating_port_id", table_name="floating_ips")
    op.drop_index("ix_floating_ips_router_id", table_name="floating_ips")
    op.drop_index("ix_ports_network_id_device_owner", table_name="ports")
