"""The router and addresses the benchmarks use (pure).

Every address here lives only inside the namespaces a benchmark creates: the
external network is 100.64.0.0/16 (the "outside" host is .0.1, the router
.0.2, floating IPs from 100.64.1.0 on) and the internal network 10.1.0.0/16
(the router .0.1, workloads from .0.10, fixed IPs of floating IPs from .1.0).
A /16 on both sides leaves room for 10,000+ floating IPs.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from astara.appliance.schema import ApplianceConfig

EXTERNAL_NETWORK = "ext"
INTERNAL_NETWORK = "n1"
EXTERNAL_PREFIXLEN = 16
INTERNAL_PREFIXLEN = 16
OUTSIDE = "100.64.0.1"
ROUTER_EXTERNAL = "100.64.0.2"
ROUTER_INTERNAL = "10.1.0.1"
FIRST_FLOATING_IP = ipaddress.IPv4Address("100.64.1.0")
FIRST_FIXED_IP = ipaddress.IPv4Address("10.1.1.0")

MAC = {
    "router_external": "fa:16:3e:00:01:01",
    "router_internal": "fa:16:3e:00:02:01",
    "outside": "fa:16:3e:00:01:10",
    "snat_workload": "fa:16:3e:00:02:10",
    "floating_workload": "fa:16:3e:00:02:20",
}
SNAT_WORKLOAD = "10.1.0.10"
FLOATING_WORKLOAD = "10.1.0.20"
WORKLOAD_FLOATING_IP = "100.64.0.50"


def floating_ips(count: int) -> dict[str, str]:
    """`count` floating IP → fixed IP pairs, in order, always the same ones."""
    return {str(FIRST_FLOATING_IP + index): str(FIRST_FIXED_IP + index) for index in range(count)}


def router_config(floating: dict[str, str] | None = None, *, snat: bool = True) -> dict[str, Any]:
    """A router between the external and the internal network: SNAT, a
    default route to the outside host, the given floating IPs, and no DHCP or
    RA (no daemon), so a benchmark measures links, addresses and nftables."""
    return {
        "schema_version": 1,
        "kind": "router",
        "interfaces": [
            {
                "mac": MAC["router_external"],
                "network_id": EXTERNAL_NETWORK,
                "role": "external",
                "addresses": [f"{ROUTER_EXTERNAL}/{EXTERNAL_PREFIXLEN}"],
            },
            {
                "mac": MAC["router_internal"],
                "network_id": INTERNAL_NETWORK,
                "role": "internal",
                "addresses": [f"{ROUTER_INTERNAL}/{INTERNAL_PREFIXLEN}"],
            },
        ],
        "routes": [{"destination": "0.0.0.0/0", "nexthop": OUTSIDE}],
        "snat": {"enabled": snat},
        "floating_ips": [{"floating_ip": f, "fixed_ip": x} for f, x in (floating or {}).items()],
    }


def parsed(config: dict[str, Any]) -> ApplianceConfig:
    return ApplianceConfig.model_validate(config)
