"""FWaaS v2 rules as neutron-lib reads them (pure): protocol names, IP
versions, addresses and port ranges, and the checks across them
(`problem`). The API answers these errors as they are; the router's ruleset
is rendered from rules that passed here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from astara.model import rules

# neutron-lib's `firewall_v2` valid protocol values (case-sensitive), and the
# actions (read case-insensitively).
PROTOCOLS = ("dccp", "icmp", "ipv6-icmp", "sctp", "tcp", "udp")
PORT_PROTOCOLS = ("tcp", "udp")
ACTIONS = ("allow", "deny", "reject")
IP_VERSIONS = (4, 6)


class RuleProblem(ValueError):
    """Neutron's exception type and message for a rule it refuses (400)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def port_range(value: Any) -> tuple[int, int] | None:
    """`80`, `"80"` or `"1000:2000"` as (min, max); None for none. ValueError
    with neutron-lib's `type:port_range` message."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"Invalid port: {value}")
    text = str(value).strip()
    parts = text.split(":")
    if len(parts) > 2 or not all(parts):
        raise ValueError("Port range must be two integers separated by a colon")
    numbers = []
    for part in parts:
        if not part.isdigit():
            raise ValueError(f"Invalid port: {part}")
        number = int(part)
        if number > 65535:
            raise ValueError(f"Invalid port: {part}, the port must be in the range [0, 65535]")
        numbers.append(number)
    low, high = numbers[0], numbers[-1]
    if low > high:
        raise ValueError("First port in a port range must be lower than the second port")
    return low, high


def port_text(low: int | None, high: int | None) -> str | None:
    """A range as Neutron shows it: None, `"80"`, or `"1000:2000"`."""
    if low is None or high is None:
        return None
    return str(low) if low == high else f"{low}:{high}"


def address(value: Any) -> str | None:
    """An address or subnet as the tenant wrote it (Neutron keeps its form),
    once it is one; None for none."""
    if value is None:
        return None
    try:
        rules.prefix(value)
    except ValueError:
        raise ValueError(
            f"'{value}' is neither a valid IP address, nor is it a valid IP subnet"
        ) from None
    return str(value)


def version_of(value: str | None) -> int | None:
    if value is None:
        return None
    return 6 if ":" in value else 4


@dataclass(frozen=True)
class FirewallRuleFields:
    """The fields of a rule that must agree with each other."""

    protocol: str | None
    ip_version: int
    source_ip_address: str | None
    destination_ip_address: str | None
    source_port: tuple[int, int] | None
    destination_port: tuple[int, int] | None


def problem(rule: FirewallRuleFields) -> RuleProblem | None:
    """What neutron-fwaas refuses in a rule as a whole (its create, or its
    update merged with what it was), or None."""
    ports = rule.source_port is not None or rule.destination_port is not None
    if ports and rule.protocol is None:
        return RuleProblem(
            "FirewallRuleWithPortWithoutProtocolInvalid",
            "Source/destination port requires a protocol.",
        )
    if ports and rule.protocol not in PORT_PROTOCOLS:
        return RuleProblem(
            "FirewallRuleInvalidICMPParameter",
            "Source, destination port are not allowed when protocol is set to ICMP.",
        )
    for value in (rule.source_ip_address, rule.destination_ip_address):
        if value is not None and version_of(value) != rule.ip_version:
            return RuleProblem(
                "FirewallIpAddressConflict",
                "Invalid input - IP addresses do not agree with IP Version.",
            )
    return None
