"""Neutron's quota routes: `/v2.0/quotas` (rules in `astara.api.quotas`)."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from astara.api import quotas
from astara.api.errors import NeutronError
from astara.api.http.dependencies import CallerDep, TransactionDep, authenticated_router, json_body

router = authenticated_router(prefix="/v2.0/quotas")


@router.get("")
async def list_quotas(run: TransactionDep) -> dict[str, Any]:
    return await run(quotas.listing)


@router.post("", status_code=501, include_in_schema=False)  # Neutron: 501
async def create_quota() -> dict[str, Any]:
    raise NeutronError(501, "HTTPNotImplemented", "Quotas are set with PUT, not created.")


@router.get("/project")
async def own_quota_project(caller: CallerDep) -> dict[str, Any]:
    return {"project": {"project_id": caller.project_id}}


@router.get("/tenant")
async def own_quota_tenant(caller: CallerDep) -> dict[str, Any]:
    return {"tenant": {"tenant_id": caller.project_id}}


@router.get("/{project_id}")
async def show_quota(project_id: str, run: TransactionDep) -> dict[str, Any]:
    return await run(lambda s, c: quotas.show(s, c, project_id))


@router.get("/{project_id}/default")
async def default_quota(project_id: str, run: TransactionDep) -> dict[str, Any]:
    await run(lambda s, c: quotas.show(s, c, project_id))  # the same access rule as show
    return {"quota": dict(quotas.DEFAULTS)}


@router.get("/{project_id}/details")
async def quota_details(project_id: str, run: TransactionDep) -> dict[str, Any]:
    return await run(lambda s, c: quotas.details(s, c, project_id))


@router.put("/{project_id}")
async def update_quota(request: Request, project_id: str, run: TransactionDep) -> dict[str, Any]:
    body = await json_body(request)
    return await run(lambda s, c: quotas.update(s, c, project_id, body))


@router.delete("/{project_id}", status_code=204)
async def reset_quota(project_id: str, run: TransactionDep) -> Response:
    await run(lambda s, c: quotas.reset(s, c, project_id))
    return Response(status_code=204)
