"""Which database errors mean "another request won a race" (run again) and
which are real errors (report once).

Two concurrent requests can both see an address, a MAC, a project's first
quota-lock row... as free and both insert it; the database's unique
constraint lets one commit and fails the other. Run again, the loser sees the
new state and either picks another value or answers the domain's own error
(409 `IpAddressGenerationFailure`, `ProjectExists`, ...). Any other integrity
error (a NOT NULL, a foreign key, a unique constraint no request races on)
would fail the same way every time: retrying only hides it.

Classification is by constraint name, identical on both backends: PostgreSQL
reports it (`diag.constraint_name`); SQLite reports the table and columns
(`UNIQUE constraint failed: t.a, t.b`), mapped to the name the metadata's
naming convention gives that constraint (what the migrations created).
"""

from __future__ import annotations

import enum
import hashlib
import sqlite3
from dataclasses import dataclass

import psycopg
from sqlalchemy import PrimaryKeyConstraint, UniqueConstraint
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError

from astara.db.models import Base


class Constraint(enum.Enum):
    """The kind of constraint an insert or update broke."""

    UNIQUE = "unique"  # a unique constraint or a primary key
    FOREIGN_KEY = "foreign_key"
    NOT_NULL = "not_null"
    OTHER = "other"


@dataclass(frozen=True)
class Violation:
    constraint: Constraint
    name: str | None  # the constraint's name, when the database says which

    @property
    def lost_race(self) -> bool:
        return self.constraint is Constraint.UNIQUE and self.name in RACES


# The unique constraints two concurrent requests can collide on, each one
# checked in code first so that the retry answers the domain's error.
RACES = frozenset(
    {
        "uq_ip_allocations_subnet_id_ip_address",  # two ports, one address
        "uq_ports_network_id_mac_address",  # two ports, one MAC
        "uq_floating_ips_floating_network_id_floating_ip_address",  # two FIPs, one address
        "uq_floating_ips_fixed_port_id_fixed_ip_address_floating_network_id",  # two FIPs, one IP
        "uq_router_ports_port_id",  # one port attached to two routers at once
        "uq_projects_name",  # two projects created with one name
        "pk_quota_locks",  # a project's first two creates insert its lock row
        "pk_quotas",  # two quota updates both add a limit row
        "pk_port_bindings",  # one port plugged twice at once
        "pk_paused_projects",  # one project paused twice at once
        "pk_appliance_states",  # an appliance's state row: an operator and the orchestrator
        "uq_networks_segment",  # two networks, one VNI
        "uq_networks_physnet",  # two flat networks, one physnet
        "pk_default_security_groups",  # a project's first two requests make its default group
        "pk_default_firewall_groups",  # a project's first two FWaaS requests make its default
        "pk_ha_networks",  # a project's first two HA routers make its HA network
        "pk_firewall_group_ports",  # one router port put in two firewall groups at once
        "pk_firewall_policy_rules",  # one rule inserted into one policy twice at once
    }
)


def _unique_names() -> dict[tuple[str, tuple[str, ...]], str]:
    names = {}
    for table in Base.metadata.tables.values():
        for constraint in table.constraints:
            if isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint) and isinstance(
                constraint.name, str
            ):
                columns = tuple(column.name for column in constraint.columns)
                names[(table.name, columns)] = constraint.name
    return names


_UNIQUE_NAMES = _unique_names()
# A renamed table or constraint must not silently drop out of the races.
assert set(_UNIQUE_NAMES.values()) >= RACES, RACES - set(_UNIQUE_NAMES.values())

POSTGRES_MAX_IDENTIFIER = 63


def postgres_name(name: str) -> str:
    """The name PostgreSQL knows a constraint by: SQLAlchemy shortens a longer
    one than PostgreSQL allows to its head and a hash of the whole."""
    if len(name) <= POSTGRES_MAX_IDENTIFIER:
        return name
    return f"{name[: POSTGRES_MAX_IDENTIFIER - 8]}_{hashlib.md5(name.encode()).hexdigest()[-4:]}"


_FROM_POSTGRES = {postgres_name(name): name for name in _UNIQUE_NAMES.values()}

# PostgreSQL's SQLSTATE codes (class 23, integrity constraint violation).
_POSTGRES_KINDS = {
    "23505": Constraint.UNIQUE,
    "23503": Constraint.FOREIGN_KEY,
    "23502": Constraint.NOT_NULL,
}

# SQLite's extended result codes, by name (Python's sqlite3 exposes them).
_SQLITE_KINDS = {
    "SQLITE_CONSTRAINT_UNIQUE": Constraint.UNIQUE,
    "SQLITE_CONSTRAINT_PRIMARYKEY": Constraint.UNIQUE,
    "SQLITE_CONSTRAINT_FOREIGNKEY": Constraint.FOREIGN_KEY,
    "SQLITE_CONSTRAINT_NOTNULL": Constraint.NOT_NULL,
}


def postgres_violation(sqlstate: str | None, constraint_name: str | None) -> Violation:
    name = _FROM_POSTGRES.get(constraint_name or "", constraint_name)
    return Violation(_POSTGRES_KINDS.get(sqlstate or "", Constraint.OTHER), name)


def sqlite_violation(error_name: str, message: str) -> Violation:
    """From SQLite's code and message, e.g. `SQLITE_CONSTRAINT_UNIQUE` and
    `UNIQUE constraint failed: ip_allocations.subnet_id, ip_allocations.ip_address`."""
    kind = _SQLITE_KINDS.get(error_name, Constraint.OTHER)
    if kind is not Constraint.UNIQUE:
        return Violation(kind, None)
    _, _, listed = message.partition(":")
    qualified = [column.strip().partition(".") for column in listed.split(",")]
    tables = {table for table, _, _ in qualified}
    if len(tables) != 1 or not all(column for _, _, column in qualified):
        return Violation(kind, None)
    columns = tuple(column for _, _, column in qualified)
    return Violation(kind, _UNIQUE_NAMES.get((tables.pop(), columns)))


def violation(error: IntegrityError) -> Violation:
    """What `error` broke, on either backend."""
    original = error.orig
    if isinstance(original, psycopg.Error):
        return postgres_violation(original.sqlstate, original.diag.constraint_name)
    if isinstance(original, sqlite3.Error):
        return sqlite_violation(original.sqlite_errorname, str(original))
    return Violation(Constraint.OTHER, None)


DEADLOCK_DETECTED = "40P01"
SERIALIZATION_FAILURE = "40001"


def is_lost_race(error: BaseException) -> bool:
    """True for what a fresh run of the same transaction can get past: a
    unique constraint concurrent requests collide on, a row another writer
    changed or deleted under this one (`StaleDataError`), or a deadlock
    PostgreSQL broke by ending this transaction."""
    if isinstance(error, StaleDataError):
        return True
    if isinstance(error, OperationalError) and isinstance(error.orig, psycopg.Error):
        # PostgreSQL ended the transaction to break a deadlock, or a
        # serialization failure: the transaction may run again as it is.
        return error.orig.sqlstate in (DEADLOCK_DETECTED, SERIALIZATION_FAILURE)
    return isinstance(error, IntegrityError) and violation(error).lost_race
