"""Neutron security groups: `/v2.0/security-groups` (§3.6).

Every project has a group named `default`, made the first time the project
lists or creates groups or creates a port (Neutron's rule): egress to
anywhere, ingress from the group's own members. Ports get it when they name
no group. A group bound to a port is in use: it cannot be deleted, and its
`stateful` cannot change under the port.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session, selectinload

from astara.api import access, changes, quotas, sql_query
from astara.api.attributes import (
    Attribute,
    Resource,
    bad_input,
    is_uuid,
    standard_attributes,
    to_bool,
)
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.api.query import Query
from astara.db.models import (
    DefaultSecurityGroup,
    PortSecurityGroup,
    Project,
    SecurityGroup,
    SecurityGroupRule,
)
from astara.model import security_rules

DEFAULT_NAME = "default"
DEFAULT_DESCRIPTION = "Default security group"

RESOURCE = Resource(
    "security_groups",
    "security_group",
    (
        *standard_attributes(),
        Attribute("name", default=""),
        Attribute("stateful", to_bool, default=True),
        Attribute("shared", to_bool, allow_post=False, allow_put=False),
        Attribute(
            "security_group_rules", allow_post=False, allow_put=False, filter=False, sort=False
        ),
    ),
    path="security-groups",
)


def not_found(group_id: str) -> NeutronError:
    return NeutronError(404, "SecurityGroupNotFound", f"Security group {group_id} does not exist")


def view(group: SecurityGroup) -> dict[str, Any]:
    session = Session.object_session(group)
    is_default = session is not None and default_of(session, group.project_id) == group.id
    return _view(group, is_default)


def _view(group: SecurityGroup, is_default: bool) -> dict[str, Any]:
    return {
        **changes.standard_view(group),
        "name": group.name,
        "stateful": group.stateful,
        "shared": False,
        "security_group_rules": [
            rule_view(rule, is_default)
            for rule in sorted(group.rules, key=lambda r: (r.created_at, r.id))
        ],
    }


def rule_view(rule: SecurityGroupRule, in_default: bool) -> dict[str, Any]:
    """A rule as Neutron shows it (§3.7): no tags; `normalized_cidr` the
    network of its prefix; `belongs_to_default_sg` whether its group is its
    project's default."""
    shown = changes.standard_view(rule)
    del shown["tags"]
    return {
        **shown,
        "security_group_id": rule.security_group_id,
        "direction": rule.direction,
        "ethertype": rule.ethertype,
        "protocol": rule.protocol,
        "port_range_min": rule.port_range_min,
        "port_range_max": rule.port_range_max,
        "remote_ip_prefix": rule.remote_ip_prefix,
        "normalized_cidr": security_rules.normalized_cidr(rule.remote_ip_prefix),
        "remote_group_id": rule.remote_group_id,
        "remote_address_group_id": rule.remote_address_group_id,
        "belongs_to_default_sg": in_default,
    }


def new_rule(
    group: SecurityGroup, matching: security_rules.Rule, description: str, now: datetime
) -> SecurityGroupRule:
    """A rule of `group` (its project's: whoever adds it, the rule is the group's)."""
    return SecurityGroupRule(
        id=str(uuid.uuid4()),
        project_id=group.project_id,
        description=description,
        created_at=now,
        updated_at=now,
        revision_number=0,
        tags=[],
        security_group_id=group.id,
        direction=matching.direction,
        ethertype=matching.ethertype,
        protocol=matching.protocol,
        port_range_min=matching.port_range_min,
        port_range_max=matching.port_range_max,
        remote_ip_prefix=matching.remote_ip_prefix,
        remote_group_id=matching.remote_group_id,
        remote_address_group_id=matching.remote_address_group_id,
    )


def get(session: Session, caller: Caller, group_id: str) -> SecurityGroup:
    return access.project_row(session, caller, SecurityGroup, group_id, not_found)


owned = get


def views(session: Session, statement: Select[SecurityGroup]) -> list[dict[str, Any]]:
    groups = list(session.scalars(statement.options(selectinload(SecurityGroup.rules))))
    defaults = set(
        session.scalars(
            select(DefaultSecurityGroup.security_group_id).where(
                DefaultSecurityGroup.security_group_id.in_([g.id for g in groups])
            )
        )
    )
    return [_view(group, group.id in defaults) for group in groups]


def _before_list(session: Session, caller: Caller, query: Query, now: datetime) -> None:
    """Listing groups makes the default group of the project listed (the
    caller's, or the projects an admin's `project_id` filter names), as
    Neutron does."""
    named = {str(p) for p in query.filters.get("project_id", [])} if caller.is_admin else set()
    if named:  # only projects that exist: a mistyped filter makes nothing
        named = set(session.scalars(select(Project.id).where(Project.id.in_(named))))
    for project_id in sorted(named or {caller.project_id}):
        ensure_default(session, project_id, now)


LISTING = sql_query.Listing(
    resource=RESOURCE,
    model=SecurityGroup,
    statement=access.project_rows(SecurityGroup),
    views=views,
    columns={
        **sql_query.standard_columns(SecurityGroup),
        "name": SecurityGroup.name,
        "stateful": SecurityGroup.stateful,
    },
    prepare=_before_list,
)


def default_of(session: Session, project_id: str) -> str | None:
    found: str | None = session.scalar(
        select(DefaultSecurityGroup.security_group_id).where(
            DefaultSecurityGroup.project_id == project_id
        )
    )
    return found


def ensure_default(session: Session, project_id: str, now: datetime) -> str | None:
    """The project's default group's id, made with its rules if it has none
    yet. Two first requests of a project may both make one: the second to
    insert its `DefaultSecurityGroup` row loses the race and runs again,
    finding the first's. None for the service's own ports (no project)."""
    if not project_id:
        return None
    found = default_of(session, project_id)
    if found is not None:
        return found
    group = new_group(project_id, DEFAULT_NAME, DEFAULT_DESCRIPTION, True, now)
    session.add(group)
    session.flush()
    session.add(DefaultSecurityGroup(project_id=project_id, security_group_id=group.id))
    for ethertype in security_rules.ETHERTYPES:
        _add_rule(session, group, "ingress", ethertype, now, remote_group_id=group.id)
    session.flush()
    changes.record(session, "security_group", group, "create", now)
    return group.id


def new_group(
    project_id: str, name: str, description: str, stateful: bool, now: datetime
) -> SecurityGroup:
    group = SecurityGroup(
        id=str(uuid.uuid4()),
        project_id=project_id,
        name=name,
        description=description,
        stateful=stateful,
        created_at=now,
        updated_at=now,
        revision_number=1,
        tags=[],
    )
    group.rules = [_egress(group, ethertype, now) for ethertype in security_rules.ETHERTYPES]
    return group


def _egress(group: SecurityGroup, ethertype: str, now: datetime) -> SecurityGroupRule:
    return new_rule(group, security_rules.rule(**_open("egress", ethertype)), "", now)


def _open(direction: str, ethertype: str, remote_group_id: str | None = None) -> dict[str, Any]:
    return {
        "direction": direction,
        "ethertype": ethertype,
        "protocol": None,
        "port_range_min": None,
        "port_range_max": None,
        "remote_ip_prefix": None,
        "remote_group_id": remote_group_id,
        "remote_address_group_id": None,
    }


def _add_rule(
    session: Session,
    group: SecurityGroup,
    direction: str,
    ethertype: str,
    now: datetime,
    remote_group_id: str | None = None,
) -> None:
    matching = security_rules.rule(**_open(direction, ethertype, remote_group_id))
    group.rules.append(new_rule(group, matching, "", now))


def _is_default_name(name: str) -> bool:
    return name.lower() == DEFAULT_NAME


def _default_exists() -> NeutronError:
    return NeutronError(
        409, "SecurityGroupDefaultAlreadyExists", "Default security group already exists."
    )


def in_use(session: Session, group_id: str) -> bool:
    return bool(
        session.scalar(select(exists().where(PortSecurityGroup.security_group_id == group_id)))
    )


def _in_use_error(group_id: str) -> NeutronError:
    return NeutronError(409, "SecurityGroupInUse", f"Security Group {group_id} in use.")


def create(
    session: Session, caller: Caller, values: dict[str, Any], now: datetime
) -> SecurityGroup:
    ensure_default(session, values["project_id"], now)
    if _is_default_name(values["name"]):
        raise _default_exists()
    # Its two egress rules count against the rule quota (Neutron reserves them).
    quotas.check(session, "security_group_rule", values["project_id"], count=2)
    group = new_group(
        values["project_id"], values["name"], values["description"], values["stateful"], now
    )
    session.add(group)
    session.flush()
    changes.record(session, "security_group", group, "create", now)
    return group


def update(
    session: Session, caller: Caller, group: SecurityGroup, values: dict[str, Any], now: datetime
) -> SecurityGroup:
    if "name" in values:
        if _is_default_name(values["name"]):
            raise _default_exists()
        if default_of(session, group.project_id) == group.id:
            raise NeutronError(
                409,
                "SecurityGroupCannotUpdateDefault",
                "Updating default security group not allowed.",
            )
    if "stateful" in values and values["stateful"] != group.stateful and in_use(session, group.id):
        raise _in_use_error(group.id)
    changes.update(session, "security_group", group, values, now)
    return group


def delete(session: Session, caller: Caller, group: SecurityGroup, now: datetime) -> None:
    if in_use(session, group.id):
        raise _in_use_error(group.id)
    if default_of(session, group.project_id) == group.id and not caller.is_admin:
        raise NeutronError(
            409,
            "SecurityGroupCannotRemoveDefault",
            "Insufficient rights for removing default security group.",
        )
    remove(session, group, now)


def remove(session: Session, group: SecurityGroup, now: datetime) -> None:
    """The group and its rules gone, and the other groups' rules that name it
    as their remote (Neutron's cascade), each such group changed: its
    revision and its event, which the fabric's rulesets follow."""
    naming = session.scalars(
        select(SecurityGroupRule).where(
            SecurityGroupRule.remote_group_id == group.id,
            SecurityGroupRule.security_group_id != group.id,
        )
    ).all()
    for rule in naming:
        other = rule.security_group
        other.rules.remove(rule)
        changes.record(
            session, "security_group_rule", rule, "delete", now, {"security_group_id": other.id}
        )
        changes.update(session, "security_group", other, {}, now)
    session.delete(group)
    session.flush()
    changes.record(session, "security_group", group, "delete", now)


# --- a port's groups ------------------------------------------------------------------------


# More groups than any project may have (its quota) can never all be found.
MAX_PORT_GROUPS = 1_000


def uuid_list(name: str, value: Any) -> list[str] | None:
    """A port's group ids, each once in the order given (Neutron merges
    repeats); None when not given (the default group, on a create)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_input(name, f"'{value}' is not a list of security group ids")
    if len(value) > MAX_PORT_GROUPS:
        raise bad_input(name, f"more than {MAX_PORT_GROUPS} security groups")
    unique = list(dict.fromkeys(value))
    for item in unique:
        if not is_uuid(item):
            raise bad_input(name, f"'{item}' is not a valid UUID")
    return unique


def port_groups(session: Session, project_id: str, wanted: list[str]) -> list[str]:
    """`wanted` if every group is the port's project's, else 404 naming those
    that are not (Neutron checks them against the port's project)."""
    if not wanted:
        return []
    found = set(
        session.scalars(
            select(SecurityGroup.id).where(
                SecurityGroup.id.in_(wanted), SecurityGroup.project_id == project_id
            )
        )
    )
    missing = [g for g in wanted if g not in found]
    if missing:
        raise not_found(", ".join(missing))
    return wanted
