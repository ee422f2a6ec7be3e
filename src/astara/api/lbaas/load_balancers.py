"""Octavia load balancers: `/v2/lbaas/loadbalancers` (fact sheet §6.5).

A load balancer has a VIP: a Neutron port on a tenant subnet (made here,
`device_owner` `Octavia`, named `octavia-lb-<id>`, or a port the tenant
names), whose address is `vip_address`. It is PENDING_CREATE until its
appliance runs it, and immutable while PENDING_* (Octavia's rule: clients
wait for ACTIVE between changes).

"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime
from typing import Any

from pydantic import Field, IPvAnyAddress
from sqlalchemy import select
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session

from astara.api import changes, ports, zones
from astara.api.auth import Caller
from astara.api.lbaas import appliance_ports, errors, graph, quotas, vip_group
from astara.api.lbaas.bodies import Body
from astara.db import history
from astara.db.models import (
    ApplianceState,
    HealthMonitor,
    L7Policy,
    L7Rule,
    Listener,
    LoadBalancer,
    Network,
    Pool,
    Port,
    Subnet,
)
from astara.drivers import loadbalancer as lb_driver

RESOURCE = "Load Balancer"
PROVIDERS = ("astara",)
PENDING = ("PENDING_CREATE", "PENDING_UPDATE", "PENDING_DELETE")
DELETABLE = ("ACTIVE", "ERROR")


class LoadBalancerPOST(Body):
    name: str = Field(default="", max_length=255)
    description: str = Field(default="", max_length=255)
    admin_state_up: bool = True
    project_id: str | None = Field(default=None, max_length=36)
    tenant_id: str | None = Field(default=None, max_length=36)
    vip_subnet_id: uuid.UUID | None = None
    vip_network_id: uuid.UUID | None = None
    vip_port_id: uuid.UUID | None = None
    vip_address: IPvAnyAddress | None = None
    provider: str | None = Field(default=None, max_length=64)
    availability_zone: str | None = Field(default=None, max_length=255)
    flavor_id: uuid.UUID | None = None
    tags: list[str] = Field(default_factory=list)
    # A fully populated create (Octavia's graph): its listeners and pools.
    listeners: list[graph.ListenerSingle] = Field(default_factory=list)
    pools: list[graph.PoolSingle] = Field(default_factory=list)


class LoadBalancerPUT(Body):
    name: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=255)
    admin_state_up: bool | None = None
    tags: list[str] | None = None


def timestamp(value: datetime | None) -> str | None:
    """Octavia's time format: ISO 8601 without a zone."""
    return value.strftime("%Y-%m-%dT%H:%M:%S") if value is not None else None


def view(balancer: LoadBalancer, listeners: list[str], pools: list[str]) -> dict[str, Any]:
    return {
        "id": balancer.id,
        "name": balancer.name,
        "description": balancer.description,
        "admin_state_up": balancer.admin_state_up,
        "project_id": balancer.project_id,
        "tenant_id": balancer.project_id,
        "provisioning_status": balancer.provisioning_status,
        "operating_status": balancer.operating_status,
        "vip_address": balancer.vip_address,
        "vip_port_id": balancer.vip_port_id,
        "vip_subnet_id": balancer.vip_subnet_id,
        "vip_network_id": balancer.vip_network_id,
        "vip_qos_policy_id": None,
        "vip_sg_ids": [],
        "vip_vnic_type": "normal",
        "additional_vips": [],
        "provider": balancer.provider,
        "flavor_id": None,
        "availability_zone": balancer.availability_zone,
        "listeners": [{"id": i} for i in listeners],
        "pools": [{"id": i} for i in pools],
        "tags": sorted(balancer.tags or []),
        "created_at": timestamp(balancer.created_at),
        "updated_at": timestamp(balancer.updated_at),
    }


def get(session: Session, caller: Caller, balancer_id: str) -> LoadBalancer:
    """A load balancer the caller may see: another project's is 403 (Octavia
    checks its policy after finding the object), a missing one 404."""
    balancer = session.get(LoadBalancer, balancer_id)
    if balancer is None or balancer.provisioning_status == "DELETED":
        raise errors.not_found(RESOURCE, balancer_id)
    if not caller.is_admin and balancer.project_id != caller.project_id:
        raise errors.forbidden()
    return balancer


def _project(caller: Caller, body: LoadBalancerPOST) -> str:
    named = body.project_id or body.tenant_id
    if named is None or named == caller.project_id:
        return caller.project_id
    if not caller.is_admin:
        raise errors.forbidden()
    return named


def _vip(session: Session, caller: Caller, body: LoadBalancerPOST) -> tuple[Subnet, Port | None]:
    """The VIP's subnet, and the tenant's port when it named one."""
    if body.vip_port_id is not None:
        port = session.get(Port, str(body.vip_port_id))
        # The load balancer's project's own port: a network's owner sees
        # others' ports on it, but may not take them.
        if port is None or port.project_id != _project(caller, body):
            raise errors.OctaviaError(400, f"Port {body.vip_port_id} not found.")
        if port.device_id:
            raise errors.validation(f"Port {port.id} is already used by device {port.device_id} ")
        subnet_ids = [a.subnet_id for a in port.fixed_ips]
        if body.vip_address is not None:
            subnet_ids = [
                a.subnet_id for a in port.fixed_ips if a.ip_address == str(body.vip_address)
            ]
            if not subnet_ids:
                raise errors.validation(
                    "Specified VIP address not found on the specified VIP port."
                )
        if not subnet_ids:
            raise errors.validation("No VIP address found on the specified VIP port.")
        return _subnet(session, caller, subnet_ids[0]), port
    if body.vip_subnet_id is not None:
        return _subnet(session, caller, str(body.vip_subnet_id)), None
    if body.vip_network_id is not None:
        network = session.get(Network, str(body.vip_network_id))
        if network is None or not (
            caller.is_admin
            or network.project_id == caller.project_id
            or network.shared
            or network.external
        ):
            raise errors.OctaviaError(400, f"Network {body.vip_network_id} not found.")
        subnets = sorted(
            session.scalars(select(Subnet).where(Subnet.network_id == network.id)),
            key=lambda s: (s.ip_version, s.created_at, s.id),
        )
        if not subnets:
            raise errors.validation("Supplied network does not contain a subnet.")
        if body.vip_address is not None:
            found = [s for s in subnets if body.vip_address in ipaddress.ip_network(s.cidr)]
            if not found:
                raise errors.validation(
                    "Supplied network does not contain a subnet for VIP address specified."
                )
            return found[0], None
        return subnets[0], None
    raise errors.OctaviaError(
        400,
        "Validation failure: VIP must contain one of: vip_port_id, vip_network_id, vip_subnet_id.",
    )


def _subnet(session: Session, caller: Caller, subnet_id: str) -> Subnet:
    subnet = session.get(Subnet, subnet_id)
    network = session.get(Network, subnet.network_id) if subnet is not None else None
    if (
        subnet is None
        or network is None
        or not (
            caller.is_admin
            or network.project_id == caller.project_id
            or network.shared
            or network.external
        )
    ):
        raise errors.OctaviaError(400, f"Subnet {subnet_id} not found.")
    return subnet


def create(session: Session, caller: Caller, body: LoadBalancerPOST, now: datetime) -> LoadBalancer:
    project_id = _project(caller, body)
    provider = body.provider or PROVIDERS[0]
    if provider not in PROVIDERS:
        raise errors.OctaviaError(400, f"Provider '{provider}' is not enabled.")
    if body.flavor_id is not None:
        raise errors.validation("Invalid flavor_id.")  # no flavors here (`/flavors` is empty)
    if body.availability_zone is not None and body.availability_zone not in zones.known(session):
        raise errors.validation("Invalid availability zone.")
    subnet, port = _vip(session, caller, body)
    pools, listeners = graph.check(body.pools, body.listeners)
    quotas.check(session, "load_balancer", project_id)
    balancer_id = str(uuid.uuid4())
    made = port is None
    if port is None:
        address = str(body.vip_address) if body.vip_address is not None else None
        port = appliance_ports.make(session, caller, project_id, balancer_id, subnet, address, now)
    else:
        port.device_owner = lb_driver.OWNER
        port.device_id = lb_driver.appliance_id(balancer_id)
        changes.update(session, "port", port, {}, now)
    vip = next(a.ip_address for a in port.fixed_ips if a.subnet_id == subnet.id)
    balancer = LoadBalancer(
        id=balancer_id,
        project_id=project_id,
        name=body.name,
        description=body.description,
        admin_state_up=body.admin_state_up,
        provisioning_status="PENDING_CREATE",
        operating_status="OFFLINE",
        vip_port_id=port.id,
        vip_subnet_id=subnet.id,
        vip_network_id=subnet.network_id,
        vip_address=vip,
        provider=provider,
        availability_zone=body.availability_zone,
        vip_port_made=made,
        created_at=now,
        updated_at=now,
        revision_number=1,
        tags=sorted(set(body.tags)),
    )
    session.add(balancer)
    session.flush()
    changes.record(session, "loadbalancer", balancer, "create", now)
    if port.port_security_enabled:
        vip_group.attach(session, balancer, port.id, made, now)
    graph.create(session, caller, balancer, pools, listeners, now)
    vip_group.sync(session, balancer, now)
    return balancer


def _locked(session: Session, balancer: LoadBalancer) -> LoadBalancer:
    """The load balancer's row locked, then read again: two changes of it
    (or of it and a child) run one after the other."""
    session.execute(
        sql_update(LoadBalancer)
        .where(LoadBalancer.id == balancer.id)
        .values(revision_number=LoadBalancer.revision_number)
    )
    session.refresh(balancer)
    return balancer


def update(
    session: Session, caller: Caller, balancer: LoadBalancer, body: LoadBalancerPUT, now: datetime
) -> LoadBalancer:
    balancer = _locked(session, balancer)
    if balancer.provisioning_status in PENDING:
        raise errors.pending(balancer.provisioning_status, balancer.id)
    values = body.model_dump(exclude_unset=True)
    if values.get("admin_state_up") is None and "admin_state_up" in values:
        values["admin_state_up"] = False  # Octavia reads null as false
    if "tags" in values:
        values["tags"] = sorted(set(values["tags"] or balancer.tags or []))
    changes.update(session, "loadbalancer", balancer, values, now)
    balancer.provisioning_status = "PENDING_UPDATE"
    return balancer


def delete(
    session: Session, caller: Caller, balancer: LoadBalancer, cascade: bool, now: datetime
) -> None:
    """Gone at once (Octavia's clients wait for a 404), with its children
    when `cascade` (else refused while it has any) and the VIP port it made
    (one the tenant gave is released); the orchestrator removes its appliance."""
    balancer = _locked(session, balancer)
    children = session.scalar(
        select(Listener.id).where(Listener.load_balancer_id == balancer.id).limit(1)
    ) or session.scalar(select(Pool.id).where(Pool.load_balancer_id == balancer.id).limit(1))
    if children is not None and not cascade:
        raise errors.validation(f"Cannot delete Load Balancer {balancer.id} - it has children")
    if balancer.provisioning_status not in DELETABLE:
        raise errors.pending(balancer.provisioning_status, balancer.id)
    port = session.get(Port, balancer.vip_port_id) if balancer.vip_port_id else None
    vip_group.detach(session, balancer.id, now)
    appliance_ports.remove_members(session, balancer, now)
    for model in (Listener, Pool):
        for row in session.scalars(select(model).where(model.load_balancer_id == balancer.id)):
            session.delete(row)
    session.flush()  # its children first: the database's cascade must not beat the session's
    session.delete(balancer)
    session.flush()
    if port is not None and port.device_id == lb_driver.appliance_id(balancer.id):
        if balancer.vip_port_made:
            ports.remove(session, port, now)
        else:
            port.device_owner, port.device_id = "", ""
            changes.update(session, "port", port, {}, now)
    changes.record(session, "loadbalancer", balancer, "delete", now)


def _statuses(row: Any, **extra: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "operating_status": row.operating_status,
        "provisioning_status": row.provisioning_status,
        **extra,
    }


def status_tree(session: Session, balancer: LoadBalancer) -> dict[str, Any]:
    """`GET …/loadbalancers/{id}/status`: each listener with its default
    pool and the pools its enabled L7 policies with rules redirect to, each
    pool's monitor (null without one) and members (Octavia's shape: no
    pools outside listeners)."""
    listeners = session.scalars(
        select(Listener)
        .where(Listener.load_balancer_id == balancer.id)
        .order_by(Listener.created_at, Listener.id)
    ).all()
    shown = []
    for listener in listeners:
        pools = []
        redirects = session.scalars(
            select(L7Policy.redirect_pool_id)
            .where(
                L7Policy.listener_id == listener.id,
                L7Policy.admin_state_up.is_(True),
                L7Policy.redirect_pool_id.is_not(None),
                select(L7Rule.id).where(L7Rule.l7policy_id == L7Policy.id).exists(),
            )
            .order_by(L7Policy.position)
        )
        pool_ids = dict.fromkeys([listener.default_pool_id, *redirects])
        for pool_id in pool_ids:
            pool = session.get(Pool, pool_id) if pool_id is not None else None
            if pool is None:
                continue
            monitor = session.scalar(select(HealthMonitor).where(HealthMonitor.pool_id == pool.id))
            pools.append(
                _statuses(
                    pool,
                    health_monitor=_statuses(monitor, type=monitor.type) if monitor else None,
                    members=[
                        _statuses(m, address=m.address, protocol_port=m.protocol_port)
                        for m in pool.members
                    ],
                )
            )
        shown.append(_statuses(listener, pools=pools))
    return {"statuses": {"loadbalancer": _statuses(balancer, listeners=shown)}}


FAILOVERABLE = ("ACTIVE", "ERROR")


def failover(session: Session, caller: Caller, balancer: LoadBalancer, now: datetime) -> None:
    """`PUT …/failover` (admin only, as Octavia's policy): its appliance is
    rebuilt from scratch, the load balancer PENDING_UPDATE until the new one
    runs; the appliance's history says who asked."""
    if not caller.is_admin:
        raise errors.forbidden()
    balancer = _locked(session, balancer)
    if balancer.provisioning_status not in FAILOVERABLE:
        raise errors.pending(balancer.provisioning_status, balancer.id)
    appliance_id = lb_driver.appliance_id(balancer.id)
    state = session.get(ApplianceState, appliance_id)
    if state is not None:
        state.rebuild_requested = True
    history.record(session, appliance_id, now, "failover asked through the Octavia API")
    balancer.provisioning_status = "PENDING_UPDATE"
    changes.update(session, "loadbalancer", balancer, {}, now)
