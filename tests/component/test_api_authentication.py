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
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete

from astara.api.app import create_app
from astara.api.auth import Caller, TokenCache, digest
from astara.api.bootstrap import ADMIN_PROJECT
from astara.db.models import Credential
from tests.component.conftest import Api, error, project

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


def test_a_token_revoked_by_another_process_stops_working_within_the_cache_bound(
    admin: Api, engine: Engine
) -> None:
    """A token found valid is trusted `ttl_s` without the database
    (`auth.TokenCache`); a credential removed behind this process's back
    (another API process, an operator's SQL) is refused once that is over.
    The cache's clock is the test's, so that a slow machine cannot blur it."""
    clock = [1000.0]
    ttl_s = 5.0
    tokens = TokenCache(ttl_s=ttl_s, clock=lambda: clock[0])
    served = Api(TestClient(create_app(engine, tokens=tokens)), admin.token)
    bob = project(served, "bob")
    assert bob("GET", "/v2.0/networks").status_code == 200  # found valid: cached
    with engine.begin() as connection:
        connection.execute(delete(Credential).where(Credential.token_sha256 == digest(bob.token)))
    clock[0] += ttl_s - 0.1
    # Still trusted from the cache (the database was not asked again) ...
    assert bob("GET", "/v2.0/networks").status_code == 200
    # ... never with another project's name as HTTP Basic ...
    wrong = base64.b64encode(f"admin:{bob.token}".encode()).decode()
    response = served.client.get("/v2.0/networks", headers={"Authorization": f"Basic {wrong}"})
    assert_unauthorized(response, "a cached token with another project's name")
    # ... and refused once the bound is over, however it is presented.
    clock[0] += 0.1
    assert_unauthorized(bob("GET", "/v2.0/networks"), "a revoked token past the cache bound")
    basic = base64.b64encode(f"bob:{bob.token}".encode()).decode()
    response = served.client.get("/v2.0/networks", headers={"Authorization": f"Basic {basic}"})
    assert_unauthorized(response, "a revoked token as HTTP Basic")


def test_a_token_cache_of_zero_asks_the_database_every_time(admin: Api, engine: Engine) -> None:
    served = Api(TestClient(create_app(engine, tokens=TokenCache(ttl_s=0))), admin.token)
    bob = project(served, "bob")
    assert bob("GET", "/v2.0/networks").status_code == 200
    with engine.begin() as connection:
        connection.execute(delete(Credential).where(Credential.token_sha256 == digest(bob.token)))
    assert_unauthorized(bob("GET", "/v2.0/networks"), "a revoked token, no cache")


def test_the_token_cache_forgets_the_least_recently_used_and_the_expired() -> None:
    now = [100.0]
    tokens = TokenCache(ttl_s=5.0, size=2, clock=lambda: now[0])
    callers = {name: Caller(name, name, False) for name in "abc"}
    for name in "ab":
        tokens.put((name, None), callers[name], since=now[0])
    assert tokens.get(("a", None)) == callers["a"]  # now the most recently used
    tokens.put(("c", None), callers["c"], since=now[0])
    assert tokens.get(("b", None)) is None
    assert tokens.get(("a", None)) == callers["a"] and tokens.get(("c", None)) == callers["c"]
    assert tokens.get(("a", "someone")) is None  # HTTP Basic's name is part of the key
    now[0] = 104.9
    assert tokens.get(("a", None)) == callers["a"]
    now[0] = 105.0  # trusted for 5 s from when the database was asked
    assert tokens.get(("a", None)) is None and tokens.get(("c", None)) is None
    tokens.put(("a", None), callers["a"], since=now[0])
    tokens.clear()
    assert tokens.get(("a", None)) is None
