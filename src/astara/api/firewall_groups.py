"""FWaaS v2 groups: `/v2.0/fwaas/firewall_groups` (neutron-lib's `firewall_v2`).

A group applies an ingress policy (to what its routers forward into the
networks behind its ports) and an egress policy (to what they forward out
of them) on router interfaces; a direction without a policy lets no new
connection through, and a group set down lets nothing through at all, as
Neutron's L3 driver does. Each port is in one group at most. Each project
has a `default` group (its ingress denied, its egress allowed) with no
ports, made on its first FWaaS request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from astara.api import changes, fwaas, ports, sql_query
from astara.api.attributes import (
    Attribute,
    Resource,
    standard_attributes,
    to_bool,
    to_uuid,
    to_uuid_list,
)
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.db.models import (
    ROUTER_INTERFACE,
    FirewallGroup,
    FirewallGroupPort,
    FirewallPolicy,
)

KIND = "Firewall Group"
POLICIES = ("ingress_firewall_policy_id", "egress_firewall_policy_id")
# What only an admin may change on a project's default group; nobody renames it.
_DEFAULT_FIXED = {"name", "description", "admin_state_up", *POLICIES}


# Router interfaces in one group: more than any router has.
MAX_PORTS = 1000


RESOURCE = Resource(
    "firewall_groups",
    "firewall_group",
    (
        *standard_attributes(),
        Attribute("name", default=""),
        Attribute("shared", to_bool, default=False, admin_only=True),
        Attribute("admin_state_up", to_bool, default=True),
        Attribute("status", allow_post=False, allow_put=False),
        Attribute("ports", to_uuid_list(MAX_PORTS), default=None, sort=False),
        *(Attribute(name, to_uuid(nullable=True), default=None) for name in POLICIES),
    ),
    path="fwaas/firewall_groups",
    bulk=False,
)


def view(group: FirewallGroup) -> dict[str, Any]:
    session = Session.object_session(group)
    assert session is not None
    return {
        **changes.standard_view(group),
        "name": group.name,
        "shared": group.shared,
        "admin_state_up": group.admin_state_up,
        "status": fwaas.status(session, group),
        "ports": [p.port_id for p in group.ports],
        "ingress_firewall_policy_id": group.ingress_firewall_policy_id,
        "egress_firewall_policy_id": group.egress_firewall_policy_id,
    }


def get(session: Session, caller: Caller, group_id: str) -> FirewallGroup:
    return fwaas.visible(session, caller, FirewallGroup, group_id, fwaas.group_not_found)


def owned(session: Session, caller: Caller, group_id: str) -> FirewallGroup:
    return fwaas.owned(
        session, caller, FirewallGroup, group_id, fwaas.group_not_found, "update_firewall_group"
    )


LISTING = sql_query.Listing(
    resource=RESOURCE,
    model=FirewallGroup,
    statement=fwaas.visible_rows(FirewallGroup),
    views=sql_query.orm_views(view, selectinload(FirewallGroup.ports)),
    columns={
        **sql_query.standard_columns(FirewallGroup),
        "name": FirewallGroup.name,
        "shared": FirewallGroup.shared,
        "admin_state_up": FirewallGroup.admin_state_up,
        **{name: getattr(FirewallGroup, name) for name in POLICIES},
    },
    prepare=fwaas.before_list,
)


def _check_policies(session: Session, project_id: str, values: dict[str, Any]) -> None:
    """Each policy named exists and is the group's project's, or shared."""
    for name in POLICIES:
        policy_id = values.get(name)
        if policy_id is None:
            continue
        policy = session.get(FirewallPolicy, policy_id)
        if policy is None:
            raise fwaas.policy_not_found(policy_id)
        if not policy.shared and policy.project_id != project_id:
            raise NeutronError(
                404,
                "FirewallPolicyConflict",
                f"Operation cannot be performed since firewall policy {policy_id} for your"
                " project could not be found. Please confirm if the firewall policy exists and"
                " is shared.",
            )


def _check_ports(
    session: Session, caller: Caller, wanted: list[str], group_id: str | None, project_id: str
) -> None:
    """Router interfaces the caller sees, of the group's project (a network's
    owner sees other projects' ports on it, but may not filter their
    routers), in no other group."""
    for port_id in wanted:
        port = ports.get(session, caller, port_id)
        if port.project_id != project_id:
            raise NeutronError(
                409,
                "FirewallGroupPortInvalidProject",
                f"Operation cannot be performed as port {port_id} is in an invalid project"
                f" {project_id}.",
            )
        if port.device_owner.startswith("compute:"):
            raise NeutronError(
                409,
                "FirewallGroupPortNotSupported",
                f"Port {port_id} is not supported by firewall driver 'astara'.",
            )
        if port.device_owner != ROUTER_INTERFACE:
            raise NeutronError(
                409, "FirewallGroupPortInvalid", f"Port {port_id} of firewall group is invalid."
            )
    taken = sorted(
        session.scalars(
            select(FirewallGroupPort.port_id).where(
                FirewallGroupPort.port_id.in_(wanted),
                FirewallGroupPort.firewall_group_id != (group_id or ""),
            )
        )
    )
    if taken:
        raise NeutronError(
            409,
            "FirewallGroupPortInUse",
            f"Port(s) {taken} provided already associated with other firewall group(s).",
        )


def create(
    session: Session, caller: Caller, values: dict[str, Any], now: datetime
) -> FirewallGroup:
    project_id = values["project_id"]
    fwaas.ensure_default(session, project_id, now)
    if values["name"] == fwaas.DEFAULT_GROUP:
        raise fwaas.reserved_name(fwaas.DEFAULT_GROUP, KIND)
    _check_policies(session, project_id, values)
    wanted = values["ports"] or []
    _check_ports(session, caller, wanted, None, project_id)
    group = FirewallGroup(
        **fwaas.standard(
            project_id,
            now,
            name=values["name"],
            description=values["description"],
            shared=values["shared"],
            admin_state_up=values["admin_state_up"],
            status="PENDING_CREATE",
            **{name: values[name] for name in POLICIES},
        )
    )
    group.ports = [FirewallGroupPort(port_id=p) for p in wanted]
    session.add(group)
    session.flush()
    changes.record(session, "firewall_group", group, "create", now)
    fwaas.enforce(session, [group], now)
    group.status = "PENDING_CREATE"
    return group


def update(
    session: Session, caller: Caller, group: FirewallGroup, values: dict[str, Any], now: datetime
) -> FirewallGroup:
    if fwaas.default_group_of(session, group.project_id) == group.id:
        changing = {k for k, v in values.items() if getattr(group, k, v) != v}
        fixed = {"name"} if caller.is_admin else _DEFAULT_FIXED
        if changing & fixed:
            raise fwaas.default_restricted(group.id)
    elif values.get("name") == fwaas.DEFAULT_GROUP:
        raise fwaas.reserved_name(fwaas.DEFAULT_GROUP, KIND)
    _check_policies(session, group.project_id, values)
    before = [p.port_id for p in group.ports]
    if "ports" in values:
        wanted = values.pop("ports")
        _check_ports(session, caller, wanted, group.id, group.project_id)
        group.ports = [FirewallGroupPort(port_id=p) for p in wanted]
    changes.update(session, "firewall_group", group, values, now)
    session.flush()
    fwaas.enforce(session, [group], now, extra_ports=before)
    return group


def delete(session: Session, caller: Caller, group: FirewallGroup, now: datetime) -> None:
    if group.ports:
        raise NeutronError(409, "FirewallGroupInUse", f"Firewall group {group.id} is still active.")
    policies: list[str] = []
    if fwaas.default_group_of(session, group.project_id) == group.id:
        if not caller.is_admin:
            raise NeutronError(
                409,
                "FirewallGroupCannotRemoveDefault",
                "Deleting default firewall group not allowed.",
            )
        # An admin removes it with its two policies (their rules stay).
        policies = [p for p in (getattr(group, n) for n in POLICIES) if p is not None]
    session.delete(group)
    session.flush()
    changes.record(session, "firewall_group", group, "delete", now)
    for policy_id in policies:
        policy = session.get(FirewallPolicy, policy_id)
        if policy is not None and not fwaas.groups_using(session, [policy_id]):
            session.delete(policy)
            session.flush()
            changes.record(session, "firewall_policy", policy, "delete", now)
