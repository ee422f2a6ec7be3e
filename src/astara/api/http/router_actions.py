"""A router's interface actions: `PUT /v2.0/routers/{id}/add_router_interface`
and `.../remove_router_interface` (rules in `astara.api.routers`)."""

from __future__ import annotations

from fastapi import Request, Response

from astara.api import routers
from astara.api.errors import NeutronError
from astara.api.http.collection import json_response
from astara.api.http.dependencies import TransactionDep, authenticated_router, json_body, now

router = authenticated_router(prefix="/v2.0/routers")

ACTIONS = {
    "add_router_interface": routers.add_interface,
    "remove_router_interface": routers.remove_interface,
}


@router.put("/{router_id}/{action}")
async def router_action(
    request: Request, router_id: str, action: str, run: TransactionDep
) -> Response:
    if action not in ACTIONS:
        raise NeutronError(404, "HTTPNotFound", "The resource could not be found.")
    body = await json_body(request)
    return json_response(await run(lambda s, c: ACTIONS[action](s, c, router_id, body, now())))
