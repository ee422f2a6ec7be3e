"""Octavia L7 policies: `/v2/lbaas/l7policies` (research §1.2-1.5).

A policy of an HTTP listener rejects a request (403), redirects it (to a
URL, or to a prefix before its path) or sends it to another pool of the
same load balancer, when all its rules match. Policies are numbered
1..n per listener (`position`): a create or a move inserts, and the others
shift, as Octavia's ordering list does. The action's arguments are made
consistent as Octavia's `sanitize_l7policy_api_args` makes them (a
`redirect_url` alone makes the action REDIRECT_TO_URL, and so on).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session

from astara.api.auth import Caller
from astara.api.lbaas import common, errors, l7rules, listeners, quotas
from astara.api.lbaas.bodies import Body
from astara.db.models import L7Policy, L7Rule, Listener, LoadBalancer, Pool
from astara.model import l7_rules

RESOURCE = "L7 Policy"
MAX_POSITION = 2147483647
_REDIRECTS = ("redirect_pool_id", "redirect_url", "redirect_prefix", "redirect_http_code")
# What each action keeps (Octavia's repository nulls the rest on a PUT).
_KEEPS = {
    "REJECT": (),
    "REDIRECT_TO_URL": ("redirect_url", "redirect_http_code"),
    "REDIRECT_PREFIX": ("redirect_prefix", "redirect_http_code"),
    "REDIRECT_TO_POOL": ("redirect_pool_id",),
}


class L7PolicyPUT(Body):
    name: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=255)
    admin_state_up: bool | None = None
    action: Literal[l7_rules.ACTIONS] | None = None  # type: ignore[valid-type]
    redirect_pool_id: uuid.UUID | None = None
    redirect_url: str | None = None
    redirect_prefix: str | None = None
    redirect_http_code: Literal[l7_rules.REDIRECT_CODES] | None = None  # type: ignore[valid-type]
    position: int | None = Field(default=None, ge=1, le=MAX_POSITION)
    tags: list[str] | None = None


class L7PolicyFields(L7PolicyPUT):
    """A policy's own attributes (in a fully populated load balancer's
    create, where its listener is one being made)."""

    action: Literal[l7_rules.ACTIONS]  # type: ignore[valid-type]
    rules: list[l7rules.L7RulePOST] | None = None
    project_id: str | None = Field(default=None, max_length=36)
    tenant_id: str | None = Field(default=None, max_length=36)


class L7PolicyPOST(L7PolicyFields):
    listener_id: uuid.UUID


def view(session: Session, policy: L7Policy) -> dict[str, Any]:
    rules = session.scalars(
        select(L7Rule.id)
        .where(L7Rule.l7policy_id == policy.id)
        .order_by(L7Rule.created_at, L7Rule.id)
    )
    return {
        **common.object_view(policy),
        "action": policy.action,
        "listener_id": policy.listener_id,
        "redirect_pool_id": policy.redirect_pool_id,
        "redirect_url": policy.redirect_url,
        "redirect_prefix": policy.redirect_prefix,
        "redirect_http_code": policy.redirect_http_code,
        "position": policy.position,
        "rules": [{"id": i} for i in rules],
    }


def ids_of(session: Session, listener_id: str) -> list[str]:
    """A listener's policies, in position order (its view's `l7policies`)."""
    return list(
        session.scalars(
            select(L7Policy.id)
            .where(L7Policy.listener_id == listener_id)
            .order_by(L7Policy.position, L7Policy.id)
        )
    )


def get(session: Session, caller: Caller, policy_id: str) -> L7Policy:
    return common.get(session, caller, L7Policy, policy_id, RESOURCE)


def parent(session: Session, caller: Caller, policy_id: str) -> L7Policy:
    """The policy in a rules path (Octavia's words for a missing one differ)."""
    policy = session.get(L7Policy, policy_id)
    if policy is None:
        raise errors.not_found("L7Policy", policy_id)
    return common.get(session, caller, L7Policy, policy_id, RESOURCE)


def _url(name: str, value: str | None) -> None:
    if value is not None and l7_rules.redirect_url_problem(value):
        raise errors.OctaviaError(
            400,
            f"Invalid input for field/attribute {name}. Value: '{value}'."
            " Value must be a valid URL string",
        )


def _arguments(values: dict[str, Any], create: bool) -> dict[str, Any]:
    """Octavia's `sanitize_l7policy_api_args`: the action's arguments
    required, the others cleared, an argument given alone setting the action."""
    found = dict(values)
    _url("redirect_url", found.get("redirect_url"))
    _url("redirect_prefix", found.get("redirect_prefix"))
    action = found.get("action")
    if action == "REJECT":
        found.update(redirect_url=None, redirect_pool_id=None)
    elif action == "REDIRECT_TO_URL":
        if not found.get("redirect_url"):
            raise _invalid("redirect_url must not be None")
        found["redirect_pool_id"] = None
    elif action == "REDIRECT_TO_POOL":
        if not found.get("redirect_pool_id"):
            raise _invalid("redirect_pool_id or redirect_pool must not be None")
        found["redirect_url"] = None
    elif action == "REDIRECT_PREFIX" and not found.get("redirect_prefix"):
        raise _invalid("redirect_prefix must not be None")
    if found.get("redirect_pool_id") and (
        found.get("redirect_url") or found.get("redirect_prefix")
    ):
        raise _invalid(
            "Cannot specify redirect_pool_id and redirect_url or redirect_prefix at the same time"
        )
    if found.get("redirect_pool_id"):
        found.update(
            action="REDIRECT_TO_POOL",
            redirect_url=None,
            redirect_prefix=None,
            redirect_http_code=None,
        )
    for name, implied in (
        ("redirect_url", "REDIRECT_TO_URL"),
        ("redirect_prefix", "REDIRECT_PREFIX"),
    ):
        if found.get(name):
            found.update(action=implied, redirect_pool_id=None)
            found["redirect_prefix" if name == "redirect_url" else "redirect_url"] = None
            found["redirect_http_code"] = found.get("redirect_http_code") or 302
    if not create and not found:
        raise _invalid("Invalid update options")
    return found


def _invalid(message: str) -> errors.OctaviaError:
    return errors.OctaviaError(400, f"Invalid L7 Policy arguments: {message}")


def _redirect_pool(
    session: Session, balancer: LoadBalancer, listener: Listener, pool_id: str | None
) -> str | None:
    """A pool of the listener's load balancer that its protocol carries."""
    if pool_id is None:
        return None
    pool = session.get(Pool, pool_id)
    if pool is None or pool.load_balancer_id != balancer.id:
        raise errors.not_found("Pool", pool_id)
    if pool.protocol not in listeners.POOL_PROTOCOLS[listener.protocol]:
        raise errors.validation(
            f"The pool protocol '{pool.protocol}' is invalid while the listener protocol"
            f" is '{listener.protocol}'."
        )
    return pool.id


def _served(listener: Listener) -> None:
    """HTTP listeners only: Octavia's amphora refuses the others' (and
    TERMINATED_HTTPS listeners are refused here already)."""
    if listener.protocol != "HTTP":
        raise errors.OctaviaError(
            501,
            "Provider 'astara' does not support a requested option:"
            f" {listener.protocol} protocol listeners do not support L7 policies",
        )


def _count(session: Session, listener_id: str) -> int:
    found = session.scalar(
        select(func.count()).select_from(L7Policy).where(L7Policy.listener_id == listener_id)
    )
    return found or 0


def _shift(session: Session, listener_id: str, low: int, high: int, by: int) -> None:
    """Positions low..high of a listener's policies moved by `by`."""
    session.execute(
        sql_update(L7Policy)
        .where(
            L7Policy.listener_id == listener_id,
            L7Policy.position >= low,
            L7Policy.position <= high,
        )
        .values(position=L7Policy.position + by)
    )


def create(session: Session, caller: Caller, body: L7PolicyPOST, now: datetime) -> L7Policy:
    """A policy at its position (last by default), with the rules it carries.
    A create counts here (the policy, and each rule it carries): quota
    checks go first."""
    listener = listeners.get(session, caller, str(body.listener_id))
    _served(listener)
    balancer = common.balancer_for_change(session, caller, listener.load_balancer_id)
    quotas.check(session, "l7policy", balancer.project_id)
    quotas.check(session, "l7rule", balancer.project_id, len(body.rules or []))
    policy = build(session, balancer, listener, body, now)
    listener.provisioning_status = "PENDING_UPDATE"
    common.changed(session, balancer, policy, "l7policy", "create", now)
    return policy


def build(
    session: Session,
    balancer: LoadBalancer,
    listener: Listener,
    body: L7PolicyFields,
    now: datetime,
) -> L7Policy:
    """A new policy of `listener` with its rules, checked, PENDING_CREATE
    (its change not recorded: the caller does)."""
    _served(listener)
    values = _arguments(body.model_dump(exclude={"rules"}), create=True)
    rules = body.rules or []
    count = _count(session, listener.id)
    if count >= l7_rules.MAX_POLICIES:
        raise errors.validation(f"A listener has at most {l7_rules.MAX_POLICIES} L7 policies here.")
    policy_id = str(uuid.uuid4())
    if len(rules) > l7_rules.MAX_RULES:
        raise errors.OctaviaError(409, f"Too many rules on L7 policy {policy_id}")
    position = min(body.position or MAX_POSITION, count + 1)
    _shift(session, listener.id, position, MAX_POSITION, 1)
    policy = L7Policy(
        id=policy_id,
        project_id=balancer.project_id,
        listener_id=listener.id,
        name=body.name or "",
        description=body.description or "",
        admin_state_up=body.admin_state_up is not False,
        provisioning_status="PENDING_CREATE",
        operating_status="OFFLINE",
        action=values["action"],
        position=position,
        redirect_pool_id=_redirect_pool(
            session, balancer, listener, _text(values.get("redirect_pool_id"))
        ),
        redirect_url=values.get("redirect_url"),
        redirect_prefix=values.get("redirect_prefix"),
        redirect_http_code=values.get("redirect_http_code"),
        created_at=now,
        updated_at=now,
        revision_number=1,
        tags=sorted(set(body.tags or [])),
    )
    _keep(policy)
    session.add(policy)
    session.flush()
    for rule in rules:
        l7rules.make(session, policy, rule, now)
    session.flush()
    return policy


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _keep(policy: L7Policy) -> None:
    """Only its action's arguments (a REJECT has none)."""
    for name in _REDIRECTS:
        if name not in _KEEPS[policy.action]:
            setattr(policy, name, None)


def update(
    session: Session, caller: Caller, policy: L7Policy, body: L7PolicyPUT, now: datetime
) -> L7Policy:
    values = _arguments(body.model_dump(exclude_unset=True), create=False)
    listener = session.get(Listener, policy.listener_id)
    assert listener is not None  # a policy goes with its listener (ON DELETE CASCADE)
    balancer = common.balancer_for_change(session, caller, listener.load_balancer_id)
    if values.get("redirect_pool_id") is not None:
        values["redirect_pool_id"] = _redirect_pool(
            session, balancer, listener, str(values["redirect_pool_id"])
        )
    for name in ("action", *_REDIRECTS):
        if name in values and (name != "action" or values[name] is not None):
            setattr(policy, name, values[name])
    _keep(policy)
    if values.get("position") is not None:
        _move(session, policy, values["position"])
    common.set_common(policy, values)
    listener.provisioning_status = "PENDING_UPDATE"
    common.changed(session, balancer, policy, "l7policy", "update", now)
    return policy


def _move(session: Session, policy: L7Policy, wanted: int) -> None:
    """To `wanted` (at most the last), the others between shifted."""
    old, new = policy.position, min(wanted, _count(session, policy.listener_id))
    if new < old:
        _shift(session, policy.listener_id, new, old - 1, 1)
    elif new > old:
        _shift(session, policy.listener_id, old + 1, new, -1)
    policy.position = new


def delete(session: Session, caller: Caller, policy: L7Policy, now: datetime) -> None:
    """Gone with its rules; the policies after it move up."""
    listener = session.get(Listener, policy.listener_id)
    assert listener is not None
    balancer = common.balancer_for_change(session, caller, listener.load_balancer_id)
    position, listener_id = policy.position, policy.listener_id
    listener.provisioning_status = "PENDING_UPDATE"
    common.removed(session, balancer, policy, "l7policy", now)
    _shift(session, listener_id, position + 1, MAX_POSITION, -1)
