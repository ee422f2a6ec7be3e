"""The operators' API, `/astara/v1` (admin tokens; the `astara` CLI speaks
it): projects, the event stream, routers, load balancers and every appliance
and projects under maintenance, port binding, the orchestrator's status and
cleanup."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import httpx
from fastapi import Query, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from astara.agent.client import AgentError
from astara.api import admin, operators, plugs
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.api.http.dependencies import (
    CallerDep,
    Services,
    ServicesDep,
    TransactionDep,
    authenticated_router,
    json_body,
    now,
)
from astara.naming import Names

log = logging.getLogger(__name__)

router = authenticated_router(prefix="/astara/v1")

# Event sequences are 64-bit integers in the database: a larger `since` would
# overflow the query (a 500), a negative one means nothing.
MAX_SEQUENCE = 2**63 - 1
MAX_EVENTS = 1000  # per call, as the docs promise


@router.post("/projects", status_code=201)
async def create_project(request: Request, run: TransactionDep) -> dict[str, Any]:
    body = await json_body(request)

    def work(session: Session, caller: Caller) -> dict[str, Any]:
        project, token = admin.create_project(session, caller, body, now())
        return {"project": admin.project_view(project), "token": token}

    return await run(work)


@router.get("/projects")
async def list_projects(run: TransactionDep) -> dict[str, Any]:
    return {"projects": await run(admin.list_projects)}


@router.delete("/projects/{name_or_id}", status_code=204)
async def delete_project(name_or_id: str, run: TransactionDep, found: ServicesDep) -> Response:
    await run(lambda s, c: admin.delete_project(s, c, name_or_id, now()))
    found.tokens.clear()  # its tokens stop working here at once (others: auth.TOKEN_CACHE_S)
    return Response(status_code=204)


@router.get("/events")
async def list_events(
    run: TransactionDep,
    since: Annotated[int, Query(ge=0, le=MAX_SEQUENCE)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = MAX_EVENTS,
) -> dict[str, Any]:
    return {"events": await run(lambda s, c: admin.events(s, c, since, limit))}


async def with_agent_view(shown: dict[str, Any], appliance_id: str, found: Services) -> None:
    """Add what the agent shows of the appliance: its observed state and the
    exact texts it runs (extra: when the agent cannot say, say why)."""
    shown["appliance"] = shown["rendered"] = None
    agent = await run_in_threadpool(appliance_agent, found, shown.get("host"))
    if isinstance(agent, str):
        shown["agent_error"] = agent
    elif agent is not None:
        try:
            shown["appliance"] = await run_in_threadpool(
                lambda: agent.request("GET", f"/v1/appliances/{appliance_id}", timeout_s=10)
            )
            shown["rendered"] = await run_in_threadpool(
                lambda: agent.request(
                    "GET", f"/v1/appliances/{appliance_id}/rendered", timeout_s=10
                )
            )
        except (AgentError, OSError, httpx.HTTPError) as error:
            shown["agent_error"] = str(error)


def appliance_agent(found: Services, host_name: str | None) -> Any:
    """The agent of the host an appliance is placed on (the orchestrator
    knows the hosts), else the local agent; a string saying why not when
    its host is down (not asked: it would not answer)."""
    if found.orchestrator is not None and host_name:
        host = found.orchestrator.hosts.infos().get(host_name)
        if host is not None and not host.alive:
            return f"host {host_name} is down"
        if host is not None:
            return found.orchestrator.hosts.client(host)
    return found.agent


@router.post("/routers/{router_id}/move")
async def move_router(request: Request, router_id: str, run: TransactionDep) -> Any:
    """Move a router's appliance to another host: body {"host": NAME}."""
    body = await json_body(request)
    shown = await run(lambda s, c: operators.move_router(s, c, router_id, body, now()))
    return {"router": shown}


def appliance_routes(
    collection: str,
    member: str,
    listing: Callable[[Session, Caller], list[dict[str, Any]]],
    showing: Callable[[Session, Caller, str], dict[str, Any]],
    acting: Callable[[Session, Caller, str, str, datetime], dict[str, Any]],
) -> None:
    """One kind's `GET /COLLECTION`, `GET /COLLECTION/{id}` (with what the
    agent shows of its appliance, whose id the view's `appliance_id` holds)
    and `POST /COLLECTION/{id}/{rebuild,debug,manage}`."""

    async def list_all(run: TransactionDep) -> dict[str, Any]:
        return {collection: await run(listing)}

    async def show(object_id: str, run: TransactionDep, found: ServicesDep) -> dict[str, Any]:
        shown: dict[str, Any] = await run(lambda s, c: showing(s, c, object_id))
        await with_agent_view(shown, shown["appliance_id"], found)
        return {member: shown}

    async def act(object_id: str, action: str, run: TransactionDep) -> dict[str, Any]:
        return {member: await run(lambda s, c: acting(s, c, object_id, action, now()))}

    router.get(f"/{collection}", name=f"list_{collection}")(list_all)
    router.get(f"/{collection}/{{object_id}}", name=f"show_{member}")(show)
    router.post(f"/{collection}/{{object_id}}/{{action}}", name=f"{member}_action")(act)


# After `/routers/{id}/move`: a route matches in the order it was added.
appliance_routes(
    "routers",
    "router",
    operators.list_routers,
    operators.show_router,
    operators.router_request,
)
appliance_routes(
    "loadbalancers",
    "loadbalancer",
    operators.list_balancers,
    operators.show_balancer,
    operators.balancer_request,
)
appliance_routes(
    "appliances",
    "appliance",
    operators.list_appliances,
    operators.show_appliance,
    operators.appliance_request,
)


@router.post("/projects/{name_or_id}/{action}")
async def project_action(name_or_id: str, action: str, run: TransactionDep) -> Any:
    return await run(lambda s, c: operators.project_request(s, c, name_or_id, action, now()))


def agent_names(found: Services) -> Names | None:
    """The agent's naming (its prefix, from its health), to check a plug's
    namespace before it is stored; None without an agent or while it is away."""
    if found.agent is not None and not found.agent_names:
        try:
            found.agent_names.append(Names(found.agent.health()["prefix"]))
        except (AgentError, OSError, httpx.HTTPError, KeyError, TypeError, ValueError) as error:
            log.warning("the agent's prefix is unknown for now: %s", error)
    return found.agent_names[0] if found.agent_names else None


def host_names(found: Services, host: Any) -> Names | None:
    """The naming of the host a port is plugged on: a joined host's agent
    says its prefix (asked each time: plugs are rare); no host named, the
    local agent's. None while it cannot say (the agent checks it anyway)."""
    if not isinstance(host, str) or found.orchestrator is None:
        return agent_names(found)
    agent = appliance_agent(found, host)
    if agent is None or isinstance(agent, str) or agent is found.agent:
        return agent_names(found)
    try:
        return Names(agent.health(timeout_s=5)["prefix"])
    except (AgentError, OSError, httpx.HTTPError, KeyError, TypeError, ValueError) as error:
        log.warning("host %s: its agent's prefix is unknown for now: %s", host, error)
        return None


@router.put("/ports/{port_id}/binding")
async def plug(request: Request, port_id: str, run: TransactionDep, found: ServicesDep) -> Any:
    body = await json_body(request)
    host = body.get("host") if isinstance(body, dict) else None
    known = await run_in_threadpool(host_names, found, host)
    return {"binding": await run(lambda s, c: plugs.plug(s, c, port_id, body, now(), known))}


@router.delete("/ports/{port_id}/binding", status_code=204)
async def unplug(port_id: str, run: TransactionDep) -> Response:
    await run(lambda s, c: plugs.unplug(s, c, port_id, now()))
    return Response(status_code=204)


@router.get("/orchestrator")
async def orchestrator_status(caller: CallerDep, found: ServicesDep) -> dict[str, Any]:
    admin.require_admin(caller)
    if found.orchestrator is None:
        return {"orchestrator": None}
    return {"orchestrator": found.orchestrator.status()}


@router.post("/cleanup")
async def cleanup(caller: CallerDep, found: ServicesDep) -> dict[str, Any]:
    admin.require_admin(caller)
    if found.orchestrator is None:
        raise NeutronError(409, "NoOrchestrator", "This server runs no orchestrator.")
    removed = await run_in_threadpool(found.orchestrator.cleanup)
    return {"removed": removed}
