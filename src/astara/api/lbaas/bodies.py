"""Octavia request bodies: pydantic models read in WSME's way, and refused
with WSME's messages, which clients print as they are:

    Invalid input for field/attribute <field>. Value: '<value>'. <reason>

Integers may come as strings (python-octaviaclient sends `connection_limit`
as one; WSME converts them), unknown attributes are refused, and a body
without its resource key is a missing argument.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from astara.api.lbaas.errors import OctaviaError

Model = TypeVar("Model", bound=BaseModel)


class Body(BaseModel):
    """A request body's object: unknown attributes refused; lax types (a
    numeric string is an integer, as WSME reads it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse(model: type[Model], body: Any, key: str) -> Model:
    """`body[key]` as `model`, or OctaviaError 400 with WSME's message for
    the first problem."""
    if not isinstance(body, dict) or key not in body:
        raise OctaviaError(400, f'Missing argument: "{key}"')
    if not isinstance(body[key], dict):
        raise OctaviaError(400, f"Invalid input for field/attribute {key}. Value: '{body[key]}'.")
    try:
        return model.model_validate(body[key])
    except ValidationError as error:
        raise OctaviaError(400, _message(key, error.errors(include_url=False)[0])) from None


def given(model: BaseModel) -> set[str]:
    """The attributes the request set (a PUT changes only those)."""
    return set(model.model_fields_set)


_REASONS = {
    "missing": "Mandatory field missing.",
    "uuid_parsing": "Value should be UUID format",
    "uuid_type": "Value should be UUID format",
    "ip_any_address": "Value should be IPv4 or IPv6 format",
    "ip_v4_address": "Value should be IPv4 or IPv6 format",
    "ip_v6_address": "Value should be IPv4 or IPv6 format",
    "ip_any_network": "Value should be IPv4 or IPv6 CIDR format",
    "string_type": "Value should be string",
    "bool_parsing": "Value should be boolean",
    "bool_type": "Value should be boolean",
    "int_parsing": "Value should be integer",
    "int_type": "Value should be integer",
    "int_from_float": "Value should be integer",
    "list_type": "Value should be a list",
    "dict_type": "Value should be a dictionary",
}


def _message(key: str, error: ErrorDetails) -> str:
    loc = [str(part) for part in error["loc"]]
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        return f"Unknown attribute for argument {key}: {loc[-1]}"
    field = ".".join(part for part in loc if not part.isdigit()) or key
    reason = _REASONS.get(kind)
    context: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == "missing":
        value = None
    elif kind in ("literal_error", "enum"):
        expected = str(context.get("expected", "")).replace("'", "").replace(" or ", ", ")
        reason = f"Value should be one of: {expected}"
    elif kind == "greater_than_equal":
        reason = f"Value should be greater or equal to {context.get('ge')}"
    elif kind == "less_than_equal":
        reason = f"Value should be lower or equal to {context.get('le')}"
    elif kind == "string_too_long":
        reason = f"Value should have a maximum character requirement of {context.get('max_length')}"
    elif kind == "string_too_short":
        reason = f"Value should have a minimum character requirement of {context.get('min_length')}"
    elif kind == "string_pattern_mismatch":
        reason = f"Value should match the pattern {context.get('pattern')}"
    elif reason is None:
        reason = str(error.get("msg", "Invalid value"))
    return f"Invalid input for field/attribute {field}. Value: '{value}'. {reason}"
