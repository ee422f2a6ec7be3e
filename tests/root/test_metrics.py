"""`GET /metrics` on the tenant API (what `astara serve` serves): scraped
through the real app with an orchestrator and a real agent behind it, and
parsed by prometheus-client's own parser."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from astara.api.app import create_app
from astara.api.bootstrap import ADMIN_PROJECT
from astara.db.engine import make_engine, sqlite_url
from astara.db.migrate import upgrade
from astara.orchestrator.failures import FailureKind
from astara.orchestrator.lifecycle import State
from astara.orchestrator.reconciler import Orchestrator
from astara.testing.agent import AgentProcess
from astara.testing.net import wait_until
from tests.root.test_reconciler import Api, routed, settle

pytestmark = pytest.mark.root

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(sqlite_url(tmp_path))
    upgrade(engine)
    yield engine
    engine.dispose()


def scrape(client: TestClient, headers: dict[str, str]) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_are_scraped_and_move_after_a_router_create(
    agent: AgentProcess, engine: Engine, tmp_path: Path
) -> None:
    """Every series the issue asks for is there, and a router made through
    the API moves them: its API requests are timed under their route
    templates (never the raw path with the router's id), a reconcile is
    timed, one config is pushed, one appliance is active. Only an admin
    scrapes: no token is a 401, a project's token a 403; an admin's token
    works as X-Auth-Token and as HTTP Basic (what Prometheus sends)."""
    assert agent.client is not None
    orchestrator = Orchestrator(engine, agent.client, resync_s=600.0, poll_s=0.05).start()
    try:
        api = Api(engine, tmp_path)
        api.client = client = TestClient(create_app(engine, agent.client, orchestrator))
        admin = api.headers
        token = admin["X-Auth-Token"]
        basic = base64.b64encode(f"{ADMIN_PROJECT}:{token}".encode()).decode()
        before = scrape(client, {"Authorization": f"Basic {basic}"})
        for name in (
            "astara_reconcile_seconds_count",
            "astara_reconcile_queue_depth",
            "astara_pushes_total",
            "astara_rebuilds_total",
        ):
            assert any(key[0] == name for key in before), name
        for kind in FailureKind:
            assert ("astara_reconcile_failures_total", frozenset({("kind", kind.value)})) in before
        for state in State:
            assert ("astara_appliances", frozenset({("state", state.value)})) in before

        router, _ = routed(api, "10.5.0.0/24")
        settle(engine, orchestrator, router["id"])
        api("GET", f"/v2.0/routers/{router['id']}")
        after = scrape(client, admin)

        def moved(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert moved("astara_api_request_seconds_count", method="POST", route="/v2.0/routers") == 1
        routes = {
            dict(labels)["route"]
            for name, labels in after
            if name == "astara_api_request_seconds_count"
        }
        assert {"/v2.0/routers/{object_id}", "/v2.0/routers/{object_id}/{action}"} <= routes
        assert not any(router["id"] in route for route in routes)
        assert moved("astara_reconcile_seconds_count", kind="router") >= 1
        # Counted once the agent has answered the push, which may be just
        # after the router was seen ACTIVE (its observation can come first).
        wait_until(
            lambda: (
                value(scrape(client, admin), "astara_pushes_total")
                > value(before, "astara_pushes_total")
            ),
            30,
            0.05,
            "the push to be counted",
        )
        assert value(after, "astara_appliances", state="active") == 1
        assert value(after, "astara_reconcile_queue_depth") >= 0

        assert client.get("/metrics").status_code == 401
        project = api("POST", "/astara/v1/projects", {"name": "tenant"}, 201)
        refused = client.get("/metrics", headers={"X-Auth-Token": project["token"]})
        assert refused.status_code == 403
    finally:
        orchestrator.stop()
