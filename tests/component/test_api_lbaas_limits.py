"""What the Octavia API lets in, the appliance's haproxy serves: inputs at
the edge of what haproxy takes are planned into a config `haproxy -c`
accepts, and those past it are refused by the API with the field and the
reason (a load balancer never reaches ERROR over input the API let in)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from astara.appliance.render.loadbalancer import render_loadbalancer
from astara.appliance.schema import validate_semantics
from astara.db.models import LoadBalancer
from astara.drivers import loadbalancer as lb_driver
from tests.component.conftest import Api
from tests.component.test_api_lbaas import LISTENERS, activate, active_balancer, fault
from tests.unit.validators import assert_accepted, haproxy_check

MONITORS = "/v2/lbaas/healthmonitors"


def test_what_the_api_takes_at_haproxys_edges_is_served_and_past_them_refused(
    admin: Api, engine: Engine, tmp_path: Path
) -> None:
    balancer = active_balancer(admin, engine)
    lb_id = balancer["id"]
    cidrs = [f"10.{n}.0.0/16" for n in range(100)]  # more than haproxy's 64 words a line
    body = {"loadbalancer_id": lb_id, "protocol": "HTTP", "protocol_port": 80}
    made = admin("POST", LISTENERS, {"listener": {**body, "allowed_cidrs": cidrs}})
    assert made.status_code == 201, made.text
    activate(engine, lb_id)
    body = {"listener_id": made.json()["listener"]["id"], "protocol": "HTTP"}
    pool = admin("POST", "/v2/lbaas/pools", {"pool": {**body, "lb_algorithm": "ROUND_ROBIN"}})
    pool_id = pool.json()["pool"]["id"]
    activate(engine, lb_id)
    member = {"address": "10.0.0.21", "protocol_port": 8000}
    assert admin("POST", f"/v2/lbaas/pools/{pool_id}/members", {"member": member}).status_code == (
        201
    )
    activate(engine, lb_id)
    monitor = {"pool_id": pool_id, "type": "HTTP", "max_retries": 1}
    # Past haproxy's timers (2^31 - 1 ms), and a range of codes going down.
    for wrong, reason in (
        ({"delay": 2_147_484, "timeout": 1}, "Value should be lower or equal to 2147483"),
        ({"delay": 1, "timeout": 2_147_484}, "Value should be lower or equal to 2147483"),
        (
            {"delay": 1, "timeout": 1, "expected_codes": "500-200"},
            "The range 500-200 must go from the lower code to the higher one",
        ),
    ):
        status, _, message = fault(admin("POST", MONITORS, {"healthmonitor": {**monitor, **wrong}}))
        assert status == 400 and message.endswith(reason), message
    edge = {"delay": 2_147_483, "timeout": 2_147_483, "expected_codes": "200-204"}
    made = admin("POST", MONITORS, {"healthmonitor": {**monitor, **edge}})
    assert made.status_code == 201, made.text
    monitor_id = made.json()["healthmonitor"]["id"]
    activate(engine, lb_id)
    refused = admin("PUT", f"{MONITORS}/{monitor_id}", {"healthmonitor": {"delay": 2_147_484}})
    assert fault(refused)[0] == 400
    refused = admin(
        "PUT", f"{MONITORS}/{monitor_id}", {"healthmonitor": {"expected_codes": "302-301"}}
    )
    assert fault(refused)[0] == 400
    with Session(engine) as session:
        row = session.get(LoadBalancer, lb_id)
        assert row is not None
        config = lb_driver.plan(session, row).config
    assert config is not None and config.loadbalancer is not None
    assert validate_semantics(config) == []
    path = tmp_path / "haproxy.cfg"
    path.write_text(render_loadbalancer(config.loadbalancer, tmp_path))
    assert_accepted(haproxy_check(path))
