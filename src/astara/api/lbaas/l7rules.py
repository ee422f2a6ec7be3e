"""Octavia L7 rules: `/v2/lbaas/l7policies/{l7policy_id}/rules` (research
§1.6-1.7): conditions on the host, path, file type, a header or a cookie,
all of which a policy's request must match.

Values are checked as Octavia checks them (`model.l7_rules`, with its
departures: nothing haproxy would misread gets in). Rules on the client's
certificate (SSL_*) need a TERMINATED_HTTPS listener that asks for one,
which this deployment does not offer yet: refused, as a disabled option.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from astara.api.auth import Caller
from astara.api.lbaas import common, errors, quotas
from astara.api.lbaas.bodies import Body
from astara.db.models import L7Policy, L7Rule, Listener, LoadBalancer
from astara.model import l7_rules

RESOURCE = "L7 Rule"
TYPES = (*l7_rules.RULE_TYPES, *l7_rules.TLS_RULE_TYPES)
# What Octavia's WSME type lets through (a line break is refused there).
Text = Field(default=None, max_length=255, pattern=r"^[^\r\n]*$")


class L7RulePUT(Body):
    type: Literal[TYPES] | None = None  # type: ignore[valid-type]
    compare_type: Literal[l7_rules.COMPARE_TYPES] | None = None  # type: ignore[valid-type]
    key: str | None = Text
    value: str | None = Text
    invert: bool | None = None
    admin_state_up: bool | None = None
    tags: list[str] | None = None


class L7RulePOST(L7RulePUT):
    type: Literal[TYPES]  # type: ignore[valid-type]
    compare_type: Literal[l7_rules.COMPARE_TYPES]  # type: ignore[valid-type]
    value: str = Field(max_length=255, pattern=r"^[^\r\n]*$")
    project_id: str | None = Field(default=None, max_length=36)
    tenant_id: str | None = Field(default=None, max_length=36)


def view(rule: L7Rule) -> dict[str, Any]:
    shown = common.object_view(rule)
    del shown["name"], shown["description"]  # Octavia's rules have neither
    return {
        **shown,
        "type": rule.type,
        "compare_type": rule.compare_type,
        "key": rule.key,
        "value": rule.value,
        "invert": rule.invert,
    }


def get(session: Session, caller: Caller, policy: L7Policy, rule_id: str) -> L7Rule:
    rule = common.get(session, caller, L7Rule, rule_id, RESOURCE)
    if rule.l7policy_id != policy.id:
        raise errors.not_found(RESOURCE, rule_id)
    return rule


def problem(rule_type: str, compare_type: str, key: str | None, value: str) -> str | None:
    """Octavia's `l7rule_data` (in its words), with the client-certificate
    types refused; None if the rule is fine."""
    if rule_type in l7_rules.TLS_RULE_TYPES:
        return (
            f"Invalid L7 Rule: {rule_type} rules need a TERMINATED_HTTPS listener that"
            " asks for client certificates, which this deployment does not offer"
        )
    if rule_type in l7_rules.KEYED:
        if not key:
            return "Invalid L7 Rule: L7 rule type requires a key"
        if l7_rules.token_problem(key):
            return "Invalid characters in key"
    return l7_rules.value_problem(rule_type, compare_type, value)


def _checked(rule_type: str, compare_type: str, key: str | None, value: str) -> None:
    found = problem(rule_type, compare_type, key, value)
    if found is not None:
        raise errors.OctaviaError(400, f"Error parsing L7Rule: {found}")


def _parents(session: Session, caller: Caller, policy: L7Policy) -> tuple[LoadBalancer, Listener]:
    """The policy's load balancer, locked and ACTIVE (else 409), and its
    listener; the policy itself must be ACTIVE (Octavia's check)."""
    listener = session.get(Listener, policy.listener_id)
    if listener is None:
        raise errors.not_found("L7Policy", policy.id)
    # Locked and read again (its status included) before this check.
    balancer = common.balancer_for_change(session, caller, listener.load_balancer_id)
    if policy.provisioning_status != "ACTIVE":
        raise errors.immutable("L7Policy", policy.id)
    return balancer, listener


def make(session: Session, policy: L7Policy, body: L7RulePOST, now: datetime) -> L7Rule:
    """A rule of `policy`, checked; its policy's change records it."""
    _checked(body.type, body.compare_type, body.key, body.value)
    rule = L7Rule(
        id=str(uuid.uuid4()),
        project_id=policy.project_id,
        l7policy_id=policy.id,
        name="",
        description="",
        admin_state_up=body.admin_state_up is not False,
        provisioning_status="PENDING_CREATE",
        operating_status="OFFLINE",
        type=body.type,
        compare_type=body.compare_type,
        key=body.key,
        value=body.value,
        invert=body.invert is True,
        created_at=now,
        updated_at=now,
        revision_number=1,
        tags=sorted(set(body.tags or [])),
    )
    session.add(rule)
    return rule


def create(
    session: Session, caller: Caller, policy: L7Policy, body: L7RulePOST, now: datetime
) -> L7Rule:
    """A rule of `policy`. A create counts here: a quota check goes first."""
    balancer, listener = _parents(session, caller, policy)
    quotas.check(session, "l7rule", balancer.project_id)
    count = session.scalar(
        select(func.count()).select_from(L7Rule).where(L7Rule.l7policy_id == policy.id)
    )
    if (count or 0) >= l7_rules.MAX_RULES:
        raise errors.OctaviaError(409, f"Too many rules on L7 policy {policy.id}")
    rule = make(session, policy, body, now)
    session.flush()
    _changed(listener, policy, now)
    common.changed(session, balancer, rule, "l7rule", "create", now)
    return rule


def update(
    session: Session, caller: Caller, rule: L7Rule, body: L7RulePUT, now: datetime
) -> L7Rule:
    """Checked as the rule will be (what it was, with the change)."""
    policy = session.get(L7Policy, rule.l7policy_id)
    assert policy is not None  # a rule goes with its policy (ON DELETE CASCADE)
    balancer, listener = _parents(session, caller, policy)
    values = body.model_dump(exclude_unset=True)
    for name in ("type", "compare_type", "value"):
        if values.get(name) is None:
            values.pop(name, None)  # Octavia keeps what a null would unset
    merged: dict[str, Any] = {
        "type": rule.type,
        "compare_type": rule.compare_type,
        "key": rule.key,
        "value": rule.value,
    }
    merged.update({k: v for k, v in values.items() if k in merged})
    _checked(merged["type"], merged["compare_type"], merged["key"], merged["value"])
    rule.type, rule.compare_type = merged["type"], merged["compare_type"]
    rule.key, rule.value = merged["key"], merged["value"]
    if "invert" in values:
        rule.invert = values["invert"] is True
    common.set_common(rule, values)
    _changed(listener, policy, now)
    common.changed(session, balancer, rule, "l7rule", "update", now)
    return rule


def delete(session: Session, caller: Caller, rule: L7Rule, now: datetime) -> None:
    policy = session.get(L7Policy, rule.l7policy_id)
    assert policy is not None
    balancer, listener = _parents(session, caller, policy)
    _changed(listener, policy, now)
    common.removed(session, balancer, rule, "l7rule", now)


def _changed(listener: Listener, policy: L7Policy, now: datetime) -> None:
    """A rule's change is its policy's and listener's too (Octavia marks
    them PENDING_UPDATE with the load balancer)."""
    listener.provisioning_status = "PENDING_UPDATE"
    policy.provisioning_status = "PENDING_UPDATE"
    policy.updated_at = now
