"""Neutron security group rules: `/v2.0/security-group-rules` (§3.7).

Created, shown, listed and deleted; never updated (Neutron's reference
plugin has no rule update). What a rule may say is `model.security_rules`;
this module adds what needs the database: the group and the remote group or
address group exist for the caller, and the group has no same rule yet.
A rule is its group's project's, whoever adds it, and every change to a
group's rules is a change of the group (its revision, its event), which is
what the fabric's rulesets follow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from astara.api import access, address_groups, changes, security_groups, sql_query
from astara.api.attributes import (
    Attribute,
    Converter,
    Resource,
    bad_input,
    standard_attributes,
    to_string,
    to_uuid,
)
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.db.models import DefaultSecurityGroup, SecurityGroupRule
from astara.model import security_rules

# Rules of this session's bulk POST: a duplicate among them is Neutron's
# DuplicateSecurityGroupRuleInPost, not SecurityGroupRuleExists.
_CREATED = "security_group_rules_created"


def _rule_value(convert: Callable[[Any], Any]) -> Converter:
    def converted(name: str, value: Any) -> Any:
        try:
            return convert(value)
        except security_rules.RuleError as refused:
            raise NeutronError(400, refused.kind, refused.message) from None

    return converted


def _one_of(values: tuple[str, ...]) -> Converter:
    def converted(name: str, value: Any) -> str:
        if value not in values:
            raise bad_input(name, f"'{value}' is not in {list(values)}")
        return str(value)

    return converted


def _read_only(name: str) -> Attribute:
    return Attribute(name, to_string(), allow_post=False, allow_put=False)


RESOURCE = Resource(
    "security_group_rules",
    "security_group_rule",
    (
        *(replace(a, allow_put=False) for a in standard_attributes() if a.name != "tags"),
        Attribute("security_group_id", to_uuid(), allow_put=False),
        Attribute("direction", _one_of(security_rules.DIRECTIONS), allow_put=False),
        Attribute(
            "ethertype",
            _rule_value(security_rules.ethertype),
            default=security_rules.IPV4,
            allow_put=False,
        ),
        Attribute("protocol", _rule_value(security_rules.protocol), default=None, allow_put=False),
        Attribute(
            "port_range_min",
            _rule_value(security_rules.port_value),
            default=None,
            allow_put=False,
        ),
        Attribute(
            "port_range_max",
            _rule_value(security_rules.port_value),
            default=None,
            allow_put=False,
        ),
        Attribute(
            "remote_ip_prefix",
            _rule_value(security_rules.ip_prefix),
            default=None,
            allow_put=False,
        ),
        Attribute("remote_group_id", to_uuid(nullable=True), default=None, allow_put=False),
        Attribute("remote_address_group_id", to_uuid(nullable=True), default=None, allow_put=False),
        _read_only("normalized_cidr"),
        _read_only("belongs_to_default_sg"),
    ),
    path="security-group-rules",
)


def not_found(rule_id: str) -> NeutronError:
    return NeutronError(
        404, "SecurityGroupRuleNotFound", f"Security group rule {rule_id} does not exist"
    )


def view(rule: SecurityGroupRule) -> dict[str, Any]:
    session = Session.object_session(rule)
    in_default = (
        session is not None
        and security_groups.default_of(session, rule.project_id) == rule.security_group_id
    )
    return security_groups.rule_view(rule, in_default)


def get(session: Session, caller: Caller, rule_id: str) -> SecurityGroupRule:
    return access.project_row(session, caller, SecurityGroupRule, rule_id, not_found)


owned = get


def views(session: Session, statement: Select[SecurityGroupRule]) -> list[dict[str, Any]]:
    rules = list(session.scalars(statement))
    defaults = set(
        session.scalars(
            select(DefaultSecurityGroup.security_group_id).where(
                DefaultSecurityGroup.security_group_id.in_(
                    {rule.security_group_id for rule in rules}
                )
            )
        )
    )
    return [security_groups.rule_view(rule, rule.security_group_id in defaults) for rule in rules]


LISTING = sql_query.Listing(
    resource=RESOURCE,
    model=SecurityGroupRule,
    statement=access.project_rows(SecurityGroupRule),
    views=views,
    columns={
        **{
            name: column
            for name, column in sql_query.standard_columns(SecurityGroupRule).items()
            if name != "tags"
        },
        **{
            name: getattr(SecurityGroupRule, name)
            for name in (
                "security_group_id",
                "direction",
                "ethertype",
                "protocol",
                "port_range_min",
                "port_range_max",
                "remote_ip_prefix",
                "remote_group_id",
                "remote_address_group_id",
            )
        },
    },
)


def _matching(values: dict[str, Any]) -> security_rules.Rule:
    try:
        return security_rules.rule(
            direction=values["direction"],
            ethertype=values["ethertype"],
            protocol=values["protocol"],
            port_range_min=values["port_range_min"],
            port_range_max=values["port_range_max"],
            remote_ip_prefix=values["remote_ip_prefix"],
            remote_group_id=values["remote_group_id"],
            remote_address_group_id=values["remote_address_group_id"],
        )
    except security_rules.RuleError as refused:
        raise NeutronError(400, refused.kind, refused.message) from None


def matching_of(rule: SecurityGroupRule) -> security_rules.Rule:
    return security_rules.Rule(
        rule.direction,
        rule.ethertype,
        rule.protocol,
        rule.port_range_min,
        rule.port_range_max,
        rule.remote_ip_prefix,
        rule.remote_group_id,
        rule.remote_address_group_id,
    )


def create(
    session: Session, caller: Caller, values: dict[str, Any], now: datetime
) -> SecurityGroupRule:
    matching = _matching(values)
    if matching.remote_group_id is not None:
        security_groups.get(session, caller, matching.remote_group_id)
    if matching.remote_address_group_id is not None:
        address_groups.get(session, caller, matching.remote_address_group_id)
    group = security_groups.get(session, caller, values["security_group_id"])
    created: set[str] = session.info.setdefault(_CREATED, set())
    for existing in group.rules:
        if matching_of(existing).key() == matching.key():
            if existing.id in created:
                raise NeutronError(
                    409,
                    "DuplicateSecurityGroupRuleInPost",
                    "Duplicate Security Group Rule in POST.",
                )
            raise NeutronError(
                409,
                "SecurityGroupRuleExists",
                f"Security group rule already exists. Rule id is {existing.id}.",
            )
    rule = security_groups.new_rule(group, matching, values["description"], now)
    group.rules.append(rule)
    session.flush()
    created.add(rule.id)
    changes.record(session, "security_group_rule", rule, "create", now)
    changes.update(session, "security_group", group, {}, now)
    return rule


def update(
    session: Session, caller: Caller, rule: SecurityGroupRule, values: dict[str, Any], now: datetime
) -> SecurityGroupRule:
    return rule  # every attribute is read-only: `prepare_body` refused any change


def delete(session: Session, caller: Caller, rule: SecurityGroupRule, now: datetime) -> None:
    group = rule.security_group
    group.rules.remove(rule)
    session.flush()
    changes.record(
        session, "security_group_rule", rule, "delete", now, {"security_group_id": group.id}
    )
    changes.update(session, "security_group", group, {}, now)
