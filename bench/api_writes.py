"""The tenant API's CPU per write, in one process: port create, router
create with its gateway, add_router_interface, floating IP create, network
and subnet create, each `--count` times on a throwaway PostgreSQL.

The app is served in this process (FastAPI's TestClient: no sockets, no
uvicorn), so the process's CPU time per request is the server's work plus
the test client's; the same run's `GET /` (the version document: no
database, no authentication) gives what the client and the framework cost
alone. PostgreSQL's CPU (its backends for the database, from `/proc`) is
read apart. On a machine shared with other work these CPU times, unlike
wall-clock rates, say what a request costs.

`PYTHONPATH=src:. python -m bench.api_writes [--count 200] [--only port,router]`
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from astara.api.app import create_app
from astara.api.bootstrap import ensure_admin
from astara.db.engine import make_engine
from astara.db.migrate import upgrade
from astara.testing.postgres import PostgresServer
from bench.harness import Report, log

OPERATIONS = ("version", "port", "router", "interface", "floatingip", "network", "subnet")


def _backends_cpu_s(database: str) -> float:
    """CPU seconds of PostgreSQL's backends serving `database`."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if command.startswith(f"postgres: postgres {database} ".encode()):
            ticks += int(stat[11]) + int(stat[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class _Writes:
    """A project with an external network and a network of its own, and
    one request of each kind, checked."""

    def __init__(self, client: TestClient, admin: dict[str, str]) -> None:
        self.client, self.admin = client, admin
        made = self._ok(client.post("/astara/v1/projects", json={"name": "bench"}, headers=admin))
        project_id, self.tenant = made["project"]["id"], {"X-Auth-Token": made["token"]}
        unlimited = {name: -1 for name in ("network", "subnet", "port", "router", "floatingip")}
        self._ok(client.put(f"/v2.0/quotas/{project_id}", json={"quota": unlimited}, headers=admin))
        external = {"network": {"name": "public", "router:external": True}}
        self.external = self._ok(client.post("/v2.0/networks", json=external, headers=admin))[
            "network"
        ]["id"]
        self._subnet(self.external, "172.16.0.0/16", admin)
        self.network = self._post("networks", {"network": {"name": "private"}})["network"]["id"]
        self._subnet(self.network, "10.0.0.0/16", self.tenant)
        self.for_subnets = self._post("networks", {"network": {"name": "s"}})["network"]["id"]
        self.subnets = 0
        self.router_id = ""

    @staticmethod
    def _ok(response: Any) -> Any:
        if response.status_code >= 300:
            raise RuntimeError(f"{response.status_code}: {response.text}")
        return response.json() if response.content else None

    def _post(self, collection: str, body: dict[str, Any]) -> Any:
        return self._ok(self.client.post(f"/v2.0/{collection}", json=body, headers=self.tenant))

    def _subnet(self, network_id: str, cidr: str, headers: dict[str, str]) -> str:
        body = {"subnet": {"network_id": network_id, "cidr": cidr, "ip_version": 4}}
        made = self._ok(self.client.post("/v2.0/subnets", json=body, headers=headers))
        return str(made["subnet"]["id"])

    def version(self) -> None:
        self._ok(self.client.get("/"))

    def port(self) -> None:
        self._post("ports", {"port": {"network_id": self.network}})

    def router(self) -> None:
        gateway = {"network_id": self.external}
        made = self._post("routers", {"router": {"name": "r", "external_gateway_info": gateway}})
        self.router_id = made["router"]["id"]

    def interface_setup(self) -> Callable[[], None]:
        """A router with its gateway and a subnet (not timed), and the timed
        call that joins them: a router's first interface, as in the
        1,000-router run (each further one costs more: the router's subnets
        are checked for overlap)."""
        self.router()
        network = self._post("networks", {"network": {"name": "inside"}})["network"]["id"]
        n = self.subnets
        self.subnets += 1
        subnet = self._subnet(network, f"10.{100 + n // 250}.{n % 250}.0/24", self.tenant)
        path = f"/v2.0/routers/{self.router_id}/add_router_interface"
        return lambda: self._ok(
            self.client.put(path, json={"subnet_id": subnet}, headers=self.tenant)
        )

    def floatingip(self) -> None:
        self._post("floatingips", {"floatingip": {"floating_network_id": self.external}})

    def network_create(self) -> None:
        self._post("networks", {"network": {"name": "n"}})

    def subnet_create(self) -> None:
        self.subnets += 1
        n = self.subnets
        self._subnet(self.for_subnets, f"10.{200 + n // 250}.{n % 250}.0/24", self.tenant)


def measure(count: int, only: list[str], report: Report) -> None:
    postgres = PostgresServer().start()
    state = Path(tempfile.mkdtemp(prefix="astara-bench-writes-"))
    try:
        url = postgres.create_database()
        database = url.split("?")[0].rsplit("/", 1)[1]
        engine = make_engine(url)
        upgrade(engine)
        now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        token = ensure_admin(engine, state, "http://bench", now)
        client = TestClient(create_app(engine))
        writes = _Writes(client, {"X-Auth-Token": token})
        simple: dict[str, Callable[[], None]] = {
            "version": writes.version,
            "port": writes.port,
            "router": writes.router,
            "floatingip": writes.floatingip,
            "network": writes.network_create,
            "subnet": writes.subnet_create,
        }
        for name in only:
            # Warm: the routes' first calls, the statement caches.
            for _ in range(10):
                (writes.interface_setup() if name == "interface" else simple[name])()
            process_s = database_s = 0.0
            started = time.perf_counter()
            for _ in range(count):
                call = writes.interface_setup() if name == "interface" else simple[name]
                # Read apart: reading /proc costs this process CPU too.
                backends = _backends_cpu_s(database)
                process = time.process_time()
                call()
                process_s += time.process_time() - process
                database_s += _backends_cpu_s(database) - backends
            elapsed = time.perf_counter() - started
            record = {
                "name": f"api.write.{name}",
                "requests": count,
                "process_cpu_ms_per_request": round(process_s / count * 1000, 2),
                "database_cpu_ms_per_request": round(database_s / count * 1000, 2),
                "load_average": os.getloadavg()[0],
                "baseline": "api.write.version: GET / (the test client and the framework alone)",
            }
            report.emit(record)
            log(
                f"api writes: {name}: {record['process_cpu_ms_per_request']} ms of this process's"
                f" CPU, {record['database_cpu_ms_per_request']} ms of PostgreSQL's, per request"
                f" ({count} in {elapsed:.1f} s)"
            )
        engine.dispose()
    finally:
        postgres.stop()
        shutil.rmtree(state, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.api_writes", description=__doc__)
    parser.add_argument("--count", type=int, default=200, help="requests of each kind")
    parser.add_argument("--only", default=",".join(OPERATIONS), help="comma-separated kinds")
    args = parser.parse_args(argv)
    only = [name for name in args.only.split(",") if name]
    unknown = set(only) - set(OPERATIONS)
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    measure(args.count, only, Report())


if __name__ == "__main__":
    main()
