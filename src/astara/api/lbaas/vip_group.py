"""The VIP port's security group, as Octavia's: `lb-<load balancer id>`,
owned by the service (a project of its own, `_octavia`, so the tenant sees
its id on the port and cannot change it, and no project's quota pays for
it), opening each listener's port to its `allowed_cidrs` (anyone of the
VIP's IP version without). It is the only group of a VIP port Astara made;
a VIP port the tenant gave keeps its own groups beside it until the load
balancer lets it go.

The appliance enforces the VIP port's groups on what reaches it
(`drivers.loadbalancer`): what no group allows never reaches haproxy.

The group is stateless (Neutron's `stateful: false`), so the appliance
tracks no connections: connection tracking in its namespace cost a tenth of
its requests per second (docs/performance.md). Replies to what the
appliance sends itself (to members, its health checks) therefore have rules
of their own, as a stateless group needs: TCP to the kernel's ephemeral
ports (32768-60999, where nothing listens) and the ICMP errors path MTU
discovery and failures need.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from astara.api import changes, security_groups
from astara.db.models import (
    Listener,
    LoadBalancer,
    PortSecurityGroup,
    Project,
    Quota,
    SecurityGroup,
)
from astara.drivers import loadbalancer as lb_driver
from astara.model import security_rules

DESCRIPTION = "Astara load balancer: its listeners' ports (managed by the load balancer)"


def name_of(balancer_id: str) -> str:
    return f"lb-{balancer_id}"


# The service's own project: it owns the groups (no tenant may change them).
# Not a name `astara project create` takes, so no tenant can hold it; made
# on first use, with no limit on groups and rules (they come with load
# balancers, which have quotas of their own).
SERVICE_PROJECT = "_octavia"


def _service(session: Session, now: datetime) -> str:
    found = session.scalar(select(Project.id).where(Project.name == SERVICE_PROJECT))
    if found is not None:
        return found
    project = Project(id=uuid.uuid4().hex, name=SERVICE_PROJECT, is_admin=False, created_at=now)
    session.add(project)
    session.flush()  # two first load balancers at once: one wins, the other runs again
    for resource in ("security_group", "security_group_rule"):
        session.add(Quota(project_id=project.id, resource=resource, limit=-1))
    session.flush()
    return project.id


def group_of(session: Session, balancer_id: str) -> SecurityGroup | None:
    return session.scalar(
        select(SecurityGroup)
        .join(Project, Project.id == SecurityGroup.project_id)
        .where(SecurityGroup.name == name_of(balancer_id), Project.name == SERVICE_PROJECT)
    )


def attach(
    session: Session, balancer: LoadBalancer, port_id: str, only: bool, now: datetime
) -> None:
    """Make the load balancer's group and put the VIP port in it: its only
    group when `only` (a port Astara made), else beside the port's own."""
    group = security_groups.new_group(
        _service(session, now), name_of(balancer.id), DESCRIPTION, False, now
    )
    session.add(group)
    session.flush()
    changes.record(session, "security_group", group, "create", now)
    if only:
        session.execute(delete(PortSecurityGroup).where(PortSecurityGroup.port_id == port_id))
    session.add(PortSecurityGroup(port_id=port_id, security_group_id=group.id))
    session.flush()


# Replies to the appliance's own connections, and the ICMP errors it needs:
# (protocol, port_range_min, port_range_max) by ethertype.
EPHEMERAL = (32768, 60999)
REPLIES = {
    "IPv4": (("tcp", *EPHEMERAL), ("icmp", 3, None), ("icmp", 11, None)),
    "IPv6": (("tcp", *EPHEMERAL), ("ipv6-icmp", 1, None), ("ipv6-icmp", 2, None),
             ("ipv6-icmp", 3, None)),
}  # fmt: skip

Wanted = tuple[str, int | None, int | None, str | None]


def sync(session: Session, balancer: LoadBalancer, now: datetime) -> None:
    """The group's ingress rules: one per listener port and allowed CIDR,
    and the replies' (`REPLIES`)."""
    group = group_of(session, balancer.id)
    if group is None:
        return
    ethertype = "IPv6" if ":" in balancer.vip_address else "IPv4"
    wanted: set[Wanted] = {(p, low, high, None) for p, low, high in REPLIES[ethertype]}
    for listener in session.scalars(
        select(Listener).where(
            Listener.load_balancer_id == balancer.id,
            Listener.provisioning_status.not_in(lb_driver.GONE),
        )
    ):
        protocol = "udp" if listener.port_family == "udp" else "tcp"
        cidrs: list[str | None] = list(listener.allowed_cidrs or []) or [None]
        for cidr in cidrs:
            wanted.add((protocol, listener.protocol_port, listener.protocol_port, cidr))
    held = {
        (r.protocol, r.port_range_min, r.port_range_max, r.remote_ip_prefix): r
        for r in group.rules
        if r.direction == "ingress"
    }
    if set(held) == wanted:
        return
    for key, rule in held.items():
        if key not in wanted:
            group.rules.remove(rule)
    for protocol, low, high, cidr in sorted(wanted - set(held), key=str):
        matching = security_rules.rule(
            direction="ingress",
            ethertype=ethertype,
            protocol=protocol,
            port_range_min=low,
            port_range_max=high,
            remote_ip_prefix=cidr,
            remote_group_id=None,
            remote_address_group_id=None,
        )
        group.rules.append(security_groups.new_rule(group, matching, "", now))
    changes.update(session, "security_group", group, {}, now)


def detach(session: Session, balancer_id: str, now: datetime) -> None:
    """The group gone with the load balancer (the port's other groups stay)."""
    group = group_of(session, balancer_id)
    if group is None:
        return
    session.execute(
        delete(PortSecurityGroup).where(PortSecurityGroup.security_group_id == group.id)
    )
    security_groups.remove(session, group, now)
