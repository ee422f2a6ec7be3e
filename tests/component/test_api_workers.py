"""Several API processes (`astara serve --role api --workers N`) on one
socket and one PostgreSQL: a worker answers while the first process cannot,
concurrent creates on one network from both all succeed (no deadlock, each
address and MAC once), and the workers end with the first process. And the
port list's visibility is served by indexes on PostgreSQL, however many
ports other projects have."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from astara.api import ports
from astara.api.auth import Caller
from astara.db.engine import make_engine
from astara.db.migrate import upgrade
from astara.testing.net import free_port, wait_until
from astara.testing.postgres import PostgresServer


def _serve(*args: str) -> list[str]:
    return [sys.executable, "-c", "from astara.cli.main import main; main()", "serve", *args]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"astara.api.workers" in cmdline:
            found.append(int(entry.name))
    return found


def test_workers_serve_one_socket_and_end_with_the_first(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.create_database()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        _serve(
            "--state-dir",
            str(tmp_path),
            "--listen",
            f"127.0.0.1:{port}",
            "--db-url",
            url,
            "--role",
            "api",
            "--workers",
            "2",
            "--control-listen",
            "none",
            "--log-level",
            "warning",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    try:

        def answering() -> bool:
            try:
                return httpx.get(base, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answering, 60, 0.1, "astara serve to answer")
        wait_until(lambda: len(_children(server.pid)) == 1, 30, 0.1, "its worker")
        workers = _children(server.pid)
        admin = {"X-Auth-Token": (tmp_path / "admin-token").read_text().strip()}
        made = httpx.post(
            f"{base}/astara/v1/projects", json={"name": "w"}, headers=admin, timeout=30
        ).json()
        project_id, tenant = made["project"]["id"], {"X-Auth-Token": made["token"]}
        unlimited = {"quota": {"port": -1}}
        response = httpx.put(
            f"{base}/v2.0/quotas/{project_id}", json=unlimited, headers=admin, timeout=30
        )
        assert response.status_code == 200, response.text
        network = httpx.post(
            f"{base}/v2.0/networks", json={"network": {}}, headers=tenant, timeout=30
        ).json()["network"]
        subnet = {"subnet": {"network_id": network["id"], "ip_version": 4, "cidr": "10.9.0.0/24"}}
        response = httpx.post(f"{base}/v2.0/subnets", json=subnet, headers=tenant, timeout=30)
        assert response.status_code == 201, response.text
        body = {"port": {"network_id": network["id"]}}

        # The first process stopped: the worker alone accepts, and answers.
        server.send_signal(signal.SIGSTOP)
        try:
            for _ in range(3):  # a new connection each time
                response = httpx.post(f"{base}/v2.0/ports", json=body, headers=tenant, timeout=20)
                assert response.status_code == 201, response.text
        finally:
            server.send_signal(signal.SIGCONT)

        # Both at once, on one network: every create succeeds.
        def create(_: int) -> int:
            with httpx.Client(base_url=base, headers=tenant, timeout=60) as client:
                return client.post("/v2.0/ports", json=body).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(create, range(48)))
        assert codes == [201] * 48
        listed = httpx.get(f"{base}/v2.0/ports", headers=tenant, timeout=30).json()["ports"]
        workloads = [p for p in listed if p["device_owner"] != "network:dhcp"]
        assert len(workloads) == 51
        addresses = [ip["ip_address"] for p in listed for ip in p["fixed_ips"]]
        assert len(set(addresses)) == len(addresses)
        assert len({p["mac_address"] for p in listed}) == len(listed)
    finally:
        server.send_signal(signal.SIGCONT)
        server.terminate()
        server.wait(30)
    # The worker ends with it.
    deadline = time.monotonic() + 15
    while workers and time.monotonic() < deadline:
        workers = [pid for pid in workers if _alive(pid)]
        time.sleep(0.1)
    assert workers == []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_workers_serve_the_api_role_only(tmp_path: Path) -> None:
    result = subprocess.run(
        _serve("--state-dir", str(tmp_path), "--workers", "2"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "several workers serve --role api only" in " ".join(
        (result.stdout + result.stderr).split()
    )


@pytest.mark.parametrize("admin", [False, True])
def test_a_projects_port_list_is_found_by_indexes_on_postgresql(
    postgres: PostgresServer, admin: bool
) -> None:
    """Its own ports or those on its networks: a bitmap OR of two index
    scans, never a scan of every project's ports (seq scans made as dear
    as the planner allows, so that only a plan without one avoids them)."""
    engine = make_engine(postgres.create_database())
    try:
        upgrade(engine)
        caller = Caller("p" * 32, "p", admin)
        statement = ports._visible_rows(caller).with_only_columns(ports.Port.id)
        compiled = statement.compile(engine)
        with engine.connect() as connection:
            connection.execute(text("SET enable_seqscan = off"))
            plan = "\n".join(
                str(row[0])
                for row in connection.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params)
            )
        if admin:
            return  # every port: nothing to narrow down
        assert "Seq Scan on ports" not in plan, plan
        assert "Index" in plan, plan
    finally:
        engine.dispose()
