"""What a client reads first: the version document (`GET /`, the one route
open without a token), the v2.0 resource list and the extensions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from astara.api import (
    address_groups,
    floatingips,
    networks,
    ports,
    routers,
    security_group_rules,
    security_groups,
    subnets,
)
from astara.api.errors import NeutronError
from astara.api.extensions import EXTENSIONS
from astara.api.http.dependencies import authenticated_router

# Open: clients read it to find the API before they authenticate (see
# `authentication.OPEN`, which lets exactly this route through).
version_document = APIRouter()


@version_document.get("/")
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


router = authenticated_router(prefix="/v2.0")


@router.get("/")
def resources(request: Request) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    return {
        "resources": [
            {
                "name": r.member,
                "collection": r.collection,
                "links": [{"rel": "self", "href": f"{base}/v2.0/{r.url_path}"}],
            }
            for r in (
                networks.RESOURCE,
                subnets.RESOURCE,
                ports.RESOURCE,
                routers.RESOURCE,
                floatingips.RESOURCE,
                security_groups.RESOURCE,
                security_group_rules.RESOURCE,
                address_groups.RESOURCE,
            )
        ]
    }


@router.get("/extensions")
def extensions() -> dict[str, Any]:
    return {"extensions": list(EXTENSIONS.values())}


@router.get("/extensions/{alias}")
def extension(alias: str) -> dict[str, Any]:
    if alias not in EXTENSIONS:
        raise NeutronError(404, "HTTPNotFound", f"Extension with alias {alias} does not exist")
    return {"extension": EXTENSIONS[alias]}
