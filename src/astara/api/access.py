"""Who may change what: a project changes its own resources, an admin any.
Others' resources are not found, never forbidden (§5.2)."""

from __future__ import annotations

from typing import TypeVar

from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.db.models import StandardAttributes

Row = TypeVar("Row", bound=StandardAttributes)


def not_found(kind: str, object_id: str) -> NeutronError:
    return NeutronError(404, f"{kind}NotFound", f"{kind} {object_id} could not be found.")


def changeable(row: Row, caller: Caller, kind: str) -> Row:
    """`row` if the caller may change it, else the not-found error of `kind`."""
    if not caller.is_admin and row.project_id != caller.project_id:
        raise not_found(kind, row.id)
    return row
