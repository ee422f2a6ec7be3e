"""What every route gets as a parameter instead of fetching itself: the
caller (authenticated by `authentication.Authentication` before routing), the
services the app was built with, and the request's transaction runner.

A route is written on an `authenticated_router()` and takes `TransactionDep`
(or `CallerDep`): both depend on the caller, so no route can run, nor touch
the database, for an unauthenticated request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from astara.api.auth import Caller, TokenCache, unauthorized
from astara.api.errors import NeutronError
from astara.api.http.transaction import run_transaction
from astara.api.settings import ApiSettings
from astara.naming import Names

T = TypeVar("T")

# Where the authentication middleware leaves the caller in the ASGI scope.
CALLER_KEY = "astara.caller"


def now() -> datetime:
    """The request's time, read once at the edge (whole seconds, naive UTC)."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


@dataclass(frozen=True)
class Services:
    """What `create_app` was given, for the routes (kept on `app.state`)."""

    sessions: sessionmaker[Session]
    agent: Any = None  # an AgentClient, or None
    orchestrator: Any = None  # an Orchestrator, or None
    # The deployment CA's hash (pki.ca_hash), for join tokens; None: no CA.
    ca_hash: str | None = None
    # The agent's naming, once it told us its prefix (see `operators.agent_names`).
    agent_names: list[Names] = field(default_factory=list)
    settings: ApiSettings = field(default_factory=ApiSettings)
    # Tokens found valid lately (`auth.TokenCache`): forgotten when a project goes.
    tokens: TokenCache = field(default_factory=TokenCache)


# The dependencies are coroutines, though they do no I/O: FastAPI runs a
# plain function dependency in the thread pool, a hand-off to another thread
# and back for each, per request (a third of a simple request's CPU).


async def services(request: Request) -> Services:
    found = request.app.state.services
    assert isinstance(found, Services)
    return found


async def authenticated_caller(request: Request) -> Caller:
    """The caller the middleware authenticated. Without one (a route served
    by an app without the middleware) the request is refused, not let in."""
    found = request.scope.get(CALLER_KEY)
    if not isinstance(found, Caller):
        raise unauthorized()
    return found


ServicesDep = Annotated[Services, Depends(services)]
CallerDep = Annotated[Caller, Depends(authenticated_caller)]


class Transaction:
    """Runs a request's work in one transaction in the thread pool; after a
    write, tells the orchestrator to look now."""

    def __init__(self, services: Services, caller: Caller, method: str) -> None:
        self.services, self.caller, self.method = services, caller, method

    async def __call__(self, work: Callable[[Session, Caller], T]) -> T:
        result = await run_in_threadpool(run_transaction, self.services.sessions, self.caller, work)
        if self.services.orchestrator is not None and self.method != "GET":
            self.services.orchestrator.poke()  # committed: the orchestrator looks now
        return result


async def transaction(request: Request, caller: CallerDep, found: ServicesDep) -> Transaction:
    return Transaction(found, caller, request.method)


TransactionDep = Annotated[Transaction, Depends(transaction)]


def authenticated_router(**options: Any) -> APIRouter:
    """An APIRouter whose every route needs an authenticated caller."""
    return APIRouter(dependencies=[Depends(authenticated_caller)], **options)


async def json_body(request: Request) -> Any:
    """The request's JSON body, parsed the Neutron way (400s, never 422s)."""
    raw = await request.body()
    if not raw:
        raise NeutronError(400, "HTTPBadRequest", "Resource body required")
    try:
        return json.loads(raw)
    except ValueError:
        raise NeutronError(400, "HTTPBadRequest", "Body contains invalid data") from None
