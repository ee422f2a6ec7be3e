"""The control plane's tables (SQLAlchemy 2), shaped after Neutron's resources.

Uniqueness that must hold under concurrency is a database constraint, not a
check in code: two requests can never both get one IP address on a subnet
(`ip_allocations`), one MAC on a network (`ports`), or one floating address
on an external network (`floating_ips`); the loser gets an IntegrityError
and retries or answers 409.

Every write commits an `OutboxEvent` in the same transaction (see
`astara.db.outbox`): the orchestrator wakes on them; correctness never
depends on one arriving.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names, so that migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

UUID = String(36)
NAME = String(255)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class StandardAttributes:
    """Neutron's standard attributes: project, description, timestamps, revision."""

    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    project_id: Mapped[str] = mapped_column(NAME, index=True)
    description: Mapped[str] = mapped_column(NAME, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    revision_number: Mapped[int] = mapped_column(Integer, default=0)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(NAME, unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Credential(Base):
    """A token of a project, stored as its SHA-256 digest only."""

    __tablename__ = "credentials"

    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Network(StandardAttributes, Base):
    __tablename__ = "networks"

    name: Mapped[str] = mapped_column(NAME, default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    external: Mapped[bool] = mapped_column(Boolean, default=False)
    mtu: Mapped[int] = mapped_column(Integer, default=1500)
    # The default of its ports' own (`Port.port_security_enabled`).
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Neutron's provider extension: how the network reaches every host.
    # "vxlan" (a VNI from the configured range; segmentation_id) or "flat"
    # (untagged on a physnet: physical_network). The constraints keep a VNI
    # and a flat physnet to one network each (NULLs never collide).
    network_type: Mapped[str] = mapped_column(String(16), default="vxlan", server_default="vxlan")
    physical_network: Mapped[str | None] = mapped_column(String(64), nullable=True)
    segmentation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        UniqueConstraint("network_type", "segmentation_id", name="uq_networks_segment"),
        UniqueConstraint("network_type", "physical_network", name="uq_networks_physnet"),
    )

    subnets: Mapped[list[Subnet]] = relationship(
        back_populates="network", order_by="Subnet.created_at"
    )


class Subnet(StandardAttributes, Base):
    __tablename__ = "subnets"

    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    name: Mapped[str] = mapped_column(NAME, default="")
    ip_version: Mapped[int] = mapped_column(Integer)
    cidr: Mapped[str] = mapped_column(String(64))
    gateway_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    enable_dhcp: Mapped[bool] = mapped_column(Boolean, default=True)
    ipv6_ra_mode: Mapped[str | None] = mapped_column(String(32), nullable=True)
    ipv6_address_mode: Mapped[str | None] = mapped_column(String(32), nullable=True)
    allocation_pools: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    dns_nameservers: Mapped[list[str]] = mapped_column(JSON, default=list)
    host_routes: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)

    network: Mapped[Network] = relationship(back_populates="subnets")


class Port(StandardAttributes, Base):
    __tablename__ = "ports"
    __table_args__ = (
        UniqueConstraint("network_id", "mac_address"),
        # A network's ports of one kind: its DHCP port, its router interfaces
        # (which subnets a router serves), its gateways.
        Index("ix_ports_network_id_device_owner", "network_id", "device_owner"),
    )

    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    name: Mapped[str] = mapped_column(NAME, default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="DOWN")
    mac_address: Mapped[str] = mapped_column(String(17))
    device_id: Mapped[str] = mapped_column(NAME, default="", index=True)
    device_owner: Mapped[str] = mapped_column(NAME, default="")
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, default=True)

    fixed_ips: Mapped[list[IpAllocation]] = relationship(
        back_populates="port", cascade="all, delete-orphan", order_by="IpAllocation.position"
    )


class IpAllocation(Base):
    """One fixed IP of a port. The unique (subnet, address) pair is what makes
    concurrent allocation safe."""

    __tablename__ = "ip_allocations"
    __table_args__ = (UniqueConstraint("subnet_id", "ip_address"),)

    port_id: Mapped[str] = mapped_column(
        ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True
    )
    ip_address: Mapped[str] = mapped_column(String(64), primary_key=True)
    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id"), index=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)

    port: Mapped[Port] = relationship(back_populates="fixed_ips")


class Router(StandardAttributes, Base):
    __tablename__ = "routers"

    name: Mapped[str] = mapped_column(NAME, default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    gateway_port_id: Mapped[str | None] = mapped_column(
        ForeignKey("ports.id", ondelete="SET NULL"), nullable=True
    )
    enable_snat: Mapped[bool] = mapped_column(Boolean, default=True)
    routes: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    # Neutron's router_availability_zone extension: where its appliance may be placed.
    availability_zone_hints: Mapped[list[str]] = mapped_column(
        JSON, default=list, server_default="[]"
    )

    # Neutron's l3-ha: two appliances on two hosts, one active (see `HA_MEMBERS`).
    ha: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")

    # Read by lists only (loaded with the router): the gateway is set through `gateway_port_id`.
    gateway_port: Mapped[Port | None] = relationship(viewonly=True)


# --- security groups -------------------------------------------------------------------


class SecurityGroup(StandardAttributes, Base):
    """A project's set of allow rules for the ports bound to it (§3.6)."""

    __tablename__ = "security_groups"

    name: Mapped[str] = mapped_column(NAME, default="")
    stateful: Mapped[bool] = mapped_column(Boolean, default=True)

    rules: Mapped[list[SecurityGroupRule]] = relationship(
        back_populates="security_group",
        foreign_keys="SecurityGroupRule.security_group_id",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="(SecurityGroupRule.created_at, SecurityGroupRule.id)",
    )


class DefaultSecurityGroup(Base):
    """Which group is a project's `default`: the primary key makes its lazy
    creation safe when two first requests of a project race (one inserts,
    the other runs again and finds it)."""

    __tablename__ = "default_security_groups"

    project_id: Mapped[str] = mapped_column(NAME, primary_key=True)
    security_group_id: Mapped[str] = mapped_column(
        ForeignKey("security_groups.id", ondelete="CASCADE"), unique=True
    )


class SecurityGroupRule(StandardAttributes, Base):
    """One allow rule (§3.7). A rule whose remote group is deleted goes with
    it (Neutron's cascade); an address group a rule refers to is in use."""

    __tablename__ = "security_group_rules"

    security_group_id: Mapped[str] = mapped_column(
        ForeignKey("security_groups.id", ondelete="CASCADE"), index=True
    )
    direction: Mapped[str] = mapped_column(String(8))
    ethertype: Mapped[str] = mapped_column(String(8))
    protocol: Mapped[str | None] = mapped_column(String(40), nullable=True)
    port_range_min: Mapped[int | None] = mapped_column(Integer, nullable=True)
    port_range_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    remote_ip_prefix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    remote_group_id: Mapped[str | None] = mapped_column(
        ForeignKey("security_groups.id", ondelete="CASCADE"), nullable=True, index=True
    )
    remote_address_group_id: Mapped[str | None] = mapped_column(
        ForeignKey("address_groups.id"), nullable=True, index=True
    )

    security_group: Mapped[SecurityGroup] = relationship(
        back_populates="rules", foreign_keys=[security_group_id]
    )


class PortSecurityGroup(Base):
    """A port bound to a group: a group with ports is in use (no cascade)."""

    __tablename__ = "port_security_groups"

    port_id: Mapped[str] = mapped_column(
        ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True
    )
    security_group_id: Mapped[str] = mapped_column(
        ForeignKey("security_groups.id"), primary_key=True, index=True
    )


class AllowedAddressPair(Base):
    """An address (or CIDR) and MAC a port may also send from (§3.3)."""

    __tablename__ = "allowed_address_pairs"

    port_id: Mapped[str] = mapped_column(
        ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True
    )
    ip_address: Mapped[str] = mapped_column(String(64), primary_key=True)
    mac_address: Mapped[str] = mapped_column(String(17), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class AddressGroup(StandardAttributes, Base):
    """A named set of CIDRs that rules refer to (`remote_address_group_id`)."""

    __tablename__ = "address_groups"

    name: Mapped[str] = mapped_column(NAME, default="")

    addresses: Mapped[list[AddressGroupAddress]] = relationship(
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="AddressGroupAddress.address",
    )


class AddressGroupAddress(Base):
    __tablename__ = "address_group_addresses"

    address_group_id: Mapped[str] = mapped_column(
        ForeignKey("address_groups.id", ondelete="CASCADE"), primary_key=True
    )
    address: Mapped[str] = mapped_column(String(64), primary_key=True)


class FirewallRule(StandardAttributes, Base):
    """One FWaaS v2 rule: a match and an action. A rule in a policy is in use."""

    __tablename__ = "firewall_rules"

    name: Mapped[str] = mapped_column(NAME, default="")
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    protocol: Mapped[str | None] = mapped_column(String(16), nullable=True)
    ip_version: Mapped[int] = mapped_column(Integer, default=4)
    source_ip_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    destination_ip_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source_port_min: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source_port_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    destination_port_min: Mapped[int | None] = mapped_column(Integer, nullable=True)
    destination_port_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(8), default="deny")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class FirewallPolicy(StandardAttributes, Base):
    """An ordered list of rules; a policy a group uses is in use."""

    __tablename__ = "firewall_policies"

    name: Mapped[str] = mapped_column(NAME, default="")
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    audited: Mapped[bool] = mapped_column(Boolean, default=False)

    entries: Mapped[list[FirewallPolicyRule]] = relationship(
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="FirewallPolicyRule.position",
    )


class FirewallPolicyRule(Base):
    """A rule's place in a policy (1 is first)."""

    __tablename__ = "firewall_policy_rules"

    firewall_policy_id: Mapped[str] = mapped_column(
        ForeignKey("firewall_policies.id", ondelete="CASCADE"), primary_key=True
    )
    firewall_rule_id: Mapped[str] = mapped_column(
        ForeignKey("firewall_rules.id"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer)


class FirewallGroup(StandardAttributes, Base):
    """Policies for traffic into (`ingress`) and out of (`egress`) the
    networks behind some router interfaces. `status` holds the kind of the
    last change (PENDING_CREATE or PENDING_UPDATE); what the API shows is
    derived from the routers that carry its ports (`api.firewall_groups`)."""

    __tablename__ = "firewall_groups"

    name: Mapped[str] = mapped_column(NAME, default="")
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="PENDING_CREATE")
    ingress_firewall_policy_id: Mapped[str | None] = mapped_column(
        ForeignKey("firewall_policies.id"), nullable=True, index=True
    )
    egress_firewall_policy_id: Mapped[str | None] = mapped_column(
        ForeignKey("firewall_policies.id"), nullable=True, index=True
    )

    ports: Mapped[list[FirewallGroupPort]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="FirewallGroupPort.port_id"
    )


class FirewallGroupPort(Base):
    """A router interface a group applies to: one group per port; a port
    that goes (its interface removed) leaves its group."""

    __tablename__ = "firewall_group_ports"

    port_id: Mapped[str] = mapped_column(
        ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True
    )
    firewall_group_id: Mapped[str] = mapped_column(
        ForeignKey("firewall_groups.id", ondelete="CASCADE"), index=True
    )


class DefaultFirewallGroup(Base):
    """Which group is a project's `default` (the key makes its lazy creation
    race-safe, as `DefaultSecurityGroup`)."""

    __tablename__ = "default_firewall_groups"

    project_id: Mapped[str] = mapped_column(NAME, primary_key=True)
    firewall_group_id: Mapped[str] = mapped_column(
        ForeignKey("firewall_groups.id", ondelete="CASCADE"), unique=True
    )


class LoadBalancerObject(StandardAttributes):
    """What every Octavia object has beyond Neutron's standard attributes:
    a name, an admin state and the two statuses (provisioning: where the
    appliance stands with it; operating: what haproxy's checks say)."""

    name: Mapped[str] = mapped_column(NAME, default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    provisioning_status: Mapped[str] = mapped_column(String(16), default="PENDING_CREATE")
    operating_status: Mapped[str] = mapped_column(String(16), default="OFFLINE")


class LoadBalancer(LoadBalancerObject, Base):
    """An Octavia load balancer: its VIP port on a tenant subnet, served by
    an appliance of its own (`lb-<id>`)."""

    __tablename__ = "load_balancers"

    vip_port_id: Mapped[str | None] = mapped_column(
        ForeignKey("ports.id", ondelete="SET NULL"), nullable=True, unique=True
    )
    vip_subnet_id: Mapped[str] = mapped_column(UUID)
    vip_network_id: Mapped[str] = mapped_column(UUID)
    vip_address: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(64), default="astara")
    # A zone of the hosts (`astara host list`): its appliance is placed there.
    availability_zone: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Its VIP port was made for it (deleted with it), not given by the tenant (released).
    vip_port_made: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class Listener(LoadBalancerObject, Base):
    """A protocol and port the load balancer listens on; `port_family` (tcp,
    udp, sctp) makes a port unique per family, as Octavia's check."""

    __tablename__ = "listeners"
    __table_args__ = (UniqueConstraint("load_balancer_id", "port_family", "protocol_port"),)

    load_balancer_id: Mapped[str] = mapped_column(
        ForeignKey("load_balancers.id", ondelete="CASCADE"), index=True
    )
    protocol: Mapped[str] = mapped_column(String(32))
    protocol_port: Mapped[int] = mapped_column(Integer)
    port_family: Mapped[str] = mapped_column(String(8))
    connection_limit: Mapped[int] = mapped_column(Integer, default=-1)
    default_pool_id: Mapped[str | None] = mapped_column(
        ForeignKey("pools.id", ondelete="SET NULL"), nullable=True, index=True
    )
    insert_headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    timeout_client_data: Mapped[int] = mapped_column(Integer, default=50000)
    timeout_member_connect: Mapped[int] = mapped_column(Integer, default=5000)
    timeout_member_data: Mapped[int] = mapped_column(Integer, default=50000)
    timeout_tcp_inspect: Mapped[int] = mapped_column(Integer, default=0)
    allowed_cidrs: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)


class Pool(LoadBalancerObject, Base):
    """A set of members, balanced by one algorithm, with optional persistence."""

    __tablename__ = "pools"

    load_balancer_id: Mapped[str] = mapped_column(
        ForeignKey("load_balancers.id", ondelete="CASCADE"), index=True
    )
    protocol: Mapped[str] = mapped_column(String(32))
    lb_algorithm: Mapped[str] = mapped_column(String(32))
    session_persistence: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    members: Mapped[list[Member]] = relationship(
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="(Member.created_at, Member.id)",
    )


class Member(LoadBalancerObject, Base):
    """A backend server of a pool: one address and port in it."""

    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("pool_id", "address", "protocol_port"),)

    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(64))
    protocol_port: Mapped[int] = mapped_column(Integer)
    weight: Mapped[int] = mapped_column(Integer, default=1)
    backup: Mapped[bool] = mapped_column(Boolean, default=False)
    subnet_id: Mapped[str | None] = mapped_column(UUID, nullable=True)
    monitor_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    monitor_port: Mapped[int | None] = mapped_column(Integer, nullable=True)


class HealthMonitor(LoadBalancerObject, Base):
    """A pool's health check (one per pool)."""

    __tablename__ = "health_monitors"

    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), unique=True)
    type: Mapped[str] = mapped_column(String(16))
    delay: Mapped[int] = mapped_column(Integer)
    timeout: Mapped[int] = mapped_column(Integer)
    max_retries: Mapped[int] = mapped_column(Integer)
    max_retries_down: Mapped[int] = mapped_column(Integer, default=3)
    http_method: Mapped[str | None] = mapped_column(String(16), nullable=True)
    url_path: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    expected_codes: Mapped[str | None] = mapped_column(String(64), nullable=True)
    http_version: Mapped[str | None] = mapped_column(String(8), nullable=True)
    domain_name: Mapped[str | None] = mapped_column(String(255), nullable=True)


class L7Policy(LoadBalancerObject, Base):
    """A listener's request policy: when all its rules match, it rejects,
    redirects (to a URL, a prefix, or a pool of the same load balancer).
    Policies are tried in `position` order (1 first)."""

    __tablename__ = "l7policies"

    listener_id: Mapped[str] = mapped_column(
        ForeignKey("listeners.id", ondelete="CASCADE"), index=True
    )
    action: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer)
    redirect_pool_id: Mapped[str | None] = mapped_column(
        ForeignKey("pools.id", ondelete="SET NULL"), nullable=True, index=True
    )
    redirect_url: Mapped[str | None] = mapped_column(String(255), nullable=True)
    redirect_prefix: Mapped[str | None] = mapped_column(String(255), nullable=True)
    redirect_http_code: Mapped[int | None] = mapped_column(Integer, nullable=True)


class L7Rule(LoadBalancerObject, Base):
    """One condition of an L7 policy (all of a policy's rules must match)."""

    __tablename__ = "l7rules"

    l7policy_id: Mapped[str] = mapped_column(
        ForeignKey("l7policies.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(36))
    compare_type: Mapped[str] = mapped_column(String(36))
    key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    value: Mapped[str] = mapped_column(String(255))
    invert: Mapped[bool] = mapped_column(Boolean, default=False)


class ListenerStatistics(Base):
    """A listener's counters, as Octavia's `/stats` shows them: haproxy's
    (its frontend's `bin`, `bout`, `scur`, `stot`, `ereq`), accumulated
    here since a reload or restart starts haproxy's own at zero. `seen`:
    the counters as last read, to tell a restart from traffic."""

    __tablename__ = "listener_statistics"

    listener_id: Mapped[str] = mapped_column(
        ForeignKey("listeners.id", ondelete="CASCADE"), primary_key=True
    )
    bytes_in: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0)
    active_connections: Mapped[int] = mapped_column(Integer, default=0)
    total_connections: Mapped[int] = mapped_column(BigInteger, default=0)
    request_errors: Mapped[int] = mapped_column(BigInteger, default=0)
    seen: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


# Device owners of a router's own ports (Neutron's names).
ROUTER_GATEWAY = "network:router_gateway"
ROUTER_INTERFACE = "network:router_interface"
FLOATING_IP = "network:floatingip"
# A network's DHCP port (where no router serves a DHCP subnet): its device_id
# is `dhcp_appliance_id(network_id)`, the id of the appliance that serves it.
DHCP = "network:dhcp"
DHCP_APPLIANCE_PREFIX = "dhcp-"


def dhcp_appliance_id(network_id: str) -> str:
    return DHCP_APPLIANCE_PREFIX + network_id


def dhcp_network_id(appliance_id: str) -> str | None:
    """The network whose DHCP appliance this is, or None for a router's."""
    if appliance_id.startswith(DHCP_APPLIANCE_PREFIX):
        return appliance_id.removeprefix(DHCP_APPLIANCE_PREFIX)
    return None


# An HA router (`Router.ha`) is two appliances, its members `ha0-<router id>`
# and `ha1-<router id>`, on two hosts, joined by the project's HA network
# (`HaNetwork`): each has one port there (`ROUTER_HA_INTERFACE`, a
# `RouterPort` of the router owned by no project); member 0 has the one with
# the lower address. Both carry the router's own ports (the same MACs):
# only the active one's are on the wire.
ROUTER_HA_INTERFACE = "network:router_ha_interface"
HA_MEMBERS = ("ha0-", "ha1-")
HA_NETWORK_NAME = "HA network project %s"  # Neutron's names since 2026.1
HA_SUBNET_NAME = "HA subnet project %s"
HA_PORT_NAME = "HA port project %s"


def ha_member_id(router_id: str, slot: int) -> str:
    return HA_MEMBERS[slot] + router_id


def ha_port_order(port: Port) -> tuple[int, str]:
    """Where an HA port stands among its router's two: member 0's first
    (the lower IPv4 address, numerically; an HA port's addresses never
    change while its router is HA)."""
    addresses = [ipaddress.ip_address(a.ip_address) for a in port.fixed_ips]
    ipv4 = [int(a) for a in addresses if a.version == 4]
    return (min(ipv4) if ipv4 else 2**32, port.id)


def ha_member(appliance_id: str) -> tuple[str, int] | None:
    """(router id, slot) of an HA router's member, or None."""
    for slot, prefix in enumerate(HA_MEMBERS):
        if appliance_id.startswith(prefix):
            return appliance_id.removeprefix(prefix), slot
    return None


class RouterPort(Base):
    """A port attached to a router: its gateway, one of its interfaces, or
    (an HA router's) one of its members' ports on the HA network."""

    __tablename__ = "router_ports"

    router_id: Mapped[str] = mapped_column(
        ForeignKey("routers.id", ondelete="CASCADE"), primary_key=True
    )
    port_id: Mapped[str] = mapped_column(
        ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True, unique=True
    )
    port_type: Mapped[str] = mapped_column(NAME)


class FloatingIp(StandardAttributes, Base):
    __tablename__ = "floating_ips"
    __table_args__ = (
        UniqueConstraint("floating_network_id", "floating_ip_address"),
        # One floating IP per fixed IP and external network.
        UniqueConstraint("fixed_port_id", "fixed_ip_address", "floating_network_id"),
    )

    floating_network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    floating_ip_address: Mapped[str] = mapped_column(String(64))
    floating_port_id: Mapped[str] = mapped_column(ForeignKey("ports.id"), index=True)
    fixed_port_id: Mapped[str | None] = mapped_column(
        ForeignKey("ports.id", ondelete="SET NULL"), nullable=True
    )
    fixed_ip_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    router_id: Mapped[str | None] = mapped_column(
        ForeignKey("routers.id", ondelete="SET NULL"), nullable=True, index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="DOWN")


class Quota(Base):
    """A project's limit for one resource; absent rows mean the default."""

    __tablename__ = "quotas"

    project_id: Mapped[str] = mapped_column(NAME, primary_key=True)
    resource: Mapped[str] = mapped_column(String(64), primary_key=True)
    limit: Mapped[int] = mapped_column(Integer)


class QuotaLock(Base):
    """One row per project that has created something: creates lock it before
    counting, so that concurrent creates are checked against the limit one at a
    time (a row lock on PostgreSQL, the write lock on SQLite)."""

    __tablename__ = "quota_locks"

    project_id: Mapped[str] = mapped_column(NAME, primary_key=True)
    creates: Mapped[int] = mapped_column(Integer, default=0)


class OutboxEvent(Base):
    """A committed change, in commit order: what the orchestrator wakes on."""

    __tablename__ = "outbox_events"

    sequence: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(UUID)
    project_id: Mapped[str] = mapped_column(NAME)
    action: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# --- the orchestrator's own state --------------------------------------------------------


APPLIANCE_ID = String(64)  # a router's id, or `dhcp-<network id>` (naming.ID_PATTERN)


class ApplianceState(Base):
    """An appliance's lifecycle record (see `astara.orchestrator.lifecycle`):
    a router's, or a network's DHCP appliance's. No foreign key: it outlives
    the router (or the network's DHCP port) until the appliance is gone."""

    __tablename__ = "appliance_states"

    appliance_id: Mapped[str] = mapped_column(APPLIANCE_ID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="router")  # "router" or "dhcp"
    project_id: Mapped[str] = mapped_column(NAME, index=True)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    retry_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    applied_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    removing: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    # Written by operators (the admin API), only read by the orchestrator.
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    rebuild_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Where the appliance runs (a host's name; None: not placed), and its
    # fencing token: it grows whenever the appliance is placed or taken over,
    # every push carries it, and an agent refuses one older than it has seen.
    host: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # An operator's `router move --host`: acted on (and cleared) by the orchestrator.
    move_to: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # An HA router's member: its role as its host last reported it
    # ("active", "standby", "fault"); None for other appliances or unknown.
    ha_state: Mapped[str | None] = mapped_column(String(16), nullable=True)


class HaNetwork(Base):
    """A project's HA network (Neutron's `ha_router_networks`): made with its
    first HA router, owned by no project (hidden from tenants, outside their
    quotas), removed with its last."""

    __tablename__ = "ha_networks"

    project_id: Mapped[str] = mapped_column(NAME, primary_key=True)
    network_id: Mapped[str] = mapped_column(
        ForeignKey("networks.id", ondelete="CASCADE"), unique=True
    )


class ApplianceEvent(Base):
    """An appliance's history: every transition and why, for `astara router
    show` and `astara appliance show`."""

    __tablename__ = "appliance_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    appliance_id: Mapped[str] = mapped_column(APPLIANCE_ID, index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    message: Mapped[str] = mapped_column(Text)


class PortBinding(Base):
    """A port plugged into a workload namespace (`astara port plug`)."""

    __tablename__ = "port_bindings"

    port_id: Mapped[str] = mapped_column(
        ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True
    )
    netns: Mapped[str] = mapped_column(String(64))
    ifname: Mapped[str] = mapped_column(String(15))
    dhcp: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    # The host it is plugged on (Neutron's binding:host_id); None: the local host.
    host: Mapped[str | None] = mapped_column(String(64), nullable=True)


class PausedProject(Base):
    """A project an operator is debugging: its routers are left alone."""

    __tablename__ = "paused_projects"

    project_id: Mapped[str] = mapped_column(NAME, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime)


# --- hosts and their trust ----------------------------------------------------------------


class Host(Base):
    """A host running an astara-agent: joined with a token (a remote one,
    `address` https://ADDR:PORT, speaking mutual TLS) or the local agent of
    `astara serve` (`address` unix:PATH)."""

    __tablename__ = "hosts"

    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    address: Mapped[str] = mapped_column(String(255))
    underlay_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Neutron's bridge mappings: physnet name -> the host's interface.
    physnets: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    availability_zone: Mapped[str] = mapped_column(String(255), default="nova")
    drained: Mapped[bool] = mapped_column(Boolean, default=False)
    # As the heartbeats last found it (see `astara.orchestrator.hosts`).
    alive: Mapped[bool] = mapped_column(Boolean, default=True)
    last_heartbeat: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # What the agent reported last (version, capacity).
    reported: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Its current certificate (hex serial); None for the local host.
    cert_serial: Mapped[str | None] = mapped_column(String(40), nullable=True)
    cert_not_after: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class JoinToken(Base):
    """A one-time, expiring token an agent joins with (only its digest is kept)."""

    __tablename__ = "join_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    used_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class RevokedCertificate(Base):
    """A certificate no longer honoured (its host was removed, or it was
    replaced by a renewal), kept until it would have expired anyway."""

    __tablename__ = "revoked_certificates"

    serial: Mapped[str] = mapped_column(String(40), primary_key=True)
    host_name: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime] = mapped_column(DateTime)
    not_after: Mapped[datetime] = mapped_column(DateTime)
