"""Shared pieces of the tenant-API tests: a migrated SQLite database, the
bootstrapped admin, projects, and Neutron error bodies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from astara.api.app import create_app
from astara.api.bootstrap import ensure_admin
from astara.db.engine import make_engine, sqlite_url
from astara.db.migrate import upgrade
from astara.testing.server import Server

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).replace(tzinfo=None)


class Api:
    def __init__(self, client: TestClient, token: str) -> None:
        self.client, self.token = client, token

    def __call__(
        self, method: str, path: str, body: Any = None, headers: Any = None, **kwargs: Any
    ) -> Any:
        headers = {"X-Auth-Token": self.token, **(headers or {})}
        return self.client.request(method, path, json=body, headers=headers, **kwargs)

    def create_network(self, **fields: Any) -> dict[str, Any]:
        response = self("POST", "/v2.0/networks", {"network": fields})
        assert response.status_code == 201, response.text
        network: dict[str, Any] = response.json()["network"]
        return network


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The same tests on SQLite (the default) and on PostgreSQL."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
    else:
        url = request.getfixturevalue("postgres").create_database()
    engine = make_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def admin(engine: Engine, tmp_path: Path) -> Api:
    token = ensure_admin(engine, tmp_path, "http://testserver", NOW)
    return Api(TestClient(create_app(engine)), token)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A live `astara serve --role api` (no agent, no orchestrator)."""
    running = Server(tmp_path / "var")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def project(admin: Api, name: str) -> Api:
    response = admin("POST", "/astara/v1/projects", {"name": name})
    assert response.status_code == 201
    return Api(admin.client, response.json()["token"])


def error(response: Any) -> tuple[int, str, str]:
    body = response.json()["NeutronError"]
    return response.status_code, body["type"], body["message"]
