"""The operators' API under `/astara/v1`: projects and their credentials, and
the outbox event stream. Admin tokens only; the `astara` CLI speaks it."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, delete, literal, select
from sqlalchemy.orm import Session

from astara.api import fwaas, quotas, security_groups
from astara.api.auth import Caller, digest, new_token
from astara.api.bootstrap import ADMIN_PROJECT
from astara.api.errors import NeutronError
from astara.db import outbox
from astara.db.models import (
    AddressGroup,
    Credential,
    LoadBalancer,
    OutboxEvent,
    PausedProject,
    Project,
    Quota,
    QuotaLock,
    SecurityGroup,
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise NeutronError(403, "Forbidden", "This operation needs an admin token.")


def project_view(project: Project) -> dict[str, Any]:
    return {
        "id": project.id,
        "name": project.name,
        "admin": project.is_admin,
        "created_at": project.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def find_project(session: Session, name_or_id: str) -> Project:
    project = session.get(Project, name_or_id) or session.scalar(
        select(Project).where(Project.name == name_or_id)
    )
    if project is None:
        raise NeutronError(404, "ProjectNotFound", f"Project {name_or_id} could not be found.")
    return project


def create_project(
    session: Session, caller: Caller, body: Any, now: datetime
) -> tuple[Project, str]:
    """A project and its first token (returned once, stored hashed)."""
    require_admin(caller)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise NeutronError(400, "HTTPBadRequest", 'Body must be {"name": NAME, "admin": BOOL}')
    name, admin = body["name"], body.get("admin", False)
    if not _NAME.fullmatch(name):
        raise NeutronError(
            400, "HTTPBadRequest", "A project name is 1-64 letters, digits, '_', '.' or '-'"
        )
    if not isinstance(admin, bool):
        raise NeutronError(400, "HTTPBadRequest", "'admin' must be true or false")
    if session.scalar(select(Project).where(Project.name == name)) is not None:
        raise NeutronError(409, "ProjectExists", f"Project {name} already exists.")
    project = Project(id=uuid.uuid4().hex, name=name, is_admin=admin, created_at=now)
    session.add(project)
    session.flush()
    token = new_token()
    session.add(
        Credential(
            id=str(uuid.uuid4()), project_id=project.id, token_sha256=digest(token), created_at=now
        )
    )
    outbox.record(
        session,
        resource_type="project",
        resource_id=project.id,
        project_id=project.id,
        action="create",
        now=now,
    )
    return project, token


def list_projects(session: Session, caller: Caller) -> list[dict[str, Any]]:
    require_admin(caller)
    return [project_view(p) for p in session.scalars(select(Project).order_by(Project.name))]


def delete_project(session: Session, caller: Caller, name_or_id: str, now: datetime) -> None:
    require_admin(caller)
    project = find_project(session, name_or_id)
    if project.name == ADMIN_PROJECT:
        raise NeutronError(409, "ProjectInUse", "The admin project cannot be deleted.")
    used = quotas.used(session, project.id)
    default = session.get(SecurityGroup, security_groups.default_of(session, project.id) or "")
    if default is not None:
        # Made by the API on the project's first use, not by the project:
        # it goes with the project (unless a port still uses it).
        used["security_group"] -= 1
        used["security_group_rule"] -= len(default.rules)
    firewall = fwaas.default_parts(session, project.id)
    for kind, rows in firewall.items():
        used[kind] -= len(rows)
    used["address_group"] = len(
        session.scalars(select(AddressGroup.id).where(AddressGroup.project_id == project.id)).all()
    )
    used["load_balancer"] = len(
        session.scalars(select(LoadBalancer.id).where(LoadBalancer.project_id == project.id)).all()
    )
    owned = {name: n for name, n in used.items() if n}
    if owned:
        listed = ", ".join(f"{n} {name}(s)" for name, n in sorted(owned.items()))
        raise NeutronError(409, "ProjectInUse", f"Project {project.name} still owns {listed}.")
    if default is not None:
        security_groups.remove(session, default, now)
    fwaas.remove_default(session, project.id, now)
    session.execute(delete(Quota).where(Quota.project_id == project.id))
    session.execute(delete(QuotaLock).where(QuotaLock.project_id == project.id))
    session.execute(delete(Credential).where(Credential.project_id == project.id))
    # Or it stays paused for good: `project manage` cannot find it any more.
    session.execute(delete(PausedProject).where(PausedProject.project_id == project.id))
    session.delete(project)
    outbox.record(
        session,
        resource_type="project",
        resource_id=project.id,
        project_id=project.id,
        action="delete",
        now=now,
    )


def events(session: Session, caller: Caller, since: int, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` committed events after sequence `since` (any 64-bit
    value), oldest first."""
    require_admin(caller)
    # The column is INTEGER, 32-bit on PostgreSQL: a `since` bound with its
    # type would overflow there (a 500), so compare it as a BIGINT. (Unlike
    # `outbox.since`, whose callers only pass sequences they have read.)
    query = (
        select(OutboxEvent)
        .where(OutboxEvent.sequence > literal(since, BigInteger))
        .order_by(OutboxEvent.sequence)
        .limit(limit)
    )
    return [
        {
            "sequence": e.sequence,
            "resource_type": e.resource_type,
            "resource_id": e.resource_id,
            "project_id": e.project_id,
            "action": e.action,
            "detail": e.detail or {},
            "created_at": e.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for e in session.scalars(query)
    ]
