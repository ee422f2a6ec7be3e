"""The Octavia v2 routes, under `/v2/lbaas` and `/v2.0/lbaas` (both: the
clients use either): Octavia's envelopes (`{"loadbalancers": [...],
"loadbalancers_links": []}`), status codes and fault bodies.

Work in progress (issue 12): load balancers only.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.api.attributes import to_bool
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.api.http.dependencies import TransactionDep, authenticated_router, json_body, now
from astara.api.lbaas import errors
from astara.api.lbaas import load_balancers as lbs
from astara.api.lbaas.bodies import parse
from astara.db.models import Listener, LoadBalancer, Pool

PREFIXES = ("/v2/lbaas", "/v2.0/lbaas")


def answer(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _children(session: Session, balancer_id: str) -> tuple[list[str], list[str]]:
    listeners = session.scalars(
        select(Listener.id)
        .where(Listener.load_balancer_id == balancer_id)
        .order_by(Listener.created_at, Listener.id)
    )
    pools = session.scalars(
        select(Pool.id)
        .where(Pool.load_balancer_id == balancer_id)
        .order_by(Pool.created_at, Pool.id)
    )
    return list(listeners), list(pools)


def _view(session: Session, balancer: LoadBalancer) -> dict[str, Any]:
    return lbs.view(balancer, *_children(session, balancer.id))


def router(prefix: str) -> APIRouter:
    routes = authenticated_router(prefix=f"{prefix}/loadbalancers")

    @routes.get("")
    async def list_balancers(request: Request, run: TransactionDep) -> Response:
        wanted = dict(request.query_params)

        def work(session: Session, caller: Caller) -> list[dict[str, Any]]:
            rows = select(LoadBalancer).where(LoadBalancer.provisioning_status != "DELETED")
            if not caller.is_admin:
                named = wanted.get("project_id")
                if named is not None and named != caller.project_id:
                    raise errors.forbidden()
                rows = rows.where(LoadBalancer.project_id == caller.project_id)
            rows = rows.order_by(LoadBalancer.created_at, LoadBalancer.id)
            found = [_view(session, b) for b in session.scalars(rows)]
            filters = {k: v for k, v in wanted.items() if k not in ("fields", "limit", "sort")}
            return [b for b in found if all(str(b.get(k)) == v for k, v in filters.items())]

        return answer({"loadbalancers": await run(work), "loadbalancers_links": []})

    @routes.post("", status_code=201)
    async def create_balancer(request: Request, run: TransactionDep) -> Response:
        body = parse(lbs.LoadBalancerPOST, await json_body(request), "loadbalancer")

        def work(session: Session, caller: Caller) -> dict[str, Any]:
            return _view(session, lbs.create(session, caller, body, now()))

        return answer({"loadbalancer": await run(work)}, 201)

    @routes.get("/{balancer_id}")
    async def show_balancer(balancer_id: str, run: TransactionDep) -> Response:
        def work(session: Session, caller: Caller) -> dict[str, Any]:
            return _view(session, lbs.get(session, caller, balancer_id))

        return answer({"loadbalancer": await run(work)})

    @routes.put("/{balancer_id}")
    async def update_balancer(request: Request, balancer_id: str, run: TransactionDep) -> Response:
        body = parse(lbs.LoadBalancerPUT, await json_body(request), "loadbalancer")

        def work(session: Session, caller: Caller) -> dict[str, Any]:
            balancer = lbs.get(session, caller, balancer_id)
            return _view(session, lbs.update(session, caller, balancer, body, now()))

        return answer({"loadbalancer": await run(work)})

    @routes.delete("/{balancer_id}", status_code=204)
    async def delete_balancer(request: Request, balancer_id: str, run: TransactionDep) -> Response:
        cascade = _true(request.query_params.get("cascade"))

        def work(session: Session, caller: Caller) -> None:
            lbs.delete(session, caller, lbs.get(session, caller, balancer_id), cascade, now())

        await run(work)
        return Response(status_code=204)

    return routes


def _true(value: str | None) -> bool:
    """oslo's bool_from_string: anything not true is false, never an error."""
    if value is None:
        return False
    try:
        return to_bool("cascade", value)
    except NeutronError:
        return False


def routers() -> list[APIRouter]:
    return [router(prefix) for prefix in PREFIXES]
