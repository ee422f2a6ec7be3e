"""HA routers with the real `openstack` CLI against a live `astara serve`:
`router create --ha`, `router show` (HA for admins only), `router set
--ha/--no-ha` (a disabled router only), `network agent list --router R
--long` (each member's host and HA state), and `astara serve --ha-default`.
Hosts and the members' placement are written into the server's database as
a join and the orchestrator would write them."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from astara.db.engine import make_engine, sqlite_url
from astara.db.models import ApplianceState, Host, ha_member_id
from astara.testing.server import BIN, Server
from tests.component.test_openstack_cli import new_project, osc, value

WHEN = datetime(2026, 11, 25, 12, 0)


def _write(server: Server, *rows: Host | ApplianceState) -> None:
    engine = make_engine(sqlite_url(server.state_dir.resolve()))
    try:
        with Session(engine) as session, session.begin():
            for row in rows:
                session.merge(row)
    finally:
        engine.dispose()


def _host(name: str, zone: str) -> Host:
    """A joined host, as `POST /v1/join` records it."""
    return Host(
        id=str(uuid.uuid4()),
        name=name,
        address=f"https://192.0.2.{len(name) + 10}:9698",
        underlay_address="198.51.100.12",
        physnets={},
        availability_zone=zone,
        alive=True,
        last_heartbeat=WHEN,
        reported={},
        created_at=WHEN,
    )


def _member(router_id: str, slot: int, host: str, ha_state: str) -> ApplianceState:
    """An HA router's member as the orchestrator records it once placed."""
    return ApplianceState(
        appliance_id=ha_member_id(router_id, slot),
        kind="router",
        project_id="",
        state="running",
        updated_at=WHEN,
        host=host,
        epoch=1,
        ha_state=ha_state,
    )


def _table(output: str) -> list[list[str]]:
    """The cells of a table `openstack` printed (header first)."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in output.splitlines()
        if line.startswith("|")
    ]


def test_openstack_cli_ha_router_session(server: Server) -> None:
    h1, h2 = _host("h1", "az1"), _host("h2", "az2")
    _write(server, h1, h2)
    alice = new_project(server, "alice")

    created = json.loads(value(osc(server, "router", "create", "--ha", "r1", "-f", "json")))
    assert created["ha"] is True
    router_id = created["id"]
    shown = json.loads(value(osc(server, "router", "show", "r1", "-f", "json")))
    assert shown["ha"] is True
    # The admin sees the hidden network; its project does not.
    names = value(osc(server, "network", "list", "-f", "value", "-c", "Name")).splitlines()
    assert names == [f"HA network project {created['project_id']}"]

    refused = osc(server, "router", "create", "--ha", "t1", token=alice)
    assert refused.returncode != 0
    assert "(rule:create_router:ha) is disallowed by policy" in refused.stderr
    value(osc(server, "router", "create", "t1", token=alice))
    tenants = json.loads(value(osc(server, "router", "show", "t1", "-f", "json", token=alice)))
    assert "ha" not in tenants
    assert value(osc(server, "router", "show", "t1", "-f", "value", "-c", "ha")) == "False"
    assert value(osc(server, "network", "list", "-f", "value", token=alice)) == ""

    active = osc(server, "router", "set", "--no-ha", "r1")
    assert active.returncode != 0
    assert (
        "Bad router request: Cannot change HA attribute of active routers. Please set router"
        " admin_state_up to False prior to upgrade." in active.stderr
    )
    assert value(osc(server, "router", "show", "r1", "-f", "value", "-c", "ha")) == "True"
    value(osc(server, "router", "set", "--no-ha", "--disable", "r1"))
    assert value(osc(server, "router", "show", "r1", "-f", "value", "-c", "ha")) == "False"
    assert value(osc(server, "network", "list", "-f", "value")) == ""  # its last HA router
    value(osc(server, "router", "set", "--ha", "r1"))  # still disabled
    value(osc(server, "router", "set", "--enable", "r1"))
    shown = json.loads(value(osc(server, "router", "show", "r1", "-f", "json")))
    assert shown["ha"] is True and shown["admin_state_up"] is True

    _write(server, _member(router_id, 0, "h2", "active"), _member(router_id, 1, "h1", "standby"))
    listed = _table(
        value(osc(server, "network", "agent", "list", "--router", "r1", "--long", "-f", "table"))
    )
    assert listed == [
        [
            "ID",
            "Agent Type",
            "Host",
            "Availability Zone",
            "Alive",
            "State",
            "Binary",
            "HA State",
        ],
        [h2.id, "L3 agent", "h2", "az2", ":-)", "UP", "astara-agent", "active"],
        [h1.id, "L3 agent", "h1", "az1", ":-)", "UP", "astara-agent", "standby"],
    ]
    short = json.loads(
        value(osc(server, "network", "agent", "list", "--router", router_id, "-f", "json"))
    )
    assert [(a["Host"], "HA State" in a) for a in short] == [("h2", False), ("h1", False)]


def test_serve_ha_default_and_its_network_range(tmp_path: Path) -> None:
    server = Server(tmp_path / "var", None, "--ha-default", "--ha-network-cidr", "10.255.0.0/24")
    server.start()
    try:
        lone = osc(server, "router", "create", "r0")
        assert lone.returncode != 0
        assert (
            "Not enough l3 agents available to ensure HA. Minimum required 2, available 0."
            in lone.stderr
        )
        _write(server, _host("h1", "nova"), _host("h2", "nova"))
        created = json.loads(value(osc(server, "router", "create", "r1", "-f", "json")))
        assert created["ha"] is True
        legacy = json.loads(value(osc(server, "router", "create", "--no-ha", "r2", "-f", "json")))
        assert legacy["ha"] is False
        ranges = value(osc(server, "subnet", "list", "-f", "value", "-c", "Subnet"))
        assert ranges == "10.255.0.0/24"
    finally:
        server.stop()
    wrong = subprocess.run(
        [
            str(BIN / "astara"),
            "serve",
            "--role",
            "api",
            "--state-dir",
            str(tmp_path / "other"),
            "--ha-network-cidr",
            "169.254.192.1/18",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**server.env(), "COLUMNS": "200"},  # the error on one line
    )
    assert wrong.returncode == 2
    assert (
        "Invalid value for --ha-network-cidr: HA network CIDR '169.254.192.1/18': expected an"
        " IPv4 network address and prefix" in wrong.stderr
    )
