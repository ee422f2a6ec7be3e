"""Availability zones. A deployment has none to choose from yet (hosts and
their zones come with the many-hosts work), so a hint can name no existing
zone: it is refused as Neutron refuses an unknown zone, rather than stored
and ignored."""

from __future__ import annotations

from typing import Any

from astara.api.attributes import bad_input
from astara.api.errors import NeutronError

ZONES: frozenset[str] = frozenset()  # the zones hosts are in: none yet


def hints(name: str, value: Any) -> list[str]:
    """`availability_zone_hints`: a list of zone names, each an existing zone."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise bad_input(name, f"'{value}' is not a list of availability zone names")
    for zone in value:
        if zone not in ZONES:
            raise NeutronError(
                404, "AvailabilityZoneNotFound", f"AvailabilityZone {zone} could not be found."
            )
    return list(dict.fromkeys(value))
