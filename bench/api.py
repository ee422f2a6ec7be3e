"""Tenant API throughput and latency: port create and network list with 1,000
and 10,000 ports already in the database, on SQLite and on PostgreSQL.

A real `astara serve` (uvicorn, one process) answers; a pool of client threads
sends the requests. Baseline, in the same run against the same server: the
unauthenticated version document (`GET /`), which touches no database, so the
ratio is what the database work and Neutron's rules cost on top of HTTP.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx

from astara.db.engine import make_engine, session_factory, sqlite_url
from astara.db.migrate import upgrade
from astara.db.models import IpAllocation, Network, Port, Subnet
from astara.testing.postgres import PostgresServer, binaries
from bench.harness import Report, Settings, log, ratio

CLIENTS = 8
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _populate(url: str, ports: int) -> str:
    """One network with a /16 subnet holding `ports` ports, written directly
    (the API would take minutes to fill it). Returns the network id."""
    engine = make_engine(url)
    upgrade(engine)
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    network = Network(
        id=str(uuid.uuid4()), project_id="bench", name="bench", created_at=now, updated_at=now
    )
    subnet = Subnet(
        id=str(uuid.uuid4()),
        project_id="bench",
        network_id=network.id,
        ip_version=4,
        cidr="10.0.0.0/16",
        gateway_ip="10.0.0.1",
        allocation_pools=[{"start": "10.0.0.2", "end": "10.0.255.254"}],
        created_at=now,
        updated_at=now,
    )
    with session_factory(engine).begin() as session:
        session.add_all([network, subnet])
        session.flush()
        for index in range(ports):
            port = Port(
                id=str(uuid.uuid4()),
                project_id="bench",
                network_id=network.id,
                mac_address="fa:16:3f:" + ":".join(f"{index >> s & 255:02x}" for s in (16, 8, 0)),
                created_at=now,
                updated_at=now,
            )
            port.fixed_ips = [
                IpAllocation(
                    subnet_id=subnet.id,
                    network_id=network.id,
                    ip_address=f"10.0.{(index + 2) >> 8 & 255}.{(index + 2) & 255}",
                )
            ]
            session.add(port)
    engine.dispose()
    return network.id


def _load(
    client: httpx.Client, requests: int, send: Callable[[httpx.Client], httpx.Response]
) -> tuple[float, float]:
    """(requests per second, p99 latency in seconds) over `requests` requests."""
    latencies: list[float] = []

    def one(_: int) -> None:
        started = time.perf_counter()
        response = send(client)
        latencies.append(time.perf_counter() - started)
        if response.status_code >= 500:
            raise RuntimeError(f"{response.status_code}: {response.text}")

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(requests)))
    elapsed = time.perf_counter() - started
    return requests / elapsed, statistics.quantiles(latencies, n=100)[98]


def _measure(backend: str, url: str, ports: int, settings: Settings, report: Report) -> None:
    state = Path(tempfile.mkdtemp(prefix="astara-bench-api-"))
    try:
        _serve_and_measure(backend, url, ports, settings, report, state)
    finally:
        subprocess.run(["rm", "-rf", str(state)], check=False)


def _serve_and_measure(
    backend: str, url: str, ports: int, settings: Settings, report: Report, state: Path
) -> None:
    network_id = _populate(url, ports)
    port = _free_port()
    server = subprocess.Popen(
        [
            str(BIN / "astara"),
            "serve",
            "--state-dir",
            str(state),
            "--listen",
            f"127.0.0.1:{port}",
            "--db-url",
            url,
            "--role",
            "api",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        token = (state / "admin-token").read_text().strip()
        requests = 100 if settings.quick else 400
        with httpx.Client(base_url=base, headers={"X-Auth-Token": token}, timeout=60) as client:
            floor_rps, floor_p99 = _load(client, requests, lambda c: c.get("/"))
            body = {"port": {"network_id": network_id}}
            create_rps, create_p99 = _load(
                client, requests, lambda c: c.post("/v2.0/ports", json=body)
            )
            list_rps, list_p99 = _load(client, requests // 4, lambda c: c.get("/v2.0/networks"))
        for case, rps, p99 in (
            ("port_create", create_rps, create_p99),
            ("network_list", list_rps, list_p99),
        ):
            report.emit(
                {
                    "name": f"api.{case}",
                    "backend": backend,
                    "ports_in_db": ports,
                    "requests_per_s": round(rps, 1),
                    "p99_s": round(p99, 4),
                    "clients": CLIENTS,
                    "baseline": "GET / (version document, no database) on the same server",
                    "baseline_requests_per_s": round(floor_rps, 1),
                    "baseline_p99_s": round(floor_p99, 4),
                    "ratio": ratio(rps, floor_rps),
                }
            )
            log(
                f"api {backend} {case} with {ports} ports: {rps:.0f} req/s, p99 {p99 * 1000:.1f} ms"
            )
    finally:
        server.terminate()
        server.wait(30)


def bench_api(settings: Settings, report: Report) -> None:
    sizes = (1_000,) if settings.quick else (1_000, 10_000)
    for ports in sizes:
        scratch = Path(tempfile.mkdtemp(prefix="astara-bench-sqlite-"))
        try:
            _measure("sqlite", sqlite_url(scratch), ports, settings, report)
        finally:
            subprocess.run(["rm", "-rf", str(scratch)], check=False)
    if binaries() is None:
        log("api: PostgreSQL is not installed; skipping its half (make test installs it)")
        return
    postgres = PostgresServer().start()
    try:
        for ports in sizes:
            _measure("postgresql", postgres.create_database(), ports, settings, report)
    finally:
        postgres.stop()
