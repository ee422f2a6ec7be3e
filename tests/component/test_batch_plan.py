"""Plans read in one batch (`astara.drivers.reads.Batch`, what a restarted
orchestrator checks every appliance with) are the plans read one appliance
at a time: the same config, digest, networks and ports, over random
sequences of Neutron calls (the scenarios of `test_api_to_appliance`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from astara.api.app import create_app
from astara.api.bootstrap import ensure_admin
from astara.db.engine import make_engine, sqlite_url
from astara.db.migrate import upgrade
from astara.db.models import Router
from astara.drivers import dhcp as dhcp_driver
from astara.drivers import router as router_driver
from astara.drivers.appliance import AppliancePlan
from astara.drivers.reads import Batch
from tests.component.conftest import NOW, Api
from tests.component.test_api_to_appliance import LIMITED, Scenario, scenarios


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    made = make_engine(sqlite_url(tmp_path_factory.mktemp("db")))
    upgrade(made)
    yield made
    made.dispose()


@pytest.fixture(scope="module")
def admin(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Api:
    token = ensure_admin(engine, tmp_path_factory.mktemp("state"), "http://testserver", NOW)
    api = Api(TestClient(create_app(engine)), token)
    own = api("GET", "/v2.0/quotas/project").json()["project"]["project_id"]
    limits = dict.fromkeys(LIMITED, -1)
    assert api("PUT", f"/v2.0/quotas/{own}", {"quota": limits}).status_code == 200
    return api


def shown(plan: AppliancePlan) -> tuple[Any, ...]:
    config = plan.config.model_dump(mode="json") if plan.config is not None else None
    return (plan.appliance_id, config, plan.digest, plan.networks, plan.ports)


@settings(
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenarios())
def test_a_batch_plans_what_one_at_a_time_plans(
    admin: Api, engine: Engine, steps: list[tuple[Any, ...]]
) -> None:
    scenario = Scenario(admin)
    for step in steps:
        scenario.run(step)
    router_ids = [r["id"] for r in scenario.made["router"]]
    network_ids = [n["id"] for n in scenario.made["network"]]
    with Session(engine) as session:
        routers = list(session.scalars(select(Router).where(Router.id.in_(router_ids))))
        alone = [shown(router_driver.plan(session, r)) for r in routers]
        alone += [shown(dhcp_driver.plan(session, n)) for n in network_ids]
    with Session(engine) as session:
        batch = Batch(session).load(router_ids, network_ids)
        statements: list[str] = []

        def keep(*args: Any) -> None:
            statements.append(str(args[2]))

        event.listen(engine, "before_cursor_execute", keep)
        try:
            together = [
                shown(router_driver.plan(session, batch.routers[r.id], batch)) for r in routers
            ]
            together += [shown(dhcp_driver.plan(session, n, batch)) for n in network_ids]
        finally:
            event.remove(engine, "before_cursor_execute", keep)
    assert together == alone
    # Everything was read by `load`, but the DHCP host rows (one statement).
    assert len(statements) <= 1, statements
