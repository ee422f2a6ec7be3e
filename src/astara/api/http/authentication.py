"""Authentication before anything else: a pure ASGI middleware.

It runs before routing, so an anonymous caller learns nothing from the
answer: every path and method, known or not, with any body or query string,
gets the same 401 until the token is right. (As a route dependency it would
come too late: FastAPI parses a route's declared body and query parameters
before it solves dependencies, and routing itself answers 404/405.)

Only `GET /` (and `HEAD /`) is open: the version document clients read
before they authenticate.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from astara.api.auth import Caller, authenticate
from astara.api.errors import NeutronError
from astara.api.http.dependencies import CALLER_KEY

OPEN = frozenset({("GET", "/"), ("HEAD", "/")})


class Authentication:
    def __init__(self, app: ASGIApp, sessions: sessionmaker[Session]) -> None:
        self.app, self.sessions = app, sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in OPEN:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            # The token lookup is blocking database I/O: off the event loop.
            caller = await run_in_threadpool(
                self.lookup, headers.get("x-auth-token"), headers.get("authorization")
            )
        except NeutronError as refused:
            response = JSONResponse(status_code=refused.status, content=refused.body())
            await response(scope, receive, send)
            return
        scope[CALLER_KEY] = caller
        await self.app(scope, receive, send)

    def lookup(self, token: str | None, authorization: str | None) -> Caller:
        with self.sessions.begin() as session:
            return authenticate(session, token, authorization)
