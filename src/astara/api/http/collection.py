"""The routes of one Neutron collection (§1.1): list, create (one or bulk),
show, update, delete, and tags, for any resource module that provides the
`Controller` functions (see `networks`, `subnets`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import orjson
from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from astara.api import changes, quotas, sql_query
from astara.api.attributes import (
    Resource,
    bulk_members,
    prepare_body,
    readable,
    select_fields,
)
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.api.http.dependencies import (
    TransactionDep,
    authenticated_router,
    json_body,
    now,
)
from astara.api.query import parse_query
from astara.api.sql_query import Listing


class Controller(Protocol):
    """What a resource module provides (see `networks`, `subnets`)."""

    RESOURCE: Resource

    def view(self, row: Any) -> dict[str, Any]: ...
    # Optional: `show(session, row)`, what a GET of one member answers when
    # it says more than `view` (a firewall rule's policies).
    @property
    def LISTING(self) -> Listing: ...
    def get(self, session: Session, caller: Caller, object_id: str) -> Any: ...
    def owned(self, session: Session, caller: Caller, object_id: str) -> Any: ...
    def create(
        self, session: Session, caller: Caller, values: dict[str, Any], now: datetime
    ) -> Any: ...
    def update(
        self, session: Session, caller: Caller, row: Any, values: dict[str, Any], now: datetime
    ) -> Any: ...
    def delete(self, session: Session, caller: Caller, row: Any, now: datetime) -> None: ...


class WithSettings:
    """A resource module as a `Controller` whose create and update also take
    the deployment's settings (`create(..., settings)`, `update(...,
    settings)`): networks (VNIs, MTUs), routers (HA)."""

    def __init__(self, module: Any, settings: Any) -> None:
        self.module, self.settings = module, settings
        self.RESOURCE: Resource = module.RESOURCE
        self.LISTING: Listing = module.LISTING

    def view(self, row: Any) -> dict[str, Any]:
        found: dict[str, Any] = self.module.view(row)
        return found

    def get(self, session: Session, caller: Caller, object_id: str) -> Any:
        return self.module.get(session, caller, object_id)

    def owned(self, session: Session, caller: Caller, object_id: str) -> Any:
        return self.module.owned(session, caller, object_id)

    def create(
        self, session: Session, caller: Caller, values: dict[str, Any], now: datetime
    ) -> Any:
        return self.module.create(session, caller, values, now, self.settings)

    def update(
        self, session: Session, caller: Caller, row: Any, values: dict[str, Any], now: datetime
    ) -> Any:
        return self.module.update(session, caller, row, values, now, self.settings)

    def delete(self, session: Session, caller: Caller, row: Any, now: datetime) -> None:
        self.module.delete(session, caller, row, now)


MAX_TAGS = 50
TagChange = Callable[[set[str]], set[str]]


def valid_tags(tags: list[Any]) -> set[str]:
    """Tags are non-empty strings of at most 255 characters, 50 per resource."""
    for tag in tags:
        # No NUL: PostgreSQL's JSON functions cannot read it back as text.
        if not isinstance(tag, str) or not tag or len(tag) > 255 or "," in tag or "\x00" in tag:
            raise NeutronError(400, "HTTPBadRequest", f"Invalid input: {tag!r} is not a valid tag")
    if len(set(tags)) > MAX_TAGS:
        raise NeutronError(400, "HTTPBadRequest", f"Invalid input: more than {MAX_TAGS} tags")
    return set(tags)


def tag_not_found(tag: str, object_id: str) -> NeutronError:
    return NeutronError(
        404, "TagNotFound", f"Tag {tag} could not be found for resource {object_id}."
    )


def if_match(request: Request) -> int | None:
    """The revision an `If-Match: revision_number=N` header constrains a change to."""
    header = request.headers.get("if-match")
    if header is None:
        return None
    key, _, number = header.strip().partition("=")
    if key.strip() != "revision_number" or not number.strip().isdigit():
        raise NeutronError(
            400, "HTTPBadRequest", f"Invalid If-Match header {header!r}: use revision_number=N"
        )
    return int(number)


def json_response(body: Any, status: int = 200) -> Response:
    """`body` (plain JSON values: a view) encoded as it is, by orjson, not
    validated and walked value by value first by FastAPI's encoder."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def check_revision(row: Any, expected: int | None) -> None:
    if expected is not None and row.revision_number != expected:
        raise NeutronError(
            412,
            "HTTPPreconditionFailed",
            f"Constrained to {expected}, but current revision is {row.revision_number}",
        )


def collection_router(controller: Controller) -> APIRouter:
    """The routes of `controller`'s collection, under `/v2.0/<collection>`."""
    resource = controller.RESOURCE
    router = authenticated_router(prefix=f"/v2.0/{resource.url_path}")

    @router.get("")
    async def list_items(request: Request, run: TransactionDep) -> Response:
        query = parse_query(resource, list(request.query_params.multi_items()))
        url = str(request.url)
        # Hidden before filtering (`sql_query.run`): a filter on what the
        # caller may not read matches nothing rather than telling it apart.
        listing = controller.LISTING

        def work(session: Session, caller: Caller) -> dict[str, Any]:
            if listing.prepare is not None:
                listing.prepare(session, caller, query, now())
            return sql_query.run(session, caller, listing, query, url)

        body = await run(work)
        if query.fields:
            body[resource.collection] = [
                select_fields(i, query.fields) for i in body[resource.collection]
            ]
        # Plain JSON values already: encoded as they are (orjson, in C), not
        # walked value by value first (FastAPI's encoder takes seconds over
        # 10,000 ports).
        return Response(orjson.dumps(body), media_type="application/json")

    @router.post("", status_code=201)
    async def create_item(request: Request, run: TransactionDep) -> Response:
        """One member, or a bulk of them in one transaction: all or none."""
        body = await json_body(request)
        bulk = bulk_members(resource, body)

        def work(session: Session, caller: Caller) -> list[dict[str, Any]]:
            created = []
            for one in bulk if bulk is not None else [body]:
                values = prepare_body(
                    resource,
                    one,
                    method="POST",
                    project_id=caller.project_id,
                    is_admin=caller.is_admin,
                )
                quotas.check(session, resource.member, values["project_id"])
                row = controller.create(session, caller, values, now())
                session.flush()
                created.append(readable(resource, controller.view(row), caller.is_admin))
            return created

        created = await run(work)
        answer = (
            {resource.collection: created} if bulk is not None else {resource.member: created[0]}
        )
        return json_response(answer, 201)

    @router.get("/{object_id}")
    async def show_item(request: Request, object_id: str, run: TransactionDep) -> dict[str, Any]:
        fields = request.query_params.getlist("fields")
        show = getattr(controller, "show", None)

        def work(session: Session, caller: Caller) -> dict[str, Any]:
            row = controller.get(session, caller, object_id)
            item = show(session, row) if show is not None else controller.view(row)
            return readable(resource, item, caller.is_admin)

        shown = await run(work)
        return {resource.member: select_fields(shown, fields)}

    @router.put("/{object_id}")
    async def update_item(request: Request, object_id: str, run: TransactionDep) -> Response:
        body = await json_body(request)
        expected = if_match(request)

        def work(session: Session, caller: Caller) -> dict[str, Any]:
            row = controller.owned(session, caller, object_id)
            check_revision(row, expected)
            values = prepare_body(
                resource, body, method="PUT", project_id=caller.project_id, is_admin=caller.is_admin
            )
            row = controller.update(session, caller, row, values, now())
            session.flush()
            return readable(resource, controller.view(row), caller.is_admin)

        return json_response({resource.member: await run(work)})

    @router.delete("/{object_id}", status_code=204)
    async def delete_item(request: Request, object_id: str, run: TransactionDep) -> Response:
        if await request.body():
            raise NeutronError(400, "HTTPBadRequest", "Request body is not supported in DELETE.")
        expected = if_match(request)

        def work(session: Session, caller: Caller) -> None:
            row = controller.owned(session, caller, object_id)
            check_revision(row, expected)
            controller.delete(session, caller, row, now())

        await run(work)
        return Response(status_code=204)

    if not resource.taggable:
        return router

    async def change_tags(run: TransactionDep, object_id: str, change: TagChange) -> list[str]:
        def work(session: Session, caller: Caller) -> list[str]:
            row = controller.owned(session, caller, object_id)
            tags = change(set(row.tags or []))
            if tags != set(row.tags or []):
                changes.update(session, resource.member, row, {"tags": sorted(tags)}, now())
            return sorted(tags)

        return await run(work)

    @router.get("/{object_id}/tags")
    async def show_tags(object_id: str, run: TransactionDep) -> dict[str, Any]:
        row = await run(lambda s, c: controller.get(s, c, object_id))
        return {"tags": sorted(row.tags or [])}

    @router.put("/{object_id}/tags")
    async def replace_tags(request: Request, object_id: str, run: TransactionDep) -> dict[str, Any]:
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("tags"), list):
            raise NeutronError(400, "HTTPBadRequest", "Invalid input: expected {'tags': [...]}")
        wanted = valid_tags(body["tags"])
        return {"tags": await change_tags(run, object_id, lambda _: wanted)}

    @router.delete("/{object_id}/tags", status_code=204)
    async def remove_tags(object_id: str, run: TransactionDep) -> Response:
        await change_tags(run, object_id, lambda _: set())
        return Response(status_code=204)

    @router.get("/{object_id}/tags/{tag}", status_code=204)
    async def has_tag(object_id: str, tag: str, run: TransactionDep) -> Response:
        row = await run(lambda s, c: controller.get(s, c, object_id))
        if tag not in (row.tags or []):
            raise tag_not_found(tag, object_id)
        return Response(status_code=204)

    @router.put("/{object_id}/tags/{tag}", status_code=201)
    async def add_tag(object_id: str, tag: str, run: TransactionDep) -> Response:
        (added,) = valid_tags([tag])
        await change_tags(run, object_id, lambda tags: valid_tags([*tags, added]))
        return Response(status_code=201)

    @router.delete("/{object_id}/tags/{tag}", status_code=204)
    async def remove_tag(object_id: str, tag: str, run: TransactionDep) -> Response:
        def without(tags: set[str]) -> set[str]:
            if tag not in tags:
                raise tag_not_found(tag, object_id)
            return tags - {tag}

        await change_tags(run, object_id, without)
        return Response(status_code=204)

    return router
