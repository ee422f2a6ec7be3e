"""Octavia bodies are refused with WSME's messages (what the clients print)."""

from __future__ import annotations

import uuid
from typing import Literal

import pytest
from pydantic import Field, IPvAnyAddress

from astara.api.lbaas.bodies import Body, given, parse
from astara.api.lbaas.errors import OctaviaError


class Listener(Body):
    protocol: Literal["TCP", "HTTP", "HTTPS"]
    protocol_port: int = Field(ge=1, le=65535)
    connection_limit: int = Field(default=-1, ge=-1)
    name: str = Field(default="", max_length=255)
    loadbalancer_id: uuid.UUID
    address: IPvAnyAddress | None = None


def refused(body: object) -> tuple[int, str]:
    with pytest.raises(OctaviaError) as caught:
        parse(Listener, body, "listener")
    return caught.value.status, caught.value.message


LB = str(uuid.uuid4())


def test_what_is_taken_and_what_a_put_set() -> None:
    body = {"listener": {"protocol": "HTTP", "protocol_port": "80", "loadbalancer_id": LB}}
    made = parse(Listener, body, "listener")
    assert (made.protocol_port, made.connection_limit) == (80, -1)  # a string is an integer
    assert given(made) == {"protocol", "protocol_port", "loadbalancer_id"}


def test_wsme_messages() -> None:
    base = {"protocol": "HTTP", "protocol_port": 80, "loadbalancer_id": LB}
    assert refused({}) == (400, 'Missing argument: "listener"')
    assert refused({"listener": {**base, "protocol": "FOO"}}) == (
        400,
        "Invalid input for field/attribute protocol. Value: 'FOO'."
        " Value should be one of: TCP, HTTP, HTTPS",
    )
    missing = {k: v for k, v in base.items() if k != "protocol_port"}
    assert refused({"listener": missing})[1] == (
        "Invalid input for field/attribute protocol_port. Value: 'None'. Mandatory field missing."
    )
    assert refused({"listener": {**base, "protocol_port": 0}})[1].endswith(
        "Value: '0'. Value should be greater or equal to 1"
    )
    assert refused({"listener": {**base, "protocol_port": 70000}})[1].endswith(
        "Value should be lower or equal to 65535"
    )
    assert refused({"listener": {**base, "name": "x" * 256}})[1].endswith(
        "Value should have a maximum character requirement of 255"
    )
    assert refused({"listener": {**base, "loadbalancer_id": "nope"}})[1].endswith(
        "Value: 'nope'. Value should be UUID format"
    )
    assert refused({"listener": {**base, "address": "10.0.0.300"}})[1].endswith(
        "Value should be IPv4 or IPv6 format"
    )
    assert refused({"listener": {**base, "colour": "red"}}) == (
        400,
        "Unknown attribute for argument listener: colour",
    )
