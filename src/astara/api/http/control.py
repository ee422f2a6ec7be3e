"""The control listener's routes, `/v1` (TLS, its own port): the CA for
anyone (an agent checks it against its token's hash before it sends
anything), joins (a join token), renewals (the host's current certificate,
checked before the body is read)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from astara import pki
from astara.agent.tls import PEER_CERT_KEY
from astara.api import trust
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.api.http.dependencies import now
from astara.api.http.transaction import run_transaction

T = TypeVar("T")
router = APIRouter(prefix="/v1")

MAX_BODY_BYTES = 64 * 1024  # a CSR and a few fields
# The control listener has no callers in the tenant API's sense (a token or a
# certificate authenticates each request); the transaction runner wants one.
_NO_CALLER = Caller("", "control-listener", False)


async def _run(request: Request, work: Callable[[Session], T]) -> T:
    sessions = request.app.state.sessions
    return await run_in_threadpool(run_transaction, sessions, _NO_CALLER, lambda s, _: work(s))


def _authority(request: Request) -> trust.Authority:
    found = request.app.state.authority
    assert isinstance(found, trust.Authority)
    return found


async def _limited_json(request: Request) -> Any:
    """The JSON body, read up to MAX_BODY_BYTES (413 beyond)."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise NeutronError(413, "RequestTooLarge", f"At most {MAX_BODY_BYTES} bytes.")
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise NeutronError(400, "HTTPBadRequest", "Body contains invalid data") from None


def peer(request: Request) -> pki.Identity | None:
    """Who the client certificate of the request's connection names (the
    TLS handshake verified it against the CA), or None without one."""
    der = request.scope.get(PEER_CERT_KEY)
    if not isinstance(der, bytes):
        return None
    try:
        return pki.identity(pki.load_der_cert(der))
    except pki.InvalidCertificate:
        return None


@router.get("/ca")
async def ca(request: Request) -> dict[str, Any]:
    authority = _authority(request)
    return {"ca_pem": pki.cert_pem(authority.ca.cert), "ca_hash": authority.ca_hash}


@router.post("/join", status_code=201)
async def join(request: Request) -> dict[str, Any]:
    body = await _limited_json(request)
    authority = _authority(request)
    return await _run(request, lambda s: trust.join(s, body, now(), authority))


@router.post("/renew")
async def renew(request: Request) -> dict[str, Any]:
    found = peer(request)
    # Refused before the body is read: only a host's current certificate gets in.
    await _run(request, lambda s: trust.check_renewal(s, found))
    body = await _limited_json(request)
    authority = _authority(request)
    return await _run(request, lambda s: trust.renew(s, found, body, now(), authority))
