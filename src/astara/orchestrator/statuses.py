"""Neutron statuses from what the orchestrator observed: a router is ACTIVE
only while its appliance runs its current config; its ports and floating IPs
follow it. A network's DHCP port follows its DHCP appliance. Observed
values, not changes: no revision bump, no outbox event."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from astara.appliance.schema import DEFAULT_ADVERT_MS
from astara.db.models import (
    ApplianceState,
    FloatingIp,
    HealthMonitor,
    L7Policy,
    L7Rule,
    Listener,
    ListenerStatistics,
    LoadBalancer,
    LoadBalancerObject,
    Member,
    Pool,
    Port,
    Router,
    RouterPort,
    ha_member,
    ha_member_id,
)
from astara.drivers import loadbalancer as lb_driver
from astara.drivers import router as driver
from astara.drivers.appliance import AppliancePlan
from astara.orchestrator.lifecycle import State


def neutron_status(state: State) -> str:
    """A router is ACTIVE only when its appliance runs its current config."""
    if state is State.ACTIVE:
        return "ACTIVE"
    if state is State.ERROR:
        return "ERROR"
    return "BUILD"


def write_statuses(
    session: Session, appliance_id: str, state: State, plan: AppliancePlan | None
) -> None:
    """Neutron statuses from reality: the router, its ports, its floating IPs.
    Observed values, not changes: no revision bump, no outbox event. An HA
    router's come from its members: ACTIVE while either runs its current
    config (the other may be lost, being rebuilt: the router serves); its
    own id's appliance (none) says nothing of it, nor do the members of a
    router no longer HA."""
    if state is State.PAUSED:
        return
    router_id, slot = ha_member(appliance_id) or (appliance_id, None)
    ha = session.scalar(select(Router.ha).where(Router.id == router_id))
    if ha is not None and ha != (slot is not None):
        return
    status = neutron_status(state)
    if slot is not None and status != "ACTIVE":
        sibling = session.get(ApplianceState, ha_member_id(router_id, 1 - slot))
        if sibling is not None and sibling.state == State.ACTIVE.value:
            return  # the other member serves: as the last write left it
    # Lock the router row first (a row lock on PostgreSQL, the write lock on
    # SQLite), then read: an API change that marks it BUILD either commits
    # before and is seen below, or waits and lands after this write.
    session.execute(update(Router).where(Router.id == router_id).values(status=Router.status))
    session.expire_all()
    router = session.get(Router, router_id)
    if (
        status == "ACTIVE"
        and router is not None
        and router.admin_state_up
        and router.status == "ACTIVE"
    ):
        # As the last write left it: its ports and floating IPs were made
        # ACTIVE with it, and a change to them marks it BUILD.
        return
    # The API may have changed what the router should run since we looked (and
    # marked it BUILD): ACTIVE only if what runs is still current.
    if (
        status == "ACTIVE"
        and router is not None
        and plan is not None
        and _replanned(session, router, slot, plan).digest != plan.digest
    ):
        status = "BUILD"
    # A port's status says whether it is wired on its host (Neutron's
    # meaning): the router's ports are while its appliance runs its current
    # config, an administratively down router's too.
    wired = "ACTIVE" if status == "ACTIVE" else "DOWN"
    if router is not None and not router.admin_state_up and status == "ACTIVE":
        status = "DOWN"  # down as asked: wired, forwarding nothing
    session.execute(
        update(Router).where(Router.id == router_id, Router.status != status).values(status=status)
    )
    up = "ACTIVE" if status == "ACTIVE" else "DOWN"
    own = select(RouterPort.port_id).where(RouterPort.router_id == router_id)
    session.execute(update(Port).where(Port.id.in_(own), Port.status != wired).values(status=wired))
    session.execute(
        update(FloatingIp)
        .where(
            FloatingIp.router_id == router_id,
            FloatingIp.fixed_port_id.is_not(None),
            FloatingIp.status != up,
        )
        .values(status=up)
    )
    session.execute(
        update(FloatingIp)
        .where(FloatingIp.router_id.is_(None), FloatingIp.status != "DOWN")
        .values(status="DOWN")
    )


def _replanned(
    session: Session, router: Router, slot: int | None, plan: AppliancePlan
) -> AppliancePlan:
    """The router's plan now, as `plan` was made (a member's advert interval)."""
    section = plan.config.ha if plan.config is not None else None
    advert = section.advert_interval_ms if section is not None else DEFAULT_ADVERT_MS
    return driver.plan(session, router, member=slot, advert_interval_ms=advert)


def write_dhcp_statuses(session: Session, state: State, plan: AppliancePlan | None) -> None:
    """A network's DHCP port is ACTIVE while its appliance runs its current
    config, DOWN otherwise (a paused appliance's is left as it was)."""
    if state is State.PAUSED or plan is None or not plan.ports:
        return
    up = "ACTIVE" if state is State.ACTIVE and plan.config is not None else "DOWN"
    session.execute(
        update(Port).where(Port.id.in_(plan.ports), Port.status != up).values(status=up)
    )


def write_lb_statuses(
    session: Session,
    appliance_id: str,
    state: State,
    plan: AppliancePlan | None,
    health: Mapping[str, Any] | None = None,
) -> None:
    """Octavia's statuses from what runs: the load balancer and its objects
    ACTIVE once the appliance runs the config that has them (PENDING_*
    until then), ERROR when it failed; operating statuses ONLINE, or
    OFFLINE where set down (members NO_MONITOR without a monitor). Observed
    values: no revision bump, no event. L7 policies and rules are ONLINE
    or OFFLINE by their admin state and their load balancer's (as Octavia
    sets them once its amphora has them).

    `health`: what haproxy's checks say (`appliance.lbstats.health`): a
    member ONLINE or ERROR, a pool DEGRADED or ERROR by its members, the
    load balancer DEGRADED or ERROR by its pools."""
    balancer_id = lb_driver.balancer_id(appliance_id)
    if state is State.PAUSED or balancer_id is None:
        return
    # Locked first, then read (as `write_statuses`): an API change that marks
    # it PENDING_UPDATE is seen here, or waits and lands after.
    session.execute(
        update(LoadBalancer)
        .where(LoadBalancer.id == balancer_id)
        .values(provisioning_status=LoadBalancer.provisioning_status)
    )
    session.expire_all()
    balancer = session.get(LoadBalancer, balancer_id)
    if balancer is None:
        return
    status = neutron_status(state)
    if plan is not None and plan.config is None:
        status = "ERROR"  # it exists, and nothing can serve it (its VIP port is gone)
    if status == "ERROR":
        balancer.provisioning_status = "ERROR"
        balancer.operating_status = "ERROR"
        for model in (Listener, Pool):
            session.execute(
                update(model)
                .where(
                    model.load_balancer_id == balancer.id,
                    model.provisioning_status.like("PENDING%"),
                )
                .values(provisioning_status="ERROR")
            )
        own_listeners = select(Listener.id).where(Listener.load_balancer_id == balancer.id)
        own_policies = select(L7Policy.id).where(L7Policy.listener_id.in_(own_listeners))
        session.execute(
            update(L7Policy)
            .where(
                L7Policy.listener_id.in_(own_listeners),
                L7Policy.provisioning_status.like("PENDING%"),
            )
            .values(provisioning_status="ERROR")
        )
        session.execute(
            update(L7Rule)
            .where(
                L7Rule.l7policy_id.in_(own_policies), L7Rule.provisioning_status.like("PENDING%")
            )
            .values(provisioning_status="ERROR")
        )
        return
    if status != "ACTIVE" or plan is None:
        return
    if lb_driver.plan(session, balancer).digest != plan.digest:
        return  # the API changed it since: still pending
    record = session.get(ApplianceState, appliance_id)
    if record is not None and record.rebuild_requested:
        return  # a failover asked since: pending until the rebuild has run
    pools = list(session.scalars(select(Pool).where(Pool.load_balancer_id == balancer.id)))
    pool_ids = [p.id for p in pools]
    monitors = list(
        session.scalars(select(HealthMonitor).where(HealthMonitor.pool_id.in_(pool_ids)))
    )
    monitored = {m.pool_id for m in monitors if m.admin_state_up}
    members = list(session.scalars(select(Member).where(Member.pool_id.in_(pool_ids))))
    listeners = list(
        session.scalars(select(Listener).where(Listener.load_balancer_id == balancer.id))
    )
    policies = list(
        session.scalars(select(L7Policy).where(L7Policy.listener_id.in_([i.id for i in listeners])))
    )
    rules = list(
        session.scalars(select(L7Rule).where(L7Rule.l7policy_id.in_([p.id for p in policies])))
    )
    up = balancer.admin_state_up
    seen: dict[str, str] = {}
    for part in ("listeners", "pools", "members"):
        seen.update((health or {}).get(part) or {})
    rows: list[LoadBalancerObject] = [
        *listeners,
        *pools,
        *monitors,
        *members,
        *policies,
        *rules,
    ]
    for row in rows:
        applied_now = row.provisioning_status != "ACTIVE"
        if applied_now:
            row.provisioning_status = "ACTIVE"
        if health is None and not applied_now:
            continue  # haproxy not read this time: what was known stands
        online = "ONLINE" if up and row.admin_state_up else "OFFLINE"
        if isinstance(row, Member) and row.admin_state_up and row.pool_id not in monitored:
            online = "NO_MONITOR"
        elif online == "ONLINE" and not isinstance(row, (HealthMonitor, L7Policy, L7Rule)):
            online = seen.get(row.id, online)
        if row.operating_status != online:
            row.operating_status = online
    pool_states = {p.operating_status for p in pools if p.admin_state_up}
    overall = (
        "OFFLINE"
        if not up
        else "ERROR"
        if "ERROR" in pool_states
        else ("DEGRADED" if "DEGRADED" in pool_states else "ONLINE")
    )
    balancer.provisioning_status = "ACTIVE"
    if balancer.operating_status != overall:
        balancer.operating_status = overall


# Counters that only grow (kept across haproxy's restarts), and the one that is a level.
_TOTALS = ("bytes_in", "bytes_out", "total_connections", "request_errors")
PROCESS = "process"  # in `seen`: the haproxy process the counters were read from


def accumulate(
    totals: Mapping[str, int], seen: Mapping[str, int], read: Mapping[str, int]
) -> dict[str, int]:
    """The totals after a read of haproxy's counters: what they grew by since
    `seen` (the last read of the same process; empty for a new one), or all
    of them where one went down (a new process, when it was not known)."""
    found = {}
    for name in _TOTALS:
        now, before = read.get(name, 0), seen.get(name, 0)
        found[name] = totals.get(name, 0) + (now - before if now >= before else now)
    found["active_connections"] = read.get("active_connections", 0)
    return found


def write_lb_stats(
    session: Session, appliance_id: str, health: Mapping[str, Any] | None, now: datetime
) -> None:
    """Each listener's statistics (Octavia's `/stats`) from haproxy's
    counters, when they were read this time."""
    balancer_id = lb_driver.balancer_id(appliance_id)
    counters = (health or {}).get("counters")
    if balancer_id is None or not counters:
        return
    known = set(
        session.scalars(
            select(Listener.id).where(
                Listener.load_balancer_id == balancer_id, Listener.id.in_(list(counters))
            )
        )
    )
    process = health.get("process") if health is not None else None
    for listener_id in sorted(known):
        read = {k: int(v) for k, v in counters[listener_id].items()}
        row = session.get(ListenerStatistics, listener_id)
        if row is None:
            row = ListenerStatistics(listener_id=listener_id, seen={}, updated_at=now)
            session.add(row)
        seen = dict(row.seen or {})
        if process is not None and seen.get(PROCESS) not in (None, process):
            seen = {}  # another haproxy process: its counters began at zero
        totals = {name: getattr(row, name) or 0 for name in _TOTALS}
        for name, value in accumulate(totals, seen, read).items():
            setattr(row, name, value)
        row.seen = {**read, **({PROCESS: process} if process is not None else {})}
        row.updated_at = now
