"""Neutron address groups: `/v2.0/address-groups`, with the member actions
`add_addresses` and `remove_addresses` (neutron-lib's `address-group`).

A named set of CIDRs that security group rules refer to
(`remote_address_group_id`); the fabric holds each as one named set, so a
change of its addresses is a change of set elements, not of rules. A group
a rule refers to is in use and cannot be deleted.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, selectinload

from astara.api import access, changes, sql_query
from astara.api.attributes import Attribute, Resource, bad_input, standard_attributes
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.db.models import AddressGroup, AddressGroupAddress, SecurityGroupRule
from astara.model import rules

# A set in the fabric holds at most this many elements per group (each is a
# range in an interval set): far beyond what a person types.
MAX_ADDRESSES = 10_000


def address_list(name: str, value: Any) -> list[str]:
    """CIDRs as Neutron stores them: each the network of what was given (a
    plain address a host prefix), repeats merged, in the order given."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_input(name, f"'{value}' is not a list")
    if len(value) > MAX_ADDRESSES:
        raise bad_input(name, f"more than {MAX_ADDRESSES} addresses")
    found: dict[str, None] = {}
    for item in value:
        try:
            found[rules.prefix(item, network=True)] = None
        except ValueError as error:
            raise bad_input(name, str(error)) from None
    return list(found)


RESOURCE = Resource(
    "address_groups",
    "address_group",
    (
        *standard_attributes(),
        Attribute("name", default=""),
        Attribute(
            "addresses", address_list, default=None, allow_put=False, filter=False, sort=False
        ),
    ),
    path="address-groups",
)


def not_found(group_id: str) -> NeutronError:
    return NeutronError(
        404, "AddressGroupNotFound", f"Address group {group_id} could not be found."
    )


def view(group: AddressGroup) -> dict[str, Any]:
    return {
        **changes.standard_view(group),
        "name": group.name,
        "addresses": [a.address for a in group.addresses],
    }


def get(session: Session, caller: Caller, group_id: str) -> AddressGroup:
    return access.project_row(session, caller, AddressGroup, group_id, not_found)


owned = get


LISTING = sql_query.Listing(
    resource=RESOURCE,
    model=AddressGroup,
    statement=access.project_rows(AddressGroup),
    views=sql_query.orm_views(view, selectinload(AddressGroup.addresses)),
    columns={**sql_query.standard_columns(AddressGroup), "name": AddressGroup.name},
)


def create(session: Session, caller: Caller, values: dict[str, Any], now: datetime) -> AddressGroup:
    group = AddressGroup(
        id=str(uuid.uuid4()),
        project_id=values["project_id"],
        name=values["name"],
        description=values["description"],
        created_at=now,
        updated_at=now,
        revision_number=1,
        tags=[],
    )
    group.addresses = [AddressGroupAddress(address=a) for a in values["addresses"] or []]
    session.add(group)
    session.flush()
    changes.record(session, "address_group", group, "create", now)
    return group


def update(
    session: Session, caller: Caller, group: AddressGroup, values: dict[str, Any], now: datetime
) -> AddressGroup:
    changes.update(session, "address_group", group, values, now)
    return group


def delete(session: Session, caller: Caller, group: AddressGroup, now: datetime) -> None:
    used = select(exists().where(SecurityGroupRule.remote_address_group_id == group.id))
    if session.scalar(used):
        raise NeutronError(
            409,
            "AddressGroupInUse",
            f"Address group {group.id} is in use on one or more security group rules.",
        )
    session.delete(group)
    session.flush()
    changes.record(session, "address_group", group, "delete", now)


def _addresses_of(body: Any) -> list[str]:
    if not isinstance(body, dict) or set(body) != {"addresses"}:
        raise NeutronError(400, "HTTPBadRequest", "Invalid input: expected {'addresses': [...]}")
    return address_list("addresses", body["addresses"])


def add_addresses(
    session: Session, caller: Caller, group_id: str, body: Any, now: datetime
) -> dict[str, Any]:
    group = get(session, caller, group_id)
    wanted = _addresses_of(body)
    have = {a.address for a in group.addresses}
    already = [a for a in wanted if a in have]
    if already:
        raise NeutronError(
            400,
            "AddressesAlreadyExist",
            f"Addresses {already} already exist in the address group {group.id}.",
        )
    if len(have) + len(wanted) > MAX_ADDRESSES:
        raise bad_input("addresses", f"more than {MAX_ADDRESSES} addresses in the group")
    group.addresses.extend(AddressGroupAddress(address=a) for a in wanted)
    changes.update(session, "address_group", group, {}, now)
    session.flush()
    return {"address_group": view(group)}


def remove_addresses(
    session: Session, caller: Caller, group_id: str, body: Any, now: datetime
) -> dict[str, Any]:
    group = get(session, caller, group_id)
    wanted = set(_addresses_of(body))
    have = {a.address for a in group.addresses}
    missing = sorted(wanted - have)
    if missing:
        raise NeutronError(
            404,
            "AddressesNotFound",
            f"Addresses {missing} not found in the address group {group.id}.",
        )
    group.addresses = [a for a in group.addresses if a.address not in wanted]
    changes.update(session, "address_group", group, {}, now)
    session.flush()
    return {"address_group": view(group)}
