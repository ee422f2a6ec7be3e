"""L2 segments: one bridge per network in the host's fabric namespace."""

from __future__ import annotations

from astara.linux import netlink, netns
from astara.model.fabric import NetworkSpec
from astara.naming import Names

# Bridges only switch frames: no addresses, no IPv6 chatter from the fabric.
FABRIC_SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
}


def ensure_fabric(names: Names) -> None:
    netns.create(names.fabric_netns, FABRIC_SYSCTLS)


def delete_fabric(names: Names) -> None:
    """Remove the fabric namespace once no network is left on the host."""
    netns.delete(names.fabric_netns)


def ensure_network(names: Names, network_id: str, spec: NetworkSpec) -> None:
    ensure_fabric(names)
    with netlink.netns(names.fabric_netns) as fabric:
        netlink.ensure_bridge(fabric, names.bridge(network_id), spec.mtu)


def delete_network(names: Names, network_id: str) -> None:
    if netns.exists(names.fabric_netns):
        with netlink.netns(names.fabric_netns) as fabric:
            netlink.delete_link(fabric, names.bridge(network_id))


def observe_network(names: Names, network_id: str) -> dict[str, object]:
    if not netns.exists(names.fabric_netns):
        return {"bridge": names.bridge(network_id), "present": False}
    with netlink.netns(names.fabric_netns) as ns:
        state = netlink.link_state(ns, names.bridge(network_id))
        members = []
        if state is not None:
            index = netlink.link_index(ns, names.bridge(network_id))
            members = sorted(
                str(link.get("ifname")) for link in ns.get_links() if link.get("master") == index
            )
    return {
        "bridge": names.bridge(network_id),
        "present": state is not None,
        "mtu": state.mtu if state else None,
        "up": state.up if state else False,
        "members": members,
    }
