"""The appliance config contract, version 1 (pure).

The orchestrator sends this declarative document; the agent renders and applies
it. Extra fields are forbidden so that typos are errors, not silent no-ops.
`validate_semantics` checks what a schema cannot: addresses inside their
subnets, no duplicate floating IPs, next hops on a connected network, and so on.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from astara.model import firewall_rules, l7_rules, rules
from astara.naming import ID_PATTERN

SCHEMA_VERSION = 1

_HOSTNAME_PATTERN = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
# dnsmasq reads a dhcp-host field that is a number (with an optional w/d/h/m/s
# unit), "infinite" or "ignore" as a lease time or as "never answer", not a name.
_DNSMASQ_HOST_KEYWORD = re.compile(r"[0-9]+[wdhmsWDHMS]?|infinite|ignore")
# The shortest prefix dnsmasq serves DHCPv6 in.


def _mac(value: str) -> str:
    if "-" in value:  # the contract has one spelling; the tenant API accepts both
        raise ValueError("must be a MAC address like fa:16:3e:00:00:01")
    return rules.mac_address(value)


def _identifier(value: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise ValueError("must be 1-64 characters of letters, digits, '_', '.', '-'")
    return value


def _hostname(value: str) -> str:
    if not _HOSTNAME_PATTERN.fullmatch(value):
        raise ValueError("must be a DNS label: 1-63 letters, digits or '-'")
    if _DNSMASQ_HOST_KEYWORD.fullmatch(value):
        raise ValueError(
            "must not be a number, 'infinite' or 'ignore': dnsmasq reads those as options"
        )
    return value


# What goes into an HTTP header as it is: printable ASCII, no spaces.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]{1,255}")


def header_safe(value: str) -> bool:
    """Whether `value` can travel in an HTTP header as it is."""
    return bool(_HEADER_VALUE.fullmatch(value))


def _header_value(value: str) -> str:
    if not header_safe(value):
        raise ValueError("must be 1-255 printable ASCII characters, without spaces")
    return value


MacAddress = Annotated[str, AfterValidator(_mac)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]
Identifier = Annotated[str, AfterValidator(_identifier)]
Hostname = Annotated[str, AfterValidator(_hostname)]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Role(StrEnum):
    external = "external"
    internal = "internal"
    management = "management"
    ha = "ha"  # an HA router member's link to its peer (see `HaSection`)


class Interface(StrictModel):
    """One interface of the appliance, attached to one network, found by MAC."""

    mac: MacAddress
    network_id: Identifier
    role: Role
    addresses: list[IPInterface] = Field(
        default_factory=list, description="Addresses with prefix length, e.g. 10.0.0.1/24"
    )
    mtu: int | None = Field(
        default=None, ge=1280, le=65535, description="Defaults to the network's MTU"
    )


class Route(StrictModel):
    destination: IPNetwork
    nexthop: IPAddress


class ApplianceRoute(Route):
    """A route of the appliance itself."""

    onlink: bool = Field(
        default=False,
        description="The nexthop is reached directly on the external interface although it is"
        " in none of its subnets (Neutron accepts a subnet gateway outside the subnet)",
    )


class Ipv6RaMode(StrEnum):
    """How hosts on an IPv6 subnet get their addresses (Neutron's names)."""

    slaac = "slaac"  # from the prefix in the router advertisements
    dhcpv6_stateful = "dhcpv6-stateful"  # leased by DHCPv6; RAs set the managed flag
    dhcpv6_stateless = "dhcpv6-stateless"  # SLAAC, and options (DNS) by DHCPv6

    @property
    def dhcpv6(self) -> bool:
        return self is not Ipv6RaMode.slaac

    @property
    def autonomous(self) -> bool:
        """Whether hosts form their own addresses from the prefix (SLAAC)."""
        return self is not Ipv6RaMode.dhcpv6_stateful


class Subnet(StrictModel):
    """A subnet served on one of the appliance's interfaces (DHCP, RA).
    On an IPv6 subnet `enable_dhcp` means DHCPv6, and needs a DHCPv6 mode."""

    cidr: IPNetwork
    interface_mac: MacAddress
    gateway_ip: IPAddress | None = Field(
        default=None, description="Router handed to clients (normally the appliance's address)"
    )
    enable_dhcp: bool = False
    dns_nameservers: list[IPAddress] = Field(default_factory=list)
    host_routes: list[Route] = Field(default_factory=list)
    ipv6_ra_mode: Ipv6RaMode | None = None
    lease_time_s: int = Field(default=86400, ge=120, le=31536000)


class DhcpHost(StrictModel):
    mac: MacAddress
    ip_address: IPAddress
    hostname: Hostname | None = None


class Snat(StrictModel):
    enabled: bool = False
    address: ipaddress.IPv4Address | None = Field(
        default=None, description="Source address; defaults to the external interface's first IPv4"
    )


class FloatingIp(StrictModel):
    floating_ip: ipaddress.IPv4Address
    fixed_ip: ipaddress.IPv4Address


class FirewallAction(StrEnum):
    allow = "allow"
    deny = "deny"
    reject = "reject"


class PortRange(StrictModel):
    min: int = Field(ge=0, le=65535)
    max: int = Field(ge=0, le=65535)

    @model_validator(mode="after")
    def _ordered(self) -> PortRange:
        if self.min > self.max:
            raise ValueError("min is above max")
        return self


class FirewallRule(StrictModel):
    """One rule of a firewall policy (FWaaS v2): the first that matches decides."""

    action: FirewallAction
    ip_version: Literal[4, 6]
    protocol: Literal["tcp", "udp", "icmp", "ipv6-icmp", "sctp", "dccp"] | None = None
    source: IPNetwork | None = None
    destination: IPNetwork | None = None
    source_ports: PortRange | None = None
    destination_ports: PortRange | None = None


class Firewall(StrictModel):
    """A firewall group on some internal interfaces (by MAC). `ingress`:
    the rules for what is forwarded out through them (into their networks),
    `egress` for what comes in through them; a connection no rule allows is
    dropped, so a direction without rules lets nothing new through. Not
    `enabled` (set down): nothing passes at all."""

    id: Identifier
    interfaces: list[MacAddress] = Field(min_length=1)
    enabled: bool = True
    ingress: list[FirewallRule] = Field(default_factory=list, max_length=10_000)
    egress: list[FirewallRule] = Field(default_factory=list, max_length=10_000)


# Where instances find their metadata (Nova's and EC2's address).
METADATA_ADDRESS = ipaddress.IPv4Address("169.254.169.254")


class MetadataHost(StrictModel):
    """A workload the appliance answers metadata requests of: its IPv4
    address on an internal subnet, its instance (its port's `device_id`) and
    project. A request from any other address is answered 404."""

    ip_address: ipaddress.IPv4Address
    instance_id: HeaderValue
    project_id: HeaderValue


# A check's path: RFC 3986 path and query characters, without what haproxy's
# config reads as quoting, comments or variables (`"`, `'`, `#`, `$`, `\`).
URL_PATH = r"^/[A-Za-z0-9\-._~!&()*+,;=:@%/?]*$"
# A cookie name: an RFC 6265 token.
COOKIE_NAME = r"^[!%&*+\-.0-9A-Z^_`a-z|~]{1,255}$"
# A domain name a check sends as its Host: labels of letters, digits and `-`.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DOMAIN_NAME = rf"^(?:{_LABEL}\.)*{_LABEL}\.?$"
# A check's interval and timeout, in seconds: haproxy's timers take at most
# 2^31 - 1 ms and refuse the config past that (Octavia sets no bound).
MAX_CHECK_S = (2**31 - 1) // 1000


def expected_codes_problem(codes: str) -> str | None:
    """Why haproxy would refuse these expected status codes (a range must
    go up: `http-check expect status 500-200` is refused), or None."""
    low, dash, high = codes.partition("-")
    if dash and int(low) > int(high):
        return f"The range {codes} must go from the lower code to the higher one"
    return None


# The headers a listener may insert, as haproxy sets them.
LB_HEADERS = ("X-Forwarded-For", "X-Forwarded-Port", "X-Forwarded-Proto")


class LbMonitor(StrictModel):
    """A pool's health check, as haproxy runs it."""

    type: Literal["HTTP", "HTTPS", "TCP", "TLS-HELLO"]
    delay_s: int = Field(ge=0, le=MAX_CHECK_S)
    timeout_s: int = Field(ge=0, le=MAX_CHECK_S)
    rise: int = Field(ge=1, le=10)
    fall: int = Field(ge=1, le=10)
    http_method: str | None = Field(default=None, pattern=r"^[A-Z]{3,7}$")
    url_path: str | None = Field(default=None, pattern=URL_PATH, max_length=2048)
    expected_codes: str | None = Field(
        default=None, pattern=r"^(\d{3}(\s*,\s*\d{3})*)$|^(\d{3}-\d{3})$"
    )
    http_version: Literal["1.0", "1.1"] | None = None
    domain_name: str | None = Field(default=None, pattern=DOMAIN_NAME, max_length=253)
    enabled: bool = True

    @field_validator("expected_codes")
    @classmethod
    def _codes_haproxy_takes(cls, codes: str | None) -> str | None:
        problem = expected_codes_problem(codes) if codes is not None else None
        if problem is not None:
            raise ValueError(problem)
        return codes


class LbMember(StrictModel):
    id: Identifier
    address: IPAddress
    port: int = Field(ge=1, le=65535)
    weight: int = Field(default=1, ge=0, le=256)
    backup: bool = False
    enabled: bool = True
    monitor_address: IPAddress | None = None
    monitor_port: int | None = Field(default=None, ge=1, le=65535)


class LbPool(StrictModel):
    id: Identifier
    protocol: Literal["HTTP", "HTTPS", "TCP", "PROXY", "PROXYV2"]
    algorithm: Literal["ROUND_ROBIN", "LEAST_CONNECTIONS", "SOURCE_IP"]
    persistence: Literal["SOURCE_IP", "HTTP_COOKIE", "APP_COOKIE"] | None = None
    cookie_name: str | None = Field(default=None, pattern=COOKIE_NAME)
    enabled: bool = True
    members: list[LbMember] = Field(default_factory=list, max_length=10_000)
    monitor: LbMonitor | None = None


LbHeader = Literal[LB_HEADERS]  # type: ignore[valid-type]


def _l7_regex(rule: LbRule) -> LbRule:
    problem = l7_rules.regex_problem(rule.value) if rule.compare_type == "REGEX" else None
    if problem is not None:
        raise ValueError(problem)
    return rule


class LbRule(StrictModel):
    """One condition of an L7 policy; `value` is what haproxy matches, as
    it is (the renderer quotes it)."""

    id: Identifier
    type: Literal[l7_rules.RULE_TYPES]  # type: ignore[valid-type]
    compare_type: Literal[l7_rules.COMPARE_TYPES]  # type: ignore[valid-type]
    key: str | None = Field(default=None, pattern=l7_rules.TOKEN)
    value: str = Field(pattern=l7_rules.VALUE)
    invert: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> LbRule:
        if (self.key is not None) != (self.type in l7_rules.KEYED):
            raise ValueError("a key goes with HEADER and COOKIE rules only, and they need one")
        if self.type == "FILE_TYPE" and self.compare_type not in ("REGEX", "EQUAL_TO"):
            raise ValueError("a FILE_TYPE rule compares with REGEX or EQUAL_TO")
        return _l7_regex(self)


class LbPolicy(StrictModel):
    """An L7 policy of a listener: when all its rules match, its action
    (haproxy runs rejects, then redirects, then pools; each in order)."""

    id: Identifier
    action: Literal[l7_rules.ACTIONS]  # type: ignore[valid-type]
    rules: list[LbRule] = Field(min_length=1, max_length=l7_rules.MAX_RULES)
    redirect_pool: Identifier | None = None
    redirect_url: str | None = Field(default=None, pattern=l7_rules.REDIRECT_URL, max_length=255)
    redirect_prefix: str | None = Field(default=None, pattern=l7_rules.REDIRECT_URL, max_length=255)
    redirect_http_code: Literal[l7_rules.REDIRECT_CODES] | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _consistent(self) -> LbPolicy:
        wanted = {
            "REJECT": (),
            "REDIRECT_TO_URL": ("redirect_url", "redirect_http_code"),
            "REDIRECT_PREFIX": ("redirect_prefix", "redirect_http_code"),
            "REDIRECT_TO_POOL": ("redirect_pool",),
        }[self.action]
        for name in ("redirect_pool", "redirect_url", "redirect_prefix", "redirect_http_code"):
            if (getattr(self, name) is not None) != (name in wanted):
                raise ValueError(f"a {self.action} policy has {' and '.join(wanted) or 'no'}")
        for url in (self.redirect_url, self.redirect_prefix):
            if url is not None and l7_rules.redirect_url_problem(url):
                raise ValueError(f"{url} is no http(s) URL with a host")
        return self


class LbListener(StrictModel):
    id: Identifier
    protocol: Literal["HTTP", "HTTPS", "TCP"]
    port: int = Field(ge=1, le=65535)
    enabled: bool = True
    connection_limit: int = Field(default=-1, ge=-1)
    default_pool: Identifier | None = None
    insert_headers: list[LbHeader] = Field(default_factory=list)
    timeout_client_data_ms: int = Field(default=50000, ge=0)
    timeout_member_connect_ms: int = Field(default=5000, ge=0)
    timeout_member_data_ms: int = Field(default=50000, ge=0)
    timeout_tcp_inspect_ms: int = Field(default=0, ge=0)
    allowed_cidrs: list[IPNetwork] = Field(default_factory=list)
    # Tried in this order (Octavia's positions).
    l7policies: list[LbPolicy] = Field(default_factory=list, max_length=l7_rules.MAX_POLICIES)


# The pool protocols a listener's protocol carries (Octavia's matrix).
LB_POOL_PROTOCOLS = {
    "HTTP": ("HTTP", "PROXY", "PROXYV2"),
    "HTTPS": ("HTTPS", "PROXY", "PROXYV2", "TCP"),
    "TCP": ("HTTP", "HTTPS", "PROXY", "PROXYV2", "TCP"),
}


class VipRule(StrictModel):
    """An ingress rule of the VIP port's security groups, as the fabric
    takes a group's rule (`model.fabric.SecurityRuleSpec`), its remote a
    prefix (a remote group's or address group's members, one rule each)."""

    ethertype: Literal["IPv4", "IPv6"]
    protocol: int | None = Field(default=None, ge=0, le=255)
    port_range_min: int | None = Field(default=None, ge=0, le=65535)
    port_range_max: int | None = Field(default=None, ge=0, le=65535)
    remote_prefix: IPNetwork | None = None

    @model_validator(mode="after")
    def _remote_of_its_family(self) -> VipRule:
        if self.remote_prefix is not None and (self.remote_prefix.version == 4) != (
            self.ethertype == "IPv4"
        ):
            raise ValueError(f"remote_prefix {self.remote_prefix} is not {self.ethertype}")
        return self


class LoadBalancerSection(StrictModel):
    """A load balancer's listeners and pools, served by haproxy on `vip`."""

    vip: IPAddress
    enabled: bool = True
    listeners: list[LbListener] = Field(default_factory=list, max_length=64)
    pools: list[LbPool] = Field(default_factory=list, max_length=64)
    vip_security: list[VipRule] | None = Field(
        default=None,
        max_length=10_000,
        description="What may reach the VIP: its port's security groups' ingress rules, each"
        " remote as a prefix (None: port security off, nothing filtered)",
    )
    vip_stateful: bool = Field(
        default=True,
        description="False: the VIP's groups are stateless (Neutron's `stateful: false`): no"
        " connection is tracked, and replies pass only by rules of their own",
    )


# The address keepalived holds on the HA interface while the member is
# active: VRRPv3 needs a virtual address, and its presence is the role's
# level (what an agent reads after a restart). Never routed anywhere: a /32
# on the HA link, outside the HA network's subnet (checked).
HA_ROLE_ADDRESS = ipaddress.IPv4Interface("169.254.0.1/32")
# VRRP's advertisement interval, unless the deployment says otherwise
# (`astara serve --ha-advert-interval-ms`).
DEFAULT_ADVERT_MS = 100


class HaSection(StrictModel):
    """This appliance is one member of an HA router: it and its peer (on
    another host) carry the same interfaces, MACs and addresses, and only
    the active one's are on the wire. keepalived (VRRPv3, unicast to the
    peer over the `ha` interface) decides which is active; the agent puts
    the other interfaces on the wire or takes them off as it says, and
    conntrackd keeps the peer's connection table in step, so established
    connections (NAT'ed ones included) survive a failover."""

    interface_mac: MacAddress = Field(description="The member's interface of role `ha`")
    peer_address: ipaddress.IPv4Address = Field(description="The peer's address on the HA network")
    peer_mac: MacAddress = Field(description="The peer's MAC on the HA network")
    virtual_router_id: int = Field(ge=1, le=255)
    advert_interval_ms: int = Field(
        default=DEFAULT_ADVERT_MS,
        ge=10,
        le=40950,
        multiple_of=10,
        description="VRRPv3 advertisement interval (10 ms steps); a member takes over"
        " about three intervals after its peer went silent",
    )
    conntrack_sync: bool = Field(
        default=True, description="Keep the peer's connection table in step (conntrackd)"
    )


class ApplianceConfig(StrictModel):
    """An appliance, schema version 1: a router (`kind` "router"), or a
    network's DHCP server (`kind` "dhcp": internal interfaces only, nothing
    routed or translated). `forwarding` false: the appliance forwards
    nothing (its ruleset drops every forwarded packet)."""

    schema_version: Literal[1] = 1
    kind: Literal["router", "dhcp", "loadbalancer"] = "router"
    forwarding: bool = True
    interfaces: list[Interface] = Field(min_length=1, max_length=64)
    subnets: list[Subnet] = Field(default_factory=list)
    dhcp_hosts: list[DhcpHost] = Field(default_factory=list)
    routes: list[ApplianceRoute] = Field(default_factory=list)
    snat: Snat = Field(default_factory=Snat)
    floating_ips: list[FloatingIp] = Field(default_factory=list, max_length=65536)
    firewalls: list[Firewall] = Field(default_factory=list, max_length=64)
    metadata_hosts: list[MetadataHost] = Field(default_factory=list, max_length=65536)
    loadbalancer: LoadBalancerSection | None = None
    ha: HaSection | None = None

    def external_interface(self) -> Interface | None:
        return next((i for i in self.interfaces if i.role is Role.external), None)

    def interface_by_mac(self, mac: str) -> Interface | None:
        return next((i for i in self.interfaces if i.mac == mac), None)

    def ha_interface(self) -> Interface | None:
        return next((i for i in self.interfaces if i.role is Role.ha), None)

    def ha_address(self) -> ipaddress.IPv4Interface | None:
        """The member's own address on the HA network."""
        interface = self.ha_interface()
        if interface is None:
            return None
        return next(
            (a for a in interface.addresses if isinstance(a, ipaddress.IPv4Interface)), None
        )

    def on_the_wire(self) -> list[Interface]:
        """The interfaces only an HA router's active member has on the
        wire (all but its HA link); every interface of anything else."""
        return [i for i in self.interfaces if i.role is not Role.ha]

    def snat_address(self) -> ipaddress.IPv4Address | None:
        """The address internal IPv4 traffic leaves with, or None without SNAT."""
        if not self.snat.enabled:
            return None
        if self.snat.address is not None:
            return self.snat.address
        external = self.external_interface()
        if external is None:
            return None
        return next(
            (a.ip for a in external.addresses if isinstance(a, ipaddress.IPv4Interface)), None
        )


def config_hash(config: ApplianceConfig) -> str:
    """A stable digest of a config's content: equal configs have equal hashes."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


FloatingPair = tuple[str, str]  # (floating IP, fixed IP), each as `str(IPv4Address)` writes it


@dataclass(frozen=True)
class FieldError:
    """A problem with one field, in the shape FastAPI uses for 422 bodies."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"

    def as_dict(self) -> dict[str, Any]:
        return {"loc": ["body", *self.loc], "msg": self.msg, "type": self.type}


def validate_semantics(
    config: ApplianceConfig,
    known_networks: set[str] | None = None,
    network_mtus: dict[str, int] | None = None,
) -> list[FieldError]:
    """Everything the schema cannot express; an empty list means valid.
    `known_networks` and `network_mtus` describe the host's networks, when known."""
    return _SemanticCheck(config, known_networks, network_mtus or {}).run()


class _SemanticCheck:
    def __init__(
        self,
        config: ApplianceConfig,
        known_networks: set[str] | None,
        network_mtus: dict[str, int],
    ) -> None:
        self.network_mtus = network_mtus
        self.config = config
        self.known_networks = known_networks
        self.errors: list[FieldError] = []
        self.seen: dict[str, set[Hashable]] = {}

    def error(self, msg: str, *loc: str | int, kind: str = "value_error") -> None:
        self.errors.append(FieldError(tuple(loc), msg, kind))

    def once(self, group: str, value: Hashable, msg: str, *loc: str | int) -> None:
        """Report `msg` at `loc` if `value` was already seen in `group`."""
        seen = self.seen.setdefault(group, set())
        if value in seen:
            self.error(msg, *loc, kind="value_error.duplicate")
        seen.add(value)

    def run(self) -> list[FieldError]:
        self.check_kind()
        self.check_interfaces()
        self.check_subnets()
        self.check_dhcp_hosts()
        self.check_routes()
        self.check_snat()
        self.check_floating_ips()
        self.check_firewalls()
        self.check_metadata_hosts()
        self.check_loadbalancer()
        self.check_ha()
        return self.errors

    def check_kind(self) -> None:
        """A DHCP appliance serves its networks and routes nothing: internal
        interfaces only, no routes, SNAT or floating IPs, no forwarding."""
        config = self.config
        if config.kind != "dhcp":
            return
        why = "a dhcp appliance routes nothing"
        for index, interface in enumerate(config.interfaces):
            if interface.role is not Role.internal:
                self.error(f"{why}: internal interfaces only", "interfaces", index, "role")
        if config.routes:
            self.error(f"{why}: no routes", "routes")
        if config.snat.enabled:
            self.error(f"{why}: no SNAT", "snat", "enabled")
        if config.floating_ips:
            self.error(f"{why}: no floating IPs", "floating_ips")
        if config.forwarding:
            self.error(f"{why}: forwarding must be false", "forwarding")

    def connected_networks(self, *roles: Role) -> list[IPNetwork]:
        return [
            address.network
            for interface in self.config.interfaces
            if not roles or interface.role in roles
            for address in interface.addresses
        ]

    def own_addresses(self) -> set[IPAddress]:
        return {a.ip for i in self.config.interfaces for a in i.addresses}

    def check_interfaces(self) -> None:
        prefixes: list[tuple[IPNetwork, int]] = []
        externals = 0
        for index, interface in enumerate(self.config.interfaces):
            loc = ("interfaces", index)
            self.once("mac", interface.mac, f"duplicate MAC {interface.mac}", *loc, "mac")
            if self.known_networks is not None and interface.network_id not in self.known_networks:
                self.error(
                    f"unknown network {interface.network_id}: PUT /v1/networks/{{id}} first",
                    *loc,
                    "network_id",
                    kind="value_error.unknown_network",
                )
            network_mtu = self.network_mtus.get(interface.network_id)
            if (
                interface.mtu is not None
                and network_mtu is not None
                and interface.mtu > network_mtu
            ):
                self.error(
                    f"MTU {interface.mtu} exceeds the MTU of network"
                    f" {interface.network_id} ({network_mtu})",
                    *loc,
                    "mtu",
                )
            if interface.role is Role.external:
                externals += 1
                if externals > 1:
                    self.error("at most one external interface", *loc, "role")
            for a_index, address in enumerate(interface.addresses):
                a_loc = (*loc, "addresses", a_index)
                self.once("address", address.ip, f"duplicate address {address.ip}", *a_loc)
                network = address.network
                problem = rules.host_address_problem(address.ip, network)
                if problem is not None:
                    self.error(problem, *a_loc)
                for other, other_index in prefixes:
                    if other_index != index and other.overlaps(network):
                        self.error(
                            f"{network} overlaps {other} on interface {other_index}",
                            *a_loc,
                            kind="value_error.overlap",
                        )
                prefixes.append((network, index))

    def check_subnets(self) -> None:
        for index, subnet in enumerate(self.config.subnets):
            loc = ("subnets", index)
            self.once("subnet", subnet.cidr, f"duplicate subnet {subnet.cidr}", *loc, "cidr")
            interface = self.config.interface_by_mac(subnet.interface_mac)
            if interface is None:
                self.error(f"no interface has MAC {subnet.interface_mac}", *loc, "interface_mac")
                continue
            # The address must carry the subnet's prefix length, or the
            # appliance would have no connected route to the subnet.
            if not any(a.network == subnet.cidr for a in interface.addresses):
                self.error(
                    f"interface {subnet.interface_mac} has no address in {subnet.cidr}"
                    f" with prefix length /{subnet.cidr.prefixlen}",
                    *loc,
                    "cidr",
                )
            if subnet.gateway_ip is not None and subnet.gateway_ip.version != subnet.cidr.version:
                self.error("the gateway must have the subnet's IP version", *loc, "gateway_ip")
            # A gateway or a host route's next hop outside the subnet is what
            # Neutron accepts and hands out (on-link routes make it reachable).
            for r_index, route in enumerate(subnet.host_routes):
                if route.destination.version != route.nexthop.version:
                    self.error(
                        "destination and nexthop differ in IP version", *loc, "host_routes", r_index
                    )
            for d_index, server in enumerate(subnet.dns_nameservers):
                if server.version != subnet.cidr.version:
                    self.error(
                        "DNS servers must have the subnet's IP version",
                        *loc,
                        "dns_nameservers",
                        d_index,
                    )
            serves_clients = subnet.enable_dhcp or subnet.ipv6_ra_mode is not None
            if serves_clients and interface.role is not Role.internal:
                self.error(
                    "DHCP and router advertisements are served on internal interfaces only", *loc
                )
            self.check_ipv6_modes(subnet, loc)

    def check_ipv6_modes(self, subnet: Subnet, loc: tuple[str | int, ...]) -> None:
        mode = subnet.ipv6_ra_mode
        if mode is None:
            if subnet.enable_dhcp and subnet.cidr.version == 6:
                self.error(
                    "DHCPv6 needs ipv6_ra_mode 'dhcpv6-stateful' or 'dhcpv6-stateless'",
                    *loc,
                    "enable_dhcp",
                )
            return
        if subnet.cidr.version != 6:
            self.error("ipv6_ra_mode needs an IPv6 subnet", *loc, "ipv6_ra_mode")
            return
        problem = rules.ipv6_mode_prefix_problem(mode.value, subnet.cidr.prefixlen)
        if problem is not None:
            self.error(problem, *loc, "cidr")
        if mode.dhcpv6 and not subnet.enable_dhcp:
            self.error(
                f"ipv6_ra_mode {mode.value} needs enable_dhcp: the router advertisements"
                " would send hosts to a DHCPv6 server that is not there",
                *loc,
                "enable_dhcp",
            )
        if not mode.dhcpv6 and subnet.enable_dhcp:
            self.error(
                "enable_dhcp on an IPv6 subnet means DHCPv6: use ipv6_ra_mode"
                " 'dhcpv6-stateful' or 'dhcpv6-stateless'",
                *loc,
                "enable_dhcp",
            )

    def check_dhcp_hosts(self) -> None:
        dhcp_subnets = [s.cidr for s in self.config.subnets if s.enable_dhcp]
        for index, host in enumerate(self.config.dhcp_hosts):
            loc = ("dhcp_hosts", index)
            # A dual-stack port has one entry per IP version.
            self.once(
                "dhcp mac",
                (host.mac, host.ip_address.version),
                f"duplicate MAC {host.mac} for IPv{host.ip_address.version}",
                *loc,
                "mac",
            )
            self.once(
                "dhcp address",
                host.ip_address,
                f"duplicate address {host.ip_address}",
                *loc,
                "ip_address",
            )
            if not any(host.ip_address in cidr for cidr in dhcp_subnets):
                self.error(
                    f"{host.ip_address} is in no subnet with enable_dhcp", *loc, "ip_address"
                )

    def check_routes(self) -> None:
        specs = [rules.RouteSpec(r.destination, r.nexthop, r.onlink) for r in self.config.routes]
        for problem in rules.route_problems(specs, self.connected_networks(), self.own_addresses()):
            loc: tuple[str | int, ...] = ("routes", problem.index)
            if problem.field is not None:
                loc = (*loc, problem.field)
            self.error(problem.message, *loc, kind=problem.kind)
        management = self.connected_networks(Role.management)
        for index, route in enumerate(self.config.routes):
            if any(route.nexthop in network for network in management):
                # The management network carries the control plane only.
                self.error(
                    f"nexthop {route.nexthop} is on the management network",
                    "routes",
                    index,
                    "nexthop",
                )
            if route.onlink and self.config.external_interface() is None:
                self.error("an on-link route needs an external interface", "routes", index)

    def check_snat(self) -> None:
        if not self.config.snat.enabled:
            return
        external = self.config.external_interface()
        if external is None:
            self.error("SNAT needs an external interface", "snat", "enabled")
            return
        address = self.config.snat_address()
        if address is None:
            self.error("SNAT needs an IPv4 address on the external interface", "snat", "enabled")
        elif all(a.ip != address for a in external.addresses):
            self.error(f"{address} is not an address of the external interface", "snat", "address")

    def check_floating_ips(self) -> None:
        if not self.config.floating_ips:
            return
        external = self.config.external_interface()
        if external is None:
            self.error("floating IPs need an external interface", "floating_ips")
            return
        own = self.own_addresses()
        internal = self.connected_networks(Role.internal)
        for index, entry in enumerate(self.config.floating_ips):
            loc = ("floating_ips", index)
            self.once(
                "floating",
                entry.floating_ip,
                f"duplicate floating IP {entry.floating_ip}",
                *loc,
                "floating_ip",
            )
            self.once(
                "fixed",
                entry.fixed_ip,
                f"fixed IP {entry.fixed_ip} already has a floating IP",
                *loc,
                "fixed_ip",
            )
            if entry.floating_ip in own:
                self.error(
                    f"{entry.floating_ip} is an address of the appliance", *loc, "floating_ip"
                )
            if any(entry.floating_ip in network for network in internal):
                self.error(f"{entry.floating_ip} is inside an internal subnet", *loc, "floating_ip")
            if not any(entry.fixed_ip in network for network in internal):
                self.error(f"{entry.fixed_ip} is in no internal subnet", *loc, "fixed_ip")

    def check_firewalls(self) -> None:
        """Firewalls apply to internal interfaces of a router, one firewall
        to an interface; a rule's addresses are of its IP version, its ports
        for TCP or UDP."""
        for index, firewall in enumerate(self.config.firewalls):
            loc = ("firewalls", index)
            self.once("firewall", firewall.id, f"duplicate firewall {firewall.id}", *loc, "id")
            if self.config.kind != "router":
                self.error("only a router has firewalls", *loc)
            for i_index, mac in enumerate(firewall.interfaces):
                interface = self.config.interface_by_mac(mac)
                if interface is None or interface.role is not Role.internal:
                    self.error(f"no internal interface has MAC {mac}", *loc, "interfaces", i_index)
                self.once(
                    "firewall mac",
                    mac,
                    f"interface {mac} is in another firewall",
                    *loc,
                    "interfaces",
                    i_index,
                )
            for direction in ("ingress", "egress"):
                for r_index, rule in enumerate(getattr(firewall, direction)):
                    self.check_firewall_rule(rule, (*loc, direction, r_index))

    def check_firewall_rule(self, rule: FirewallRule, loc: tuple[str | int, ...]) -> None:
        """The tenant API's own checks across a rule's fields (one place)."""

        def span(ports: PortRange | None) -> tuple[int, int] | None:
            return None if ports is None else (ports.min, ports.max)

        found = firewall_rules.problem(
            firewall_rules.FirewallRuleFields(
                protocol=rule.protocol,
                ip_version=rule.ip_version,
                source_ip_address=str(rule.source) if rule.source else None,
                destination_ip_address=str(rule.destination) if rule.destination else None,
                source_port=span(rule.source_ports),
                destination_port=span(rule.destination_ports),
            )
        )
        if found is not None:
            self.error(found.message, *loc)

    def check_metadata_hosts(self) -> None:
        internal = self.connected_networks(Role.internal)
        for index, host in enumerate(self.config.metadata_hosts):
            loc = ("metadata_hosts", index, "ip_address")
            self.once("metadata", host.ip_address, f"duplicate address {host.ip_address}", *loc)
            if not any(host.ip_address in network for network in internal):
                self.error(f"{host.ip_address} is in no internal subnet", *loc)

    def check_ha(self) -> None:
        """An HA member: a router with exactly one `ha` interface, the one
        its section names, holding an IPv4 address on the peer's subnet
        (not the peer's), which leaves room for the role address."""
        config, section = self.config, self.config.ha
        links = [index for index, i in enumerate(config.interfaces) if i.role is Role.ha]
        if section is None:
            for index in links:
                self.error("an ha interface needs the ha section", "interfaces", index, "role")
            return
        if config.kind != "router":
            self.error("only a router has members on two hosts", "ha")
            return
        if len(links) != 1:
            self.error("an HA member needs exactly one interface of role ha", "ha")
            return
        interface = config.interfaces[links[0]]
        if interface.mac != section.interface_mac:
            self.error(f"the ha interface has MAC {interface.mac}", "ha", "interface_mac")
        own = config.ha_address()
        if own is None:
            self.error("the ha interface needs an IPv4 address", "interfaces", links[0])
            return
        if section.peer_address not in own.network or section.peer_address == own.ip:
            self.error(f"the peer must be another address in {own.network}", "ha", "peer_address")
        if section.peer_mac == interface.mac:
            self.error("the peer has a MAC of its own", "ha", "peer_mac")
        for index, other in enumerate(config.interfaces):
            if any(HA_ROLE_ADDRESS.ip in a.network for a in other.addresses):
                self.error(
                    f"{HA_ROLE_ADDRESS.ip} is the HA role's address: no subnet may hold it",
                    "interfaces",
                    index,
                )

    def check_loadbalancer(self) -> None:
        """A load balancer appliance: internal interfaces, the VIP one of
        their addresses, nothing routed or translated; listeners unique per
        port, each default pool one of its pools with a protocol it carries."""
        config, section = self.config, self.config.loadbalancer
        if config.kind != "loadbalancer":
            if section is not None:
                self.error(
                    "only a loadbalancer appliance has a loadbalancer section", "loadbalancer"
                )
            return
        why = "a loadbalancer appliance routes nothing"
        if section is None:
            self.error("a loadbalancer appliance needs its loadbalancer section", "loadbalancer")
            return
        for index, interface in enumerate(config.interfaces):
            if interface.role is not Role.internal:
                self.error(f"{why}: internal interfaces only", "interfaces", index, "role")
        for name in ("snat", "floating_ips", "firewalls", "metadata_hosts", "dhcp_hosts"):
            value = getattr(config, name)
            if value if name != "snat" else value.enabled:
                self.error(f"{why}: no {name}", name)
        if config.forwarding:
            self.error(f"{why}: forwarding must be false", "forwarding")
        if section.vip not in self.own_addresses():
            self.error(f"{section.vip} is no address of the appliance", "loadbalancer", "vip")
        pools = {pool.id: pool for pool in section.pools}
        for index, pool in enumerate(section.pools):
            loc = ("loadbalancer", "pools", index)
            self.once("lb pool", pool.id, f"duplicate pool {pool.id}", *loc, "id")
            if (pool.persistence == "APP_COOKIE") != (pool.cookie_name is not None):
                self.error(
                    "a cookie name goes with APP_COOKIE persistence only", *loc, "cookie_name"
                )
            for m_index, member in enumerate(pool.members):
                self.once(
                    "lb member",
                    member.id,
                    f"duplicate member {member.id}",
                    *loc,
                    "members",
                    m_index,
                )
        for index, listener in enumerate(section.listeners):
            loc = ("loadbalancer", "listeners", index)
            self.once("lb listener", listener.id, f"duplicate listener {listener.id}", *loc, "id")
            self.once("lb port", listener.port, f"port {listener.port} is taken", *loc, "port")
            default = pools.get(listener.default_pool) if listener.default_pool else None
            if listener.default_pool is not None and default is None:
                self.error(f"no pool {listener.default_pool}", *loc, "default_pool")
            if default is not None and default.protocol not in LB_POOL_PROTOCOLS[listener.protocol]:
                self.error(
                    f"a {listener.protocol} listener cannot use a {default.protocol} pool",
                    *loc,
                    "default_pool",
                )
            if listener.insert_headers and listener.protocol != "HTTP":
                self.error("headers are inserted by HTTP listeners only", *loc, "insert_headers")
            self.check_l7policies(listener, pools, loc)
            for c_index, cidr in enumerate(listener.allowed_cidrs):
                if cidr.version != section.vip.version:
                    self.error(
                        f"{cidr} is not of the VIP's IP version", *loc, "allowed_cidrs", c_index
                    )

    def check_l7policies(
        self, listener: LbListener, pools: dict[str, LbPool], loc: tuple[str | int, ...]
    ) -> None:
        """L7 policies on HTTP listeners only, each id once, a redirect to a
        pool of the load balancer with a protocol the listener carries."""
        for index, policy in enumerate(listener.l7policies):
            where = (*loc, "l7policies", index)
            if listener.protocol != "HTTP":
                self.error("L7 policies are for HTTP listeners only", *where)
            self.once("lb l7policy", policy.id, f"duplicate L7 policy {policy.id}", *where, "id")
            for r_index, rule in enumerate(policy.rules):
                self.once(
                    "lb l7rule", rule.id, f"duplicate L7 rule {rule.id}", *where, "rules", r_index
                )
            if policy.redirect_pool is None:
                continue
            pool = pools.get(policy.redirect_pool)
            if pool is None:
                self.error(f"no pool {policy.redirect_pool}", *where, "redirect_pool")
            elif pool.protocol not in LB_POOL_PROTOCOLS[listener.protocol]:
                self.error(
                    f"a {listener.protocol} listener cannot use a {pool.protocol} pool",
                    *where,
                    "redirect_pool",
                )
