"""Who may change what: a project changes its own resources, an admin any.
What a caller cannot see is not found; what it can see (a shared or external
network of another project) but may not change is forbidden (§5.2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.db.models import StandardAttributes

Row = TypeVar("Row", bound=StandardAttributes)


def not_found(kind: str, object_id: str) -> NeutronError:
    return NeutronError(404, f"{kind}NotFound", f"{kind} {object_id} could not be found.")


def forbidden(action: str) -> NeutronError:
    return NeutronError(403, "PolicyNotAuthorized", f"({action}) is disallowed by policy")


def changeable(row: Row, caller: Caller, kind: str) -> Row:
    """`row` (which the caller can see) if the caller may change it, else 403."""
    if not caller.is_admin and row.project_id != caller.project_id:
        raise forbidden(f"rule:update_{kind.lower()}")
    return row


def project_row(
    session: Session,
    caller: Caller,
    model: type[Row],
    object_id: str,
    missing: Callable[[str], NeutronError],
) -> Row:
    """A project's own object (any, for an admin), or `missing(object_id)`:
    another project's is not found, as one that does not exist."""
    row = session.get(model, object_id)
    if row is None or not (caller.is_admin or row.project_id == caller.project_id):
        raise missing(object_id)
    return row


def project_rows(model: type[Row]) -> Callable[[Caller], Select[Row]]:
    """A list's visible rows of a resource only its project (and admins) see."""

    def statement(caller: Caller) -> Select[Row]:
        rows = select(model)
        return rows if caller.is_admin else rows.where(model.project_id == caller.project_id)

    return statement
