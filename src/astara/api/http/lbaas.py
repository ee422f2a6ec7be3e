"""The Octavia v2 routes, under `/v2/lbaas` and `/v2.0/lbaas` (both: the
clients use either): Octavia's envelopes (`{"loadbalancers": [...],
"loadbalancers_links": []}`), status codes and fault bodies.

Load balancers (a fully populated create too), listeners, pools, members
(one by one, or the batch update), health monitors, L7 policies and rules,
the status tree, statistics, failover, quotas, providers, and the empty
flavor lists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.api import zones
from astara.api.attributes import to_bool
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.api.http.dependencies import TransactionDep, authenticated_router, json_body, now
from astara.api.lbaas import (
    errors,
    graph,
    health_monitors,
    l7policies,
    l7rules,
    listeners,
    members,
    pools,
    quotas,
    stats,
)
from astara.api.lbaas import load_balancers as lbs
from astara.api.lbaas.bodies import parse
from astara.db.models import HealthMonitor, L7Policy, L7Rule, Listener, LoadBalancer, Pool

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


@dataclass(frozen=True)
class Spec:
    """One Octavia collection: its path and keys, body models, and the
    resource module's functions (each in the request's transaction)."""

    path: str
    collection: str
    member: str
    model: Any  # the ORM class (for lists)
    post: Any
    put: Any
    get: Callable[[Session, Caller, str], Any]
    view: Callable[[Session, Any], dict[str, Any]]
    create: Callable[[Session, Caller, Any, datetime], Any]
    update: Callable[[Session, Caller, Any, Any, datetime], Any]
    delete: Callable[[Session, Caller, Any, bool, datetime], None]
    # A create's answer, when it differs from a show's.
    created: Callable[[Session, Any], dict[str, Any]] | None = None


def collection(prefix: str, spec: Spec) -> APIRouter:
    routes = authenticated_router(prefix=f"{prefix}/{spec.path}")
    model = spec.model

    @routes.get("")
    async def list_items(request: Request, run: TransactionDep) -> Response:
        wanted = dict(request.query_params)

        def work(session: Session, caller: Caller) -> list[dict[str, Any]]:
            rows = select(model)
            if model is LoadBalancer:
                rows = rows.where(LoadBalancer.provisioning_status != "DELETED")
            if not caller.is_admin:
                named = wanted.get("project_id")
                if named is not None and named != caller.project_id:
                    raise errors.forbidden()
                rows = rows.where(model.project_id == caller.project_id)
            rows = rows.order_by(model.created_at, model.id)
            found = [spec.view(session, row) for row in session.scalars(rows)]
            filters = {k: v for k, v in wanted.items() if k not in ("fields", "limit", "sort")}
            return [i for i in found if all(str(i.get(k)) == v for k, v in filters.items())]

        return answer({spec.collection: await run(work), f"{spec.collection}_links": []})

    @routes.post("", status_code=201)
    async def create_item(request: Request, run: TransactionDep) -> Response:
        body = parse(spec.post, await json_body(request), spec.member)

        def work(session: Session, caller: Caller) -> dict[str, Any]:
            row = spec.create(session, caller, body, now())
            return (spec.created or spec.view)(session, row)

        return answer({spec.member: await run(work)}, 201)

    @routes.get("/{object_id}")
    async def show_item(object_id: str, run: TransactionDep) -> Response:
        def work(session: Session, caller: Caller) -> dict[str, Any]:
            return spec.view(session, spec.get(session, caller, object_id))

        return answer({spec.member: await run(work)})

    @routes.put("/{object_id}")
    async def update_item(request: Request, object_id: str, run: TransactionDep) -> Response:
        body = parse(spec.put, await json_body(request), spec.member)

        def work(session: Session, caller: Caller) -> dict[str, Any]:
            row = spec.get(session, caller, object_id)
            return spec.view(session, spec.update(session, caller, row, body, now()))

        return answer({spec.member: await run(work)})

    @routes.delete("/{object_id}", status_code=204)
    async def delete_item(request: Request, object_id: str, run: TransactionDep) -> Response:
        cascade = _true(request.query_params.get("cascade"))

        def work(session: Session, caller: Caller) -> None:
            spec.delete(session, caller, spec.get(session, caller, object_id), cascade, now())

        await run(work)
        return Response(status_code=204)

    return routes


SPECS = (
    Spec(
        "loadbalancers",
        "loadbalancers",
        "loadbalancer",
        LoadBalancer,
        lbs.LoadBalancerPOST,
        lbs.LoadBalancerPUT,
        lbs.get,
        _view,
        lbs.create,
        lbs.update,
        lbs.delete,
        lambda session, row: graph.view(session, row, _view(session, row)),
    ),
    Spec(
        "listeners",
        "listeners",
        "listener",
        Listener,
        listeners.ListenerPOST,
        listeners.ListenerPUT,
        listeners.get,
        lambda session, row: listeners.view(row, l7policies.ids_of(session, row.id)),
        listeners.create,
        listeners.update,
        lambda session, caller, row, _, when: listeners.delete(session, caller, row, when),
    ),
    Spec(
        "pools",
        "pools",
        "pool",
        Pool,
        pools.PoolPOST,
        pools.PoolPUT,
        pools.get,
        pools.view,
        pools.create,
        pools.update,
        lambda session, caller, row, _, when: pools.delete(session, caller, row, when),
    ),
    Spec(
        "healthmonitors",
        "healthmonitors",
        "healthmonitor",
        HealthMonitor,
        health_monitors.HealthMonitorPOST,
        health_monitors.HealthMonitorPUT,
        health_monitors.get,
        lambda _, row: health_monitors.view(row),
        health_monitors.create,
        health_monitors.update,
        lambda session, caller, row, _, when: health_monitors.delete(session, caller, row, when),
    ),
    Spec(
        "l7policies",
        "l7policies",
        "l7policy",
        L7Policy,
        l7policies.L7PolicyPOST,
        l7policies.L7PolicyPUT,
        l7policies.get,
        l7policies.view,
        l7policies.create,
        l7policies.update,
        lambda session, caller, row, _, when: l7policies.delete(session, caller, row, when),
    ),
)


def extra_routes(prefix: str) -> APIRouter:
    """A load balancer's status tree, statistics and failover; a listener's
    statistics; quotas; the providers, flavors and availability zones."""
    routes = authenticated_router(prefix=prefix)

    @routes.get("/loadbalancers/{balancer_id}/stats")
    async def balancer_stats(balancer_id: str, run: TransactionDep) -> Response:
        def work(session: Session, caller: Caller) -> dict[str, Any]:
            return stats.balancer(session, lbs.get(session, caller, balancer_id))

        return answer(await run(work))

    @routes.get("/listeners/{listener_id}/stats")
    async def listener_stats(listener_id: str, run: TransactionDep) -> Response:
        def work(session: Session, caller: Caller) -> dict[str, Any]:
            return stats.listener(session, listeners.get(session, caller, listener_id))

        return answer(await run(work))

    @routes.put("/loadbalancers/{balancer_id}/failover", status_code=202)
    async def failover(balancer_id: str, run: TransactionDep) -> Response:
        def work(session: Session, caller: Caller) -> None:
            lbs.failover(session, caller, lbs.get(session, caller, balancer_id), now())

        await run(work)
        return Response(status_code=202)

    @routes.get("/quotas")
    async def list_quotas(run: TransactionDep) -> Response:
        return answer(await run(quotas.listing))

    @routes.get("/quotas/{project_id}")
    async def show_quota(project_id: str, run: TransactionDep) -> Response:
        return answer(await run(lambda session, caller: quotas.show(session, caller, project_id)))

    @routes.get("/quotas/{project_id}/default")
    async def show_default_quota(project_id: str, run: TransactionDep) -> Response:
        return answer(await run(lambda _, caller: quotas.show_defaults(caller, project_id)))

    @routes.put("/quotas/{project_id}", status_code=202)
    async def update_quota(request: Request, project_id: str, run: TransactionDep) -> Response:
        body = await json_body(request)
        shown = await run(lambda session, caller: quotas.update(session, caller, project_id, body))
        return answer(shown, 202)

    @routes.delete("/quotas/{project_id}", status_code=202)
    async def reset_quota(project_id: str, run: TransactionDep) -> Response:
        await run(lambda session, caller: quotas.reset(session, caller, project_id))
        return Response(status_code=202)

    @routes.get("/flavors")
    @routes.get("/flavorprofiles")
    @routes.get("/availabilityzoneprofiles")
    async def no_flavors(request: Request, run: TransactionDep) -> Response:
        """None defined: a deployment without flavors (the one appliance
        shape) answers empty lists, with Octavia's keys."""
        await run(lambda s, c: None)  # authenticated, like every route
        key = {
            "flavors": ("flavors", "flavors_links"),
            "flavorprofiles": ("flavorprofiles", "flavorprofile_links"),
            "availabilityzoneprofiles": (
                "availability_zone_profiles",
                "availability_zone_profile_links",
            ),
        }[request.url.path.rsplit("/", 1)[1]]
        return answer({key[0]: [], key[1]: []})

    @routes.get("/availabilityzones")
    async def availability_zones(request: Request, run: TransactionDep) -> Response:
        """The hosts' zones (`astara host list`), each enabled while an up,
        undrained host is in it; `availability_zone` on a load balancer
        places its appliance there."""
        wanted = request.query_params.get("name")
        found = await run(lambda session, _: zones.listing(session))
        shown = [
            {
                "name": zone["name"],
                "description": "",
                "enabled": zone["state"] == "available",
                "availability_zone_profile_id": None,
            }
            for zone in found
            if zone["resource"] == "router" and wanted in (None, zone["name"])
        ]
        return answer({"availability_zones": shown, "availability_zones_links": []})

    @routes.get("/loadbalancers/{balancer_id}/status")
    @routes.get("/loadbalancers/{balancer_id}/statuses")
    async def status_tree(balancer_id: str, run: TransactionDep) -> Response:
        def work(session: Session, caller: Caller) -> dict[str, Any]:
            return lbs.status_tree(session, lbs.get(session, caller, balancer_id))

        return answer(await run(work))

    @routes.get("/providers")
    async def providers(run: TransactionDep) -> Response:
        await run(lambda s, c: None)  # authenticated, like every route
        found = [{"name": "astara", "description": "Astara's haproxy appliance."}]
        return answer({"providers": found})

    return routes


@dataclass(frozen=True)
class ChildSpec:
    """A collection under its parent object, `/<parent>/{parent_id}/<path>`:
    a pool's members, an L7 policy's rules (an unknown parent: its 404)."""

    parent_path: str
    path: str
    collection: str
    member: str
    post: Any
    put: Any
    parent: Callable[[Session, Caller, str], Any]
    rows: Callable[[Session, Any], list[Any]]
    get: Callable[[Session, Caller, Any, str], Any]
    view: Callable[[Any], dict[str, Any]]
    create: Callable[[Session, Caller, Any, Any, datetime], Any]
    update: Callable[[Session, Caller, Any, Any, datetime], Any]
    delete: Callable[[Session, Caller, Any, datetime], None]


def child_collection(prefix: str, spec: ChildSpec) -> APIRouter:
    routes = authenticated_router(prefix=f"{prefix}/{spec.parent_path}/{{parent_id}}/{spec.path}")

    @routes.get("")
    async def list_items(request: Request, parent_id: str, run: TransactionDep) -> Response:
        wanted = {k: v for k, v in request.query_params.items() if k not in ("fields", "limit")}

        def work(session: Session, caller: Caller) -> list[dict[str, Any]]:
            found = [
                spec.view(r) for r in spec.rows(session, spec.parent(session, caller, parent_id))
            ]
            return [i for i in found if all(str(i.get(k)) == v for k, v in wanted.items())]

        return answer({spec.collection: await run(work), f"{spec.collection}_links": []})

    @routes.post("", status_code=201)
    async def create_item(request: Request, parent_id: str, run: TransactionDep) -> Response:
        body = parse(spec.post, await json_body(request), spec.member)

        def work(session: Session, caller: Caller) -> dict[str, Any]:
            parent = spec.parent(session, caller, parent_id)
            return spec.view(spec.create(session, caller, parent, body, now()))

        return answer({spec.member: await run(work)}, 201)

    @routes.get("/{item_id}")
    async def show_item(parent_id: str, item_id: str, run: TransactionDep) -> Response:
        def work(session: Session, caller: Caller) -> dict[str, Any]:
            parent = spec.parent(session, caller, parent_id)
            return spec.view(spec.get(session, caller, parent, item_id))

        return answer({spec.member: await run(work)})

    @routes.put("/{item_id}")
    async def update_item(
        request: Request, parent_id: str, item_id: str, run: TransactionDep
    ) -> Response:
        body = parse(spec.put, await json_body(request), spec.member)

        def work(session: Session, caller: Caller) -> dict[str, Any]:
            row = spec.get(session, caller, spec.parent(session, caller, parent_id), item_id)
            return spec.view(spec.update(session, caller, row, body, now()))

        return answer({spec.member: await run(work)})

    @routes.delete("/{item_id}", status_code=204)
    async def delete_item(parent_id: str, item_id: str, run: TransactionDep) -> Response:
        def work(session: Session, caller: Caller) -> None:
            row = spec.get(session, caller, spec.parent(session, caller, parent_id), item_id)
            spec.delete(session, caller, row, now())

        await run(work)
        return Response(status_code=204)

    return routes


def _rules(session: Session, policy: Any) -> list[Any]:
    found = select(L7Rule).where(L7Rule.l7policy_id == policy.id)
    return list(session.scalars(found.order_by(L7Rule.created_at, L7Rule.id)))


CHILDREN = (
    ChildSpec(
        "pools",
        "members",
        "members",
        "member",
        members.MemberPOST,
        members.MemberPUT,
        pools.get,
        lambda _, pool: list(pool.members),
        members.get,
        members.view,
        members.create,
        members.update,
        members.delete,
    ),
    ChildSpec(
        "l7policies",
        "rules",
        "rules",
        "rule",
        l7rules.L7RulePOST,
        l7rules.L7RulePUT,
        l7policies.parent,
        _rules,
        l7rules.get,
        l7rules.view,
        l7rules.create,
        l7rules.update,
        l7rules.delete,
    ),
)


def batch_routes(prefix: str) -> APIRouter:
    """`PUT /pools/{pool_id}/members`: Octavia's batch member update."""
    routes = authenticated_router(prefix=f"{prefix}/pools/{{pool_id}}/members")

    @routes.put("", status_code=202)
    async def replace_members(request: Request, pool_id: str, run: TransactionDep) -> Response:
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("members"), list):
            raise errors.OctaviaError(400, 'Missing argument: "members"')
        given = [parse(members.MemberPOST, {"member": m}, "member") for m in body["members"]]
        additive = _true(request.query_params.get("additive_only"))

        def work(session: Session, caller: Caller) -> None:
            pool = pools.get(session, caller, pool_id)
            members.replace_all(session, caller, pool, given, additive, now())

        await run(work)
        return Response(status_code=202)

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
    """Members and rules first: `/pools/{id}/members` must not be read as a
    pool's id."""
    found = [r(prefix) for prefix in PREFIXES for r in (extra_routes, batch_routes)]
    found += [child_collection(prefix, spec) for prefix in PREFIXES for spec in CHILDREN]
    return found + [collection(prefix, spec) for prefix in PREFIXES for spec in SPECS]
