"""A request's database work is its one hand-off to the thread pool: the
dependencies that give a route its caller, services and transaction run on
the event loop. FastAPI runs a plain-function dependency in the thread pool,
and each hand-off (a queue put, a thread woken, the answer handed back) cost
about a third of a simple request's CPU."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from astara.api.app import create_app
from astara.api.auth import TokenCache
from tests.component.conftest import Api, project


@pytest.fixture
def handoffs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the functions handed to the thread pool, in order."""
    seen: list[str] = []
    original = anyio.to_thread.run_sync

    async def counted(function: Any, *args: Any, **kwargs: Any) -> Any:
        called = getattr(function, "func", function)  # starlette hands a partial
        seen.append(getattr(called, "__name__", repr(called)))
        return await original(function, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    yield seen


def test_each_request_hands_the_thread_pool_one_transaction(
    admin: Api, engine: Engine, handoffs: list[str]
) -> None:
    # Its token looked up once, then trusted for the whole test (the default
    # 5 s could run out on a loaded machine: a lookup is a hand-off too).
    made = project(admin, "threads")
    tenant = Api(TestClient(create_app(engine, tokens=TokenCache(ttl_s=3600))), made.token)
    tenant("GET", "/v2.0/networks")
    network = tenant.create_network(name="n")
    requests: list[tuple[str, str, Any]] = [
        ("GET", f"/v2.0/networks/{network['id']}", None),
        ("GET", "/v2.0/networks", None),
        ("PUT", f"/v2.0/networks/{network['id']}", {"network": {"name": "m"}}),
        ("POST", "/v2.0/ports", {"port": {"network_id": network["id"]}}),
        ("DELETE", f"/v2.0/networks/{network['id']}", None),
    ]
    for method, path, body in requests:
        handoffs.clear()
        response = tenant(method, path, body)
        if method == "DELETE":  # the port is still on it: refused, in one transaction too
            assert response.status_code == 409, response.text
        else:
            assert response.status_code < 300, response.text
        assert handoffs == ["run_transaction"], (method, path)
