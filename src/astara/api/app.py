"""The tenant API: Neutron v2.0 on one FastAPI app.

Requests are parsed the Neutron way (`attributes.prepare_body`), not by
FastAPI's models, so that every error is a `NeutronError` with Neutron's
status and type. Database work runs in the thread pool, one transaction per
request; every write commits its outbox event in the same transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from astara import __version__
from astara.agent.client import AgentError
from astara.api import (
    admin,
    changes,
    floatingips,
    networks,
    operators,
    ports,
    quotas,
    routers,
    subnets,
)
from astara.api.attributes import Resource, bulk_members, prepare_body, select_fields
from astara.api.auth import Caller, authenticate
from astara.api.errors import NeutronError
from astara.api.extensions import EXTENSIONS
from astara.api.query import parse_query, run_query
from astara.db.engine import session_factory
from astara.naming import Names

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRIES = 20


def now() -> datetime:
    """The request's time, read once at the edge (whole seconds, naive UTC)."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def create_app(engine: Engine, agent: Any = None, orchestrator: Any = None) -> FastAPI:
    """The API; with `agent` (an AgentClient) `router show` includes what the
    appliance runs, and with `orchestrator` `cleanup` can run a resync now."""
    sessions = session_factory(engine)
    app = FastAPI(title="astara", version=__version__, description="Neutron v2.0 tenant API")

    @app.middleware("http")
    async def json_suffix(request: Request, call_next: Any) -> Any:
        """A trailing `.json` on a path is accepted and ignored (§1.1)."""
        path = request.scope["path"]
        if path.endswith(".json") and path.startswith("/v2.0/"):
            request.scope["path"] = path.removesuffix(".json")
        return await call_next(request)

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
        """Authenticate, then run `work` in one transaction in the thread pool.
        A transaction that loses a race on a unique constraint (two requests,
        one address), or whose row another writer deleted under it (the
        orchestrator dropping a router's record), runs again from the start,
        against the new state."""

        def transaction() -> T:
            for _ in range(RETRIES):
                try:
                    with sessions.begin() as session:
                        caller = authenticate(
                            session,
                            request.headers.get("x-auth-token"),
                            request.headers.get("authorization"),
                        )
                        return work(session, caller)
                except (IntegrityError, StaleDataError) as race:
                    log.debug("retrying after a lost race: %s", race)
                    continue
            raise NeutronError(409, "Conflict", "Too many concurrent changes; try again.")

        result = await run_in_threadpool(transaction)
        if orchestrator is not None and request.method != "GET":
            orchestrator.poke()  # committed: the orchestrator looks now
        return result

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
                for r in (
                    networks.RESOURCE,
                    subnets.RESOURCE,
                    ports.RESOURCE,
                    routers.RESOURCE,
                    floatingips.RESOURCE,
                )
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

    @app.get("/astara/v1/routers")
    async def operator_routers(request: Request) -> dict[str, Any]:
        return {"routers": await call(request, operators.list_routers)}

    @app.get("/astara/v1/routers/{router_id}")
    async def operator_router(request: Request, router_id: str) -> dict[str, Any]:
        shown: dict[str, Any] = await call(
            request, lambda s, c: operators.show_router(s, c, router_id)
        )
        shown["appliance"] = shown["rendered"] = None
        if agent is not None:
            try:
                shown["appliance"] = await run_in_threadpool(agent.get_appliance, shown["id"])
                shown["rendered"] = await run_in_threadpool(agent.rendered, shown["id"])
            except Exception as error:  # the agent's view is extra: show why it is missing
                shown["agent_error"] = str(error)
        return {"router": shown}

    @app.post("/astara/v1/routers/{router_id}/{action}")
    async def operator_router_action(request: Request, router_id: str, action: str) -> Any:
        shown = await call(
            request, lambda s, c: operators.router_request(s, c, router_id, action, now())
        )
        return {"router": shown}

    @app.post("/astara/v1/projects/{name_or_id}/{action}")
    async def operator_project_action(request: Request, name_or_id: str, action: str) -> Any:
        return await call(
            request, lambda s, c: operators.project_request(s, c, name_or_id, action, now())
        )

    agent_names: list[Names] = []  # the agent's naming, once it told us its prefix

    def names() -> Names | None:
        """The agent's naming (its prefix, from its health), to check a plug's
        namespace before it is stored; None without an agent or while it is away."""
        if agent is not None and not agent_names:
            try:
                agent_names.append(Names(agent.health()["prefix"]))
            except (AgentError, OSError, httpx.HTTPError, KeyError, TypeError, ValueError) as error:
                log.warning("the agent's prefix is unknown for now: %s", error)
        return agent_names[0] if agent_names else None

    @app.put("/astara/v1/ports/{port_id}/binding")
    async def operator_plug(request: Request, port_id: str) -> Any:
        body = await json_body(request)
        known = await run_in_threadpool(names)
        return {
            "binding": await call(
                request, lambda s, c: operators.plug(s, c, port_id, body, now(), known)
            )
        }

    @app.delete("/astara/v1/ports/{port_id}/binding", status_code=204)
    async def operator_unplug(request: Request, port_id: str) -> Response:
        await call(request, lambda s, c: operators.unplug(s, c, port_id, now()))
        return Response(status_code=204)

    @app.get("/astara/v1/orchestrator")
    async def orchestrator_status(request: Request) -> dict[str, Any]:
        await call(request, lambda s, c: admin.require_admin(c))
        if orchestrator is None:
            return {"orchestrator": None}
        return {"orchestrator": orchestrator.status()}

    @app.post("/astara/v1/cleanup")
    async def operator_cleanup(request: Request) -> dict[str, Any]:
        await call(request, lambda s, c: admin.require_admin(c))
        if orchestrator is None:
            raise NeutronError(409, "NoOrchestrator", "This server runs no orchestrator.")
        removed = await run_in_threadpool(orchestrator.cleanup)
        return {"removed": removed}

    for controller in (networks, subnets, ports, routers, floatingips):
        mount(app, controller, call, json_body)

    @app.get("/v2.0/quotas")
    async def list_quotas(request: Request) -> dict[str, Any]:
        result: dict[str, Any] = await call(request, quotas.listing)
        return result

    @app.post("/v2.0/quotas", status_code=501, include_in_schema=False)  # Neutron: 501
    async def create_quota(request: Request) -> dict[str, Any]:
        await call(request, lambda s, c: c)
        raise NeutronError(501, "HTTPNotImplemented", "Quotas are set with PUT, not created.")

    @app.get("/v2.0/quotas/project")
    async def own_quota_project(request: Request) -> dict[str, Any]:
        caller: Caller = await call(request, lambda s, c: c)
        return {"project": {"project_id": caller.project_id}}

    @app.get("/v2.0/quotas/tenant")
    async def own_quota_tenant(request: Request) -> dict[str, Any]:
        caller: Caller = await call(request, lambda s, c: c)
        return {"tenant": {"tenant_id": caller.project_id}}

    @app.get("/v2.0/quotas/{project_id}")
    async def show_quota(request: Request, project_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await call(request, lambda s, c: quotas.show(s, c, project_id))
        return result

    @app.get("/v2.0/quotas/{project_id}/default")
    async def default_quota(request: Request, project_id: str) -> dict[str, Any]:
        await call(request, lambda s, c: quotas.show(s, c, project_id))
        return {"quota": dict(quotas.DEFAULTS)}

    @app.get("/v2.0/quotas/{project_id}/details")
    async def quota_details(request: Request, project_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await call(request, lambda s, c: quotas.details(s, c, project_id))
        return result

    @app.put("/v2.0/quotas/{project_id}")
    async def update_quota(request: Request, project_id: str) -> dict[str, Any]:
        body = await json_body(request)
        result: dict[str, Any] = await call(
            request, lambda s, c: quotas.update(s, c, project_id, body)
        )
        return result

    @app.delete("/v2.0/quotas/{project_id}", status_code=204)
    async def reset_quota(request: Request, project_id: str) -> Response:
        await call(request, lambda s, c: quotas.reset(s, c, project_id))
        return Response(status_code=204)

    @app.put("/v2.0/routers/{router_id}/{action}")
    async def router_action(request: Request, router_id: str, action: str) -> dict[str, Any]:
        actions = {
            "add_router_interface": routers.add_interface,
            "remove_router_interface": routers.remove_interface,
        }
        if action not in actions:
            raise NeutronError(404, "HTTPNotFound", "The resource could not be found.")
        body = await json_body(request)
        result: dict[str, Any] = await call(
            request, lambda s, c: actions[action](s, c, router_id, body, now())
        )
        return result

    return app


class Controller(Protocol):
    """What a resource module provides (see `networks`, `subnets`)."""

    RESOURCE: Resource

    def view(self, row: Any) -> dict[str, Any]: ...
    def listing(self, session: Session, caller: Caller) -> list[dict[str, Any]]: ...
    def get(self, session: Session, caller: Caller, object_id: str) -> Any: ...
    def owned(self, session: Session, caller: Caller, object_id: str) -> Any: ...
    def create(
        self, session: Session, caller: Caller, values: dict[str, Any], now: datetime
    ) -> Any: ...
    def update(
        self, session: Session, caller: Caller, row: Any, values: dict[str, Any], now: datetime
    ) -> Any: ...
    def delete(self, session: Session, caller: Caller, row: Any, now: datetime) -> None: ...


MAX_TAGS = 50
TagChange = Callable[[set[str]], set[str]]


def valid_tags(tags: list[Any]) -> set[str]:
    """Tags are non-empty strings of at most 255 characters, 50 per resource."""
    for tag in tags:
        if not isinstance(tag, str) or not tag or len(tag) > 255 or "," in tag:
            raise NeutronError(400, "HTTPBadRequest", f"Invalid input: {tag!r} is not a valid tag")
    if len(set(tags)) > MAX_TAGS:
        raise NeutronError(400, "HTTPBadRequest", f"Invalid input: more than {MAX_TAGS} tags")
    return set(tags)


def tag_not_found(tag: str, object_id: str) -> NeutronError:
    return NeutronError(
        404, "TagNotFound", f"Tag {tag} could not be found for resource {object_id}."
    )


def if_match(request: Request) -> int | None:
    """The revision an `If-Match: revision_number=N` header constrains a change to."""
    header = request.headers.get("if-match")
    if header is None:
        return None
    key, _, number = header.strip().partition("=")
    if key.strip() != "revision_number" or not number.strip().isdigit():
        raise NeutronError(
            400, "HTTPBadRequest", f"Invalid If-Match header {header!r}: use revision_number=N"
        )
    return int(number)


def check_revision(row: Any, expected: int | None) -> None:
    if expected is not None and row.revision_number != expected:
        raise NeutronError(
            412,
            "HTTPPreconditionFailed",
            f"Constrained to {expected}, but current revision is {row.revision_number}",
        )


Call = Callable[[Request, Callable[[Session, Caller], Any]], Awaitable[Any]]
JsonBody = Callable[[Request], Awaitable[Any]]


def mount(app: FastAPI, controller: Controller, call: Call, json_body: JsonBody) -> None:
    """The five routes of one Neutron collection (§1.1)."""
    resource = controller.RESOURCE
    path = f"/v2.0/{resource.collection}"

    async def list_items(request: Request) -> dict[str, Any]:
        query = parse_query(resource, list(request.query_params.multi_items()))
        items = await call(request, controller.listing)
        body = run_query(resource, items, query, str(request.url))
        body[resource.collection] = [
            select_fields(i, query.fields) for i in body[resource.collection]
        ]
        return body

    async def create_item(request: Request) -> dict[str, Any]:
        """One member, or a bulk of them in one transaction: all or none."""
        body = await json_body(request)
        bulk = bulk_members(resource, body)

        def work(session: Session, caller: Caller) -> list[dict[str, Any]]:
            created = []
            for one in bulk if bulk is not None else [body]:
                values = prepare_body(
                    resource,
                    one,
                    method="POST",
                    project_id=caller.project_id,
                    is_admin=caller.is_admin,
                )
                quotas.check(session, resource.member, values["project_id"])
                row = controller.create(session, caller, values, now())
                session.flush()
                session.refresh(row)
                created.append(controller.view(row))
            return created

        created = await call(request, work)
        return {resource.collection: created} if bulk is not None else {resource.member: created[0]}

    async def show_item(request: Request, object_id: str) -> dict[str, Any]:
        fields = request.query_params.getlist("fields")
        shown = await call(request, lambda s, c: controller.view(controller.get(s, c, object_id)))
        return {resource.member: select_fields(shown, fields)}

    async def update_item(request: Request, object_id: str) -> dict[str, Any]:
        body = await json_body(request)
        expected = if_match(request)

        def work(session: Session, caller: Caller) -> dict[str, Any]:
            row = controller.owned(session, caller, object_id)
            check_revision(row, expected)
            values = prepare_body(
                resource, body, method="PUT", project_id=caller.project_id, is_admin=caller.is_admin
            )
            row = controller.update(session, caller, row, values, now())
            session.flush()
            return controller.view(row)

        return {resource.member: await call(request, work)}

    async def delete_item(request: Request, object_id: str) -> Response:
        if await request.body():
            raise NeutronError(400, "HTTPBadRequest", "Request body is not supported in DELETE.")
        expected = if_match(request)

        def work(session: Session, caller: Caller) -> None:
            row = controller.owned(session, caller, object_id)
            check_revision(row, expected)
            controller.delete(session, caller, row, now())

        await call(request, work)
        return Response(status_code=204)

    async def show_tags(request: Request, object_id: str) -> dict[str, Any]:
        row = await call(request, lambda s, c: controller.get(s, c, object_id))
        return {"tags": sorted(row.tags or [])}

    async def has_tag(request: Request, object_id: str, tag: str) -> Response:
        row = await call(request, lambda s, c: controller.get(s, c, object_id))
        if tag not in (row.tags or []):
            raise tag_not_found(tag, object_id)
        return Response(status_code=204)

    async def change_tags(request: Request, object_id: str, change: TagChange) -> list[str]:
        def work(session: Session, caller: Caller) -> list[str]:
            row = controller.owned(session, caller, object_id)
            tags = change(set(row.tags or []))
            if tags != set(row.tags or []):
                changes.update(session, resource.member, row, {"tags": sorted(tags)}, now())
            return sorted(tags)

        result: list[str] = await call(request, work)
        return result

    async def replace_tags(request: Request, object_id: str) -> dict[str, Any]:
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("tags"), list):
            raise NeutronError(400, "HTTPBadRequest", "Invalid input: expected {'tags': [...]}")
        wanted = valid_tags(body["tags"])
        return {"tags": await change_tags(request, object_id, lambda _: wanted)}

    async def add_tag(request: Request, object_id: str, tag: str) -> Response:
        (added,) = valid_tags([tag])
        await change_tags(request, object_id, lambda tags: valid_tags([*tags, added]))
        return Response(status_code=201)

    async def remove_tag(request: Request, object_id: str, tag: str) -> Response:
        def without(tags: set[str]) -> set[str]:
            if tag not in tags:
                raise tag_not_found(tag, object_id)
            return tags - {tag}

        await change_tags(request, object_id, without)
        return Response(status_code=204)

    async def remove_tags(request: Request, object_id: str) -> Response:
        await change_tags(request, object_id, lambda _: set())
        return Response(status_code=204)

    app.add_api_route(path, list_items, methods=["GET"])
    app.add_api_route(path, create_item, methods=["POST"], status_code=201)
    app.add_api_route(f"{path}/{{object_id}}", show_item, methods=["GET"])
    app.add_api_route(f"{path}/{{object_id}}", update_item, methods=["PUT"])
    app.add_api_route(f"{path}/{{object_id}}", delete_item, methods=["DELETE"], status_code=204)
    tags = f"{path}/{{object_id}}/tags"
    app.add_api_route(tags, show_tags, methods=["GET"])
    app.add_api_route(tags, replace_tags, methods=["PUT"])
    app.add_api_route(tags, remove_tags, methods=["DELETE"], status_code=204)
    app.add_api_route(f"{tags}/{{tag}}", has_tag, methods=["GET"], status_code=204)
    app.add_api_route(f"{tags}/{{tag}}", add_tag, methods=["PUT"], status_code=201)
    app.add_api_route(f"{tags}/{{tag}}", remove_tag, methods=["DELETE"], status_code=204)
