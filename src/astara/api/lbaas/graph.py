"""Octavia's fully populated load balancer: one `POST /loadbalancers` with
its listeners (and their L7 policies and rules), pools, members and
monitors (research §6). All of it is made
in the create's transaction, or nothing is (the first error answers).

Pools are named and found by name: a listener's `default_pool` with more
than a `name` is a pool's full definition (as one in `pools`), a `name`
alone refers to one defined elsewhere in the body.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.api import changes
from astara.api.auth import Caller
from astara.api.lbaas import (
    appliance_ports,
    errors,
    health_monitors,
    l7policies,
    l7rules,
    listeners,
    members,
    pools,
    quotas,
)
from astara.api.lbaas.health_monitors import HealthMonitorFields
from astara.api.lbaas.l7policies import L7PolicyFields
from astara.api.lbaas.members import MemberPOST
from astara.db.models import HealthMonitor, L7Policy, L7Rule, Listener, LoadBalancer, Pool


class PoolSingle(pools.PoolPUT):
    """A pool in a fully populated create: `protocol` and `lb_algorithm`
    are needed only where it is defined, not where it is referred to."""

    protocol: Literal[pools.PROTOCOLS] | None = None  # type: ignore[valid-type]
    lb_algorithm: Literal[pools.ALGORITHMS] | None = None  # type: ignore[valid-type]
    project_id: str | None = Field(default=None, max_length=36)
    tenant_id: str | None = Field(default=None, max_length=36)
    healthmonitor: HealthMonitorFields | None = None
    members: list[MemberPOST] | None = None  # (a field named as the module: import the class)

    def defines(self) -> bool:
        return bool(self.model_fields_set - {"name"})


class L7PolicySingle(L7PolicyFields):
    """A listener's L7 policy in a fully populated create: its pool by name."""

    redirect_pool: PoolSingle | None = None


class ListenerSingle(listeners.ListenerFields):
    default_pool: PoolSingle | None = None
    l7policies: list[L7PolicySingle] | None = None  # (a field named as the module)


def check(
    defined: list[PoolSingle], given: list[ListenerSingle]
) -> tuple[dict[str, PoolSingle], list[ListenerSingle]]:
    """The pools by name (each defined once, each referred to defined) and
    the listeners; Octavia's messages for what is not."""
    found: dict[str, PoolSingle] = {}
    wanted = [*defined, *(i.default_pool for i in given if i.default_pool is not None)]
    wanted += [
        policy.redirect_pool
        for listener in given
        for policy in listener.l7policies or []
        if policy.redirect_pool is not None
    ]
    for pool in wanted:
        if not pool.name:
            raise errors.validation(
                "Pools must be named when creating a fully populated loadbalancer."
            )
        if not pool.defines():
            continue
        if pool.name in found:
            raise errors.validation(
                "Pool names must be unique when creating a fully populated loadbalancer."
            )
        for name in ("protocol", "lb_algorithm"):
            if getattr(pool, name) is None:
                raise errors.validation(
                    f"Pool definition for '{pool.name}' missing required attribute: {name}"
                )
        found[pool.name] = pool
    for pool in wanted:
        if pool.name not in found:
            raise errors.validation(
                f"Pool '{pool.name}' was referenced but no full definition was found."
            )
    return found, given


def create(
    session: Session,
    caller: Caller,
    balancer: LoadBalancer,
    defined: dict[str, PoolSingle],
    given: list[ListenerSingle],
    now: datetime,
) -> None:
    """The pools (with their monitors and members), then the listeners,
    each PENDING_CREATE with its load balancer; quotas as Octavia counts
    them (pools, listeners, monitors, members)."""
    project_id = balancer.project_id
    quotas.check(session, "pool", project_id, len(defined))
    quotas.check(session, "listener", project_id, len(given))
    monitors = [p.healthmonitor for p in defined.values() if p.healthmonitor is not None]
    quotas.check(session, "health_monitor", project_id, len(monitors))
    quotas.check(session, "member", project_id, sum(len(p.members or []) for p in defined.values()))
    policies = [p for listener in given for p in listener.l7policies or []]
    quotas.check(session, "l7policy", project_id, len(policies))
    quotas.check(session, "l7rule", project_id, sum(len(p.rules or []) for p in policies))
    made: dict[str, Pool] = {}
    for name, single in defined.items():
        fields = single.model_dump(exclude_unset=True, exclude={"healthmonitor", "members"})
        pool = pools.build(session, balancer, pools.PoolFields.model_validate(fields), now)
        changes.record(session, "pool", pool, "create", now)
        made[name] = pool
        if single.healthmonitor is not None:
            monitor = health_monitors.build(session, pool, single.healthmonitor, now)
            changes.record(session, "healthmonitor", monitor, "create", now)
        for body in single.members or []:
            member = members.build(session, caller, pool, body, now)
            changes.record(session, "member", member, "create", now)
    for wanted in given:
        fields = wanted.model_dump(exclude_unset=True, exclude={"default_pool", "l7policies"})
        if wanted.default_pool is not None:
            fields["default_pool_id"] = made[wanted.default_pool.name or ""].id
        attributes = listeners.ListenerFields.model_validate(fields)
        listener = listeners.build(session, balancer, attributes, now)
        changes.record(session, "listener", listener, "create", now)
        for asked in wanted.l7policies or []:
            values = asked.model_dump(exclude_unset=True, exclude={"redirect_pool"})
            if asked.redirect_pool is not None:
                values["redirect_pool_id"] = made[asked.redirect_pool.name or ""].id
            policy = l7policies.build(
                session, balancer, listener, L7PolicyFields.model_validate(values), now
            )
            changes.record(session, "l7policy", policy, "create", now)
    appliance_ports.sync_members(session, caller, balancer, now)


def view(session: Session, balancer: LoadBalancer, shown: dict[str, Any]) -> dict[str, Any]:
    """A create's answer (Octavia's `LoadBalancerFullResponse`): its
    listeners and pools in full, with their members and monitors."""
    found = select(Listener).where(Listener.load_balancer_id == balancer.id)
    shown_listeners = []
    for listener in session.scalars(found.order_by(Listener.created_at, Listener.id)):
        full = listeners.view(listener)
        del full["loadbalancers"]
        full["l7policies"] = []
        for policy_id in l7policies.ids_of(session, listener.id):
            policy = session.get(L7Policy, policy_id)
            assert policy is not None
            policy_view = l7policies.view(session, policy)
            rules = select(L7Rule).where(L7Rule.l7policy_id == policy_id)
            policy_view["rules"] = [
                l7rules.view(r)
                for r in session.scalars(rules.order_by(L7Rule.created_at, L7Rule.id))
            ]
            full["l7policies"].append(policy_view)
        shown_listeners.append(full)
    shown_pools = []
    found_pools = select(Pool).where(Pool.load_balancer_id == balancer.id)
    for pool in session.scalars(found_pools.order_by(Pool.created_at, Pool.id)):
        full = pools.view(session, pool)
        del full["loadbalancers"], full["healthmonitor_id"]
        monitor = session.scalar(select(HealthMonitor).where(HealthMonitor.pool_id == pool.id))
        full["healthmonitor"] = None
        if monitor is not None:
            full["healthmonitor"] = health_monitors.view(monitor)
            del full["healthmonitor"]["pools"]
        full["members"] = [members.view(m) for m in pool.members]
        shown_pools.append(full)
    return {**shown, "listeners": shown_listeners, "pools": shown_pools}
