"""A port's security in the tenant API: its security groups, its allowed
address pairs, and how both depend on `port_security_enabled` (Neutron's
`port-security`, `security-group` and `allowed-address-pairs` extensions).

- A port names its groups, or gets its project's default group; a port of
  the service (`network:*` owners) gets none. Every group must be the port's
  project's.
- With port security off a port has no groups and no pairs: asking for them
  is refused (400 for groups, 409 for pairs), and so is turning it off while
  the port keeps them (409).
- A pair is an address or a CIDR, with a MAC (the port's when not given).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    delete,
    exists,
    insert,
    select,
)
from sqlalchemy.orm import Session

from astara.api import security_groups, sql_query
from astara.api.attributes import Converter, bad_input
from astara.api.errors import NeutronError
from astara.db.models import AllowedAddressPair, Port, PortSecurityGroup
from astara.model import rules

MAX_PAIRS = 10  # Neutron's max_allowed_address_pair


def _trusted(device_owner: str) -> bool:
    """The service's own ports (routers, DHCP, floating IPs): no groups."""
    return device_owner.startswith("network:")


def address_pairs(name: str, value: Any) -> list[dict[str, str | None]]:
    """Neutron's `_validate_allowed_address_pairs`, in its order."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise NeutronError(400, "HTTPBadRequest", "Allowed address pairs must be a list.")
    if len(value) > MAX_PAIRS:
        raise NeutronError(
            400,
            "AllowedAddressPairExhausted",
            f"The number of allowed address pair exceeds the maximum {MAX_PAIRS}.",
        )
    found: list[dict[str, str | None]] = []
    for pair in value:
        if not isinstance(pair, dict):
            raise bad_input(name, f"'{pair}' is not a dictionary")
        mac = pair.get("mac_address")
        if "mac_address" in pair:
            try:
                mac = rules.mac_address(mac) if isinstance(mac, str) else None
            except ValueError:
                mac = None
            if mac is None:
                raise NeutronError(
                    400, "HTTPBadRequest", f"'{pair['mac_address']}' is not a valid MAC address"
                )
        if "ip_address" not in pair:
            raise NeutronError(
                400, "AllowedAddressPairsMissingIP", "AllowedAddressPair must contain ip_address"
            )
        unknown = sorted(set(pair) - {"mac_address", "ip_address"})
        if unknown:
            raise NeutronError(
                400, "HTTPBadRequest", f"Unrecognized attribute(s) '{', '.join(unknown)}'"
            )
        found.append({"ip_address": _pair_address(pair["ip_address"]), "mac_address": mac})
        _unique(found)
    return found


def _unique(pairs: list[dict[str, str | None]]) -> None:
    """The last pair is none of the others (by address and MAC as stored)."""
    last = pairs[-1]
    if last in pairs[:-1]:
        raise NeutronError(
            400,
            "DuplicateAddressPairInRequest",
            f"Request contains duplicate address pair: mac_address {last['mac_address']}"
            f" ip_address {last['ip_address']}.",
        )


def _pair_address(value: Any) -> str:
    """An address pair's address as shown: a plain address, or a CIDR (its
    host bits kept, as neutron-lib's validate_subnet allows), canonical."""
    try:
        found = rules.prefix(value)
    except ValueError as error:
        raise NeutronError(400, "HTTPBadRequest", str(error)) from None
    return found if "/" in str(value) else found.partition("/")[0]


GROUPS: Converter = security_groups.uuid_list


@dataclass(frozen=True)
class Security:
    """What a port's security is to be, worked out from a request."""

    groups: list[str]
    pairs: list[dict[str, str]]


def _refuse_groups() -> NeutronError:
    return NeutronError(
        400,
        "PortSecurityAndIPRequiredForSecurityGroups",
        "Port security must be enabled and port must have an IP address in order to use"
        " security groups.",
    )


def _refuse_pairs() -> NeutronError:
    return NeutronError(
        409,
        "AddressPairAndPortSecurityRequired",
        "Port Security must be enabled in order to have allowed address pairs on a port.",
    )


def for_new_port(session: Session, port: Port, values: dict[str, Any]) -> Security:
    """A new port's groups and pairs (`values["security_groups"]` and
    `["allowed_address_pairs"]` None when not given)."""
    wanted_groups, wanted_pairs = values["security_groups"], values["allowed_address_pairs"]
    if not port.port_security_enabled:
        if wanted_pairs:
            raise _refuse_pairs()
        if wanted_groups:
            raise _refuse_groups()
        return Security([], [])
    if _trusted(port.device_owner):
        groups = []  # the service's own ports: no groups, whatever is asked (Neutron's)
    elif wanted_groups is None:
        default = security_groups.ensure_default(session, port.project_id, port.created_at)
        groups = [default] if default is not None else []
    else:
        groups = security_groups.port_groups(session, port.project_id, wanted_groups)
    return Security(groups, _with_macs(wanted_pairs or [], port.mac_address))


def _with_macs(pairs: list[dict[str, str | None]], mac: str) -> list[dict[str, str]]:
    """The pairs with the port's MAC where they name none (then unique again)."""
    found: list[dict[str, str | None]] = []
    for pair in pairs:
        found.append({"ip_address": pair["ip_address"], "mac_address": pair["mac_address"] or mac})
        _unique(found)
    return [
        {"ip_address": str(p["ip_address"]), "mac_address": str(p["mac_address"])} for p in found
    ]


def write(session: Session, port_id: str, security: Security) -> None:
    """A new port's rows (Core inserts: the port was written so too)."""
    if security.groups:
        session.execute(
            insert(PortSecurityGroup),
            [{"port_id": port_id, "security_group_id": g} for g in security.groups],
        )
    if security.pairs:
        session.execute(
            insert(AllowedAddressPair),
            [{"port_id": port_id, "position": i, **pair} for i, pair in enumerate(security.pairs)],
        )


def update(session: Session, port: Port, values: dict[str, Any]) -> None:
    """Apply a port update's `port_security_enabled`, `security_groups` and
    `allowed_address_pairs` (popped from `values`), checked together."""
    if not {"port_security_enabled", "security_groups", "allowed_address_pairs"} & set(values):
        return
    enabled = values.pop("port_security_enabled", port.port_security_enabled)
    groups = groups_of(session, [port.id]).get(port.id, [])
    groups_given = "security_groups" in values
    if groups_given:
        groups = security_groups.port_groups(
            session, port.project_id, values.pop("security_groups") or []
        )
    pairs = pairs_of(session, [port.id]).get(port.id, [])
    pairs_given = "allowed_address_pairs" in values
    if pairs_given:
        pairs = _with_macs(values.pop("allowed_address_pairs") or [], port.mac_address)
    if _trusted(port.device_owner):
        groups = []
    if not enabled:
        if pairs:
            raise _refuse_pairs()
        if groups and groups_given:
            raise _refuse_groups()
        if groups:
            raise NeutronError(
                409,
                "PortSecurityPortHasSecurityGroup",
                "Port has security group associated. Cannot disable port security or ip"
                " address until security group is removed",
            )
    values["port_security_enabled"] = enabled
    if groups_given:
        session.execute(delete(PortSecurityGroup).where(PortSecurityGroup.port_id == port.id))
        write(session, port.id, Security(groups, []))
    if pairs_given:
        session.execute(delete(AllowedAddressPair).where(AllowedAddressPair.port_id == port.id))
        write(session, port.id, Security([], pairs))


def _ids(port_ids: Iterable[str] | Select[Any]) -> Any:
    """Port ids given as ids, or as the statement that selects them."""
    return port_ids if isinstance(port_ids, Select) else list(port_ids)


def groups_of(session: Session, port_ids: Iterable[str] | Select[Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    rows = session.execute(
        select(PortSecurityGroup.port_id, PortSecurityGroup.security_group_id)
        .where(PortSecurityGroup.port_id.in_(_ids(port_ids)))
        .order_by(PortSecurityGroup.port_id, PortSecurityGroup.security_group_id)
    )
    for port_id, group_id in rows:
        found.setdefault(port_id, []).append(group_id)
    return found


def pairs_of(
    session: Session, port_ids: Iterable[str] | Select[Any]
) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {}
    rows = session.execute(
        select(
            AllowedAddressPair.port_id,
            AllowedAddressPair.ip_address,
            AllowedAddressPair.mac_address,
        )
        .where(AllowedAddressPair.port_id.in_(_ids(port_ids)))
        .order_by(AllowedAddressPair.port_id, AllowedAddressPair.position)
    )
    for port_id, address, mac in rows:
        found.setdefault(port_id, []).append({"ip_address": address, "mac_address": mac})
    return found


def with_group(wanted: list[Any]) -> ColumnElement[bool]:
    """The ports list's `security_groups` filter: bound to one of them."""
    return exists().where(
        PortSecurityGroup.port_id == Port.id, PortSecurityGroup.security_group_id.in_(wanted)
    )


def groups_json() -> Any:
    """A port's `security_groups` as JSON text, in PostgreSQL (as `groups_of` orders them)."""
    return sql_query.json_array(
        sql_query.json_string(PortSecurityGroup.security_group_id),
        PortSecurityGroup.security_group_id,
        PortSecurityGroup.port_id == Port.id,
    )


def pairs_json() -> Any:
    """A port's `allowed_address_pairs` as JSON text, in PostgreSQL."""
    text, string = sql_query.sql_text, sql_query.json_string
    entry = (
        text('{"ip_address":')
        + string(AllowedAddressPair.ip_address)
        + text(',"mac_address":')
        + string(AllowedAddressPair.mac_address)
        + text("}")
    )
    return sql_query.json_array(
        entry, AllowedAddressPair.position, AllowedAddressPair.port_id == Port.id
    )
