"""Availability zones (Neutron's `availability_zone` extension): the zones
the hosts are in (`Host.availability_zone`, each agent's
`--availability-zone`), for routers (where their appliances may be placed)
and networks. A zone is "available" while an alive, undrained host is in it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.api.attributes import Attribute, Resource, bad_input
from astara.api.errors import NeutronError
from astara.db.models import ApplianceState, Host

RESOURCE = Resource(
    "availability_zones",
    "availability_zone",
    (
        Attribute("name", allow_post=False, allow_put=False),
        Attribute("resource", allow_post=False, allow_put=False),
        Attribute("state", allow_post=False, allow_put=False),
    ),
)
RESOURCES = ("network", "router")
AZ_HINTS_MAX = 255  # Neutron keeps the hints joined in one column of this length


def names(name: str, value: Any) -> list[str]:
    """`availability_zone_hints`: a list of zone names (each checked to exist
    by `check`, which needs the database)."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise bad_input(name, f"'{value}' is not a list of availability zone names")
    if len(",".join(value)) > AZ_HINTS_MAX:
        raise bad_input(name, f"'{value}' is longer than {AZ_HINTS_MAX} characters in all")
    return list(dict.fromkeys(value))


def known(session: Session) -> set[str]:
    """Every zone a host is in (alive or not, drained or not)."""
    return set(session.scalars(select(Host.availability_zone)))


def check(session: Session, hints: list[str]) -> list[str]:
    """`hints` if each names a zone some host is in, else Neutron's 404."""
    zones = known(session) if hints else set()
    for zone in hints:
        if zone not in zones:
            raise NeutronError(
                404, "AvailabilityZoneNotFound", f"AvailabilityZone {zone} could not be found."
            )
    return hints


def listing(session: Session) -> list[dict[str, Any]]:
    """`GET /v2.0/availability_zones`: each zone once per resource type."""
    available: dict[str, bool] = {}
    for host in session.scalars(select(Host)):
        up = host.alive and not host.drained
        available[host.availability_zone] = available.get(host.availability_zone, False) or up
    return [
        {"name": zone, "resource": resource, "state": "available" if up else "unavailable"}
        for zone, up in sorted(available.items())
        for resource in RESOURCES
    ]


CHUNK = 500  # ids per `IN (...)`: well under every backend's limit on parameters


def of_appliances(session: Session, appliance_ids: list[str]) -> dict[str, list[str]]:
    """The zone of the host each appliance is placed on: id -> [zone]
    (absent: not placed, or its host is gone). A router's
    `availability_zones` are its appliances' (`routers.appliance_ids`)."""
    found: dict[str, list[str]] = {}
    for start in range(0, len(appliance_ids), CHUNK):
        rows = session.execute(
            select(ApplianceState.appliance_id, Host.availability_zone)
            .join(Host, Host.name == ApplianceState.host)
            .where(ApplianceState.appliance_id.in_(appliance_ids[start : start + CHUNK]))
        )
        for appliance_id, zone in rows:
            found[appliance_id] = [zone]
    return found
