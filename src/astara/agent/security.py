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
        # first filtered port that needs them; all again after a restart).
        self._in_kernel: set[str] = set()
        self._groups_in_kernel: set[str] = set()

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
        held = self.group(group_id)
        self.store.put(GROUPS, group_id, spec.model_dump(mode="json"))
        if held != spec and group_id in self._groups_in_kernel:
            script = self._sets_script(_sets_of(spec))
            firewall.apply(
                self.names, script + port_firewall.group(group_id, spec, self._in_kernel)
            )
        return held is None

    def delete_group(self, group_id: str) -> None:
        if self.group(group_id) is None:
            return
        self.store.delete(GROUPS, group_id)
        if group_id not in self._groups_in_kernel:
            return
        users = [
            p
            for p, spec in self.ports().items()
            if spec.security is not None and group_id in spec.security.groups
        ]
        if users:  # its ports still jump there: emptied, it allows nothing
            firewall.apply(self.names, port_firewall.group(group_id, None, ()))
            return
        firewall.apply(self.names, port_firewall.remove_group(group_id))
        self._groups_in_kernel.discard(group_id)

    def put_set(self, set_id: str, spec: AddressSetSpec) -> bool:
        held = self.address_set(set_id)
        if held == spec:
            return False
        if set_id in self._in_kernel:
            firewall.apply(self.names, port_firewall.address_set(set_id, spec, held))
            if held is not None:
                gone = {str(a) for a in held.addresses} - {str(a) for a in spec.addresses}
                firewall.forget_flows(self.names, gone)
        self.store.put(SETS, set_id, spec.model_dump(mode="json"))
        naming = {
            g: s
            for g, s in self.groups().items()
            if g in self._groups_in_kernel and set_id in _sets_of(s)
        }
        if set_id not in self._in_kernel and naming:  # their rules were left out until now
            script = self._sets_script({set_id})
            script += "".join(
                port_firewall.group(g, s, self._in_kernel | {set_id}) for g, s in naming.items()
            )
            firewall.apply(self.names, script)
            self._in_kernel.add(set_id)
        return held is None

    def delete_set(self, set_id: str) -> None:
        if self.address_set(set_id) is None:
            return
        users = [g for g, s in self.groups().items() if set_id in _sets_of(s)]
        if users:
            raise SecurityInUse(f"address set {set_id} is named by groups {', '.join(users)}")
        self.store.delete(SETS, set_id)
        if set_id in self._in_kernel:
            firewall.apply(self.names, port_firewall.remove_address_set(set_id))
            self._in_kernel.discard(set_id)

    # --- ports ----------------------------------------------------------------------------

    def port_changed(self, port_id: str, spec: PortSpec | None) -> None:
        """After a port is plugged (`spec`) or unplugged (None): its chains
        made, remade or removed."""
        allocations = self._allocations()
        index = allocations["ports"].get(port_id)
        link = self.names.port_fabric_link(port_id)
        if spec is None or spec.security is None:
            if index is not None:
                firewall.apply(self.names, port_firewall.remove_port(index, link))
                del allocations["ports"][port_id]
                self._save_allocations(allocations)
            return
        firewall.ensure(self.names)
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
        script = ""
        if zone is None:
            taken = set(allocations["zones"].values())
            zone = next(i for i in range(1, 65536) if i not in taken)
            allocations["zones"][bridge] = zone
            script += port_firewall.zone(bridge, zone)
        missing = [g for g in spec.security.groups if g not in self._groups_in_kernel]
        specs = {g: self.group(g) for g in missing}
        sets = set().union(*(_sets_of(s) for s in specs.values() if s is not None))
        script += self._sets_script(sets)
        held_sets = self._in_kernel | {s for s in sets if self.address_set(s) is not None}
        script += "".join(port_firewall.group(g, s, held_sets) for g, s in specs.items())
        script += port_firewall.port(index, link, spec.security)
        firewall.apply(self.names, script)
        self._in_kernel = held_sets
        self._groups_in_kernel |= set(missing)
        self._save_allocations(allocations)

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
        """After a restart (or a reboot: the kernel's tables gone), every
        held set, zone and filtered port's chains made again."""
        allocations = self._allocations()
        if not allocations["ports"]:
            return
        firewall.ensure(self.names)
        self._in_kernel.clear()
        self._groups_in_kernel.clear()
        script = "".join(port_firewall.zone(b, z) for b, z in allocations["zones"].items())
        firewall.apply(self.names, script)
        ports = self.ports()
        for port_id in list(allocations["ports"]):
            self.port_changed(port_id, ports.get(port_id))

    # --- helpers --------------------------------------------------------------------------

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
