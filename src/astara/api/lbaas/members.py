"""Octavia members: `/v2/lbaas/pools/{pool_id}/members` (fact sheet §6.8,
research §5.5)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field, IPvAnyAddress
from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.api.auth import Caller
from astara.api.lbaas import appliance_ports, common, errors, quotas
from astara.api.lbaas.bodies import Body
from astara.db.models import HealthMonitor, Member, Network, Pool, Subnet

RESOURCE = "Member"
# Addresses no member may have (Octavia's `[networking] reserved_ips`).
RESERVED = ("169.254.169.254",)


class MemberPUT(Body):
    name: str | None = Field(default=None, max_length=255)
    admin_state_up: bool | None = None
    weight: int | None = Field(default=None, ge=0, le=256)
    backup: bool | None = None
    monitor_address: IPvAnyAddress | None = None
    monitor_port: int | None = Field(default=None, ge=1, le=65535)
    tags: list[str] | None = None


class MemberPOST(MemberPUT):
    address: IPvAnyAddress
    protocol_port: int = Field(ge=1, le=65535)
    subnet_id: uuid.UUID | None = None
    project_id: str | None = Field(default=None, max_length=36)
    tenant_id: str | None = Field(default=None, max_length=36)


def view(member: Member) -> dict[str, Any]:
    shown = common.object_view(member)
    del shown["description"]  # Octavia's members have none
    return {
        **shown,
        "address": member.address,
        "protocol_port": member.protocol_port,
        "weight": member.weight,
        "backup": member.backup,
        "subnet_id": member.subnet_id,
        "monitor_address": member.monitor_address,
        "monitor_port": member.monitor_port,
        "vnic_type": "normal",
    }


def get(session: Session, caller: Caller, pool: Pool, member_id: str) -> Member:
    member = session.get(Member, member_id)
    if member is None or member.pool_id != pool.id:
        raise errors.not_found(RESOURCE, member_id)
    return member


def _subnet(session: Session, caller: Caller, subnet_id: uuid.UUID | None) -> str | None:
    if subnet_id is None:
        return None
    subnet = session.get(Subnet, str(subnet_id))
    network = session.get(Network, subnet.network_id) if subnet is not None else None
    if (
        subnet is None
        or network is None
        or not (caller.is_admin or network.project_id == caller.project_id or network.shared)
    ):
        raise errors.OctaviaError(400, f"Subnet {subnet_id} not found.")
    return subnet.id


def create(session: Session, caller: Caller, pool: Pool, body: MemberPOST, now: datetime) -> Member:
    balancer = common.balancer_for_change(session, caller, pool.load_balancer_id)
    quotas.check(session, "member", balancer.project_id)
    member = build(session, caller, pool, body, now)
    pool.provisioning_status = "PENDING_UPDATE"
    common.changed(session, balancer, member, "member", "create", now)
    appliance_ports.sync_members(session, caller, balancer, now)
    return member


def build(session: Session, caller: Caller, pool: Pool, body: MemberPOST, now: datetime) -> Member:
    """A new member of `pool`, checked, PENDING_CREATE (its change not
    recorded: the caller does)."""
    address = str(body.address)
    if address in RESERVED:
        raise errors.invalid_option(address, "member address")
    taken = session.scalar(
        select(Member.id).where(
            Member.pool_id == pool.id,
            Member.address == address,
            Member.protocol_port == body.protocol_port,
        )
    )
    if taken is not None:
        raise errors.OctaviaError(
            409,
            f"Another member on this pool is already using ip {address} on protocol_port"
            f" {body.protocol_port}",
        )
    monitored = session.scalar(select(HealthMonitor.id).where(HealthMonitor.pool_id == pool.id))
    member = Member(
        id=str(uuid.uuid4()),
        project_id=pool.project_id,
        pool_id=pool.id,
        name=body.name or "",
        description="",
        admin_state_up=body.admin_state_up is not False,
        provisioning_status="PENDING_CREATE",
        operating_status="OFFLINE" if monitored else "NO_MONITOR",
        address=address,
        protocol_port=body.protocol_port,
        weight=1 if body.weight is None else body.weight,
        backup=bool(body.backup),
        subnet_id=_subnet(session, caller, body.subnet_id),
        monitor_address=str(body.monitor_address) if body.monitor_address else None,
        monitor_port=body.monitor_port,
        created_at=now,
        updated_at=now,
        revision_number=1,
        tags=sorted(set(body.tags or [])),
    )
    session.add(member)
    session.flush()
    return member


def update(
    session: Session, caller: Caller, member: Member, body: MemberPUT, now: datetime
) -> Member:
    pool = session.get(Pool, member.pool_id)
    assert pool is not None
    balancer = common.balancer_for_change(session, caller, pool.load_balancer_id)
    _apply(member, body)
    pool.provisioning_status = "PENDING_UPDATE"
    common.changed(session, balancer, member, "member", "update", now)
    return member


def _apply(member: Member, body: MemberPUT) -> None:
    """A PUT's attributes: null weight 1, null backup false (Octavia's)."""
    values = body.model_dump(exclude_unset=True)
    if "weight" in values:
        member.weight = 1 if body.weight is None else body.weight
    if "backup" in values:
        member.backup = bool(body.backup)
    if "monitor_address" in values:
        member.monitor_address = str(body.monitor_address) if body.monitor_address else None
    if "monitor_port" in values:
        member.monitor_port = body.monitor_port
    common.set_common(member, values)


def delete(session: Session, caller: Caller, member: Member, now: datetime) -> None:
    pool = session.get(Pool, member.pool_id)
    assert pool is not None
    balancer = common.balancer_for_change(session, caller, pool.load_balancer_id)
    pool.provisioning_status = "PENDING_UPDATE"
    common.removed(session, balancer, member, "member", now)
    appliance_ports.sync_members(session, caller, balancer, now)


def replace_all(
    session: Session,
    caller: Caller,
    pool: Pool,
    given: list[MemberPOST],
    additive_only: bool,
    now: datetime,
) -> None:
    """`PUT /pools/{id}/members` (Octavia's batch update): the pool's
    members become those given, matched by address and port: new ones made,
    known ones updated, the others removed (kept with `additive_only`). All
    checked before anything changes; nothing to do changes nothing."""
    balancer = common.balancer_for_change(session, caller, pool.load_balancer_id)
    keys = [(str(m.address), m.protocol_port) for m in given]
    if len(set(keys)) != len(keys):
        raise errors.validation("Member must be updated only once in the same request.")
    current = {(m.address, m.protocol_port): m for m in pool.members}
    new = [m for m, key in zip(given, keys, strict=True) if key not in current]
    gone = [] if additive_only else [m for key, m in current.items() if key not in keys]
    kept = [(current[key], m) for m, key in zip(given, keys, strict=True) if key in current]
    quotas.check(session, "member", balancer.project_id, len(new) - len(gone))
    for body in new:  # checked (subnets, reserved addresses) before anything is written
        if str(body.address) in RESERVED:
            raise errors.invalid_option(str(body.address), "member address")
        _subnet(session, caller, body.subnet_id)
    changed = False
    for member in gone:
        common.removed(session, balancer, member, "member", now)
        changed = True
    for member, body in kept:
        values = body.model_dump(exclude_unset=True, exclude={"address", "protocol_port"})
        if values.pop("subnet_id", None) not in (None, member.subnet_id):
            raise errors.validation("Member subnet_id cannot be changed.")
        values.pop("project_id", None), values.pop("tenant_id", None)
        if any(_differs(member, name, value) for name, value in values.items()):
            _apply(member, MemberPUT.model_validate(values))
            common.changed(session, balancer, member, "member", "update", now)
            changed = True
    for body in new:
        member = build(session, caller, pool, body, now)
        common.changed(session, balancer, member, "member", "create", now)
        changed = True
    if changed:
        pool.provisioning_status = "PENDING_UPDATE"
        appliance_ports.sync_members(session, caller, balancer, now)


def _differs(member: Member, name: str, value: object) -> bool:
    current = getattr(member, name)
    if name == "tags":
        return sorted(set(value or [])) != sorted(current or [])  # type: ignore[call-overload]
    return (str(value) if value is not None else None) != (
        str(current) if current is not None else None
    )
