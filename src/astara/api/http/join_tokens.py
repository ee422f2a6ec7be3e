"""`POST /astara/v1/hosts/join-tokens` (admin): a one-time token an agent
joins the deployment with (`astara host join-token`)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

from astara.api import trust
from astara.api.admin import require_admin
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.api.http.dependencies import (
    ServicesDep,
    TransactionDep,
    authenticated_router,
    now,
)

router = authenticated_router(prefix="/astara/v1")


@router.post("/hosts/join-tokens", status_code=201)
async def create_join_token(
    request: Request, run: TransactionDep, found: ServicesDep
) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None  # no body: the default ttl_s
    except ValueError:
        raise NeutronError(400, "HTTPBadRequest", "Body contains invalid data") from None
    ca_hash = found.ca_hash

    def work(session: Session, caller: Caller) -> dict[str, Any]:
        if ca_hash is None:  # after the admin check: only admins learn this
            require_admin(caller)
            raise NeutronError(409, "NoCertificateAuthority", "This server has no deployment CA.")
        return trust.create_join_token(session, caller, body, now(), ca_hash)

    return await run(work)
