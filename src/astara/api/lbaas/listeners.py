"""Octavia listeners: `/v2/lbaas/listeners` (fact sheet §6.6).

HTTP, TCP and HTTPS (passed through to the members, TLS untouched). What
the appliance cannot serve here is refused as a deployment that disabled it
would: TERMINATED_HTTPS (no secret store yet), UDP and SCTP (Octavia serves
them with LVS; these kernels have no IPVS), PROMETHEUS.

"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from astara.api.auth import Caller
from astara.api.lbaas import common, errors, quotas, vip_group
from astara.api.lbaas.bodies import Body
from astara.appliance.schema import LB_HEADERS
from astara.db.models import Listener, LoadBalancer, Pool

RESOURCE = "Listener"
PROTOCOLS = ("TCP", "HTTP", "HTTPS", "TERMINATED_HTTPS", "UDP", "SCTP", "PROMETHEUS")
SERVED = ("TCP", "HTTP", "HTTPS")
# Octavia's L4_PROTOCOL_MAP: a port is taken per family.
FAMILY = {"UDP": "udp", "SCTP": "sctp"}
# VALID_LISTENER_POOL_PROTOCOL_MAP
POOL_PROTOCOLS = {
    "TCP": ("HTTP", "HTTPS", "PROXY", "PROXYV2", "TCP"),
    "HTTP": ("HTTP", "PROXY", "PROXYV2"),
    "HTTPS": ("HTTPS", "PROXY", "PROXYV2", "TCP"),
    "TERMINATED_HTTPS": ("HTTP", "PROXY", "PROXYV2"),
    "UDP": ("UDP",),
    "SCTP": ("SCTP",),
    "PROMETHEUS": (),
}
# The headers haproxy inserts here (Octavia's X-Forwarded-IP, X-Client-IP,
# X-Real-IP: not yet, refused as options this deployment lacks).
HTTP_HEADERS = LB_HEADERS
# What one load balancer's appliance carries (`schema.LoadBalancerSection`).
MAX_PER_BALANCER = 64
MAX_TIMEOUT = 24 * 24 * 60 * 60 * 1000
TIMEOUTS = {
    "timeout_client_data": 50000,
    "timeout_member_connect": 5000,
    "timeout_member_data": 50000,
    "timeout_tcp_inspect": 0,
}

Timeout = Field(default=None, ge=0, le=MAX_TIMEOUT)


class ListenerPUT(Body):
    name: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=255)
    admin_state_up: bool | None = None
    connection_limit: int | None = Field(default=None, ge=-1)
    default_pool_id: uuid.UUID | None = None
    insert_headers: dict[str, str] | None = None
    timeout_client_data: int | None = Timeout
    timeout_member_connect: int | None = Timeout
    timeout_member_data: int | None = Timeout
    timeout_tcp_inspect: int | None = Timeout
    allowed_cidrs: list[str] | None = None
    tags: list[str] | None = None


class ListenerFields(ListenerPUT):
    """A listener's own attributes (in a fully populated load balancer's
    create, where its load balancer is the one being made)."""

    protocol: Literal[PROTOCOLS]  # type: ignore[valid-type]
    protocol_port: int = Field(ge=1, le=65535)
    project_id: str | None = Field(default=None, max_length=36)
    tenant_id: str | None = Field(default=None, max_length=36)


class ListenerPOST(ListenerFields):
    loadbalancer_id: uuid.UUID


def view(listener: Listener, l7policies: list[str] | None = None) -> dict[str, Any]:
    return {
        **common.object_view(listener),
        "protocol": listener.protocol,
        "protocol_port": listener.protocol_port,
        "connection_limit": listener.connection_limit,
        "default_pool_id": listener.default_pool_id,
        "default_tls_container_ref": None,
        "sni_container_refs": [],
        "insert_headers": dict(listener.insert_headers or {}),
        "loadbalancers": [{"id": listener.load_balancer_id}],
        "l7policies": [{"id": i} for i in l7policies or []],
        **{name: getattr(listener, name) for name in TIMEOUTS},
        "allowed_cidrs": listener.allowed_cidrs,
        "client_ca_tls_container_ref": None,
        "client_authentication": "NONE",
        "client_crl_container_ref": None,
        "tls_ciphers": None,
        "tls_versions": None,
        "alpn_protocols": None,
        "hsts_max_age": None,
        "hsts_include_subdomains": False,
        "hsts_preload": False,
    }


def get(session: Session, caller: Caller, listener_id: str) -> Listener:
    return common.get(session, caller, Listener, listener_id, RESOURCE)


def _served(protocol: str) -> None:
    if protocol not in SERVED:
        raise errors.OctaviaError(
            400, f"The selected protocol is not allowed in this deployment: {protocol}"
        )


def _insert_headers(protocol: str, headers: dict[str, str]) -> dict[str, str]:
    if not headers:
        return {}
    if protocol != "HTTP":
        raise errors.OctaviaError(
            400, f"insert-headers is not a valid option for a {protocol} protocol listener."
        )
    unknown = [key for key in headers if key not in HTTP_HEADERS]
    if unknown:
        raise errors.invalid_option(unknown, "insert_headers")
    return dict(headers)


def _allowed_cidrs(balancer: LoadBalancer, cidrs: list[str] | None) -> list[str] | None:
    """Each of the VIP's IP version; as networks (host bits cleared), each
    once: Octavia's normal form."""
    if not cidrs:
        return None
    vip = ipaddress.ip_address(balancer.vip_address)
    found: dict[str, None] = {}
    for text in cidrs:
        try:
            cidr = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise errors.OctaviaError(
                400,
                f"Invalid input for field/attribute allowed_cidrs. Value: '{text}'."
                " Value should be IPv4 or IPv6 CIDR format",
            ) from None
        if cidr.version != vip.version:
            raise errors.validation(
                f"CIDR {text} IP version incompatible with all VIPs"
                f" {[balancer.vip_address]} IP version."
            )
        found[str(cidr)] = None
    return list(found)


def _default_pool(
    session: Session, balancer: LoadBalancer, protocol: str, pool_id: uuid.UUID | None
) -> str | None:
    if pool_id is None:
        return None
    pool = session.get(Pool, str(pool_id))
    if pool is None or pool.load_balancer_id != balancer.id:
        raise errors.not_found("Pool", str(pool_id))
    if pool.protocol not in POOL_PROTOCOLS[protocol]:
        raise errors.validation(
            f"The pool protocol '{pool.protocol}' is invalid while the listener protocol"
            f" is '{protocol}'."
        )
    return pool.id


def create(session: Session, caller: Caller, body: ListenerPOST, now: datetime) -> Listener:
    _served(body.protocol)  # Octavia's order: a protocol refused before a pending state
    balancer = common.balancer_for_change(session, caller, str(body.loadbalancer_id))
    quotas.check(session, "listener", balancer.project_id)
    listener = build(session, balancer, body, now)
    common.changed(session, balancer, listener, "listener", "create", now)
    vip_group.sync(session, balancer, now)
    return listener


def build(
    session: Session, balancer: LoadBalancer, body: ListenerFields, now: datetime
) -> Listener:
    """A new listener of `balancer`, checked, PENDING_CREATE (its change not
    recorded: the caller does)."""
    _served(body.protocol)
    family = FAMILY.get(body.protocol, "tcp")
    count = session.scalar(
        select(func.count()).select_from(Listener).where(Listener.load_balancer_id == balancer.id)
    )
    if (count or 0) >= MAX_PER_BALANCER:
        raise errors.validation(f"A load balancer has at most {MAX_PER_BALANCER} listeners here.")
    taken = session.scalar(
        select(Listener.protocol).where(
            Listener.load_balancer_id == balancer.id,
            Listener.port_family == family,
            Listener.protocol_port == body.protocol_port,
        )
    )
    if taken is not None:
        raise errors.OctaviaError(
            409,
            "Another Listener on this Load Balancer is already using protocol"
            f" {taken} and protocol_port {body.protocol_port}",
        )
    listener = Listener(
        id=str(uuid.uuid4()),
        project_id=balancer.project_id,
        load_balancer_id=balancer.id,
        name=body.name or "",
        description=body.description or "",
        admin_state_up=body.admin_state_up is not False,
        provisioning_status="PENDING_CREATE",
        operating_status="OFFLINE",
        protocol=body.protocol,
        protocol_port=body.protocol_port,
        port_family=family,
        connection_limit=-1 if body.connection_limit is None else body.connection_limit,
        default_pool_id=_default_pool(session, balancer, body.protocol, body.default_pool_id),
        insert_headers=_insert_headers(body.protocol, body.insert_headers or {}),
        allowed_cidrs=_allowed_cidrs(balancer, body.allowed_cidrs),
        created_at=now,
        updated_at=now,
        revision_number=1,
        tags=sorted(set(body.tags or [])),
        **{
            name: default if getattr(body, name) is None else getattr(body, name)
            for name, default in TIMEOUTS.items()
        },
    )
    session.add(listener)
    session.flush()
    return listener


def update(
    session: Session, caller: Caller, listener: Listener, body: ListenerPUT, now: datetime
) -> Listener:
    balancer = common.balancer_for_change(session, caller, listener.load_balancer_id)
    values = body.model_dump(exclude_unset=True)
    if "default_pool_id" in values:
        listener.default_pool_id = _default_pool(
            session, balancer, listener.protocol, body.default_pool_id
        )
    if "insert_headers" in values:
        listener.insert_headers = _insert_headers(listener.protocol, body.insert_headers or {})
    if "allowed_cidrs" in values:
        listener.allowed_cidrs = _allowed_cidrs(balancer, body.allowed_cidrs)
    if "connection_limit" in values:
        listener.connection_limit = -1 if body.connection_limit is None else body.connection_limit
    for name, default in TIMEOUTS.items():
        if name in values:
            setattr(listener, name, default if values[name] is None else values[name])
    common.set_common(listener, values)
    common.changed(session, balancer, listener, "listener", "update", now)
    vip_group.sync(session, balancer, now)
    return listener


def delete(session: Session, caller: Caller, listener: Listener, now: datetime) -> None:
    """Gone (its default pool stays); the appliance stops serving it."""
    balancer = common.balancer_for_change(session, caller, listener.load_balancer_id)
    common.removed(session, balancer, listener, "listener", now)
    vip_group.sync(session, balancer, now)
