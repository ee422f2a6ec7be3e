"""Neutron's `/v2.0/agents` (one per host, admins only) and
`/v2.0/availability_zones` (the hosts' zones)."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import Request, Response
from sqlalchemy.orm import Session

from astara.api import agents, zones
from astara.api.attributes import prepare_body, select_fields
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.api.http.dependencies import TransactionDep, authenticated_router, json_body, now
from astara.api.query import parse_query, run_query

router = authenticated_router(prefix="/v2.0")


@router.get("/agents")
async def list_agents(request: Request, run: TransactionDep) -> dict[str, Any]:
    query = parse_query(agents.RESOURCE, list(request.query_params.multi_items()))
    body = run_query(agents.RESOURCE, await run(agents.listing), query, str(request.url))
    body["agents"] = [select_fields(a, query.fields) for a in body["agents"]]
    return body


@router.get("/agents/{agent_id}")
async def show_agent(request: Request, agent_id: str, run: TransactionDep) -> dict[str, Any]:
    fields = request.query_params.getlist("fields")
    shown = await run(lambda s, c: agents.view(s, agents.get(s, c, agent_id)))
    return {"agent": select_fields(shown, fields)}


@router.put("/agents/{agent_id}")
async def update_agent(request: Request, agent_id: str, run: TransactionDep) -> dict[str, Any]:
    body = await json_body(request)

    def work(session: Session, caller: Caller) -> dict[str, Any]:
        agents.get(session, caller, agent_id)  # a non-admin: 404 before the body's checks
        values = prepare_body(
            agents.RESOURCE, body, method="PUT", project_id=caller.project_id, is_admin=True
        )
        return agents.update(session, caller, agent_id, values, now())

    return {"agent": await run(work)}


@router.delete("/agents/{agent_id}", status_code=204)
async def delete_agent(request: Request, agent_id: str, run: TransactionDep) -> Response:
    if await request.body():
        raise NeutronError(400, "HTTPBadRequest", "Request body is not supported in DELETE.")
    await run(lambda s, c: agents.delete(s, c, agent_id, now()))
    return Response(status_code=204)


@router.get("/availability_zones")
async def list_zones(request: Request, run: TransactionDep) -> dict[str, Any]:
    """Every caller may list them (Neutron: `get_availability_zone` is open)."""
    query = parse_query(zones.RESOURCE, list(request.query_params.multi_items()))
    # Zones have no id to page by; the list is short: never paginated.
    query = dataclasses.replace(query, limit=0, marker=None)
    found = await run(lambda s, c: zones.listing(s))
    body = run_query(zones.RESOURCE, found, query, str(request.url))
    body["availability_zones"] = [
        select_fields(z, query.fields) for z in body["availability_zones"]
    ]
    return body
