"""Where an appliance runs (pure: no I/O).

A host can take appliances while it is alive (its heartbeats answer) and
not drained; once any live host has an underlay address (VXLAN), only
those with one: a host without could not reach the tenant networks of the
others (the single-host default has none, and is then the only host). Among
those, an appliance goes to a host in one of its
availability zone hints (any zone when it has none) that has every physnet
its flat networks need, with the fewest appliances (ties: by name, so a
placement is reproducible).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HostInfo:
    """What placement and the fabric need to know of a host."""

    name: str
    address: str
    underlay_address: str | None = None
    physnets: Mapping[str, str] = field(default_factory=dict)
    availability_zone: str = "nova"
    drained: bool = False
    alive: bool = True

    @property
    def schedulable(self) -> bool:
        return self.alive and not self.drained


def candidates(
    hosts: Iterable[HostInfo],
    *,
    hints: Collection[str] = (),
    physnets: Collection[str] = (),
    exclude: Collection[str] = (),
) -> list[HostInfo]:
    """Hosts that may take an appliance, in no particular order."""
    known = list(hosts)
    # Drained or not: a live host with an underlay carries tenant networks.
    overlay = any(host.underlay_address for host in known if host.alive)
    return [
        host
        for host in known
        if host.schedulable
        and (host.underlay_address or not overlay)
        and host.name not in exclude
        and (not hints or host.availability_zone in hints)
        and all(physnet in host.physnets for physnet in physnets)
    ]


def choose(
    hosts: Iterable[HostInfo],
    load: Mapping[str, int],
    *,
    hints: Collection[str] = (),
    physnets: Collection[str] = (),
    exclude: Collection[str] = (),
) -> HostInfo | None:
    """The host an appliance goes to (fewest appliances first), or None."""
    found = candidates(hosts, hints=hints, physnets=physnets, exclude=exclude)
    if not found:
        return None
    return min(found, key=lambda host: (load.get(host.name, 0), host.name))
