"""FWaaS v2 rules: `/v2.0/fwaas/firewall_rules` (neutron-lib's `firewall_v2`).

A rule matches a protocol, an IP version, source and destination addresses
and ports, and allows, denies or rejects. It does nothing until a policy
lists it; a rule in a policy is in use. Changing one that a group with ports
uses re-plans the routers that enforce it (`fwaas.enforce`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from astara.api import changes, fwaas, sql_query
from astara.api.attributes import Attribute, Resource, bad_input, standard_attributes, to_bool
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.db.models import FirewallPolicy, FirewallRule
from astara.model import firewall_rules as model


def _protocol(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value in model.PROTOCOLS:
        return value
    raise bad_input(name, f"{value} is not in valid_values")


def _ip_version(name: str, value: Any) -> int:
    try:
        number = int(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number not in model.IP_VERSIONS:
        raise bad_input(name, f"{value} is not in valid_values")
    return number


def _address(name: str, value: Any) -> str | None:
    try:
        return model.address(value)
    except ValueError as error:
        raise bad_input(name, str(error)) from None


def _port(name: str, value: Any) -> tuple[int, int] | None:
    try:
        return model.port_range(value)
    except ValueError as error:
        raise bad_input(name, str(error)) from None


def _action(name: str, value: Any) -> str:
    if isinstance(value, str) and value.lower() in model.ACTIONS:
        return value.lower()
    raise bad_input(name, f"{value} is not in valid_values")


RESOURCE = Resource(
    "firewall_rules",
    "firewall_rule",
    (
        *standard_attributes(),
        Attribute("name", default=""),
        Attribute("shared", to_bool, default=False, admin_only=True),
        Attribute("protocol", _protocol, default=None),
        Attribute("ip_version", _ip_version, default=4),
        Attribute("source_ip_address", _address, default=None),
        Attribute("destination_ip_address", _address, default=None),
        Attribute("source_port", _port, default=None, sort=False),
        Attribute("destination_port", _port, default=None, sort=False),
        Attribute("position", allow_post=False, allow_put=False, filter=False, sort=False),
        Attribute("action", _action, default="deny"),
        Attribute("enabled", to_bool, default=True),
        Attribute("firewall_policy_id", allow_post=False, allow_put=False, sort=False),
    ),
    path="fwaas/firewall_rules",
    bulk=False,
)

COLUMNS = {
    "protocol": "protocol",
    "ip_version": "ip_version",
    "source_ip_address": "source_ip_address",
    "destination_ip_address": "destination_ip_address",
    "action": "action",
    "enabled": "enabled",
    "name": "name",
    "shared": "shared",
}


def view(rule: FirewallRule, policies: list[str] | None = None) -> dict[str, Any]:
    """As Neutron shows it: `firewall_policy_id` is the list of policies
    that use it on a show, null everywhere else (`show` passes them)."""
    shown = changes.standard_view(rule)
    return {
        **shown,
        **{name: getattr(rule, column) for name, column in COLUMNS.items()},
        "source_port": model.port_text(rule.source_port_min, rule.source_port_max),
        "destination_port": model.port_text(rule.destination_port_min, rule.destination_port_max),
        "position": None,
        "firewall_policy_id": policies,
    }


def get(session: Session, caller: Caller, rule_id: str) -> FirewallRule:
    return fwaas.visible(session, caller, FirewallRule, rule_id, fwaas.rule_not_found)


def owned(session: Session, caller: Caller, rule_id: str) -> FirewallRule:
    return fwaas.owned(
        session, caller, FirewallRule, rule_id, fwaas.rule_not_found, "update_firewall_rule"
    )


def show(session: Session, rule: FirewallRule) -> dict[str, Any]:
    return view(rule, fwaas.policies_with(session, rule.id) or None)


LISTING = sql_query.Listing(
    resource=RESOURCE,
    model=FirewallRule,
    statement=fwaas.visible_rows(FirewallRule),
    views=sql_query.orm_views(view),
    columns={
        **sql_query.standard_columns(FirewallRule),
        **{name: getattr(FirewallRule, column) for name, column in COLUMNS.items()},
    },
    prepare=fwaas.before_list,
)


def _fields(values: dict[str, Any]) -> model.FirewallRuleFields:
    return model.FirewallRuleFields(
        protocol=values["protocol"],
        ip_version=values["ip_version"],
        source_ip_address=values["source_ip_address"],
        destination_ip_address=values["destination_ip_address"],
        source_port=values["source_port"],
        destination_port=values["destination_port"],
    )


def _current(rule: FirewallRule) -> dict[str, Any]:
    def span(low: int | None, high: int | None) -> tuple[int, int] | None:
        return None if low is None or high is None else (low, high)

    return {
        "protocol": rule.protocol,
        "ip_version": rule.ip_version,
        "source_ip_address": rule.source_ip_address,
        "destination_ip_address": rule.destination_ip_address,
        "source_port": span(rule.source_port_min, rule.source_port_max),
        "destination_port": span(rule.destination_port_min, rule.destination_port_max),
    }


def _check(values: dict[str, Any]) -> None:
    problem = model.problem(_fields(values))
    if problem is not None:
        raise NeutronError(400, problem.kind, problem.message)


def _columns(values: dict[str, Any]) -> dict[str, Any]:
    """API values as the rule's columns (a port range is two)."""
    found = {k: v for k, v in values.items() if k not in ("source_port", "destination_port")}
    for side in ("source_port", "destination_port"):
        if side in values:
            span = values[side]
            found[f"{side}_min"], found[f"{side}_max"] = span if span else (None, None)
    found.pop("tenant_id", None)
    found.pop("project_id", None)
    return found


def create(session: Session, caller: Caller, values: dict[str, Any], now: datetime) -> FirewallRule:
    fwaas.ensure_default(session, values["project_id"], now)
    _check(values)
    rule = FirewallRule(**fwaas.standard(values["project_id"], now, **_columns(values)))
    session.add(rule)
    session.flush()
    changes.record(session, "firewall_rule", rule, "create", now)
    return rule


def update(
    session: Session, caller: Caller, rule: FirewallRule, values: dict[str, Any], now: datetime
) -> FirewallRule:
    _check({**_current(rule), **values})
    if values.get("shared") is False and rule.shared:
        _unshare(session, rule)
    changes.update(session, "firewall_rule", rule, _columns(values), now)
    policies = fwaas.policies_with(session, rule.id)
    for policy_id in policies:
        policy = session.get(FirewallPolicy, policy_id)
        if policy is not None and policy.audited:
            policy.audited = False  # what was audited changed
    fwaas.enforce(session, fwaas.groups_using(session, policies), now)
    return rule


def _unshare(session: Session, rule: FirewallRule) -> None:
    """A rule another project's policy uses, or a shared policy, stays shared."""
    for policy_id in fwaas.policies_with(session, rule.id):
        policy = session.get(FirewallPolicy, policy_id)
        if policy is not None and (policy.shared or policy.project_id != rule.project_id):
            raise NeutronError(409, "FirewallRuleInUse", f"Firewall rule {rule.id} is being used.")


def delete(session: Session, caller: Caller, rule: FirewallRule, now: datetime) -> None:
    if fwaas.policies_with(session, rule.id):
        raise NeutronError(409, "FirewallRuleInUse", f"Firewall rule {rule.id} is being used.")
    session.delete(rule)
    session.flush()
    changes.record(session, "firewall_rule", rule, "delete", now)
