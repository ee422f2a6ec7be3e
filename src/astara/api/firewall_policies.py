"""FWaaS v2 policies: `/v2.0/fwaas/firewall_policies`, with the member
actions `insert_rule` and `remove_rule` (neutron-lib's `firewall_v2`).

A policy is an ordered list of rules: the first that matches a packet
decides. `audited` says someone reviewed it; any change clears it. A policy
a group uses is in use; changing it re-plans the routers that enforce it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, selectinload

from astara.api import changes, fwaas, sql_query
from astara.api.attributes import (
    Attribute,
    Resource,
    is_uuid,
    standard_attributes,
    to_bool,
    to_uuid_list,
)
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.db.models import FirewallPolicy, FirewallPolicyRule, FirewallRule

KIND = "Firewall Policy"


# Rules in one policy: beyond any quota's default, within what a router renders.
MAX_RULES = 1000


RESOURCE = Resource(
    "firewall_policies",
    "firewall_policy",
    (
        *standard_attributes(),
        Attribute("name", default=""),
        Attribute("shared", to_bool, default=False, admin_only=True),
        Attribute("firewall_rules", to_uuid_list(MAX_RULES), default=None, sort=False),
        Attribute("audited", to_bool, default=False),
    ),
    path="fwaas/firewall_policies",
    bulk=False,
)


def view(policy: FirewallPolicy) -> dict[str, Any]:
    return {
        **changes.standard_view(policy),
        "name": policy.name,
        "shared": policy.shared,
        "audited": policy.audited,
        "firewall_rules": [e.firewall_rule_id for e in policy.entries],
    }


def get(session: Session, caller: Caller, policy_id: str) -> FirewallPolicy:
    return fwaas.visible(session, caller, FirewallPolicy, policy_id, fwaas.policy_not_found)


def owned(session: Session, caller: Caller, policy_id: str) -> FirewallPolicy:
    return fwaas.owned(
        session,
        caller,
        FirewallPolicy,
        policy_id,
        fwaas.policy_not_found,
        "update_firewall_policy",
    )


LISTING = sql_query.Listing(
    resource=RESOURCE,
    model=FirewallPolicy,
    statement=fwaas.visible_rows(FirewallPolicy),
    views=sql_query.orm_views(view, selectinload(FirewallPolicy.entries)),
    columns={
        **sql_query.standard_columns(FirewallPolicy),
        "name": FirewallPolicy.name,
        "shared": FirewallPolicy.shared,
        "audited": FirewallPolicy.audited,
    },
    prepare=fwaas.before_list,
)


def _rule_for(
    session: Session, policy_id: str, project_id: str, shared: bool, rule_id: str
) -> FirewallRule:
    """A rule a policy of `project_id` may list: its project's or shared;
    only shared ones in a shared policy."""
    rule = session.get(FirewallRule, rule_id)
    if rule is None:
        raise fwaas.rule_not_found(rule_id)
    if shared and not rule.shared:
        raise NeutronError(
            404,
            "FirewallRuleSharingConflict",
            f"Operation cannot be performed since firewall policy {policy_id} could not find"
            f" the firewall rule {rule_id}. Please confirm if the firewall rule exists and is"
            " shared.",
        )
    if not rule.shared and rule.project_id != project_id:
        raise NeutronError(
            409,
            "FirewallRuleConflict",
            f"Operation cannot be performed since firewall rule {rule_id} is not shared and"
            f" belongs to another project {rule.project_id}.",
        )
    return rule


def _entries(rule_ids: list[str]) -> list[FirewallPolicyRule]:
    """A policy's rules in this order (positions from 1)."""
    return [
        FirewallPolicyRule(firewall_rule_id=rule_id, position=position)
        for position, rule_id in enumerate(rule_ids, start=1)
    ]


def _set_rules(session: Session, policy: FirewallPolicy, rule_ids: list[str]) -> None:
    for rule_id in rule_ids:
        _rule_for(session, policy.id, policy.project_id, policy.shared, rule_id)
    policy.entries = _entries(rule_ids)


def create(
    session: Session, caller: Caller, values: dict[str, Any], now: datetime
) -> FirewallPolicy:
    fwaas.ensure_default(session, values["project_id"], now)
    if values["name"] in fwaas.DEFAULT_POLICIES.values():
        raise fwaas.reserved_name(values["name"], KIND)
    policy = FirewallPolicy(
        **fwaas.standard(
            values["project_id"],
            now,
            name=values["name"],
            description=values["description"],
            shared=values["shared"],
            audited=values["audited"],
        )
    )
    session.add(policy)
    session.flush()
    _set_rules(session, policy, values["firewall_rules"] or [])
    session.flush()
    changes.record(session, "firewall_policy", policy, "create", now)
    return policy


def update(
    session: Session, caller: Caller, policy: FirewallPolicy, values: dict[str, Any], now: datetime
) -> FirewallPolicy:
    if policy.id in fwaas.default_policies(session, policy.project_id):
        raise fwaas.default_restricted(policy.id)
    if values.get("name") in fwaas.DEFAULT_POLICIES.values():
        raise fwaas.reserved_name(values["name"], KIND)
    shared = values.get("shared", policy.shared)
    if values.get("shared") is False and policy.shared:
        others = [
            g for g in fwaas.groups_using(session, [policy.id]) if g.project_id != policy.project_id
        ]
        if others:
            raise _in_use(policy.id)
    if "firewall_rules" in values:
        policy.shared = shared
        _set_rules(session, policy, values.pop("firewall_rules"))
    elif shared and not policy.shared:
        for entry in policy.entries:
            rule = session.get(FirewallRule, entry.firewall_rule_id)
            if rule is not None and not rule.shared:
                raise NeutronError(
                    409,
                    "FirewallPolicySharingConflict",
                    f"Operation cannot be performed. Before sharing firewall policy {policy.id},"
                    f" share associated firewall rule {rule.id}.",
                )
    # Any change but one that says it was audited clears `audited` (Neutron's rule).
    values.setdefault("audited", False)
    changes.update(session, "firewall_policy", policy, values, now)
    fwaas.enforce(session, fwaas.groups_using(session, [policy.id]), now)
    return policy


def _in_use(policy_id: str) -> NeutronError:
    return NeutronError(409, "FirewallPolicyInUse", f"Firewall policy {policy_id} is being used.")


def delete(session: Session, caller: Caller, policy: FirewallPolicy, now: datetime) -> None:
    if fwaas.groups_using(session, [policy.id]):
        raise _in_use(policy.id)
    session.delete(policy)
    session.flush()
    changes.record(session, "firewall_policy", policy, "delete", now)


# --- member actions ----------------------------------------------------------------------


def _rule_id(body: Any, key: str = "firewall_rule_id") -> str:
    if not isinstance(body, dict) or not body.get(key):
        raise NeutronError(
            400,
            "FirewallRuleInfoMissing",
            "Missing rule info argument for insert/remove rule operation.",
        )
    value = body[key]
    if not is_uuid(value):
        raise fwaas.rule_not_found(str(value))
    return str(value)


def _not_in_policy(rule_id: str, policy_id: str) -> NeutronError:
    return NeutronError(
        400,
        "FirewallRuleNotAssociatedWithPolicy",
        f"Firewall rule {rule_id} is not associated with firewall policy {policy_id}.",
    )


def _changed(
    session: Session, policy: FirewallPolicy, rule_ids: list[str], now: datetime
) -> dict[str, Any]:
    policy.entries = _entries(rule_ids)
    session.flush()
    changes.update(session, "firewall_policy", policy, {"audited": False}, now)
    fwaas.enforce(session, fwaas.groups_using(session, [policy.id]), now)
    session.flush()
    return view(policy)  # unwrapped: Neutron answers the policy itself


def insert_rule(
    session: Session, caller: Caller, policy_id: str, body: Any, now: datetime
) -> dict[str, Any]:
    """Put a rule before `insert_before`, else after `insert_after`, else
    first."""
    policy = owned(session, caller, policy_id)
    rule_id = _rule_id(body)
    if policy.id in fwaas.default_policies(session, policy.project_id):
        raise fwaas.default_restricted(policy.id)
    order = [e.firewall_rule_id for e in policy.entries]
    if rule_id in order:
        raise NeutronError(
            409,
            "FirewallRuleAlreadyAssociated",
            f"Operation cannot be performed since firewall rule {rule_id} is already"
            f" associated with firewall policy {policy.id}.",
        )
    _rule_for(session, policy.id, policy.project_id, policy.shared, rule_id)
    before, after = body.get("insert_before"), body.get("insert_after")
    reference, offset = (before, 0) if before else (after, 1) if after else (None, 0)
    if reference is None:
        at = 0
    elif reference in order:
        at = order.index(reference) + offset
    else:
        raise _not_in_policy(str(reference), policy.id)
    order.insert(at, rule_id)
    return _changed(session, policy, order, now)


def remove_rule(
    session: Session, caller: Caller, policy_id: str, body: Any, now: datetime
) -> dict[str, Any]:
    policy = owned(session, caller, policy_id)
    rule_id = _rule_id(body)
    if policy.id in fwaas.default_policies(session, policy.project_id):
        raise fwaas.default_restricted(policy.id)
    if session.get(FirewallRule, rule_id) is None:
        raise fwaas.rule_not_found(rule_id)
    order = [e.firewall_rule_id for e in policy.entries]
    if rule_id not in order:
        raise _not_in_policy(rule_id, policy.id)
    order.remove(rule_id)
    return _changed(session, policy, order, now)
