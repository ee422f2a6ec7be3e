"""The tenant API: Neutron v2.0 on one FastAPI app.

Requests are parsed the Neutron way (`attributes.prepare_body`), not by
FastAPI's models, so that every error is a `NeutronError` with Neutron's
status and type. Database work runs in the thread pool, one transaction per
request; every write commits its outbox event in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from astara import __version__
from astara.api import admin, networks
from astara.api.attributes import Resource, prepare_body, select_fields
from astara.api.auth import Caller, authenticate
from astara.api.errors import NeutronError
from astara.api.extensions import EXTENSIONS
from astara.api.query import parse_query, run_query
from astara.db.engine import session_factory

T = TypeVar("T")


def now() -> datetime:
    """The request's time, read once at the edge (whole seconds, naive UTC)."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def create_app(engine: Engine) -> FastAPI:
    sessions = session_factory(engine)
    app = FastAPI(title="astara", version=__version__, description="Neutron v2.0 tenant API")

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
        return JSONResponse(
            status_code=400, content=NeutronError(400, "HTTPBadRequest", "Invalid request").body()
        )

    async def call(request: Request, work: Callable[[Session, Caller], T]) -> T:
        """Authenticate, then run `work` in one transaction in the thread pool."""

        def transaction() -> T:
            with sessions.begin() as session:
                caller = authenticate(
                    session,
                    request.headers.get("x-auth-token"),
                    request.headers.get("authorization"),
                )
                return work(session, caller)

        return await run_in_threadpool(transaction)

    async def json_body(request: Request) -> Any:
        raw = await request.body()
        if not raw:
            raise NeutronError(400, "HTTPBadRequest", "Resource body required")
        try:
            return json.loads(raw)
        except ValueError:
            raise NeutronError(400, "HTTPBadRequest", "Body contains invalid data") from None

    @app.get("/")
    def versions(request: Request) -> dict[str, Any]:
        base = str(request.base_url).rstrip("/")
        return {
            "versions": [
                {
                    "id": "v2.0",
                    "status": "CURRENT",
                    "links": [{"rel": "self", "href": f"{base}/v2.0/"}],
                }
            ]
        }

    @app.get("/v2.0/")
    async def resources(request: Request) -> dict[str, Any]:
        await call(request, lambda s, c: None)
        base = str(request.base_url).rstrip("/")
        return {
            "resources": [
                {
                    "name": r.member,
                    "collection": r.collection,
                    "links": [{"rel": "self", "href": f"{base}/v2.0/{r.collection}"}],
                }
                for r in (networks.NETWORKS,)
            ]
        }

    @app.get("/v2.0/extensions")
    async def extensions(request: Request) -> dict[str, Any]:
        await call(request, lambda s, c: None)
        return {"extensions": list(EXTENSIONS.values())}

    @app.get("/v2.0/extensions/{alias}")
    async def extension(request: Request, alias: str) -> dict[str, Any]:
        await call(request, lambda s, c: None)
        if alias not in EXTENSIONS:
            raise NeutronError(404, "HTTPNotFound", f"Extension with alias {alias} does not exist")
        return {"extension": EXTENSIONS[alias]}

    # --- the operators' API ------------------------------------------------------------

    @app.post("/astara/v1/projects", status_code=201)
    async def create_project(request: Request) -> dict[str, Any]:
        body = await json_body(request)

        def work(session: Session, caller: Caller) -> dict[str, Any]:
            project, token = admin.create_project(session, caller, body, now())
            return {"project": admin.project_view(project), "token": token}

        return await call(request, work)

    @app.get("/astara/v1/projects")
    async def list_projects(request: Request) -> dict[str, Any]:
        return {"projects": await call(request, admin.list_projects)}

    @app.delete("/astara/v1/projects/{name_or_id}", status_code=204)
    async def delete_project(request: Request, name_or_id: str) -> Response:
        await call(request, lambda s, c: admin.delete_project(s, c, name_or_id, now()))
        return Response(status_code=204)

    @app.get("/astara/v1/events")
    async def list_events(request: Request, since: int = 0, limit: int = 1000) -> dict[str, Any]:
        return {"events": await call(request, lambda s, c: admin.events(s, c, since, limit))}

    # --- networks ------------------------------------------------------------------------

    resource: Resource = networks.NETWORKS

    @app.get("/v2.0/networks")
    async def list_networks(request: Request) -> dict[str, Any]:
        query = parse_query(resource, list(request.query_params.multi_items()))
        items = await call(request, networks.listing)
        body = run_query(resource, items, query, str(request.url))
        body[resource.collection] = [
            select_fields(i, query.fields) for i in body[resource.collection]
        ]
        return body

    @app.post("/v2.0/networks", status_code=201)
    async def create_network(request: Request) -> dict[str, Any]:
        body = await json_body(request)

        def work(session: Session, caller: Caller) -> dict[str, Any]:
            values = prepare_body(
                resource,
                body,
                method="POST",
                project_id=caller.project_id,
                is_admin=caller.is_admin,
            )
            network = networks.create(session, caller, values, now())
            session.flush()
            session.refresh(network)
            return networks.view(network)

        return {resource.member: await call(request, work)}

    @app.get("/v2.0/networks/{network_id}")
    async def show_network(request: Request, network_id: str) -> dict[str, Any]:
        fields = request.query_params.getlist("fields")
        shown = await call(request, lambda s, c: networks.view(networks.get(s, c, network_id)))
        return {resource.member: select_fields(shown, fields)}

    @app.put("/v2.0/networks/{network_id}")
    async def update_network(request: Request, network_id: str) -> dict[str, Any]:
        body = await json_body(request)

        def work(session: Session, caller: Caller) -> dict[str, Any]:
            network = networks.owned(session, caller, network_id)
            values = prepare_body(
                resource, body, method="PUT", project_id=caller.project_id, is_admin=caller.is_admin
            )
            return networks.view(networks.update(session, caller, network, values, now()))

        return {resource.member: await call(request, work)}

    @app.delete("/v2.0/networks/{network_id}", status_code=204)
    async def delete_network(request: Request, network_id: str) -> Response:
        if await request.body():
            raise NeutronError(400, "HTTPBadRequest", "Request body is not supported in DELETE.")
        await call(
            request, lambda s, c: networks.delete(s, c, networks.owned(s, c, network_id), now())
        )
        return Response(status_code=204)

    return app
