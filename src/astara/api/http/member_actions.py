"""Member actions: `PUT /v2.0/<collection>/{id}/<action>` with a JSON body,
answered by a function of the resource's module (a router's
`add_router_interface`, an address group's `add_addresses`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.api.http.collection import json_response
from astara.api.http.dependencies import TransactionDep, authenticated_router, json_body, now

# (session, caller, the member's id, the request's body, the request's time) -> the answer
Action = Callable[[Session, Caller, str, Any, datetime], dict[str, Any]]


def action_router(path: str, actions: Mapping[str, Action]) -> APIRouter:
    """The actions of the members of `/v2.0/<path>`; any other is not found."""
    router = authenticated_router(prefix=f"/v2.0/{path}")

    @router.put("/{object_id}/{action}")
    async def member_action(
        request: Request, object_id: str, action: str, run: TransactionDep
    ) -> Response:
        if action not in actions:
            raise NeutronError(404, "HTTPNotFound", "The resource could not be found.")
        body = await json_body(request)
        act = actions[action]
        return json_response(await run(lambda s, c: act(s, c, object_id, body, now())))

    return router
