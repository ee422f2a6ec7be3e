"""Octavia pools: `/v2/lbaas/pools` (fact sheet §6.7, research §5.4).

ROUND_ROBIN, LEAST_CONNECTIONS and SOURCE_IP (haproxy's roundrobin,
leastconn, source); session persistence SOURCE_IP, HTTP_COOKIE, APP_COOKIE.
What the appliance cannot serve is refused: SOURCE_IP_PORT (as Octavia's
amphora provider refuses it), UDP and SCTP pools, TLS to members.

"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from astara.api.auth import Caller
from astara.api.lbaas import appliance_ports, common, errors, listeners, quotas
from astara.api.lbaas.bodies import Body
from astara.appliance.schema import COOKIE_NAME
from astara.db.models import HealthMonitor, L7Policy, L7Rule, Listener, LoadBalancer, Pool

RESOURCE = "Pool"
PROTOCOLS = ("TCP", "HTTP", "HTTPS", "PROXY", "PROXYV2", "UDP", "SCTP")
SERVED = ("TCP", "HTTP", "HTTPS", "PROXY", "PROXYV2")
ALGORITHMS = ("ROUND_ROBIN", "LEAST_CONNECTIONS", "SOURCE_IP", "SOURCE_IP_PORT")
PERSISTENCE = ("SOURCE_IP", "HTTP_COOKIE", "APP_COOKIE")
_COOKIE = re.compile(COOKIE_NAME)


class SessionPersistence(Body):
    type: Literal[PERSISTENCE]  # type: ignore[valid-type]
    cookie_name: str | None = Field(default=None, max_length=255)
    persistence_timeout: int | None = None
    persistence_granularity: str | None = None


class PoolPUT(Body):
    name: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=255)
    admin_state_up: bool | None = None
    lb_algorithm: Literal[ALGORITHMS] | None = None  # type: ignore[valid-type]
    session_persistence: SessionPersistence | None = None
    tags: list[str] | None = None


class PoolFields(PoolPUT):
    """A pool's own attributes (in a fully populated load balancer's create,
    where its load balancer is the one being made)."""

    protocol: Literal[PROTOCOLS]  # type: ignore[valid-type]
    lb_algorithm: Literal[ALGORITHMS]  # type: ignore[valid-type]
    project_id: str | None = Field(default=None, max_length=36)
    tenant_id: str | None = Field(default=None, max_length=36)


class PoolPOST(PoolFields):
    loadbalancer_id: uuid.UUID | None = None
    listener_id: uuid.UUID | None = None


def view(session: Session, pool: Pool) -> dict[str, Any]:
    """`listeners`: those it is the default pool of, then those whose
    enabled L7 policies with rules redirect to it (Octavia's `Pool.listeners`)."""
    defaults = session.scalars(
        select(Listener.id)
        .where(Listener.default_pool_id == pool.id)
        .order_by(Listener.created_at, Listener.id)
    )
    redirecting = session.scalars(
        select(L7Policy.listener_id)
        .where(
            L7Policy.redirect_pool_id == pool.id,
            L7Policy.admin_state_up.is_(True),
            select(L7Rule.id).where(L7Rule.l7policy_id == L7Policy.id).exists(),
        )
        .order_by(L7Policy.created_at, L7Policy.id)
    )
    using = list(dict.fromkeys([*defaults, *redirecting]))
    monitor = session.scalar(select(HealthMonitor.id).where(HealthMonitor.pool_id == pool.id))
    return {
        **common.object_view(pool),
        "protocol": pool.protocol,
        "lb_algorithm": pool.lb_algorithm,
        "session_persistence": pool.session_persistence,
        "loadbalancers": [{"id": pool.load_balancer_id}],
        "listeners": [{"id": i} for i in using],
        "members": [{"id": m.id} for m in pool.members],
        "healthmonitor_id": monitor,
        "tls_enabled": False,
        "tls_container_ref": None,
        "ca_tls_container_ref": None,
        "crl_container_ref": None,
        "tls_ciphers": None,
        "tls_versions": None,
        "alpn_protocols": None,
    }


def get(session: Session, caller: Caller, pool_id: str) -> Pool:
    return common.get(session, caller, Pool, pool_id, RESOURCE)


def _algorithm(algorithm: str) -> str:
    if algorithm == "SOURCE_IP_PORT":
        raise errors.OctaviaError(
            501,
            "Provider 'astara' does not support a requested option:"
            " SOURCE_IP_PORT algorithm is not supported.",
        )
    return algorithm


def _persistence(persistence: SessionPersistence | None) -> dict[str, Any] | None:
    if persistence is None:
        return None
    if persistence.persistence_timeout is not None or persistence.persistence_granularity:
        raise errors.validation(
            "persistence_timeout and persistence_granularity is only for UDP and SCTP"
            " protocol pools."
        )
    name = persistence.cookie_name
    if name is not None and persistence.type != "APP_COOKIE":
        raise errors.validation(
            'Field "cookie_name" can only be specified with session persistence of type'
            ' "APP_COOKIE".'
        )
    if persistence.type == "APP_COOKIE":
        if not name:
            raise errors.validation(
                'Field "cookie_name" must be specified when using the "APP_COOKIE" session'
                " persistence type."
            )
        if not _COOKIE.match(name):
            raise errors.validation('Supplied "cookie_name" is invalid.')
    return {
        "type": persistence.type,
        "cookie_name": name,
        "persistence_timeout": None,
        "persistence_granularity": None,
    }


def create(session: Session, caller: Caller, body: PoolPOST, now: datetime) -> Pool:
    if body.loadbalancer_id is None and body.listener_id is None:
        raise errors.validation("Must provide at least one of: loadbalancer_id, listener_id")
    listener: Listener | None = None
    if body.listener_id is not None:
        listener = listeners.get(session, caller, str(body.listener_id))
    balancer_id = str(body.loadbalancer_id or (listener and listener.load_balancer_id))
    balancer = common.balancer_for_change(session, caller, balancer_id)
    if listener is not None:
        if listener.load_balancer_id != balancer.id:
            raise errors.not_found("Listener", listener.id)
        if listener.default_pool_id is not None:
            raise errors.OctaviaError(409, "This listener already has a default pool")
        if body.protocol not in listeners.POOL_PROTOCOLS[listener.protocol]:
            raise errors.validation(
                f"The pool protocol '{body.protocol}' is invalid while the listener protocol"
                f" is '{listener.protocol}'."
            )
    quotas.check(session, "pool", balancer.project_id)
    pool = build(session, balancer, body, now)
    if listener is not None:
        listener.default_pool_id = pool.id
        listener.provisioning_status = "PENDING_UPDATE"
    common.changed(session, balancer, pool, "pool", "create", now)
    return pool


def build(session: Session, balancer: LoadBalancer, body: PoolFields, now: datetime) -> Pool:
    """A new pool of `balancer`, checked, PENDING_CREATE (its change not
    recorded: the caller does)."""
    count = session.scalar(
        select(func.count()).select_from(Pool).where(Pool.load_balancer_id == balancer.id)
    )
    if (count or 0) >= listeners.MAX_PER_BALANCER:
        raise errors.validation(
            f"A load balancer has at most {listeners.MAX_PER_BALANCER} pools here."
        )
    if body.protocol not in SERVED:
        raise errors.OctaviaError(
            400, f"The selected protocol is not allowed in this deployment: {body.protocol}"
        )
    pool = Pool(
        id=str(uuid.uuid4()),
        project_id=balancer.project_id,
        load_balancer_id=balancer.id,
        name=body.name or "",
        description=body.description or "",
        admin_state_up=body.admin_state_up is not False,
        provisioning_status="PENDING_CREATE",
        operating_status="OFFLINE",
        protocol=body.protocol,
        lb_algorithm=_algorithm(body.lb_algorithm),
        session_persistence=_persistence(body.session_persistence),
        created_at=now,
        updated_at=now,
        revision_number=1,
        tags=sorted(set(body.tags or [])),
    )
    session.add(pool)
    session.flush()
    return pool


def update(session: Session, caller: Caller, pool: Pool, body: PoolPUT, now: datetime) -> Pool:
    balancer = common.balancer_for_change(session, caller, pool.load_balancer_id)
    values = body.model_dump(exclude_unset=True)
    if values.get("lb_algorithm") is not None:
        pool.lb_algorithm = _algorithm(values["lb_algorithm"])
    if "session_persistence" in values:
        pool.session_persistence = _persistence(body.session_persistence)
    common.set_common(pool, values)
    common.changed(session, balancer, pool, "pool", "update", now)
    return pool


def delete(session: Session, caller: Caller, pool: Pool, now: datetime) -> None:
    """Gone with its members and monitor; listeners that had it as their
    default have none (the database's SET NULL). Not while an L7 policy
    redirects to it (Octavia's 409, checked before the load balancer's state)."""
    policy = session.scalar(
        select(L7Policy.id).where(L7Policy.redirect_pool_id == pool.id).limit(1)
    )
    if policy is not None:
        raise errors.OctaviaError(409, f"Pool {pool.id} is in use by L7 policy {policy}")
    balancer = common.balancer_for_change(session, caller, pool.load_balancer_id)
    common.removed(session, balancer, pool, "pool", now)
    appliance_ports.sync_members(session, caller, balancer, now)
