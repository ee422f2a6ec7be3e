"""Who is calling: a project, from `X-Auth-Token` or HTTP Basic (project name
and token). Tokens are stored as SHA-256 digests only; clients never send a
project header, the credential says which project it is."""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.api.errors import NeutronError
from astara.db.models import Credential, Project


@dataclass(frozen=True)
class Caller:
    project_id: str
    project_name: str
    is_admin: bool


def new_token() -> str:
    """32 random bytes, URL-safe, never starting with '-' (a command line
    would take `--os-token -abc…` for an option: one token in 64 did)."""
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def unauthorized() -> NeutronError:
    return NeutronError(
        401, "HTTPUnauthorized", "Authentication required: a valid token is needed."
    )


def authenticate(session: Session, token_header: str | None, authorization: str | None) -> Caller:
    token, project_name = token_header, None
    if token is None and authorization and authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise unauthorized() from None
        project_name, _, token = decoded.partition(":")
    if not token:
        raise unauthorized()
    row = session.execute(
        select(Project)
        .join(Credential, Credential.project_id == Project.id)
        .where(Credential.token_sha256 == digest(token))
    ).scalar_one_or_none()
    if row is None or (project_name is not None and project_name != row.name):
        raise unauthorized()
    return Caller(row.id, row.name, row.is_admin)
