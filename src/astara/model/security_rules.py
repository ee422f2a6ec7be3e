"""Security group rules, as Neutron reads them (pure): protocols by name or
number, port ranges and ICMP type/code, remote prefixes, and the key that
makes two rules the same rule. The tenant API answers these errors as they
are (Neutron's type and message); the fabric's ruleset is built from rules
that passed here, so it never meets one it cannot express.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from astara.model import rules

IPV4, IPV6 = "IPv4", "IPv6"
ETHERTYPES = (IPV4, IPV6)
DIRECTIONS = ("ingress", "egress")

# neutron-lib's IP_PROTOCOL_MAP: the names a rule accepts, and their numbers.
PROTOCOLS = {
    "ah": 51,
    "dccp": 33,
    "egp": 8,
    "esp": 50,
    "gre": 47,
    "hopopt": 0,
    "icmp": 1,
    "igmp": 2,
    "ip": 0,
    "ipip": 4,
    "ipv6-encap": 41,
    "ipv6-frag": 44,
    "ipv6-icmp": 58,
    "icmpv6": 58,
    "ipv6-nonxt": 59,
    "ipv6-opts": 60,
    "ipv6-route": 43,
    "ospf": 89,
    "pgm": 113,
    "rsvp": 46,
    "sctp": 132,
    "tcp": 6,
    "udp": 17,
    "udplite": 136,
    "vrrp": 112,
}
ICMP, ICMPV6 = 1, 58
# The protocols whose rules take a port range (Neutron's SG_PORT_PROTO_NAMES).
PORT_PROTOCOLS = {"dccp": 33, "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136}
# Protocols of IPv6 alone: a rule for them with ethertype IPv4 is refused.
_IPV6_ONLY = {"ipv6-encap", "ipv6-frag", "ipv6-icmp", "icmpv6", "ipv6-nonxt", "ipv6-opts"}
_IPV6_ONLY |= {"ipv6-route"} | {str(PROTOCOLS[name]) for name in _IPV6_ONLY | {"ipv6-route"}}
_IPV6_ICMP_LEGACY = ("icmp", "icmpv6")
_PORT_PROTOCOL_NAMES = ", ".join(name.upper() for name in sorted(PORT_PROTOCOLS))


class RuleError(ValueError):
    """Neutron's exception type and message for a rule it refuses (400)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def protocol(value: Any) -> str | None:
    """A rule's protocol as stored: a lower-case name, a number 0-255 as a
    string, or None (any; also for `any`)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _invalid_protocol(value)
    if isinstance(value, int) or (
        isinstance(value, str) and value.strip().isascii() and value.strip().isdigit()
    ):
        number = int(value)
        if 0 <= number <= 255:
            return str(number)
        raise _invalid_protocol(value)
    if isinstance(value, str):
        name = value.lower()
        if name == "any":
            return None
        if name in PROTOCOLS:
            return name
    raise _invalid_protocol(value)


def _invalid_protocol(value: Any) -> RuleError:
    names = [None, *PROTOCOLS]
    return RuleError(
        "SecurityGroupRuleInvalidProtocol",
        f"Security group rule protocol {value} not supported. Only protocol values"
        f" {names} and integer representations [0 to 255] are supported.",
    )


def ethertype(value: Any) -> str:
    if isinstance(value, str):
        for known in ETHERTYPES:
            if known.lower() == value.lower():
                return known
    raise RuleError(
        "SecurityGroupRuleInvalidEtherType",
        f"Security group rule for ethertype '{value}' not supported."
        f" Allowed values are {list(ETHERTYPES)}.",
    )


def port_value(value: Any) -> int | None:
    """A port bound (or ICMP type/code): an integer 0-65535, or None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _invalid_port(value)
    if isinstance(value, float) and not value.is_integer():
        raise _invalid_port(value)
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise _invalid_port(value) from None
    if not 0 <= number <= 65535:
        raise _invalid_port(value)
    return number


def _invalid_port(value: Any) -> RuleError:
    return RuleError("SecurityGroupInvalidPortValue", f"Invalid value for port {value}.")


def number_of(protocol_value: str | None) -> int | None:
    """The protocol number a stored protocol stands for."""
    if protocol_value is None:
        return None
    return PROTOCOLS[protocol_value] if protocol_value in PROTOCOLS else int(protocol_value)


def ip_prefix(value: Any) -> str | None:
    """A remote prefix, canonical (host bits kept, as Neutron keeps them); a
    plain address a /32 or /128; empty or None: no prefix."""
    if value is None or value == "":
        return None
    try:
        return rules.prefix(value)
    except ValueError:
        raise RuleError("InvalidCIDR", f"Invalid CIDR {value} given as IP prefix.") from None


def normalized_cidr(prefix: str | None) -> str | None:
    return None if prefix is None else str(ipaddress.ip_network(prefix, strict=False))


@dataclass(frozen=True)
class Rule:
    """A rule's matching part, canonical: what the fabric enforces."""

    direction: str
    ethertype: str
    protocol: str | None
    port_range_min: int | None
    port_range_max: int | None
    remote_ip_prefix: str | None
    remote_group_id: str | None
    remote_address_group_id: str | None

    def key(self) -> tuple[Any, ...]:
        """What makes two rules of a group the same rule: the protocol by its
        number, and an any-address prefix the same as none (Neutron's)."""
        prefix = self.remote_ip_prefix
        if prefix is not None and ipaddress.ip_network(prefix, strict=False).prefixlen == 0:
            prefix = None
        return (
            self.direction,
            self.ethertype,
            number_of(self.protocol),
            self.port_range_min,
            self.port_range_max,
            prefix,
            self.remote_group_id,
            self.remote_address_group_id,
        )


def rule(
    *,
    direction: str,
    ethertype: str,
    protocol: str | None,
    port_range_min: int | None,
    port_range_max: int | None,
    remote_ip_prefix: str | None,
    remote_group_id: str | None,
    remote_address_group_id: str | None,
) -> Rule:
    """A converted rule's attributes checked together, in Neutron's order, and
    made canonical: IPv6 ICMP by its IPv6 name or number, a TCP/UDP range of
    every port as no range."""
    if ethertype == IPV6 and protocol in _IPV6_ICMP_LEGACY:
        protocol = "ipv6-icmp"
    elif ethertype == IPV6 and protocol == str(ICMP):
        protocol = str(ICMPV6)
    _check_ports(protocol, port_range_min, port_range_max)
    if remote_ip_prefix is not None:
        version = ipaddress.ip_network(remote_ip_prefix, strict=False).version
        if (version == 4) != (ethertype == IPV4):
            raise RuleError(
                "SecurityGroupRuleParameterConflict",
                f"Conflicting value ethertype {ethertype} for CIDR {remote_ip_prefix}",
            )
    if protocol in _IPV6_ONLY and ethertype == IPV4:
        raise RuleError(
            "SecurityGroupEthertypeConflictWithProtocol",
            f"Invalid ethertype {ethertype} for protocol {protocol}.",
        )
    remotes = [r for r in (remote_ip_prefix, remote_group_id, remote_address_group_id) if r]
    if len(remotes) > 1:
        raise RuleError(
            "SecurityGroupMultipleRemoteEntites",
            "Only one of remote_ip_prefix or remote_group_id or"
            " remote_address_group_id may be provided.",
        )
    number = number_of(protocol)
    if number in PORT_PROTOCOLS.values() and (port_range_min, port_range_max) == (1, 65535):
        port_range_min = port_range_max = None
    return Rule(
        direction,
        ethertype,
        protocol,
        port_range_min,
        port_range_max,
        remote_ip_prefix,
        remote_group_id,
        remote_address_group_id,
    )


def _check_ports(protocol: str | None, low: int | None, high: int | None) -> None:
    if low is None and high is None:
        return
    if protocol is None:
        raise RuleError(
            "SecurityGroupProtocolRequiredWithPorts",
            "Must also specify protocol if port range is given.",
        )
    number = number_of(protocol)
    if number in PORT_PROTOCOLS.values():
        if low == 0 or high == 0:
            raise _invalid_port(0)
        if low is None or high is None or low > high:
            raise RuleError(
                "SecurityGroupInvalidPortRange",
                "For TCP/UDP protocols, port_range_min must be <= port_range_max",
            )
    elif number in (ICMP, ICMPV6):
        for value, field, attribute in (
            (low, "type", "port_range_min"),
            (high, "code", "port_range_max"),
        ):
            if value is not None and not 0 <= value <= 255:
                raise RuleError(
                    "SecurityGroupInvalidIcmpValue",
                    f"Invalid value for ICMP {field} ({attribute}) {value}. It must be 0 to 255.",
                )
        if low is None:
            raise RuleError(
                "SecurityGroupMissingIcmpType",
                f"ICMP code (port-range-max) {high} is provided but ICMP type"
                " (port-range-min) is missing.",
            )
    else:
        raise RuleError(
            "SecurityGroupInvalidProtocolForPort",
            f"Invalid protocol {number} for port range, only supported for"
            f" {_PORT_PROTOCOL_NAMES} protocols.",
        )
