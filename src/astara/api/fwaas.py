"""What the three FWaaS v2 collections share (`firewall_rules`,
`firewall_policies`, `firewall_groups`): who sees what (a project's own, and
what is shared), Neutron's errors, each project's default group, the routers
a change concerns, and a group's status as its routers report it.

A group's rules run in the router appliances that carry its ports: a change
to a group, or to a policy or rule a group with ports uses, marks those
routers BUILD (an event and a re-plan), and the group is PENDING until each
runs its current config again, then ACTIVE (DOWN when set down): the status
is what the appliances run, not what was asked.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, or_, select, update
from sqlalchemy.orm import Session

from astara.api import changes
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.api.query import Query
from astara.db.models import (
    DefaultFirewallGroup,
    FirewallGroup,
    FirewallPolicy,
    FirewallPolicyRule,
    FirewallRule,
    Project,
    Router,
    RouterPort,
)

Shared = TypeVar("Shared", FirewallRule, FirewallPolicy, FirewallGroup)

DEFAULT_GROUP = "default"
DEFAULT_POLICIES = {"ingress": "default ingress", "egress": "default egress"}
# Neutron's [default_fwg_rules]: what enters the networks behind a port is
# denied, what leaves them allowed.
DEFAULT_ACTIONS = {"ingress": "deny", "egress": "allow"}
PENDING = ("PENDING_CREATE", "PENDING_UPDATE")


def not_found(kind: str, words: str) -> Callable[[str], NeutronError]:
    """`FirewallRuleNotFound` and the like, with neutron-lib's message."""

    def error(object_id: str) -> NeutronError:
        return NeutronError(404, f"{kind}NotFound", f"{words} {object_id} could not be found.")

    return error


rule_not_found = not_found("FirewallRule", "Firewall rule")
policy_not_found = not_found("FirewallPolicy", "Firewall policy")
group_not_found = not_found("FirewallGroup", "Firewall group")


def visible_rows(model: type[Shared]) -> Callable[[Caller], Select[Any]]:
    """A project's own and every shared one (an admin: all)."""

    def statement(caller: Caller) -> Select[Any]:
        rows = select(model)
        if caller.is_admin:
            return rows
        return rows.where(or_(model.project_id == caller.project_id, model.shared))

    return statement


def visible(
    session: Session,
    caller: Caller,
    model: type[Shared],
    object_id: Any,
    missing: Callable[[str], NeutronError],
) -> Shared:
    row = session.get(model, object_id) if isinstance(object_id, str) else None
    if row is None or not (caller.is_admin or row.shared or row.project_id == caller.project_id):
        raise missing(str(object_id))
    return row


def owned(
    session: Session,
    caller: Caller,
    model: type[Shared],
    object_id: str,
    missing: Callable[[str], NeutronError],
    action: str,
) -> Shared:
    """One the caller may change: its own (any, for an admin). Another
    project's shared one is seen, so changing it is forbidden, not missing.
    Locked first (a row lock on PostgreSQL, the write lock on SQLite), then
    read: two changes of one policy's rules or one group's ports run one
    after the other, each on what the other left."""
    session.execute(
        update(model).where(model.id == object_id).values(revision_number=model.revision_number)
    )
    session.expire_all()
    row = visible(session, caller, model, object_id, missing)
    if not caller.is_admin and row.project_id != caller.project_id:
        raise NeutronError(403, "PolicyNotAuthorized", f"(rule:{action}) is disallowed by policy")
    return row


def reserved_name(name: str, kind: str) -> NeutronError:
    return NeutronError(
        409,
        "FirewallDefaultParameterExists",
        f"Operation cannot be performed since '{name}' is a reserved name for {kind}.",
    )


def default_restricted(object_id: str) -> NeutronError:
    # Neutron's text says "Firewall Group" for the default policies too.
    return NeutronError(
        409,
        "FirewallDefaultObjectUpdateRestricted",
        f"Operation cannot be performed on default object '{object_id}' of type Firewall Group.",
    )


def standard(project_id: str, now: datetime, **values: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "project_id": project_id,
        "created_at": now,
        "updated_at": now,
        "revision_number": 1,
        "tags": [],
        **values,
    }


# --- each project's default group ---------------------------------------------------------


def default_group_of(session: Session, project_id: str) -> str | None:
    found: str | None = session.scalar(
        select(DefaultFirewallGroup.firewall_group_id).where(
            DefaultFirewallGroup.project_id == project_id
        )
    )
    return found


def default_policies(session: Session, project_id: str) -> set[str]:
    """The ids of the project's default group's two policies."""
    group_id = default_group_of(session, project_id)
    group = session.get(FirewallGroup, group_id) if group_id is not None else None
    if group is None:
        return set()
    return {
        p
        for p in (group.ingress_firewall_policy_id, group.egress_firewall_policy_id)
        if p is not None
    }


def ensure_default(session: Session, project_id: str, now: datetime) -> str | None:
    """The project's default group, made (with Neutron's four rules and two
    policies) the first time the project lists or creates FWaaS objects.
    Two first requests may race: the loser's `DefaultFirewallGroup` insert
    fails and its transaction runs again, finding the winner's."""
    if not project_id:
        return None
    found = default_group_of(session, project_id)
    if found is not None:
        return found
    policies: dict[str, FirewallPolicy] = {}
    for direction, name in DEFAULT_POLICIES.items():
        policy = FirewallPolicy(
            **standard(
                project_id,
                now,
                name=name,
                description=f"{direction.capitalize()} firewall policy",
                shared=False,
                audited=False,
            )
        )
        for position, version in enumerate((4, 6), start=1):
            rule = FirewallRule(
                **standard(
                    project_id,
                    now,
                    name=f"default {direction} ipv{version}",
                    description=f"default {direction} rule for IPv{version}",
                    shared=False,
                    protocol=None,
                    ip_version=version,
                    action=DEFAULT_ACTIONS[direction],
                    enabled=True,
                )
            )
            session.add(rule)
            session.flush()
            policy.entries.append(FirewallPolicyRule(firewall_rule_id=rule.id, position=position))
        session.add(policy)
        policies[direction] = policy
    session.flush()
    group = FirewallGroup(
        **standard(
            project_id,
            now,
            name=DEFAULT_GROUP,
            description="Default firewall group",
            shared=False,
            admin_state_up=True,
            status="PENDING_CREATE",
            ingress_firewall_policy_id=policies["ingress"].id,
            egress_firewall_policy_id=policies["egress"].id,
        )
    )
    session.add(group)
    session.flush()
    session.add(DefaultFirewallGroup(project_id=project_id, firewall_group_id=group.id))
    session.flush()
    changes.record(session, "firewall_group", group, "create", now)
    return group.id


def before_list(session: Session, caller: Caller, query: Query, now: datetime) -> None:
    """A list makes the default group of the project listed (the caller's,
    or the existing projects an admin's `project_id` filter names)."""
    named = {str(p) for p in query.filters.get("project_id", [])} if caller.is_admin else set()
    if named:
        named = set(session.scalars(select(Project.id).where(Project.id.in_(named))))
    for project_id in sorted(named or {caller.project_id}):
        ensure_default(session, project_id, now)


# --- what a change concerns ---------------------------------------------------------------


def groups_using(session: Session, policy_ids: Collection[str]) -> list[FirewallGroup]:
    if not policy_ids:
        return []
    return list(
        session.scalars(
            select(FirewallGroup)
            .where(
                or_(
                    FirewallGroup.ingress_firewall_policy_id.in_(policy_ids),
                    FirewallGroup.egress_firewall_policy_id.in_(policy_ids),
                )
            )
            .order_by(FirewallGroup.id)
        )
    )


def policies_with(session: Session, rule_id: str) -> list[str]:
    return list(
        session.scalars(
            select(FirewallPolicyRule.firewall_policy_id)
            .where(FirewallPolicyRule.firewall_rule_id == rule_id)
            .order_by(FirewallPolicyRule.firewall_policy_id)
        )
    )


def routers_of_ports(session: Session, port_ids: Iterable[str]) -> set[str]:
    wanted = sorted(set(port_ids))
    if not wanted:
        return set()
    return set(session.scalars(select(RouterPort.router_id).where(RouterPort.port_id.in_(wanted))))


def enforce(
    session: Session,
    groups: Iterable[FirewallGroup],
    now: datetime,
    extra_ports: Iterable[str] = (),
) -> None:
    """What `groups` enforce changed: each with ports is pending until the
    routers that carry them run it, and those routers re-plan. `extra_ports`:
    ports a group just left (their routers must drop its rules)."""
    ports = set(extra_ports)
    for group in groups:
        if group.ports:
            group.status = "PENDING_UPDATE"
            ports.update(p.port_id for p in group.ports)
    for router_id in sorted(routers_of_ports(session, ports)):
        changes.mark_build(session, router_id, now)


def status(session: Session, group: FirewallGroup) -> str:
    """INACTIVE without ports or policies; else as the routers that carry
    its ports report: ERROR if one failed, PENDING_* while one has yet to
    run its current config, then ACTIVE (DOWN when the group is down)."""
    if not group.ports or (
        group.ingress_firewall_policy_id is None and group.egress_firewall_policy_id is None
    ):
        return "INACTIVE"
    found = set(
        session.scalars(
            select(Router.status)
            .join(RouterPort, RouterPort.router_id == Router.id)
            .where(RouterPort.port_id.in_([p.port_id for p in group.ports]))
        )
    )
    if "ERROR" in found:
        return "ERROR"
    if found - {"ACTIVE", "DOWN"}:
        return group.status if group.status in PENDING else "PENDING_UPDATE"
    return "ACTIVE" if group.admin_state_up else "DOWN"


def default_parts(session: Session, project_id: str) -> dict[str, list[Any]]:
    """The project's default group, its two policies and their rules (made
    by the API on first use, not by the project), by quota resource name."""
    group_id = default_group_of(session, project_id)
    group = session.get(FirewallGroup, group_id) if group_id is not None else None
    if group is None:
        return {}
    policies = [
        p
        for p in (
            session.get(FirewallPolicy, i) for i in sorted(default_policies(session, project_id))
        )
        if p is not None
    ]
    rules = [
        r
        for r in (
            session.get(FirewallRule, e.firewall_rule_id) for p in policies for e in p.entries
        )
        if r is not None
    ]
    return {"firewall_group": [group], "firewall_policy": policies, "firewall_rule": rules}


def remove_default(session: Session, project_id: str, now: datetime) -> None:
    """The default group, its policies and their rules gone (a project's removal)."""
    parts = default_parts(session, project_id)
    for kind in ("firewall_group", "firewall_policy", "firewall_rule"):
        for row in parts.get(kind, []):
            session.delete(row)
            session.flush()
            changes.record(session, kind, row, "delete", now)
