"""Octavia health monitors: `/v2/lbaas/healthmonitors` (fact sheet §6.9,
research §5.6): one per pool; HTTP, HTTPS, TCP and TLS-HELLO run as
haproxy's checks. PING is refused as a deployment that disabled it would
(haproxy pings only through an external command); UDP-CONNECT and SCTP
belong to pools this appliance does not serve.

"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.api.auth import Caller
from astara.api.lbaas import common, errors, pools, quotas
from astara.api.lbaas.bodies import Body
from astara.appliance.schema import DOMAIN_NAME, MAX_CHECK_S, URL_PATH, expected_codes_problem
from astara.db.models import HealthMonitor, Pool

RESOURCE = "Health Monitor"
TYPES = ("HTTP", "HTTPS", "PING", "TCP", "TLS-HELLO", "UDP-CONNECT", "SCTP")
SERVED = ("HTTP", "HTTPS", "TCP", "TLS-HELLO")
HTTP_TYPES = ("HTTP", "HTTPS")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT", "PATCH")
HTTP_DEFAULTS = {"http_method": "GET", "url_path": "/", "expected_codes": "200"}
EXPECTED_CODES = r"^(\d{3}(\s*,\s*\d{3})*)$|^(\d{3}-\d{3})$"


class HealthMonitorPUT(Body):
    name: str | None = Field(default=None, max_length=255)
    admin_state_up: bool | None = None
    # haproxy's bound (Octavia has none, and its amphora's haproxy refuses more)
    delay: int | None = Field(default=None, ge=0, le=MAX_CHECK_S)
    timeout: int | None = Field(default=None, ge=0, le=MAX_CHECK_S)
    max_retries: int | None = Field(default=None, ge=1, le=10)
    max_retries_down: int | None = Field(default=None, ge=1, le=10)
    http_method: Literal[METHODS] | None = None  # type: ignore[valid-type]
    url_path: str | None = Field(default=None, pattern=URL_PATH, max_length=2048)
    expected_codes: str | None = Field(default=None, pattern=EXPECTED_CODES)
    http_version: float | None = None  # 1.0 or 1.1 (`_http_fields`)
    domain_name: str | None = Field(default=None, pattern=DOMAIN_NAME, max_length=255)
    tags: list[str] | None = None


class HealthMonitorFields(HealthMonitorPUT):
    """A monitor's own attributes (in a fully populated load balancer's
    create, where its pool is one being made)."""

    type: Literal[TYPES]  # type: ignore[valid-type]
    delay: int = Field(ge=0, le=MAX_CHECK_S)
    timeout: int = Field(ge=0, le=MAX_CHECK_S)
    max_retries: int = Field(ge=1, le=10)
    project_id: str | None = Field(default=None, max_length=36)
    tenant_id: str | None = Field(default=None, max_length=36)


class HealthMonitorPOST(HealthMonitorFields):
    pool_id: uuid.UUID


def view(monitor: HealthMonitor) -> dict[str, Any]:
    shown = common.object_view(monitor)
    del shown["description"]
    return {
        **shown,
        "type": monitor.type,
        "delay": monitor.delay,
        "timeout": monitor.timeout,
        "max_retries": monitor.max_retries,
        "max_retries_down": monitor.max_retries_down,
        "http_method": monitor.http_method,
        "url_path": monitor.url_path,
        "expected_codes": monitor.expected_codes,
        "http_version": float(monitor.http_version) if monitor.http_version else None,
        "domain_name": monitor.domain_name,
        "pools": [{"id": monitor.pool_id}],
    }


def get(session: Session, caller: Caller, monitor_id: str) -> HealthMonitor:
    return common.get(session, caller, HealthMonitor, monitor_id, RESOURCE)


def _http_fields(
    kind: str, values: dict[str, Any], current: HealthMonitor | None
) -> dict[str, Any]:
    """The HTTP fields: defaults for HTTP(S) (a null resets one), refused on other types."""
    found: dict[str, Any] = {}
    for name, default in HTTP_DEFAULTS.items():
        if kind not in HTTP_TYPES:
            if values.get(name) is not None:
                raise errors.invalid_option(name, f"health monitors of type {kind}")
            found[name] = None
        elif name in values:
            found[name] = default if values[name] is None else values[name]
            problem = expected_codes_problem(found[name]) if name == "expected_codes" else None
            if problem is not None:
                raise errors.OctaviaError(
                    400,
                    f"Invalid input for field/attribute expected_codes."
                    f" Value: '{found[name]}'. {problem}",
                )
        elif current is None:
            found[name] = default
    version = values.get("http_version", current.http_version if current else None)
    if version is not None and float(version) not in (1.0, 1.1):
        raise errors.OctaviaError(
            400,
            f"Invalid input for field/attribute http_version. Value: '{version}'."
            " Value should be one of: 1.0, 1.1",
        )
    domain = values.get("domain_name", current.domain_name if current else None)
    if domain is not None:
        if version is None:
            raise errors.validation(
                "'http_version' must be specified when 'domain_name' is provided."
            )
        if float(version) == 1.0:
            raise errors.invalid_option(
                "http_version 1.0", "health monitors HTTP 1.1 domain name health check"
            )
    if "http_version" in values:
        found["http_version"] = None if version is None else str(version)
    if "domain_name" in values:
        found["domain_name"] = domain
    return found


def create(
    session: Session, caller: Caller, body: HealthMonitorPOST, now: datetime
) -> HealthMonitor:
    pool = pools.get(session, caller, str(body.pool_id))
    balancer = common.balancer_for_change(session, caller, pool.load_balancer_id)
    if session.scalar(select(HealthMonitor.id).where(HealthMonitor.pool_id == pool.id)):
        raise errors.OctaviaError(409, "This pool already has a health monitor")
    quotas.check(session, "health_monitor", balancer.project_id)
    monitor = build(session, pool, body, now)
    pool.provisioning_status = "PENDING_UPDATE"
    common.changed(session, balancer, monitor, "healthmonitor", "create", now)
    return monitor


def build(session: Session, pool: Pool, body: HealthMonitorFields, now: datetime) -> HealthMonitor:
    """A new monitor of `pool`, checked, PENDING_CREATE (its change not
    recorded: the caller does)."""
    if body.type == "PING":
        raise errors.OctaviaError(400, "The selected type is not allowed in this deployment: PING")
    if body.type not in SERVED:
        raise errors.validation(
            f"The {body.type} type is only supported for pools of type UDP/SCTP."
        )
    fields = _http_fields(body.type, body.model_dump(exclude_unset=True), None)
    monitor = HealthMonitor(
        id=str(uuid.uuid4()),
        project_id=pool.project_id,
        pool_id=pool.id,
        name=body.name or "",
        description="",
        admin_state_up=body.admin_state_up is not False,
        provisioning_status="PENDING_CREATE",
        operating_status="OFFLINE",
        type=body.type,
        delay=body.delay,
        timeout=body.timeout,
        max_retries=body.max_retries,
        max_retries_down=3 if body.max_retries_down is None else body.max_retries_down,
        created_at=now,
        updated_at=now,
        revision_number=1,
        tags=sorted(set(body.tags or [])),
        **{k: v for k, v in fields.items()},
    )
    session.add(monitor)
    session.flush()
    return monitor


def update(
    session: Session, caller: Caller, monitor: HealthMonitor, body: HealthMonitorPUT, now: datetime
) -> HealthMonitor:
    pool = session.get(Pool, monitor.pool_id)
    assert pool is not None
    balancer = common.balancer_for_change(session, caller, pool.load_balancer_id)
    values = body.model_dump(exclude_unset=True)
    for name in ("delay", "timeout", "max_retries"):
        if name in values:
            if values[name] is None:
                raise errors.invalid_option(None, name)
            setattr(monitor, name, values[name])
    if "max_retries_down" in values:
        monitor.max_retries_down = (
            3 if values["max_retries_down"] is None else values["max_retries_down"]
        )
    for name, value in _http_fields(monitor.type, values, monitor).items():
        setattr(monitor, name, value)
    common.set_common(monitor, values)
    pool.provisioning_status = "PENDING_UPDATE"
    common.changed(session, balancer, monitor, "healthmonitor", "update", now)
    return monitor


def delete(session: Session, caller: Caller, monitor: HealthMonitor, now: datetime) -> None:
    pool = session.get(Pool, monitor.pool_id)
    assert pool is not None
    balancer = common.balancer_for_change(session, caller, pool.load_balancer_id)
    pool.provisioning_status = "PENDING_UPDATE"
    common.removed(session, balancer, monitor, "healthmonitor", now)
