"""The agent's port security: the security groups and address sets the
control plane pushes, and the chains of every plugged port that has
security (`astara.model.port_firewall` has the mechanism).

A group's rules changed: its one pair of chains is rewritten (the ports in
it jump there). A set's members changed: only its elements change (the
rules name the set), and the flows of the members that left are ended.
A port gets a small number (its 16 bits of the packet mark) when it is
first filtered, and each bridge a conntrack zone; both are kept in the
agent's store, so that a restart remakes the same chains.

Every method here is called with the agent's L2 lock held exclusively.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from astara.agent.store import JsonStore
from astara.fabric import firewall
from astara.linux.nft import NftRefused
from astara.linux.run import CommandError
from astara.model import port_firewall
from astara.model.fabric import AddressSetSpec, PortSpec, SecurityGroupSpec
from astara.naming import Names

log = logging.getLogger(__name__)

GROUPS, SETS = "security-groups", "address-sets"
_ALLOCATIONS = ("firewall", "allocations")


class SecurityInUse(ValueError):
    """An address set still named by a group's rules."""


class PortSecurityManager:
    def __init__(
        self, names: Names, store: JsonStore, ports: Callable[[], dict[str, PortSpec]]
    ) -> None:
        self.names, self.store, self.ports = names, store, ports
        # The sets and groups' chains the kernel holds now (made with the
        # first filtered port that needs them), in the fabric namespace
        # `_fabric` names: a new namespace (a restart's, a reboot's, one made
        # again after the last network went) holds none of them.
        self._in_kernel: set[str] = set()
        self._groups_in_kernel: set[str] = set()
        self._fabric: int | None = None

    # --- what is held ---------------------------------------------------------------------

    def group(self, group_id: str) -> SecurityGroupSpec | None:
        document = self.store.get(GROUPS, group_id)
        return None if document is None else SecurityGroupSpec.model_validate(document)

    def groups(self) -> dict[str, SecurityGroupSpec]:
        found = {g: self.group(g) for g in self.store.ids(GROUPS)}
        return {g: spec for g, spec in found.items() if spec is not None}

    def address_set(self, set_id: str) -> AddressSetSpec | None:
        document = self.store.get(SETS, set_id)
        return None if document is None else AddressSetSpec.model_validate(document)

    def _allocations(self) -> dict[str, dict[str, int]]:
        found = self.store.get(*_ALLOCATIONS) or {}
        return {"ports": dict(found.get("ports", {})), "zones": dict(found.get("zones", {}))}

    def _save_allocations(self, allocations: dict[str, dict[str, int]]) -> None:
        self.store.put(*_ALLOCATIONS, allocations)

    def observe(self, port_id: str) -> dict[str, Any] | None:
        index = self._allocations()["ports"].get(port_id)
        return None if index is None else {"index": index, "filtered": True}

    # --- groups and sets ------------------------------------------------------------------

    def put_group(self, group_id: str, spec: SecurityGroupSpec) -> bool:
        """Store the group; if its chains are in the kernel, rewrite them
        (first: a refused rewrite leaves the stored group as it was, and the
        next push tries again), and end its ports' flows, so that what the
        new rules no longer allow stops."""
        held = self.group(group_id)
        self._check_fabric()
        if held != spec and group_id in self._groups_in_kernel:
            sets = self._held(_sets_of(spec))
            script = self._sets_script(sets) + port_firewall.group(group_id, spec, sets)
            firewall.apply(self.names, script)
            self._in_kernel |= sets
            firewall.forget_zones(self.names, self._zones_of({group_id}))
        self.store.put(GROUPS, group_id, spec.model_dump(mode="json"))
        return held is None

    def delete_group(self, group_id: str) -> None:
        if self.group(group_id) is None:
            return
        self._check_fabric()
        if group_id in self._groups_in_kernel:
            users = self._zones_of({group_id})
            if users:  # its ports still jump there: emptied, it allows nothing
                firewall.apply(self.names, port_firewall.group(group_id, None, ()))
                firewall.forget_zones(self.names, users)
            else:
                firewall.apply(self.names, port_firewall.remove_group(group_id))
                self._groups_in_kernel.discard(group_id)
        self.store.delete(GROUPS, group_id)

    def put_set(self, set_id: str, spec: AddressSetSpec) -> bool:
        held = self.address_set(set_id)
        if held == spec:
            return False
        self._check_fabric()
        naming = {
            g: s
            for g, s in self.groups().items()
            if g in self._groups_in_kernel and set_id in _sets_of(s)
        }
        if set_id in self._in_kernel:
            firewall.apply(self.names, port_firewall.address_set(set_id, spec, held))
        elif naming:  # the rules naming it were left out until now
            script = port_firewall.address_set(set_id, spec)
            sets = self._in_kernel | {set_id}
            script += "".join(port_firewall.group(g, s, sets) for g, s in naming.items())
            firewall.apply(self.names, script)
            self._in_kernel.add(set_id)
        self.store.put(SETS, set_id, spec.model_dump(mode="json"))
        if held is not None and set_id in self._in_kernel:
            gone = {str(a) for a in held.addresses} - {str(a) for a in spec.addresses}
            firewall.forget_flows(self.names, gone)
        return held is None

    def delete_set(self, set_id: str) -> None:
        if self.address_set(set_id) is None:
            return
        users = [g for g, s in self.groups().items() if set_id in _sets_of(s)]
        if users:
            raise SecurityInUse(f"address set {set_id} is named by groups {', '.join(users)}")
        self._check_fabric()
        if set_id in self._in_kernel:
            firewall.apply(self.names, port_firewall.remove_address_set(set_id))
            self._in_kernel.discard(set_id)
        self.store.delete(SETS, set_id)

    # --- ports ----------------------------------------------------------------------------

    def port_changed(self, port_id: str, spec: PortSpec | None, changed: bool = False) -> None:
        """Before a port is plugged (`spec`: its chains made first, so its
        link is never up unfiltered) or after it is unplugged (None: its
        chains removed). `changed`: a plugged port's security changed, so
        its network's flows end (what is still allowed passes again)."""
        allocations = self._allocations()
        index = allocations["ports"].get(port_id)
        link = self.names.port_fabric_link(port_id)
        if spec is None or spec.security is None:
            if index is not None:
                self._check_fabric()
                if self._fabric is not None:
                    firewall.apply(self.names, port_firewall.remove_port(index, link))
                del allocations["ports"][port_id]
                self._save_allocations(allocations)
            return
        script = self._ready(allocations)
        if index is None:
            taken = set(allocations["ports"].values())
            index = next(i for i in range(1, port_firewall.MAX_PORTS + 2) if i not in taken)
            if index > port_firewall.MAX_PORTS:
                raise firewall.FirewallUnavailable(
                    f"more than {port_firewall.MAX_PORTS} filtered ports on this host"
                )
            allocations["ports"][port_id] = index
        bridge = self.names.bridge(spec.network_id)
        zone = allocations["zones"].get(bridge)
        if zone is None:
            taken = set(allocations["zones"].values())
            zone = next(i for i in range(1, 65536) if i not in taken)
            allocations["zones"][bridge] = zone
            script += port_firewall.zone(bridge, zone)
        missing = [g for g in spec.security.groups if g not in self._groups_in_kernel]
        specs = {g: self.group(g) for g in missing}
        sets = self._held(set().union(*(_sets_of(s) for s in specs.values() if s is not None)))
        script += self._sets_script(sets)
        script += "".join(
            port_firewall.group(g, s, self._in_kernel | sets) for g, s in specs.items()
        )
        script += port_firewall.port(index, link, spec.security)
        firewall.apply(self.names, script)
        self._in_kernel |= sets
        self._groups_in_kernel |= set(missing)
        self._save_allocations(allocations)
        if changed:
            firewall.forget_zones(self.names, [zone])

    def network_removed(self, network_id: str) -> None:
        allocations = self._allocations()
        bridge = self.names.bridge(network_id)
        zone = allocations["zones"].pop(bridge, None)
        if zone is not None:
            try:
                firewall.apply(self.names, port_firewall.remove_zone(bridge, zone))
            except (NftRefused, CommandError) as error:  # the tables went with a reboot
                log.info("zone %d of %s was not in the kernel: %s", zone, bridge, error)
            self._save_allocations(allocations)

    def restore(self) -> None:
        """After a restart (or a reboot: the kernel's tables gone), the zones
        and every filtered port's chains (with their groups and sets) made
        again; a port that fails is logged, and the others go on."""
        allocations = self._allocations()
        if not allocations["ports"] and not allocations["zones"]:
            return
        self._fabric = None
        firewall.apply(self.names, self._ready(allocations))
        ports = self.ports()
        for port_id in sorted(allocations["ports"]):
            try:
                self.port_changed(port_id, ports.get(port_id))
            except (NftRefused, CommandError, firewall.FirewallUnavailable) as error:
                log.error("port %s: its filter was not restored: %s", port_id, error)

    # --- helpers --------------------------------------------------------------------------

    def _check_fabric(self) -> None:
        """Forget what the kernel held if the fabric namespace is not the
        one it was made in (cheap: one stat)."""
        if self._fabric is not None and firewall.fabric_inode(self.names) != self._fabric:
            self._fabric = None
        if self._fabric is None:
            self._in_kernel.clear()
            self._groups_in_kernel.clear()

    def _ready(self, allocations: dict[str, dict[str, int]]) -> str:
        """The tables and hooks made; for a fabric namespace new to this
        manager, the script that makes every allocated zone again."""
        self._check_fabric()
        firewall.ensure(self.names)
        if self._fabric is not None:
            return ""
        self._fabric = firewall.fabric_inode(self.names)
        return "".join(port_firewall.zone(b, z) for b, z in allocations["zones"].items())

    def _held(self, set_ids: set[str]) -> set[str]:
        return {s for s in set_ids if self.address_set(s) is not None}

    def _zones_of(self, group_ids: set[str]) -> set[int]:
        """The conntrack zones of the filtered ports in any of `group_ids`."""
        allocations = self._allocations()
        return {
            allocations["zones"][bridge]
            for port_id, spec in self.ports().items()
            if port_id in allocations["ports"]
            and spec.security is not None
            and group_ids & set(spec.security.groups)
            and (bridge := self.names.bridge(spec.network_id)) in allocations["zones"]
        }

    def _sets_script(self, set_ids: set[str]) -> str:
        """Make the held sets of `set_ids` the kernel lacks (a set is only
        stored until a group's chains on this host name it)."""
        script = ""
        for set_id in sorted(set_ids - self._in_kernel):
            held = self.address_set(set_id)
            if held is not None:
                script += port_firewall.address_set(set_id, held)
        return script

    def remake_ports(self) -> None:
        """Every filtered port's chains made anew (what a design with the
        rules in each port's chain pays on every change: the benchmark's
        baseline)."""
        for port_id, spec in sorted(self.ports().items()):
            if port_id in self._allocations()["ports"]:
                self.port_changed(port_id, spec)


def _sets_of(group: SecurityGroupSpec) -> set[str]:
    return port_firewall.sets_of([group])
