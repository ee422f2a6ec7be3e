"""A small lab on one agent: networks, workloads and router configs, named
under the agent's prefix. Used by the root-tier tests and the benchmarks."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from astara import ipam
from astara.agent.client import AgentClient


def eui64(prefix: str, mac: str) -> str:
    """The SLAAC address a host with `mac` takes in the /64 `prefix`."""
    return str(ipam.eui64(ipaddress.IPv6Network(prefix), mac))


@dataclass
class Lab:
    client: AgentClient
    prefix: str
    networks: set[str] = field(default_factory=set)

    def netns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def network(self, network_id: str, external: bool = False, mtu: int = 1500) -> str:
        self.client.put_network(network_id, mtu=mtu, external=external)
        self.networks.add(network_id)
        return network_id

    def workload(
        self,
        port_id: str,
        network_id: str,
        mac: str,
        *,
        addresses: tuple[str, ...] = (),
        routes: tuple[tuple[str, str], ...] = (),
        dhcp: bool = False,
        slaac: bool = False,
        netns: str | None = None,
    ) -> str:
        """Plug a workload port; returns its namespace."""
        namespace = netns or self.netns(port_id)
        self.client.put_port(
            port_id,
            {
                "network_id": network_id,
                "mac": mac,
                "netns": namespace,
                "addresses": list(addresses),
                "routes": [{"destination": d, "nexthop": n} for d, n in routes],
                "dhcp": dhcp,
                "slaac": slaac,
            },
        )
        return namespace

    def router(self, router_id: str, config: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.client.put_appliance(router_id, config)
        return result

    def router_netns(self, router_id: str) -> str:
        return f"{self.prefix}-appliance-{router_id}"


# Two members' links on their HA network: (MAC, address), by member.
HA_LINKS = {0: ("fa:16:3e:0a:00:01", "169.254.192.1"), 1: ("fa:16:3e:0b:00:01", "169.254.192.2")}


def ha_member(
    config: dict[str, Any],
    slot: int,
    network_id: str = "ha",
    virtual_router_id: int = 7,
    links: dict[int, tuple[str, str]] = HA_LINKS,
    **ha: Any,
) -> dict[str, Any]:
    """A router's config as member `slot` (0 or 1) of an HA pair runs it:
    its link on the HA network `network_id` (/18, as Neutron's HA subnet),
    and the section naming its peer; `ha`: more of that section."""
    mac, address = links[slot]
    peer_mac, peer = links[1 - slot]
    member = {**config, "interfaces": [*config["interfaces"]]}
    member["interfaces"].append(
        {"mac": mac, "network_id": network_id, "role": "ha", "addresses": [f"{address}/18"]}
    )
    member["ha"] = {
        "interface_mac": mac,
        "peer_address": peer,
        "peer_mac": peer_mac,
        "virtual_router_id": virtual_router_id,
        **ha,
    }
    return member
