"""Neutron quotas: `/v2.0/quotas` (§3.8), enforced on every create."""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session

from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.db.models import (
    DHCP,
    DHCP_APPLIANCE_PREFIX,
    FirewallGroup,
    FirewallPolicy,
    FirewallRule,
    FloatingIp,
    Network,
    Port,
    Quota,
    QuotaLock,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)

# Only what Astara has: a limit on a resource that does not exist yet would be
# accepted and mean nothing, so it is refused like any unknown resource, as
# Neutron does without the extension.
DEFAULTS = {
    "network": 100,
    "subnet": 100,
    "port": 500,
    "router": 10,
    "floatingip": 50,
    "security_group": 10,
    "security_group_rule": 100,
    "firewall_group": 10,
    "firewall_policy": 10,
    "firewall_rule": 100,
}
MODELS: dict[str, Any] = {
    "network": Network,
    "subnet": Subnet,
    "port": Port,
    "router": Router,
    "floatingip": FloatingIp,
    "security_group": SecurityGroup,
    "security_group_rule": SecurityGroupRule,
    "firewall_group": FirewallGroup,
    "firewall_policy": FirewallPolicy,
    "firewall_rule": FirewallRule,
}
MAX_LIMIT = 2**31 - 1


def limits(session: Session, project_id: str) -> dict[str, int]:
    found = dict(DEFAULTS)
    rows = select(Quota).where(Quota.project_id == project_id, Quota.resource.in_(DEFAULTS))
    for row in session.scalars(rows):
        found[row.resource] = row.limit
    return found


def used(session: Session, project_id: str) -> dict[str, int]:
    return {name: used_of(session, project_id, name) for name in DEFAULTS}


def used_of(session: Session, project_id: str, resource: str, up_to: int | None = None) -> int:
    """How many of `resource` the project has; at most `up_to` when given (the
    count stops there: a create asks whether the limit is reached, and that
    costs the same with 10 rows as with 100,000)."""
    model = MODELS[resource]
    rows = select(model.id).where(model.project_id == project_id)
    if model is Port:  # a network's DHCP port is the service's, not counted (Neutron's rule)
        rows = rows.where(
            ~(
                (Port.device_owner == DHCP)
                & (Port.device_id == DHCP_APPLIANCE_PREFIX + Port.network_id)
            )
        )
    if up_to is not None:
        rows = rows.limit(up_to)
    return session.scalar(select(func.count()).select_from(rows.subquery())) or 0


def limit_of(session: Session, project_id: str, resource: str) -> int:
    """The project's limit for `resource` (its own, or the default)."""
    found = session.scalar(_LIMIT, {"project_id": project_id, "resource": resource})
    return DEFAULTS[resource] if found is None else found


_LIMIT = select(Quota.limit).where(
    Quota.project_id == bindparam("project_id"), Quota.resource == bindparam("resource")
)


def lock(session: Session, project_id: str) -> None:
    """Hold the project's quota lock until commit: concurrent creates in one
    project count one after another. The first create inserts the row; two
    first creates at once collide on its key and the loser is retried."""
    bumped = session.execute(
        sql_update(QuotaLock)
        .where(QuotaLock.project_id == project_id)
        .values(creates=QuotaLock.creates + 1)
    )
    if bumped.rowcount == 0:  # type: ignore[attr-defined]
        session.add(QuotaLock(project_id=project_id, creates=1))
        session.flush()


def check(session: Session, resource: str, project_id: str, count: int = 1) -> None:
    """Refuse a create of `count` that would go past the project's limit
    (-1: unlimited)."""
    if resource not in MODELS:
        return
    # Only the resource being created: the others' counts cannot change its answer.
    limit = limit_of(session, project_id, resource)
    if limit < 0:
        # Unlimited: nothing to count, so no lock either. Concurrent creates
        # in the project no longer wait for each other's whole transaction.
        # (A limit set meanwhile counts from the creates that read it on, as
        # it did with the lock: changing a limit does not take the lock.)
        return
    lock(session, project_id)
    if used_of(session, project_id, resource, up_to=limit) + count > limit:
        raise NeutronError(409, "OverQuota", f"Quota exceeded for resources: ['{resource}'].")


def _may_read(caller: Caller, project_id: str) -> None:
    if not caller.is_admin and caller.project_id != project_id:
        raise NeutronError(403, "PolicyNotAuthorized", "(rule:get_quota) is disallowed by policy")


def _admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise NeutronError(
            403, "PolicyNotAuthorized", "(rule:update_quota) is disallowed by policy"
        )


def show(session: Session, caller: Caller, project_id: str) -> dict[str, Any]:
    _may_read(caller, project_id)
    return {"quota": limits(session, project_id)}


def details(session: Session, caller: Caller, project_id: str) -> dict[str, Any]:
    _may_read(caller, project_id)
    current, counts = limits(session, project_id), used(session, project_id)
    return {
        "quota": {k: {"limit": v, "used": counts[k], "reserved": 0} for k, v in current.items()}
    }


def listing(session: Session, caller: Caller) -> dict[str, Any]:
    _admin(caller)
    projects = sorted(
        set(session.scalars(select(Quota.project_id).where(Quota.resource.in_(DEFAULTS))))
    )
    return {"quotas": [{**limits(session, p), "project_id": p, "tenant_id": p} for p in projects]}


def update(session: Session, caller: Caller, project_id: str, body: Any) -> dict[str, Any]:
    _admin(caller)
    if not isinstance(body, dict) or not isinstance(body.get("quota"), dict):
        raise NeutronError(400, "HTTPBadRequest", "Unable to find 'quota' in request body")
    values = dict(body["quota"])
    force = values.pop("force", False) is True
    values.pop("check_limit", None)
    counts = used(session, project_id)
    for name, value in values.items():
        if name not in DEFAULTS:
            raise NeutronError(
                400,
                "HTTPBadRequest",
                f"Unrecognized attribute(s) '{name}': quotas exist for"
                f" {', '.join(sorted(DEFAULTS))}",
            )
        if isinstance(value, str) and value.strip().lstrip("-").isascii():
            with contextlib.suppress(ValueError):
                value = values[name] = int(value)  # Neutron converts with int() (§1.2)
        if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= MAX_LIMIT:
            raise NeutronError(
                400,
                "InvalidInput",
                f"Invalid input for {name}. Reason: '{value}' is not a valid quota limit.",
            )
        if not force and value >= 0 and counts[name] > value:
            raise NeutronError(
                400,
                "InvalidQuotaValue",
                f"Change would make usage less than 0 for the following resources: ['{name}'].",
            )
    for name, value in values.items():
        row = session.get(Quota, (project_id, name))
        if row is None:
            session.add(Quota(project_id=project_id, resource=name, limit=value))
        else:
            row.limit = value
    session.flush()
    return {"quota": limits(session, project_id)}


def reset(session: Session, caller: Caller, project_id: str) -> None:
    _admin(caller)
    # Neutron's own limits only (Octavia's are in the same table: `lbaas:<name>`).
    session.execute(
        delete(Quota).where(Quota.project_id == project_id, Quota.resource.in_(DEFAULTS))
    )
