"""The operators' hosts, `/astara/v1/hosts` (admin tokens; `astara host ...`).
`POST /astara/v1/hosts/join-tokens` lives with the join (`api.control`)."""

from __future__ import annotations

from typing import Any

from fastapi import Response

from astara.api import hosts
from astara.api.errors import NeutronError
from astara.api.http.dependencies import TransactionDep, authenticated_router, now

router = authenticated_router(prefix="/astara/v1/hosts")


@router.get("")
async def list_hosts(run: TransactionDep) -> dict[str, Any]:
    return {"hosts": await run(hosts.list_hosts)}


@router.get("/{name}")
async def show_host(name: str, run: TransactionDep) -> dict[str, Any]:
    return {"host": await run(lambda s, c: hosts.show_host(s, c, name))}


@router.post("/{name}/{action}")
async def host_action(name: str, action: str, run: TransactionDep) -> dict[str, Any]:
    """drain (no new placements) or undrain."""
    if action not in ("drain", "undrain"):
        raise NeutronError(404, "HTTPNotFound", f"Unknown host action {action}")
    drained = action == "drain"
    return {"host": await run(lambda s, c: hosts.set_drained(s, c, name, drained, now()))}


@router.delete("/{name}", status_code=204)
async def remove_host(name: str, run: TransactionDep) -> Response:
    """Revoke the host's certificate and forget it."""
    await run(lambda s, c: hosts.remove_host(s, c, name, now()))
    return Response(status_code=204)
