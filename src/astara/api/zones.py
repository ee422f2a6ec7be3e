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
from astara.db.models import ApplianceState, Host, ha_member, ha_member_id

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


def of_appliance(session: Session, appliance_id: str) -> list[str]:
    """A router's `availability_zones`: the zones of the hosts its appliance
    (or, an HA router, its members) are placed on ([] while none is placed,
    or their hosts are gone)."""
    return of_appliances(session, [appliance_id]).get(appliance_id, [])


CHUNK = 500  # ids per `IN (...)`: well under every backend's limit on parameters


def of_appliances(session: Session, appliance_ids: list[str]) -> dict[str, list[str]]:
    """`of_appliance` for many routers at once: id -> `availability_zones`
    (absent: not placed)."""
    found: dict[str, set[str]] = {}
    ids = [a for r in appliance_ids for a in (r, *(ha_member_id(r, slot) for slot in (0, 1)))]
    for start in range(0, len(ids), CHUNK):
        rows = session.execute(
            select(ApplianceState.appliance_id, Host.availability_zone)
            .join(Host, Host.name == ApplianceState.host)
            .where(ApplianceState.appliance_id.in_(ids[start : start + CHUNK]))
        )
        for appliance_id, zone in rows:
            router_id, _ = ha_member(appliance_id) or (appliance_id, 0)
            found.setdefault(router_id, set()).add(zone)
    return {router_id: sorted(zones) for router_id, zones in found.items()}
