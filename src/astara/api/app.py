"""The tenant API: Neutron v2.0 on one FastAPI app.

Requests are parsed the Neutron way (`attributes.prepare_body`), not by
FastAPI's models, so that every error is a `NeutronError` with Neutron's
status and type. Every request but `GET /` is authenticated before routing
(`http.authentication`). Database work runs in the thread pool, one
transaction per request (`http.transaction`); every write commits its outbox
event in the same transaction.

The routes live in `astara.api.http`, one APIRouter per resource; this
module builds the app: services, middleware, error handlers, routers, and
`GET /metrics` (Prometheus text, `astara.metrics`: admins only, like the
operators' API) with every request's latency by route template.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, func, select
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from astara import __version__, metrics
from astara.api import (
    address_groups,
    firewall_groups,
    firewall_policies,
    firewall_rules,
    floatingips,
    networks,
    ports,
    routers,
    security_group_rules,
    security_groups,
    subnets,
)
from astara.api.admin import require_admin
from astara.api.auth import TokenCache
from astara.api.errors import NeutronError
from astara.api.http import (
    agents,
    hosts,
    join_tokens,
    l3_agents,
    lbaas,
    operators,
    quotas,
    versions,
)
from astara.api.http.authentication import Authentication
from astara.api.http.collection import WithSettings, collection_router
from astara.api.http.dependencies import CallerDep, Services, now
from astara.api.http.member_actions import action_router
from astara.api.http.transaction import internal_error
from astara.api.lbaas.errors import OctaviaError
from astara.api.settings import ApiSettings
from astara.db.engine import session_factory
from astara.db.models import ApplianceState
from astara.orchestrator.lifecycle import State

__all__ = ["create_app", "now"]

log = logging.getLogger(__name__)


class JsonSuffix:
    """A trailing `.json` on a `/v2.0/` path is accepted and ignored (§1.1)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path.endswith(".json") and path.startswith("/v2.0/"):
                scope = {**scope, "path": path.removesuffix(".json")}
        await self.app(scope, receive, send)


# The methods a label may carry (any other is "other": a caller cannot make series).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestLatency:
    """Every routed request's latency, by method and route template (the
    route's path as declared, `/v2.0/routers/{router_id}`, never the raw
    path: the label stays bounded whatever the callers send; `unmatched`
    when no route took it). Inside authentication: a refused request is
    not timed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            # The router records the route it matched in the scope it was given.
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in METHODS else "other"
            metrics.REQUEST_SECONDS.labels(method, template).observe(time.monotonic() - started)


def create_app(
    engine: Engine,
    agent: Any = None,
    orchestrator: Any = None,
    settings: ApiSettings | None = None,
    ca_hash: str | None = None,
    tokens: TokenCache | None = None,
) -> FastAPI:
    """The API; with `agent` (an AgentClient) `router show` includes what the
    appliance runs, with `orchestrator` `cleanup` can run a resync now, and
    with `ca_hash` (the deployment CA's, `pki.ca_hash`) admins make join
    tokens. `settings`: the deployment's VNI range and path MTU (defaults
    otherwise). `tokens`: the tokens found valid lately, trusted a while
    without the database (`auth.TokenCache`, by default for
    `auth.TOKEN_CACHE_S`)."""
    settings = settings or ApiSettings()
    tokens = tokens if tokens is not None else TokenCache()
    sessions = session_factory(engine)
    app = FastAPI(title="astara", version=__version__, description="Neutron v2.0 tenant API")
    app.state.services = Services(
        sessions, agent, orchestrator, settings=settings, ca_hash=ca_hash, tokens=tokens
    )
    # The last added runs first: authentication, before anything reads the request.
    app.add_middleware(RequestLatency)
    app.add_middleware(JsonSuffix)
    app.add_middleware(Authentication, sessions=sessions, tokens=tokens)

    @app.exception_handler(OctaviaError)
    async def octavia_error(_: Request, error: OctaviaError) -> JSONResponse:
        return JSONResponse(status_code=error.status, content=error.body())

    @app.exception_handler(NeutronError)
    async def neutron_error(_: Request, error: NeutronError) -> JSONResponse:
        return JSONResponse(status_code=error.status, content=error.body())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = {404: "HTTPNotFound", 405: "HTTPMethodNotAllowed"}.get(
            error.status_code, "HTTPError"
        )
        body = NeutronError(error.status_code, kind, str(error.detail)).body()
        return JSONResponse(status_code=error.status_code, content=body)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        """A declared query or path parameter that does not parse: name it and say why."""
        problems = [
            f"Invalid input for {problem['loc'][-1]}. Reason: {problem['msg']}."
            for problem in error.errors()
            if problem.get("loc")
        ]
        message = " ".join(problems) or "Invalid request"
        return JSONResponse(
            status_code=400, content=NeutronError(400, "HTTPBadRequest", message).body()
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        """Neutron's generic 500; the traceback goes to the log only."""
        log.error("unexpected error in a request", exc_info=error)
        failure = internal_error()
        return JSONResponse(status_code=failure.status, content=failure.body())

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics(caller: CallerDep) -> Response:
        """The control plane's metrics, for an admin (Prometheus sends the
        token as HTTP Basic, `basic_auth`, see docs/operations.md); the
        appliances by state read from the database now (one grouped count)."""
        require_admin(caller)
        with sessions.begin() as session:
            counts: dict[str, int] = dict(
                session.execute(
                    select(ApplianceState.state, func.count()).group_by(ApplianceState.state)
                ).all()
            )
        for state in State:
            metrics.APPLIANCES.labels(state.value).set(counts.get(state.value, 0))
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.include_router(versions.version_document)
    app.include_router(versions.router)
    app.include_router(operators.router)
    app.include_router(join_tokens.router)  # before hosts': /hosts/join-tokens
    app.include_router(hosts.router)
    app.include_router(collection_router(WithSettings(networks, settings)))
    app.include_router(collection_router(WithSettings(routers, settings)))
    for controller in (
        subnets,
        ports,
        floatingips,
        security_groups,
        security_group_rules,
        address_groups,
        firewall_rules,
        firewall_policies,
        firewall_groups,
    ):
        app.include_router(collection_router(controller))
    app.include_router(agents.router)
    app.include_router(l3_agents.router)
    app.include_router(quotas.router)
    for octavia in lbaas.routers():
        app.include_router(octavia)
    # After the collections: `PUT /v2.0/routers/{id}/tags` is a route of its own.
    app.include_router(
        action_router(
            "routers",
            {
                "add_router_interface": routers.add_interface,
                "remove_router_interface": routers.remove_interface,
            },
        )
    )
    app.include_router(
        action_router(
            address_groups.RESOURCE.url_path,
            {
                "add_addresses": address_groups.add_addresses,
                "remove_addresses": address_groups.remove_addresses,
            },
        )
    )
    app.include_router(
        action_router(
            firewall_policies.RESOURCE.url_path,
            {
                "insert_rule": firewall_policies.insert_rule,
                "remove_rule": firewall_policies.remove_rule,
            },
        )
    )
    return app
