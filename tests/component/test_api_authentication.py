"""Authentication comes first: without a valid token every path and method —
known, unknown, with any body or query string — answers the same 401, so an
anonymous caller learns nothing about routes, actions or parameters. Only
`GET /` (the version document) is open."""

from __future__ import annotations

import base64
import re
import uuid
from typing import Any

import pytest

from astara.api.bootstrap import ADMIN_PROJECT
from tests.component.conftest import Api, error

GARBAGE_BODIES: list[Any] = [None, b"{not json", {"network": {"name": 7}}, [1, 2], "x" * 300]
GARBAGE_QUERIES = [
    "",
    "since=-315269958703787404165120&limit=abc",
    "fields=id&limit=0&marker=zz&page_reverse=maybe",
    "%ff%fe=1&name=\x00",
]
NO_TOKEN: dict[str, str] = {}
WRONG_TOKENS = [
    {"X-Auth-Token": "notused"},
    {"X-Auth-Token": uuid.uuid4().hex},
    {"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()},
    {"Authorization": "Basic !!!"},
    {"Authorization": "Bearer " + uuid.uuid4().hex},
]


def operations(api: Api) -> list[tuple[str, str]]:
    """Every path template and method of the served OpenAPI document."""
    document = api.client.app.openapi()  # type: ignore[attr-defined]
    return [
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch", "head"}
    ]


def real_ids(admin: Api) -> dict[str, str]:
    """Ids of objects that exist, so that a 401 cannot be a 404 in disguise."""
    network = admin.create_network(name="auth-net")
    subnet = {"network_id": network["id"], "cidr": "10.9.0.0/24", "ip_version": 4}
    assert admin("POST", "/v2.0/subnets", {"subnet": subnet}).status_code == 201
    port = admin("POST", "/v2.0/ports", {"port": {"network_id": network["id"]}}).json()["port"]
    router = admin("POST", "/v2.0/routers", {"router": {"name": "auth-r"}}).json()["router"]
    admin("PUT", f"/v2.0/networks/{network['id']}/tags/red")
    return {
        "object_id": network["id"],
        "router_id": router["id"],
        "port_id": port["id"],
        "name_or_id": ADMIN_PROJECT,
        "project_id": admin("GET", "/v2.0/quotas/project").json()["project"]["project_id"],
        "alias": "router",
        "tag": "red",
    }


def filled(template: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "action":  # a real action of that resource
            return "add_router_interface" if template.startswith("/v2.0/") else "debug"
        return values.get(name, uuid.uuid4().hex)

    return re.sub(r"\{(\w+)\}", value, template)


def send(api: Api, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    content = body if isinstance(body, bytes) else None
    return api.client.request(
        method,
        path,
        json=None if isinstance(body, bytes) else body,
        content=content,
        headers=headers,
    )


def assert_unauthorized(response: Any, what: str) -> None:
    assert response.status_code == 401, f"{what}: {response.status_code} {response.text}"
    assert error(response)[1] == "HTTPUnauthorized", what


def test_every_route_refuses_a_missing_or_wrong_token(admin: Api) -> None:
    served = operations(admin)
    assert len(served) > 40  # the walk covers the whole API, not a stub of it
    fillings = [real_ids(admin), {}]  # real ids, then random ones
    checked = 0
    for template, method in served:
        if (method, template) == ("GET", "/"):
            continue
        for n, values in enumerate(fillings):
            path = filled(template, values)
            query = GARBAGE_QUERIES[n % len(GARBAGE_QUERIES)]
            for i, headers in enumerate([NO_TOKEN, *WRONG_TOKENS]):
                body = GARBAGE_BODIES[(i + n) % len(GARBAGE_BODIES)]
                url = f"{path}?{query}" if query else path
                response = send(admin, method, url, body, headers)
                assert_unauthorized(response, f"{method} {url} with {headers}")
                checked += 1
    assert checked == (len(served) - 1) * len(fillings) * (1 + len(WRONG_TOKENS))


def test_the_same_requests_with_the_token_get_past_authentication(admin: Api) -> None:
    """The walk above proves nothing unless a valid token changes the answer."""
    values = real_ids(admin)
    for template, method in operations(admin):
        path = filled(template, values)
        for body in GARBAGE_BODIES:
            response = send(admin, method, path, body, {"X-Auth-Token": admin.token})
            assert response.status_code != 401, f"{method} {path}"
            assert response.status_code < 500, f"{method} {path}: {response.text}"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nothing-here"),
        ("GET", "/v2.0/nothing-here"),
        ("POST", "/v2.0/networks/x/y/z"),
        ("PUT", "/v2.0/routers/r1/no_such_action"),
        ("POST", "/astara/v1/routers/r1/no_such_action"),
        ("PATCH", "/v2.0/networks"),
        ("OPTIONS", "/v2.0/networks"),
        ("GET", "/v2.0/networks.json"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("HEAD", "/v2.0/"),
        ("DELETE", "/"),
        ("POST", "/"),
    ],
)
def test_unknown_paths_and_methods_refuse_a_missing_or_wrong_token(
    admin: Api, method: str, path: str
) -> None:
    for headers in [NO_TOKEN, *WRONG_TOKENS]:
        response = admin.client.request(method, path, headers=headers)
        assert response.status_code == 401, f"{method} {path} with {headers}"
        if method != "HEAD":
            assert error(response)[1] == "HTTPUnauthorized"


def test_the_version_document_is_open(admin: Api) -> None:
    response = admin.client.get("/")
    assert response.status_code == 200
    assert response.json()["versions"][0]["id"] == "v2.0"


def test_http_basic_with_the_project_name_and_its_token_is_accepted(admin: Api) -> None:
    basic = base64.b64encode(f"{ADMIN_PROJECT}:{admin.token}".encode()).decode()
    response = admin.client.get("/v2.0/networks", headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 200
    other = base64.b64encode(f"someone-else:{admin.token}".encode()).decode()
    response = admin.client.get("/v2.0/networks", headers={"Authorization": f"Basic {other}"})
    assert_unauthorized(response, "Basic with another project's name")
