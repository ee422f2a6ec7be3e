"""The representative router config the unit tests share.

An external interface with SNAT (dual-stack), two internal IPv4 subnets with
DHCP, host routes and DNS servers (the first dual-stack with an IPv6 SLAAC
subnet), three DHCP hosts and two floating IPs. It is valid: every test that
breaks one rule starts from it, so the rule broken is the only error.
"""

from __future__ import annotations

import copy
from pathlib import PurePath
from typing import Any

from astara.appliance.schema import ApplianceConfig

STATE_DIR = PurePath("/var/lib/astara/appliances/r1")
NETWORK_MTUS = {"ext-net": 1500, "net-a": 1450, "net-b": 1500}

EXTERNAL_MAC = "fa:16:3e:00:00:01"
NET_A_MAC = "fa:16:3e:00:01:01"
NET_B_MAC = "fa:16:3e:00:02:01"

_REPRESENTATIVE: dict[str, Any] = {
    "schema_version": 1,
    "kind": "router",
    "interfaces": [
        {
            "mac": EXTERNAL_MAC,
            "network_id": "ext-net",
            "role": "external",
            "addresses": ["203.0.113.2/24", "2001:db8:ff::2/64"],
        },
        {
            "mac": NET_A_MAC,
            "network_id": "net-a",
            "role": "internal",
            "addresses": ["10.0.1.1/24", "2001:db8:1::1/64"],
        },
        {
            "mac": NET_B_MAC,
            "network_id": "net-b",
            "role": "internal",
            "addresses": ["10.0.2.1/24"],
            "mtu": 1400,
        },
    ],
    "subnets": [
        {
            "cidr": "10.0.1.0/24",
            "interface_mac": NET_A_MAC,
            "gateway_ip": "10.0.1.1",
            "enable_dhcp": True,
            "dns_nameservers": ["192.0.2.53", "192.0.2.54"],
            "host_routes": [{"destination": "172.16.0.0/16", "nexthop": "10.0.1.254"}],
        },
        {
            "cidr": "10.0.2.0/24",
            "interface_mac": NET_B_MAC,
            "gateway_ip": "10.0.2.1",
            "enable_dhcp": True,
            "dns_nameservers": ["192.0.2.53"],
            "host_routes": [{"destination": "172.17.0.0/16", "nexthop": "10.0.2.254"}],
            "lease_time_s": 3600,
        },
        {
            "cidr": "2001:db8:1::/64",
            "interface_mac": NET_A_MAC,
            "ipv6_ra_mode": "slaac",
            "dns_nameservers": ["2001:db8::53"],
        },
    ],
    "dhcp_hosts": [
        {"mac": "fa:16:3e:10:00:05", "ip_address": "10.0.1.5", "hostname": "web-1"},
        {"mac": "fa:16:3e:10:00:06", "ip_address": "10.0.1.6"},
        {"mac": "fa:16:3e:20:00:07", "ip_address": "10.0.2.7", "hostname": "db-1"},
    ],
    "routes": [
        {"destination": "0.0.0.0/0", "nexthop": "203.0.113.1"},
        {"destination": "::/0", "nexthop": "2001:db8:ff::1"},
    ],
    "snat": {"enabled": True},
    "floating_ips": [
        {"floating_ip": "203.0.113.10", "fixed_ip": "10.0.1.5"},
        {"floating_ip": "203.0.113.11", "fixed_ip": "10.0.2.7"},
    ],
}


def representative() -> dict[str, Any]:
    """A fresh copy of the representative config document, free to mutate."""
    return copy.deepcopy(_REPRESENTATIVE)


def representative_config() -> ApplianceConfig:
    return ApplianceConfig.model_validate(representative())


DHCP_MAC = "fa:16:3e:00:01:02"

# A network's DHCP appliance (no router on the network): one internal
# interface with the DHCP port's address, the subnet served with its own
# gateway (held by nothing here), two hosts; nothing routed.
_DHCP: dict[str, Any] = {
    "schema_version": 1,
    "kind": "dhcp",
    "forwarding": False,
    "interfaces": [
        {
            "mac": DHCP_MAC,
            "network_id": "net-a",
            "role": "internal",
            "addresses": ["10.0.1.2/24"],
        }
    ],
    "subnets": [
        {
            "cidr": "10.0.1.0/24",
            "interface_mac": DHCP_MAC,
            "gateway_ip": "10.0.1.1",
            "enable_dhcp": True,
            "dns_nameservers": ["192.0.2.53"],
        }
    ],
    "dhcp_hosts": [
        {"mac": "fa:16:3e:10:00:05", "ip_address": "10.0.1.5", "hostname": "host-10-0-1-5"},
        {"mac": "fa:16:3e:10:00:06", "ip_address": "10.0.1.6", "hostname": "host-10-0-1-6"},
    ],
}


def dhcp_representative() -> dict[str, Any]:
    """A fresh copy of the DHCP appliance's config document, free to mutate."""
    return copy.deepcopy(_DHCP)


def dhcp_config() -> ApplianceConfig:
    return ApplianceConfig.model_validate(dhcp_representative())
