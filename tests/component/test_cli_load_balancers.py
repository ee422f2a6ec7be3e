"""`astara lb list|show|rebuild|debug|manage`, the real CLI against a live
`astara serve --role api` (no agent: what the appliance runs is shown by
tests/root/test_load_balancer_cli.py)."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import httpx
import pytest

from astara.testing.server import BIN, Server


def astara(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it: credentials from the state dir, and a
    terminal wide enough that table cells are not folded."""
    env = {**os.environ, "ASTARA_STATE_DIR": str(server.state_dir), "COLUMNS": "300"}
    return subprocess.run(
        [str(BIN / "astara"), *args], capture_output=True, text=True, env=env, timeout=60
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def balancer(server: Server, name: str) -> dict[str, Any]:
    """A load balancer on a new subnet, made through the tenant API."""
    token = (server.state_dir / "admin-token").read_text().strip()
    with httpx.Client(base_url=server.url, headers={"X-Auth-Token": token}) as api:

        def create(path: str, key: str, **fields: Any) -> dict[str, Any]:
            response = api.post(path, json={key: fields})
            assert response.status_code == 201, response.text
            made: dict[str, Any] = response.json()[key]
            return made

        network = create("/v2.0/networks", "network", name="net")
        subnet = create(
            "/v2.0/subnets", "subnet", network_id=network["id"], ip_version=4, cidr="10.0.0.0/24"
        )
        return create(
            "/v2/lbaas/loadbalancers", "loadbalancer", name=name, vip_subnet_id=subnet["id"]
        )


def test_lb_commands_list_show_and_act_on_a_load_balancer(server: Server) -> None:
    made = balancer(server, "web")
    listed = ok(astara(server, "lb", "list"))
    (row,) = [line for line in listed.splitlines() if made["id"] in line]
    for cell in ("web", made["vip_address"], "PENDING_CREATE", "OFFLINE", "creating"):
        assert cell in row, (cell, row)

    shown = json.loads(ok(astara(server, "lb", "show", "web")))
    assert shown["id"] == made["id"] and shown["appliance_id"] == f"lb-{made['id']}"
    assert shown["listeners"] == [] and shown["rendered"] is None

    # Without an agent there is nothing rendered: one clear line, exit 1.
    rendered = astara(server, "lb", "show", "web", "--rendered")
    assert rendered.returncode == 1 and "no rendered files" in rendered.stdout

    for action in ("debug", "rebuild"):
        said = ok(astara(server, "lb", action, "web"))
        assert said.strip() == f"load balancer {made['id']}: {action} requested"
    assert "creating (paused)" in ok(astara(server, "lb", "list"))
    ok(astara(server, "lb", "manage", made["id"]))
    shown = json.loads(ok(astara(server, "lb", "show", made["id"])))
    assert shown["paused"] is False
    assert [e["message"] for e in shown["events"]] == [
        "operator: debug",
        "operator: rebuild",
        "operator: manage",
    ]
    # And among every appliance, by its appliance id.
    assert f"lb-{made['id']}" in ok(astara(server, "appliance", "list"))
    as_appliance = json.loads(ok(astara(server, "appliance", "show", f"lb-{made['id']}")))
    assert as_appliance["kind"] == "loadbalancer"


@pytest.mark.parametrize("command", ["show", "rebuild", "debug", "manage"])
def test_an_unknown_load_balancer_is_one_clear_error(server: Server, command: str) -> None:
    result = astara(server, "lb", command, "nothing")
    assert result.returncode == 1
    assert result.stdout.strip() == "error: 404 Load balancer nothing could not be found."
    assert "Traceback" not in result.stdout + result.stderr
