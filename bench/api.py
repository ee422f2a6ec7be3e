"""Tenant API at scale: port create throughput and a full, unpaginated port
list of 10,000 ports, with 0 and with 100,000 other ports in the database,
on SQLite and on PostgreSQL.

A real `astara serve` (uvicorn, one process) answers. The rows are written
first, directly (bulk inserts of the models' rows: the API would take
minutes to fill it): a project `bench` with one network, a /16 subnet and
10,000 ports, each with a fixed IP; in the larger case 100,000 more ports
of 50 other projects on 50 networks of their own, which `bench` cannot see.
Then, timed through the API: `GET /v2.0/ports` as `bench` (one client, one
request at a time: p50 and p99, to the body's last byte; the client's own
decoding of the 7 MB is reported apart), and `POST /v2.0/ports` on `bench`'s network
from eight client threads (2,000 of them: creates per second). On PostgreSQL the largest
case runs again with `astara serve --workers 4` (four API processes on one
socket). `python -m bench.api --others 100000 --workers 4` runs one
PostgreSQL case alone; `--baseline-src DIR` serves another source tree
(say, the code before a change) on the same database beside it, the lists
of the two alternated, one each in turn.

Baselines, in the same run against the same database: for the list, the raw
SQL SELECT of the same rows (the ports and their fixed IPs, as two plain
queries through the driver, no ORM, no HTTP); for creates, the
unauthenticated version document (`GET /`, no database) on the same server,
same clients.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, insert, text

from astara.db.engine import make_engine, sqlite_url
from astara.db.migrate import upgrade
from astara.db.models import IpAllocation, Network, Port, Subnet
from astara.testing.net import free_ports
from astara.testing.postgres import PostgresServer, binaries
from bench.harness import Report, Settings, log, ratio

CLIENTS = 8
WORKERS = 4  # API processes (`astara serve --workers`) of the several-process run
BIN = Path(sys.executable).parent
VISIBLE = 10_000
OTHERS = 100_000
OTHER_NETWORKS = 50  # 2,000 ports each, on a /20
BATCH = 5_000


def _network(
    engine: Engine, project_id: str, cidr: str, vni: int, now: datetime
) -> tuple[str, str]:
    network_id, subnet_id = str(uuid.uuid4()), str(uuid.uuid4())
    prefix = cidr.rsplit(".", 2)[0]
    with engine.begin() as connection:
        connection.execute(
            insert(Network),
            [
                {
                    "id": network_id,
                    "project_id": project_id,
                    "name": f"net-{project_id}",
                    "description": "",
                    "created_at": now,
                    "updated_at": now,
                    "revision_number": 1,
                    "tags": [],
                    "network_type": "vxlan",
                    "segmentation_id": vni,
                    "mtu": 1450,
                }
            ],
        )
        connection.execute(
            insert(Subnet),
            [
                {
                    "id": subnet_id,
                    "project_id": project_id,
                    "network_id": network_id,
                    "name": "",
                    "description": "",
                    "ip_version": 4,
                    "cidr": cidr,
                    "gateway_ip": f"{prefix}.0.1",
                    "allocation_pools": [
                        {"start": f"{prefix}.0.2", "end": _last_host(cidr)},
                    ],
                    "dns_nameservers": [],
                    "host_routes": [],
                    "created_at": now,
                    "updated_at": now,
                    "revision_number": 1,
                    "tags": [],
                }
            ],
        )
    return network_id, subnet_id


def _last_host(cidr: str) -> str:
    return str(ipaddress.ip_network(cidr).broadcast_address - 1)


def _ports(
    engine: Engine,
    project_id: str,
    network_id: str,
    subnet_id: str,
    cidr: str,
    count: int,
    first_mac: int,
    now: datetime,
) -> None:
    """`count` ports as the API makes them (a MAC, one fixed IP, a device),
    written in batches of `BATCH`."""
    base = ipaddress.ip_network(cidr).network_address
    for start in range(0, count, BATCH):
        port_rows: list[dict[str, Any]] = []
        address_rows: list[dict[str, Any]] = []
        for index in range(start, min(count, start + BATCH)):
            port_id = str(uuid.uuid4())
            mac = first_mac + index
            port_rows.append(
                {
                    "id": port_id,
                    "project_id": project_id,
                    "network_id": network_id,
                    "name": f"port-{index}",
                    "description": "",
                    "admin_state_up": True,
                    "status": "DOWN",
                    "mac_address": "fa:16:3e:"
                    + ":".join(f"{mac >> s & 255:02x}" for s in (16, 8, 0)),
                    "device_id": str(uuid.uuid4()),
                    "device_owner": "compute:nova",
                    "port_security_enabled": True,
                    "created_at": now,
                    "updated_at": now,
                    "revision_number": 1,
                    "tags": [],
                }
            )
            address_rows.append(
                {
                    "port_id": port_id,
                    "ip_address": str(base + 10 + index),
                    "subnet_id": subnet_id,
                    "network_id": network_id,
                    "position": 0,
                }
            )
        with engine.begin() as connection:
            connection.execute(insert(Port), port_rows)
            connection.execute(insert(IpAllocation), address_rows)


def _populate(url: str, project_id: str, others: int) -> str:
    """The rows (see the module): returns `bench`'s network id."""
    engine = make_engine(url)
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    started = time.perf_counter()
    try:
        network_id, subnet_id = _network(engine, project_id, "10.0.0.0/16", 1, now)
        _ports(engine, project_id, network_id, subnet_id, "10.0.0.0/16", VISIBLE, 0, now)
        per_network = others // OTHER_NETWORKS if others else 0
        for n in range(OTHER_NETWORKS if others else 0):
            owner = f"other-{n}"
            cidr = f"10.{100 + n}.0.0/20"
            other_network, other_subnet = _network(engine, owner, cidr, 2 + n, now)
            _ports(engine, owner, other_network, other_subnet, cidr, per_network, 1 << 20, now)
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))  # as autovacuum would, soon after
    finally:
        engine.dispose()
    log(f"api: wrote {VISIBLE + others} ports in {time.perf_counter() - started:.1f} s")
    return network_id


def _quantiles(latencies: list[float]) -> tuple[float, float]:
    """(p50, p99) in seconds."""
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return statistics.median(latencies), cuts[98]


def _timed(requests: int, send: Callable[[], Any]) -> list[float]:
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        send()
        latencies.append(time.perf_counter() - started)
    return latencies


def _load(
    client: httpx.Client, requests: int, send: Callable[[httpx.Client], httpx.Response]
) -> tuple[float, float]:
    """(requests per second, p99 latency in seconds) over `requests` requests
    from `CLIENTS` threads."""
    latencies: list[float] = []

    def one(_: int) -> None:
        started = time.perf_counter()
        response = send(client)
        latencies.append(time.perf_counter() - started)
        if response.status_code >= 300:
            raise RuntimeError(f"{response.status_code}: {response.text}")

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(requests)))
    elapsed = time.perf_counter() - started
    return requests / elapsed, statistics.quantiles(latencies, n=100)[98]


@contextmanager
def _raw_select(url: str, project_id: str) -> Iterator[Callable[[], int]]:
    """The baseline: the same rows by plain SQL through the driver."""
    engine = make_engine(url)
    ports = text("SELECT * FROM ports WHERE project_id = :p")
    addresses = text(
        "SELECT a.* FROM ip_allocations a JOIN ports p ON p.id = a.port_id WHERE p.project_id = :p"
    )
    try:
        with engine.connect() as connection:

            def select() -> int:
                rows = connection.execute(ports, {"p": project_id}).fetchall()
                connection.execute(addresses, {"p": project_id}).fetchall()
                connection.rollback()
                return len(rows)

            yield select
    finally:
        engine.dispose()


def _client(base: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"X-Auth-Token": token}, timeout=120)


class _Cpu:
    """CPU time of the server's processes (`astara serve` and its workers)
    and of PostgreSQL's backends for the database: on a machine shared with
    other work, the cost of a request however long it waited for a core."""

    def __init__(self, server: int, database: str) -> None:
        self.server, self.database = server, database

    def seconds(self) -> float:
        return sum(self.split())

    def split(self) -> tuple[float, float]:
        """(the server's processes, the database's backends), in seconds.
        The backends that exited count too (the pool closes the connections
        it opened beyond its size): their CPU is in their parent's, the
        postmaster's, reaped children's time (cutime, cstime)."""
        ticks = [0, 0]
        postmasters: set[int] = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ours = int(entry.name) == self.server or int(stat[1]) == self.server
            backend = bool(self.database) and command.startswith(
                f"postgres: postgres {self.database} ".encode()
            )
            if backend:
                postmasters.add(int(stat[1]))
            if ours or backend:
                ticks[1 if backend else 0] += int(stat[11]) + int(stat[12])
        for pid in postmasters:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks[1] += int(stat[13]) + int(stat[14])
        return ticks[0] / os.sysconf("SC_CLK_TCK"), ticks[1] / os.sysconf("SC_CLK_TCK")

    def settle(self, timeout_s: float = 60.0) -> None:
        """Until the processes are idle: workers still starting (importing,
        building the app) after the first one answers are not measured."""
        deadline = time.monotonic() + timeout_s
        last = self.seconds()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.seconds()
            if now - last < 0.05:
                return
            last = now


def _measure(
    backend: str,
    url: str,
    others: int,
    settings: Settings,
    report: Report,
    workers: int = 1,
    baseline_src: str | None = None,
) -> None:
    state = Path(tempfile.mkdtemp(prefix="astara-bench-api-"))
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    server, port = _serve(state, url, workers)
    baseline_server: subprocess.Popen[bytes] | None = None
    baseline_state = Path(tempfile.mkdtemp(prefix="astara-bench-api-base-"))
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_up(base)
        admin = {"X-Auth-Token": (state / "admin-token").read_text().strip()}
        made = httpx.post(
            f"{base}/astara/v1/projects", json={"name": "bench"}, headers=admin, timeout=30
        ).json()
        project_id, token = made["project"]["id"], made["token"]
        unlimited = {"quota": {"port": -1}}
        httpx.put(f"{base}/v2.0/quotas/{project_id}", json=unlimited, headers=admin, timeout=30)
        network_id = _populate(url, project_id, others)
        # The database's name: the URL's path (its query names the socket's directory).
        database = url.split("?")[0].rsplit("/", 1)[1] if backend != "sqlite" else ""
        cpu = _Cpu(server.pid, database)
        baseline: tuple[str, _Cpu] | None = None
        if baseline_src is not None:
            # The same database served by another source tree, lists alternated.
            baseline_server, baseline_port = _serve(baseline_state, url, workers, baseline_src)
            _wait_up(f"http://127.0.0.1:{baseline_port}")
            baseline = (f"http://127.0.0.1:{baseline_port}", _Cpu(baseline_server.pid, database))
        _serve_and_measure(
            backend,
            base,
            url,
            token,
            project_id,
            network_id,
            others,
            settings,
            report,
            workers,
            cpu,
            baseline,
        )
    finally:
        for process in (server, baseline_server):
            if process is not None:
                process.terminate()
                process.wait(30)
        subprocess.run(["rm", "-rf", str(state), str(baseline_state)], check=False)


def _serve(
    state: Path, url: str, workers: int, src: str | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """`astara serve --role api` on `url` (from the source tree `src`, if
    given), and the port its API listens on."""
    port, control = free_ports(2)
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    return subprocess.Popen(
        [
            str(BIN / "astara"),
            "serve",
            "--state-dir",
            str(state),
            "--listen",
            f"127.0.0.1:{port}",
            "--control-listen",
            f"127.0.0.1:{control}",
            "--db-url",
            url,
            "--role",
            "api",
            "--log-level",
            "warning",
            *(["--workers", str(workers)] if workers > 1 else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    ), port


def _wait_up(base: str) -> None:
    deadline = time.monotonic() + 300  # a loaded machine can take minutes to start it
    while True:
        try:
            if httpx.get(base, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _serve_and_measure(
    backend: str,
    base: str,
    url: str,
    token: str,
    project_id: str,
    network_id: str,
    others: int,
    settings: Settings,
    report: Report,
    workers: int,
    cpu: _Cpu,
    baseline: tuple[str, _Cpu] | None = None,
) -> None:
    lists = 5 if settings.quick else 20
    creates = 100 if settings.quick else 2000
    with (
        _raw_select(url, project_id) as raw,
        _client(base, token) as client,
    ):
        assert raw() == VISIBLE

        servers = [("", client, cpu)]
        if baseline is not None:
            servers.append(("baseline ", _client(baseline[0], token), baseline[1]))
        for _, one, _ in servers:  # warm: connections, caches; the body checked
            response = one.get("/v2.0/ports")
            assert response.status_code == 200, response.text
            assert len(response.json()["ports"]) == VISIBLE
        for _, _, load in servers:
            load.settle()
        # Alternated, one list each in turn; timed to the body's last byte
        # (what the server answers), its decoding by the client apart. CPU:
        # the database's backends (both servers') over the request, the
        # server's own process from one of its requests to its next (what
        # it does after answering, freeing the list, counts too).
        timings: dict[str, tuple[list[float], list[float], list[float]]] = {
            name: ([], [], []) for name, _, _ in servers
        }
        last = {name: load.split()[0] for name, _, load in servers}
        for round_ in range(lists + 1):
            for name, one, load in servers:
                latencies, decodes, cpus = timings[name]
                server_cpu, database_cpu = load.split()
                if round_:
                    cpus[-1] += server_cpu - last[name]
                last[name] = server_cpu
                if round_ == lists:
                    continue  # the last requests' server CPU, read
                started = time.perf_counter()
                response = one.get("/v2.0/ports")
                latencies.append(time.perf_counter() - started)
                cpus.append(load.split()[1] - database_cpu)
                assert response.status_code == 200, response.text
                started = time.perf_counter()
                response.json()
                decodes.append(time.perf_counter() - started)
        latencies, decodes, cpus = timings[""]
        list_p50, list_p99 = _quantiles(latencies)
        list_cpu = statistics.mean(cpus)
        decode_p50 = statistics.median(decodes)
        compared: dict[str, Any] = {}
        if baseline is not None:
            before, _, before_cpus = timings["baseline "]
            before_p50, before_p99 = _quantiles(before)
            compared = {
                "baseline_tree_p50_s": round(before_p50, 4),
                "baseline_tree_p99_s": round(before_p99, 4),
                "baseline_tree_cpu_s_per_list": round(statistics.mean(before_cpus), 4),
            }
            log(
                f"api: the baseline source tree, alternated: list p50 {before_p50 * 1000:.0f} ms"
                f" p99 {before_p99 * 1000:.0f} ms, CPU {statistics.mean(before_cpus) * 1000:.0f}"
                f" ms a list (this tree: p50 {list_p50 * 1000:.0f} ms, p99"
                f" {list_p99 * 1000:.0f} ms, CPU {list_cpu * 1000:.0f} ms)"
            )
            servers[1][1].close()
        raw_p50, raw_p99 = _quantiles(_timed(lists, raw))
        floor_rps, floor_p99 = _load(client, creates, lambda c: c.get("/"))
        body = {"port": {"network_id": network_id}}
        cpu_before = cpu.split()
        create_rps, create_p99 = _load(client, creates, lambda c: c.post("/v2.0/ports", json=body))
        cpu_after = cpu.split()
        create_server_cpu = (cpu_after[0] - cpu_before[0]) / creates
        create_database_cpu = (cpu_after[1] - cpu_before[1]) / creates
        create_cpu = create_server_cpu + create_database_cpu
    common = {
        "backend": backend,
        "visible_ports": VISIBLE,
        "other_ports": others,
        "api_workers": workers,
    }
    report.emit(
        {
            "name": "api.port_list",
            **common,
            "p50_s": round(list_p50, 4),
            "p99_s": round(list_p99, 4),
            "cpu_s_per_list": round(list_cpu, 4),
            "client_decode_p50_s": round(decode_p50, 4),
            **compared,
            "requests": lists,
            "baseline": "the same rows by raw SQL SELECT (ports, fixed IPs) through the driver",
            "baseline_p50_s": round(raw_p50, 4),
            "baseline_p99_s": round(raw_p99, 4),
            "ratio": ratio(list_p50, raw_p50),
        }
    )
    report.emit(
        {
            "name": "api.port_create",
            **common,
            "requests_per_s": round(create_rps, 1),
            "p99_s": round(create_p99, 4),
            "cpu_ms_per_create": round(create_cpu * 1000, 2),
            "server_cpu_ms_per_create": round(create_server_cpu * 1000, 2),
            "database_cpu_ms_per_create": round(create_database_cpu * 1000, 2),
            "clients": CLIENTS,
            "baseline": "GET / (version document, no database) on the same server",
            "baseline_requests_per_s": round(floor_rps, 1),
            "baseline_p99_s": round(floor_p99, 4),
            "ratio": ratio(create_rps, floor_rps),
        }
    )
    log(
        f"api {backend} ({workers} workers), {VISIBLE} ports + {others} others:"
        f" list p50 {list_p50 * 1000:.0f} ms"
        f" p99 {list_p99 * 1000:.0f} ms (raw SQL p50 {raw_p50 * 1000:.0f} ms,"
        f" CPU {list_cpu * 1000:.0f} ms a list; the client's decoding p50"
        f" {decode_p50 * 1000:.0f} ms apart); create {create_rps:.0f}/s"
        f" (CPU {create_cpu * 1000:.1f} ms each: server {create_server_cpu * 1000:.1f},"
        f" database {create_database_cpu * 1000:.1f})"
    )


def bench_api(settings: Settings, report: Report) -> None:
    cases = (0,) if settings.quick else (0, OTHERS)
    for others in cases:
        scratch = Path(tempfile.mkdtemp(prefix="astara-bench-sqlite-"))
        try:
            _measure("sqlite", sqlite_url(scratch), others, settings, report)
        finally:
            subprocess.run(["rm", "-rf", str(scratch)], check=False)
    if binaries() is None:
        log("api: PostgreSQL is not installed; skipping its half (make test installs it)")
        return
    # PostgreSQL: one API process, then several (`--workers`) on the largest case.
    runs = [(others, 1) for others in cases] + [(cases[-1], WORKERS)]
    bench_postgresql(settings, report, runs)


def bench_postgresql(
    settings: Settings,
    report: Report,
    runs: list[tuple[int, int]],
    baseline_src: str | None = None,
) -> None:
    """Each (other ports, API workers) run on a fresh database of one
    throwaway PostgreSQL server."""
    postgres = PostgresServer().start()
    try:
        for others, workers in runs:
            url = postgres.create_database()
            _measure("postgresql", url, others, settings, report, workers, baseline_src)
    finally:
        postgres.stop()


def main(argv: list[str] | None = None) -> None:
    """Only PostgreSQL, one case: `python -m bench.api --others 100000 --workers 4`."""
    parser = argparse.ArgumentParser(prog="bench.api", description=main.__doc__)
    parser.add_argument("--others", type=int, default=OTHERS, help="other projects' ports")
    parser.add_argument("--workers", type=int, default=1, help="astara serve --workers")
    parser.add_argument("--quick", action="store_true", help="5 lists, 100 creates")
    parser.add_argument(
        "--baseline-src",
        help="another source tree (a `src` directory) served on the same database:"
        " its lists alternate with this tree's (base and change in one run)",
    )
    args = parser.parse_args(argv)
    bench_postgresql(
        Settings(quick=args.quick), Report(), [(args.others, args.workers)], args.baseline_src
    )


if __name__ == "__main__":
    main()
