"""Security groups and their rules, ports' groups and allowed address pairs,
address groups.

Ports made before carry on as Neutron's would have been: each project with
filtered ports gets its `default` group (Neutron's four rules), and those
ports are bound to it (docs/operations.md, "Upgrading to security groups").

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
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
    ]


def upgrade() -> None:
    op.create_table(
        "security_groups",
        *_standard(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("stateful", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "address_groups",
        *_standard(),
        sa.Column("name", sa.String(255), nullable=False),
    )
    op.create_table(
        "address_group_addresses",
        sa.Column(
            "address_group_id",
            sa.String(36),
            sa.ForeignKey("address_groups.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("address", sa.String(64), primary_key=True),
    )
    op.create_table(
        "default_security_groups",
        sa.Column("project_id", sa.String(255), primary_key=True),
        sa.Column(
            "security_group_id",
            sa.String(36),
            sa.ForeignKey("security_groups.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
    )
    op.create_table(
        "security_group_rules",
        *_standard(),
        sa.Column(
            "security_group_id",
            sa.String(36),
            sa.ForeignKey("security_groups.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("ethertype", sa.String(8), nullable=False),
        sa.Column("protocol", sa.String(40), nullable=True),
        sa.Column("port_range_min", sa.Integer(), nullable=True),
        sa.Column("port_range_max", sa.Integer(), nullable=True),
        sa.Column("remote_ip_prefix", sa.String(64), nullable=True),
        sa.Column(
            "remote_group_id",
            sa.String(36),
            sa.ForeignKey("security_groups.id", ondelete="CASCADE"),
            nullable=True,
            index=True,
        ),
        sa.Column(
            "remote_address_group_id",
            sa.String(36),
            sa.ForeignKey("address_groups.id"),
            nullable=True,
            index=True,
        ),
    )
    op.create_table(
        "port_security_groups",
        sa.Column(
            "port_id",
            sa.String(36),
            sa.ForeignKey("ports.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "security_group_id",
            sa.String(36),
            sa.ForeignKey("security_groups.id"),
            primary_key=True,
            index=True,
        ),
    )
    op.create_table(
        "allowed_address_pairs",
        sa.Column(
            "port_id",
            sa.String(36),
            sa.ForeignKey("ports.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("ip_address", sa.String(64), primary_key=True),
        sa.Column("mac_address", sa.String(17), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
    )
    _backfill()


def _backfill() -> None:
    """Each project's filtered ports bound to its new default group."""
    bind = op.get_bind()
    meta = sa.MetaData()
    ports = sa.Table("ports", meta, autoload_with=bind)
    groups = sa.Table("security_groups", meta, autoload_with=bind)
    rules = sa.Table("security_group_rules", meta, autoload_with=bind)
    defaults = sa.Table("default_security_groups", meta, autoload_with=bind)
    bindings = sa.Table("port_security_groups", meta, autoload_with=bind)
    filtered = sa.and_(
        ports.c.port_security_enabled.is_(sa.true()),
        ports.c.project_id != "",
        sa.not_(ports.c.device_owner.startswith("network:")),
    )
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    projects = bind.execute(sa.select(ports.c.project_id).where(filtered).distinct()).scalars()
    for project_id in sorted(projects):
        group_id = str(uuid.uuid4())
        standard = {
            "project_id": project_id,
            "created_at": now,
            "updated_at": now,
            "tags": [],
        }
        bind.execute(
            groups.insert().values(
                id=group_id,
                name="default",
                description="Default security group",
                stateful=True,
                revision_number=1,
                **standard,
            )
        )
        bind.execute(defaults.insert().values(project_id=project_id, security_group_id=group_id))
        for direction in ("egress", "ingress"):
            for ethertype in ("IPv4", "IPv6"):
                bind.execute(
                    rules.insert().values(
                        id=str(uuid.uuid4()),
                        description="",
                        revision_number=0,
                        security_group_id=group_id,
                        direction=direction,
                        ethertype=ethertype,
                        remote_group_id=group_id if direction == "ingress" else None,
                        **standard,
                    )
                )
        bind.execute(
            bindings.insert().from_select(
                ["port_id", "security_group_id"],
                sa.select(ports.c.id, sa.literal(group_id)).where(
                    filtered, ports.c.project_id == project_id
                ),
            )
        )


def downgrade() -> None:
    for table in (
        "allowed_address_pairs",
        "port_security_groups",
        "security_group_rules",
        "default_security_groups",
        "address_group_addresses",
        "address_groups",
        "security_groups",
    ):
        op.drop_table(table)
