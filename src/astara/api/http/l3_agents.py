"""Neutron's `l3_agent_scheduler` sub-resources: `/v2.0/routers/{id}/l3-agents`
and `/v2.0/agents/{id}/l3-routers` (admins only; manual scheduling refused)."""

from __future__ import annotations

from typing import Any

from fastapi import Response

from astara.api import l3_agents
from astara.api.http.dependencies import TransactionDep, authenticated_router

router = authenticated_router(prefix="/v2.0")


@router.get("/routers/{router_id}/l3-agents")
async def list_hosting_agents(router_id: str, run: TransactionDep) -> dict[str, Any]:
    return {"agents": await run(lambda s, c: l3_agents.hosting(s, c, router_id))}


@router.get("/agents/{agent_id}/l3-routers")
async def list_agent_routers(agent_id: str, run: TransactionDep) -> dict[str, Any]:
    return {"routers": await run(lambda s, c: l3_agents.routers_on(s, c, agent_id))}


@router.post("/agents/{agent_id}/l3-routers")
async def add_router_to_agent(agent_id: str, run: TransactionDep) -> Response:
    raise await run(lambda s, c: l3_agents.scheduling_refused(s, c, agent_id, "create_l3-router"))


@router.delete("/agents/{agent_id}/l3-routers/{router_id}")
async def remove_router_from_agent(agent_id: str, router_id: str, run: TransactionDep) -> Response:
    raise await run(lambda s, c: l3_agents.scheduling_refused(s, c, agent_id, "delete_l3-router"))
