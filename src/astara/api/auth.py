"""Who is calling: a project, from `X-Auth-Token` or HTTP Basic (project name
and token). Tokens are stored as SHA-256 digests only; clients never send a
project header, the credential says which project it is.

A token found valid is trusted for `TOKEN_CACHE_S` seconds without asking
the database again (`TokenCache`, by the token's digest): a token revoked
(its project deleted, its credential removed) stops working at most that
long after, in every API process; at once in the process that deleted the
project (it forgets every cached token). A wrong token is never cached.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import bindparam, select
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


# Seconds a token found valid is trusted without the database: the bound on
# how long a revoked token keeps working in another API process.
TOKEN_CACHE_S = 5.0
TOKEN_CACHE_SIZE = 4096

# Key: (the token's digest, the project name HTTP Basic gave, or None).
Credentials = tuple[str, str | None]


def credentials(token_header: str | None, authorization: str | None) -> Credentials:
    """The token's digest and the project name (HTTP Basic only) a request
    presents; 401 when it presents none."""
    token, project_name = token_header, None
    if token is None and authorization and authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise unauthorized() from None
        project_name, _, token = decoded.partition(":")
    if not token:
        raise unauthorized()
    return digest(token), project_name


_BY_DIGEST = (
    select(Project.id, Project.name, Project.is_admin)
    .join(Credential, Credential.project_id == Project.id)
    .where(Credential.token_sha256 == bindparam("token_sha256"))
)


def caller_of(session: Session, presented: Credentials) -> Caller:
    token_sha256, project_name = presented
    row = session.execute(_BY_DIGEST, {"token_sha256": token_sha256}).one_or_none()
    if row is None or (project_name is not None and project_name != row.name):
        raise unauthorized()
    return Caller(row.id, row.name, row.is_admin)


def authenticate(session: Session, token_header: str | None, authorization: str | None) -> Caller:
    return caller_of(session, credentials(token_header, authorization))


class TokenCache:
    """The callers of tokens found valid in the last `ttl_s` seconds (at
    most `size`, the least recently used go first). Thread-safe."""

    def __init__(
        self,
        ttl_s: float = TOKEN_CACHE_S,
        size: int = TOKEN_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.size, self.clock = ttl_s, size, clock
        self._found: OrderedDict[Credentials, tuple[float, Caller]] = OrderedDict()
        self._lock = threading.Lock()
        # Moved by `clear`: a lookup that began before it is not kept.
        self.generation = 0

    def get(self, presented: Credentials) -> Caller | None:
        with self._lock:
            found = self._found.get(presented)
            if found is None:
                return None
            if self.clock() >= found[0]:
                del self._found[presented]
                return None
            self._found.move_to_end(presented)
            return found[1]

    def put(
        self, presented: Credentials, caller: Caller, since: float, generation: int | None = None
    ) -> None:
        """Trust `caller` until `ttl_s` after `since`, the clock's time when
        the database was asked (not when it answered); not if the cache was
        cleared since `generation` was read (before the database was asked:
        its answer may predate the delete that cleared it)."""
        if self.ttl_s <= 0:
            return
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            self._found[presented] = (since + self.ttl_s, caller)
            self._found.move_to_end(presented)
            while len(self._found) > self.size:
                self._found.popitem(last=False)

    def clear(self) -> None:
        """Forget every token (a project was deleted here)."""
        with self._lock:
            self._found.clear()
            self.generation += 1
