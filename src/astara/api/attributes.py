"""Neutron's request-body rules, table-driven (pure).

Each resource declares its attributes once (`Attribute`): type converter,
default, whether POST/PUT may set it, whether it filters and sorts, whether
only admins may set it. `prepare_body` then applies Neutron's order of checks
(body shape, project, unknown keys, read-only and required attributes,
conversion) and raises `NeutronError` with Neutron's type, message and status.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from astara.api.errors import NeutronError

Converter = Callable[[str, Any], Any]
_TRUE = {"true", "1", "yes", "on", "y", "t"}
_FALSE = {"false", "0", "no", "off", "n", "f"}
NOT_GIVEN = object()
# Neutron's policy names: `create_network:shared`, `update_network:shared`.
_ACTIONS = {"POST": "create", "PUT": "update"}


def bad_input(name: str, reason: str) -> NeutronError:
    return NeutronError(400, "InvalidInput", f"Invalid input for {name}. Reason: {reason}.")


def to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise bad_input(name, f"'{value}' cannot be converted to boolean")


def to_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise bad_input(name, f"'{value}' is not an integer")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise bad_input(name, f"'{value}' is not an integer") from None


def to_string(limit: int = 255) -> Converter:
    def convert(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise bad_input(name, f"'{value}' is not a valid string")
        if len(value) > limit:
            raise bad_input(name, f"'{value}' exceeds maximum length of {limit}")
        return value

    return convert


def to_any(name: str, value: Any) -> Any:
    return value


def is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def to_uuid(nullable: bool = False) -> Converter:
    """neutron-lib's `type:uuid` (`uuid_or_none` when `nullable`)."""

    def convert(name: str, value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not is_uuid(value):
            raise bad_input(name, f"'{value}' is not a valid UUID")
        return str(value)

    return convert


def to_uuid_list(limit: int) -> Converter:
    """neutron-lib's `type:uuid_list`, None an empty list: ids, each once,
    at most `limit`."""

    def convert(name: str, value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise bad_input(name, f"'{value}' is not a list")
        if len(value) > limit:
            raise bad_input(name, f"more than {limit} items")
        for item in value:
            if not is_uuid(item):
                raise bad_input(name, f"'{item}' is not a valid UUID")
        repeated = sorted(v for v, n in Counter(value).items() if n > 1)
        if repeated:
            raise bad_input(name, f"Duplicate items in the list: '{', '.join(repeated)}'")
        return list(value)

    return convert


@dataclass(frozen=True)
class Attribute:
    name: str
    convert: Converter = field(default=to_string())
    default: Any = NOT_GIVEN  # NOT_GIVEN and allow_post: required
    allow_post: bool = True
    allow_put: bool = True
    filter: bool = True
    sort: bool = True
    admin_only: bool = False  # only admins may set it (403 otherwise)
    admin_visible: bool = False  # only admins see it: omitted for others (§5.2)
    # A filter's value, when not `convert`'s: one member of a list attribute.
    filter_convert: Converter | None = None

    @property
    def required(self) -> bool:
        return self.allow_post and self.default is NOT_GIVEN


def standard_attributes() -> list[Attribute]:
    """Attributes every Neutron resource has (§1.3)."""
    return [
        Attribute("id", allow_post=False, allow_put=False),
        Attribute("project_id", default="", allow_put=False),
        Attribute("tenant_id", default="", allow_put=False),
        Attribute("description", default=""),
        Attribute("created_at", allow_post=False, allow_put=False, filter=False),
        Attribute("updated_at", allow_post=False, allow_put=False, filter=False),
        Attribute("revision_number", to_int, allow_post=False, allow_put=False),
        Attribute("tags", allow_post=False, allow_put=False, filter=False, sort=False),
    ]


@dataclass(frozen=True)
class Resource:
    """One Neutron collection: `networks` holds `network` members. `path`:
    where it lives under `/v2.0/` when not at its collection's name
    (`security-groups` holds `security_groups`). `bulk`: whether one POST
    may create several."""

    collection: str
    member: str
    attributes: tuple[Attribute, ...]
    path: str = ""
    bulk: bool = True

    def attribute(self, name: str) -> Attribute | None:
        return next((a for a in self.attributes if a.name == name), None)

    @property
    def url_path(self) -> str:
        return self.path or self.collection

    @property
    def taggable(self) -> bool:
        return self.attribute("tags") is not None


def prepare_body(
    resource: Resource,
    body: Any,
    *,
    method: str,
    project_id: str,
    is_admin: bool,
) -> dict[str, Any]:
    """The member's attributes, converted and defaulted, or a NeutronError."""
    if not isinstance(body, dict):
        raise NeutronError(400, "HTTPBadRequest", "Body contains invalid data")
    if resource.member not in body:
        raise NeutronError(
            400, "HTTPBadRequest", f"Unable to find '{resource.member}' in request body"
        )
    values = body[resource.member]
    if not isinstance(values, dict):
        raise NeutronError(400, "HTTPBadRequest", "Body contains invalid data")
    values = dict(values)
    if method == "POST":
        _resolve_project(values, project_id, is_admin)
    unknown = sorted(k for k in values if resource.attribute(k) is None)
    if unknown:
        raise NeutronError(
            400, "HTTPBadRequest", f"Unrecognized attribute(s) '{', '.join(unknown)}'"
        )
    result: dict[str, Any] = {}
    for name, value in values.items():
        attribute = resource.attribute(name)
        assert attribute is not None
        if method == "POST" and not attribute.allow_post:
            raise NeutronError(400, "HTTPBadRequest", f"Attribute '{name}' not allowed in POST")
        if method == "PUT" and not attribute.allow_put:
            raise NeutronError(400, "HTTPBadRequest", f"Cannot update read-only attribute {name}")
        if attribute.admin_only and not is_admin:
            raise NeutronError(
                403,
                "PolicyNotAuthorized",
                f"(rule:{_ACTIONS.get(method, method.lower())}_{resource.member}:{name})"
                " is disallowed by policy",
            )
        result[name] = attribute.convert(name, value)
    if method == "POST":
        for attribute in resource.attributes:
            if attribute.name in result or not attribute.allow_post:
                continue
            if attribute.required:
                raise NeutronError(
                    400,
                    "HTTPBadRequest",
                    f"Failed to parse request. Required attribute '{attribute.name}' not specified",
                )
            result[attribute.name] = attribute.default
    return result


def bulk_members(resource: Resource, body: Any) -> list[dict[str, Any]] | None:
    """A bulk POST's members, each wrapped as a single POST's body (§1.1), or
    None when `body` is a single POST."""
    if not isinstance(body, dict) or resource.collection not in body:
        return None
    if not resource.bulk:
        raise NeutronError(400, "HTTPBadRequest", "Bulk operation not supported")
    items = body[resource.collection]
    if not isinstance(items, list) or not items or len(body) != 1:
        raise NeutronError(400, "HTTPBadRequest", "Body contains invalid data")
    return [{resource.member: item} for item in items]


def _resolve_project(values: dict[str, Any], project_id: str, is_admin: bool) -> None:
    """§1.2 step 3: project_id and tenant_id are one attribute."""
    project, tenant = values.get("project_id"), values.get("tenant_id")
    if project is not None and tenant is not None and project != tenant:
        raise NeutronError(400, "HTTPBadRequest", "'project_id' and 'tenant_id' do not match")
    chosen = project if project is not None else tenant
    if chosen is not None and chosen != project_id and not is_admin:
        raise NeutronError(
            400,
            "HTTPBadRequest",
            "Specifying 'project_id' other than the authenticated project in request "
            "is not allowed for the current user.",
        )
    values["project_id"] = values["tenant_id"] = chosen if chosen is not None else project_id


def readable(resource: Resource, item: dict[str, Any], is_admin: bool) -> dict[str, Any]:
    """`item` without the attributes only admins may read, for anyone else
    (Neutron omits them rather than refusing, §5.2)."""
    if is_admin:
        return item
    hidden = {a.name for a in resource.attributes if a.admin_visible}
    return {k: v for k, v in item.items() if k not in hidden}


def select_fields(item: Mapping[str, Any], fields: list[str]) -> dict[str, Any]:
    """§2.2: only the requested keys; tenant_id and project_id come together."""
    if not fields:
        return dict(item)
    wanted = set(fields)
    if wanted & {"tenant_id", "project_id"}:
        wanted |= {"tenant_id", "project_id"}
    return {k: v for k, v in item.items() if k in wanted}
