"""Neutron collection queries over views (pure): filters, `fields=`, sorting
and `limit`/`marker` pagination with `<collection>_links` (§2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from astara.api.attributes import Resource
from astara.api.errors import NeutronError

CONTROL = {"fields", "sort_key", "sort_dir", "limit", "marker", "page_reverse"}
# Tag filters (§1.3): comma-separated tags; an item matches `tags` when it has
# them all, `tags-any` when it has one, and the `not-` forms when it does not.
TAG_FILTERS: dict[str, Callable[[set[str], set[str]], bool]] = {
    "tags": lambda have, listed: listed <= have,
    "tags-any": lambda have, listed: bool(listed & have),
    "not-tags": lambda have, listed: not listed <= have,
    "not-tags-any": lambda have, listed: not listed & have,
}


# Ports' `fixed_ips` filter is `key=value`; repeated keys are ORed, the two
# keys ANDed, each over any of the port's fixed IPs (§2.1).
FIXED_IP_KEYS = ("ip_address", "subnet_id")


# Names of a member in Neutron's not-found errors, where not its capitalized self.
NOT_FOUND = {"floatingip": ("FloatingIP", "Floating IP")}


@dataclass(frozen=True)
class Query:
    filters: dict[str, list[Any]]
    fields: list[str]
    sorts: list[tuple[str, bool]]  # (key, ascending)
    limit: int
    marker: str | None
    page_reverse: bool


def parse_query(resource: Resource, params: list[tuple[str, str]]) -> Query:
    filters: dict[str, list[Any]] = {}
    fields: list[str] = []
    sort_keys: list[str] = []
    sort_dirs: list[str] = []
    limit, marker, page_reverse = 0, None, False
    for key, value in params:
        if key == "fields":
            fields.append(value)
        elif key == "sort_key":
            sort_keys.append(value)
        elif key == "sort_dir":
            sort_dirs.append(value)
        elif key == "limit":
            if not (value.isascii() and value.isdigit()):
                raise NeutronError(
                    400,
                    "HTTPBadRequest",
                    f"Limit must be an integer 0 or greater and not '{value}'",
                )
            limit = int(value)
        elif key == "marker":
            marker = value
        elif key == "page_reverse":
            page_reverse = value.strip().lower() in ("true", "1", "yes", "on")
        elif key in TAG_FILTERS:
            tags = [t for t in value.split(",") if t]
            if tags:
                filters.setdefault(key, []).extend(tags)
        elif key == "changed_since":
            filters.setdefault(key, []).append(_since(value))
        elif key == "fixed_ips" and resource.attribute(key) is not None:
            part, _, wanted = value.partition("=")
            if part not in FIXED_IP_KEYS or not wanted:
                raise NeutronError(
                    400,
                    "HTTPBadRequest",
                    f"Invalid fixed_ips filter '{value}': use ip_address=X or subnet_id=Y",
                )
            filters.setdefault(f"fixed_ips.{part}", []).append(wanted)
        else:
            attribute = resource.attribute(key)
            if attribute is None or not attribute.filter:
                raise NeutronError(
                    400, "HTTPBadRequest", f"['{key}'] is invalid attribute for filtering"
                )
            if value == "":
                continue  # empty filters are dropped (no empty-string-filtering)
            name = "project_id" if key == "tenant_id" else key
            convert = attribute.filter_convert or attribute.convert
            filters.setdefault(name, []).append(convert(key, value))
    if len(sort_keys) != len(sort_dirs):
        raise NeutronError(
            400, "HTTPBadRequest", "The number of sort_keys and sort_dirs must be same"
        )
    sorts = []
    for key, direction in zip(sort_keys, sort_dirs, strict=True):
        attribute = resource.attribute(key)
        if attribute is None or not attribute.sort:
            raise NeutronError(
                400, "HTTPBadRequest", f"['{key}'] is invalid attribute for sort_keys"
            )
        if direction not in ("asc", "desc"):
            raise NeutronError(
                400,
                "HTTPBadRequest",
                f"{direction} is invalid value for sort_dirs, valid values are 'asc' and 'desc'",
            )
        sorts.append((key, direction == "asc"))
    return Query(filters, fields, sorts, limit, marker, page_reverse)


def _since(value: str) -> datetime:
    try:
        since = datetime.fromisoformat(value)
    except ValueError:
        raise NeutronError(
            400, "HTTPBadRequest", f"'{value}' is not a valid ISO 8601 time for changed_since"
        ) from None
    return since if since.tzinfo else since.replace(tzinfo=UTC)


def _matches(item: dict[str, Any], filters: dict[str, list[Any]]) -> bool:
    for key, wanted in filters.items():
        if key in TAG_FILTERS:
            if not TAG_FILTERS[key](set(item.get("tags", [])), set(wanted)):
                return False
            continue
        if key == "changed_since":
            updated = datetime.fromisoformat(item["updated_at"])
            if updated < max(wanted):
                return False
            continue
        collection, _, member = key.partition(".")
        if member:  # `fixed_ips.ip_address`: some entry of the list has one of the values
            if not any(entry.get(member) in wanted for entry in item.get(collection) or []):
                return False
            continue
        value = item.get(key)
        if isinstance(value, list):
            if not any(v in wanted for v in value):
                return False
        elif value not in wanted:
            return False
    return True


def _sort_key(value: Any) -> tuple[int, Any]:
    # Nulls first in ascending order; mixed types compared as text.
    if value is None:
        return (0, "")
    if isinstance(value, bool | int | float):
        return (1, value)
    return (2, str(value))


def _by(key: str) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    def order(item: dict[str, Any]) -> tuple[int, Any]:
        return _sort_key(item.get(key))

    return order


def run_query(
    resource: Resource, items: list[dict[str, Any]], query: Query, url: str
) -> dict[str, Any]:
    """The collection body, paginated, with `<collection>_links` when `limit` is given."""
    found = [item for item in items if _matches(item, query.filters)]
    sorts = list(query.sorts)
    if query.limit and not any(key == "id" for key, _ in sorts):
        sorts.append(("id", True))  # a stable order for pages
    for key, ascending in reversed(sorts):
        found.sort(key=_by(key), reverse=not ascending)
    links: list[dict[str, str]] = []
    if query.limit:
        found, links = _page(found, query, url, resource)
    body: dict[str, Any] = {resource.collection: found}
    if query.limit:
        body[f"{resource.collection}_links"] = links
    return body


def marker_not_found(resource: Resource, marker: str) -> NeutronError:
    kind, noun = NOT_FOUND.get(resource.member, (resource.member.capitalize(),) * 2)
    return NeutronError(404, f"{kind}NotFound", f"{noun} {marker} could not be found.")


def _page(
    items: list[dict[str, Any]], query: Query, url: str, resource: Resource
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    ids = [item["id"] for item in items]
    if query.marker is not None:
        if query.marker not in ids:
            raise marker_not_found(resource, query.marker)
        index = ids.index(query.marker)
        items = items[:index] if query.page_reverse else items[index + 1 :]
    page = items[-query.limit :] if query.page_reverse else items[: query.limit]
    return page, page_links(page, query, url)


def page_links(page: list[dict[str, Any]], query: Query, url: str) -> list[dict[str, str]]:
    """`<collection>_links` of one page of a paginated list (§2.4)."""
    links = []
    base, _, original = url.partition("?")
    kept = [(k, v) for k, v in parse_qsl(original) if k not in ("marker", "page_reverse")]

    def href(marker: str, reverse: bool) -> str:
        params = [*kept, ("marker", marker)]
        if reverse:
            params.append(("page_reverse", "True"))
        return f"{base}?{urlencode(params)}"

    full = len(page) == query.limit
    if page and (full or query.page_reverse):
        links.append({"rel": "next", "href": href(page[-1]["id"], False)})
    if page and (full or not query.page_reverse) and query.marker is not None:
        links.append({"rel": "previous", "href": href(page[0]["id"], True)})
    return links
