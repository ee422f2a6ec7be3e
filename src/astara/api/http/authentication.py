"""Authentication before anything else: a pure ASGI middleware.

It runs before routing, so an anonymous caller learns nothing from the
answer: every path and method, known or not, with any body or query string,
gets the same 401 until the token is right. (As a route dependency it would
come too late: FastAPI parses a route's declared body and query parameters
before it solves dependencies, and routing itself answers 404/405.)

Only `GET /` (and `HEAD /`) is open: the version document clients read
before they authenticate.

A token found valid is trusted a few seconds from `auth.TokenCache` (on the
event loop: no thread, no transaction); past that, or when the cache does
not know it, the database is asked again.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from astara.api.auth import Caller, Credentials, TokenCache, caller_of, credentials
from astara.api.errors import NeutronError
from astara.api.http.dependencies import CALLER_KEY

OPEN = frozenset({("GET", "/"), ("HEAD", "/")})


class Authentication:
    def __init__(
        self, app: ASGIApp, sessions: sessionmaker[Session], tokens: TokenCache | None = None
    ) -> None:
        self.app, self.sessions = app, sessions
        self.tokens = tokens if tokens is not None else TokenCache(ttl_s=0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in OPEN:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            presented = credentials(headers.get("x-auth-token"), headers.get("authorization"))
            caller = self.tokens.get(presented)
            if caller is None:
                # The token lookup is blocking database I/O: off the event loop.
                caller = await run_in_threadpool(self.lookup, presented)
        except NeutronError as refused:
            response = JSONResponse(status_code=refused.status, content=refused.body())
            await response(scope, receive, send)
            return
        scope[CALLER_KEY] = caller
        await self.app(scope, receive, send)

    def lookup(self, presented: Credentials) -> Caller:
        asked, generation = self.tokens.clock(), self.tokens.generation
        with self.sessions.begin() as session:
            caller = caller_of(session, presented)
        self.tokens.put(presented, caller, asked, generation)
        return caller
