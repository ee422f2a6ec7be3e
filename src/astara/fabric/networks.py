"""L2 segments: one bridge per network in the host's fabric namespace, and
how it reaches other hosts (its segment):

- `local`: the bridge only;
- `vxlan`: a VXLAN device on the bridge. It is created in the agent's own
  namespace (the host's, where the underlay address lives: the device's UDP
  socket stays there) and then moved beside the bridge. Flooding goes to the
  segment's remotes only, one all-zero FDB entry each (head-end replication);
- `flat`: the host's interface for the provider network (`--physnet
  NAME=IFACE`) is moved into the fabric namespace and enslaved to the bridge,
  and moved back when the segment goes (it is the host's NIC: never deleted).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from astara.linux import netlink, netns
from astara.model.fabric import NetworkSpec, UnderlayAddress
from astara.naming import Names

log = logging.getLogger(__name__)

# Bridges only switch frames: no addresses, no IPv6 chatter from the fabric.
FABRIC_SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
}


class SegmentError(ValueError):
    """This host cannot make the segment asked for (nothing was changed)."""


@dataclass(frozen=True)
class Uplinks:
    """What this host offers segments: the underlay address VXLAN devices
    send from and the interfaces of its provider networks (physnet → NIC)."""

    underlay_address: UnderlayAddress | None = None
    physnets: Mapping[str, str] = field(default_factory=dict)


def ensure_fabric(names: Names) -> None:
    netns.create(names.fabric_netns, FABRIC_SYSCTLS)


def delete_fabric(names: Names) -> None:
    """Remove the fabric namespace once no network is left on the host."""
    netns.delete(names.fabric_netns)


def check_segment(spec: NetworkSpec, uplinks: Uplinks) -> None:
    """Raise SegmentError if this host cannot make `spec`'s segment."""
    segment = spec.segment
    if segment.type == "vxlan" and uplinks.underlay_address is None:
        raise SegmentError(
            "a vxlan segment needs the agent's underlay address: this agent was started"
            " without --underlay-address"
        )
    if segment.type == "flat":
        assert segment.physnet is not None
        if segment.physnet not in uplinks.physnets:
            known = ", ".join(sorted(uplinks.physnets)) or "none"
            raise SegmentError(
                f"physnet {segment.physnet!r} is not on this host (its physnets: {known};"
                " see the agent's --physnet NAME=IFACE)"
            )


def physnet_interface(spec: NetworkSpec, uplinks: Uplinks) -> str | None:
    if spec.segment.type != "flat" or spec.segment.physnet is None:
        return None
    return uplinks.physnets.get(spec.segment.physnet)


def ensure_network(
    names: Names, network_id: str, spec: NetworkSpec, uplinks: Uplinks | None = None
) -> None:
    """Converge the network's bridge and segment on `spec`: what another
    segment type left (a VXLAN device, a host NIC) goes. `uplinks`: what the
    host offers (none: a local segment only)."""
    uplinks = uplinks or Uplinks()
    check_segment(spec, uplinks)
    nic = physnet_interface(spec, uplinks)
    ensure_fabric(names)
    bridge = names.bridge(network_id)
    # The host's own handle only for what lives there (a NIC, a VXLAN device
    # made there): opening one costs milliseconds, and most segments are local.
    needs_host = nic is not None or spec.segment.type == "vxlan"
    with (
        netlink.netns(names.fabric_netns) as fabric,
        netlink.own_netns() if needs_host else contextlib.nullcontext() as host,
    ):
        if (
            nic is not None
            and netlink.link_index(fabric, nic) is None
            and netlink.link_index(host, nic) is None
        ):
            raise SegmentError(
                f"interface {nic} of physnet {spec.segment.physnet!r} is missing on this host"
            )
        netlink.ensure_bridge(fabric, bridge, spec.mtu)
        _release_host_links(names, fabric, bridge, keep=nic)
        vxlan = names.vxlan(network_id)
        if spec.segment.type == "vxlan":
            assert spec.segment.vni is not None and uplinks.underlay_address is not None
            _ensure_vxlan(
                names, fabric, host, vxlan, spec.segment.vni, uplinks.underlay_address, spec.mtu
            )
            netlink.enslave(fabric, vxlan, bridge, spec.mtu)
            added, removed = netlink.sync_flood_remotes(fabric, vxlan, spec.segment.remotes)
            if added or removed:
                log.info(
                    "network %s: flooding to %d more, %d fewer remotes",
                    network_id,
                    added,
                    removed,
                )
        else:
            netlink.delete_link(fabric, vxlan)
        if nic is not None:
            if netlink.link_index(fabric, nic) is None:
                netlink.move_link(host, nic, names.fabric_netns)
                log.info("network %s: host interface %s moved into the fabric", network_id, nic)
            netlink.enslave(fabric, nic, bridge)


def _ensure_vxlan(
    names: Names,
    fabric: Any,
    host: Any,
    name: str,
    vni: int,
    local: UnderlayAddress,
    mtu: int,
) -> None:
    """The VXLAN device as asked; a changed VNI, source or port replaces it
    (the kernel changes none of them in place)."""
    state = netlink.vxlan_state(fabric, name)
    wanted = netlink.VxlanState(vni=vni, local=local, port=netlink.VXLAN_PORT, learning=True)
    if state == wanted:
        return
    if netlink.delete_link(fabric, name):
        log.info("VXLAN device %s replaced: %s, now %s", name, state, wanted)
    # Left in the host's namespace by an agent that stopped between creating
    # and moving it: the name is ours (prefixed), the device is stale.
    netlink.delete_link(host, name)
    netlink.create_vxlan(host, name, vni, local, mtu)
    netlink.move_link(host, name, names.fabric_netns)


def _release_host_links(names: Names, fabric: Any, bridge: str, keep: str | None) -> None:
    """Move the host's NICs (every member not named under our prefix) off the
    bridge back into the host's namespace, except `keep`."""
    for member in netlink.bridge_members(fabric, bridge):
        if member != keep and not member.startswith(names.prefix):
            netlink.set_link(fabric, member, master=0)
            netlink.move_link(fabric, member, None)
            log.info("host interface %s moved back to the host's namespace", member)


def delete_network(names: Names, network_id: str) -> None:
    if netns.exists(names.fabric_netns):
        with netlink.netns(names.fabric_netns) as fabric:
            bridge = names.bridge(network_id)
            _release_host_links(names, fabric, bridge, keep=None)
            netlink.delete_link(fabric, names.vxlan(network_id))
            netlink.delete_link(fabric, bridge)


def observe_network(
    names: Names, network_id: str, spec: NetworkSpec, uplinks: Uplinks
) -> dict[str, object]:
    bridge = names.bridge(network_id)
    if not netns.exists(names.fabric_netns):
        return {
            "bridge": bridge,
            "present": False,
            "segment_link": _absent_link(names, network_id, spec, uplinks),
        }
    with netlink.netns(names.fabric_netns) as ns:
        state = netlink.link_state(ns, bridge)
        members = netlink.bridge_members(ns, bridge) if state is not None else []
        link = _observe_segment_link(ns, names, network_id, spec, uplinks, state)
    return {
        "bridge": bridge,
        "present": state is not None,
        "mtu": state.mtu if state else None,
        "up": state.up if state else False,
        "members": members,
        "segment_link": link,
    }


def _absent_link(
    names: Names, network_id: str, spec: NetworkSpec, uplinks: Uplinks
) -> dict[str, object] | None:
    if spec.segment.type == "vxlan":
        return {"kind": "vxlan", "name": names.vxlan(network_id), "present": False}
    if spec.segment.type == "flat":
        return {"kind": "physnet", "name": physnet_interface(spec, uplinks), "present": False}
    return None


def _observe_segment_link(
    ns: Any,
    names: Names,
    network_id: str,
    spec: NetworkSpec,
    uplinks: Uplinks,
    bridge: netlink.LinkState | None,
) -> dict[str, object] | None:
    """The segment's link beside the bridge, as found: the VXLAN device (its
    VNI, source, port and the remotes its FDB floods to) or the physnet NIC."""
    absent = _absent_link(names, network_id, spec, uplinks)
    if absent is None:
        return None
    name = absent["name"]
    state = netlink.link_state(ns, name) if isinstance(name, str) else None
    if state is None:
        return absent
    bridge_index = netlink.link_index(ns, names.bridge(network_id)) if bridge else None
    found: dict[str, object] = {
        **absent,
        "present": True,
        "up": state.up,
        "mtu": state.mtu,
        "on_bridge": bridge_index is not None and state.master == bridge_index,
    }
    if spec.segment.type == "vxlan":
        vxlan = netlink.vxlan_state(ns, names.vxlan(network_id))
        found.update(
            vni=vxlan.vni if vxlan else None,
            local=str(vxlan.local) if vxlan and vxlan.local else None,
            port=vxlan.port if vxlan else None,
            remotes=sorted(
                (str(r) for r in netlink.flood_remotes(ns, names.vxlan(network_id))),
            ),
        )
    else:
        found["physnet"] = spec.segment.physnet
    return found
