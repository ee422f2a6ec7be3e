"""One orchestrator, 10,000 routers, ten hosts: what keeping them costs.

Ten hollow agents (`astara.testing.hollow`: the real agent API, join and
mutual TLS, no kernel) join a real `astara serve --agent none` on
PostgreSQL (SQLite when PostgreSQL is not installed), all on loopback. N
routers (gateway + one interface each, or a gateway only) are created by
the tenant API's own code run in the benchmark's process on the same
database (`--over-http`: through the API over HTTP, by bulk POSTs), and the
orchestrator places them over the ten hosts from the outbox events that
makes. Once every router is `ACTIVE` (or `--active-timeout` ran out), the steady
state is watched for a window: the serve process's CPU (utime + stime of all
its threads, from /proc) and memory (its resident set, and PSS from
smaps_rollup), and, from the hollow agents, the longest gap between two
checks of any one appliance (a heartbeat answers for the host; a check of
an appliance is the orchestrator reading its state: a list entry or a GET).

Goal (issue 10): 10,000 routers across 10 hosts, each checked at least every
10 s, at most 1 core and 1 GB. The orchestrator runs with `--resync-s 7`
(`--resync-s` here): a resync lists every host once, its period is
jittered between 0.8x and 1.2x (8.4 s at most), and listing ten hosts of
1,000 takes about a second more, so 7 s keeps every router within 10 s
(8 s, measured, gave gaps up to 10.4 s; the default, 20 s, cannot by design); and
with `--health-s 300` (`--health-s` here): a full look at an appliance (its
agent's observation, its record) every 5 minutes, the listing checking it
in between (the default, 3 resyncs, would be 800 full looks a second at
10,000 routers). For
each appliance, its longest gap between two reads over the window (the time
before its first read and since its last one count as gaps: an appliance
never read has the whole window); the figures are the longest of all and the
99th percentile over appliances. Also over the window: the orchestrator's
reconciles and observations (its `/metrics`), its peak resident set
(VmHWM), the hollow agents' own CPU, and the load average.

Baseline, in the same run: a bare client doing only the minimum the goal
needs, over the same mutual TLS to the same agents (a heartbeat per host
every 0.5 s and one appliance list per host every 10 s), its CPU over the
same window.

    python -m bench.hollow --routers 1000            # one size; --profile: py-spy, if installed
    python -m bench.run --only hollow                # 10,000 (1,000 with --quick)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from astara.agent.client import AgentClient
from astara.agent.tls import ClientTLS
from astara.db.engine import sqlite_url
from astara.testing.hollow import percentile
from astara.testing.net import free_port, wait_until
from astara.testing.postgres import PostgresServer, binaries
from astara.testing.server import Cloud, Server
from bench.harness import Report, Settings, log, ratio, seconds
from bench.orchestrator import moved, scrape

HOSTS = 10
WINDOW_S = 60.0
RESYNC_S = 7.0
# How long to wait, once all are ACTIVE, for the queue to empty before the window.
SETTLE_S = 900.0
HEALTH_S = 300.0
CLIENTS = 4
BIN = Path(sys.executable).parent


class Controller(Server):
    """`astara serve` with the orchestrator and no local agent."""

    def __init__(self, state_dir: Path, *extra: str) -> None:
        super().__init__(state_dir, None, *extra)

    def command(self) -> list[str]:
        return [
            str(BIN / "astara"),
            "serve",
            "--state-dir",
            str(self.state_dir),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--agent",
            "none",
            "--control-listen",
            f"127.0.0.1:{self.control_port}",
            "--log-level",
            "warning",
            *self.extra,
        ]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_bytes(pid: int) -> dict[str, int]:
    """Resident set and proportional set size of a process (smaps_rollup),
    and its peak resident set (VmHWM), in bytes."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            found[key.lower()] = int(rest.split()[0]) * 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key == "VmHWM":
            found["peak_rss"] = int(rest.split()[0]) * 1024
    return found


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Hollows:
    """Ten hollow agents joined to `controller`, each on its own port."""

    def __init__(self, controller: Controller, api: Cloud, root: Path) -> None:
        self.controller, self.api, self.root = controller, api, root
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def start(self, count: int) -> None:
        for index in range(count):
            name = f"hollow{index + 1}"
            token = self.api("POST", "/astara/v1/hosts/join-tokens", {"ttl_s": 600})["token"]
            port = free_port()
            directory = self.root / name
            directory.mkdir(parents=True)
            with (directory / "agent.log").open("wb") as output:
                self.processes[name] = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "astara.testing.hollow",
                        "--join",
                        self.controller.control_url,
                        "--token",
                        token,
                        "--name",
                        name,
                        "--listen",
                        f"tcp:127.0.0.1:{port}",
                        "--state-dir",
                        str(directory),
                        "--underlay-address",
                        f"127.0.1.{index + 1}",
                    ],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            self.ports[name] = port

        def alive() -> bool:
            hosts = self.api("GET", "/astara/v1/hosts")["hosts"]
            return sum(1 for h in hosts if h["state"] == "up") == count

        wait_until(alive, 120, 0.5, f"{count} hollow hosts up")

    def clients(self) -> dict[str, AgentClient]:
        pki = self.controller.state_dir / "pki"
        tls = ClientTLS(ca=pki / "ca.crt", cert=pki / "controller.crt", key=pki / "controller.key")
        return {
            name: AgentClient(f"https://127.0.0.1:{port}", tls=tls)
            for name, port in self.ports.items()
        }

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


BATCH = 100


def _create(
    api: Cloud, public_id: str, first: int, count: int, interfaces: bool = True
) -> list[str]:
    """Routers `first` … `first + count - 1`, each with a gateway and one
    interface on its own network: networks, subnets and routers by bulk
    POSTs (one transaction each), then each interface added (there is no
    bulk call for that). Without `interfaces`: the routers only, each with
    its gateway (one bulk POST)."""
    indices = range(first, first + count)

    def routers() -> list[dict[str, Any]]:
        made: list[dict[str, Any]] = api(
            "POST",
            "/v2.0/routers",
            {
                "routers": [
                    {"name": f"r{i}", "external_gateway_info": {"network_id": public_id}}
                    for i in indices
                ]
            },
            201,
        )["routers"]
        return made

    if not interfaces:
        return [str(r["id"]) for r in routers()]
    networks = api(
        "POST", "/v2.0/networks", {"networks": [{"name": f"n{i}"} for i in indices]}, 201
    )["networks"]
    subnets = api(
        "POST",
        "/v2.0/subnets",
        {
            "subnets": [
                {
                    "network_id": network["id"],
                    "cidr": f"10.{i // 256}.{i % 256}.0/24",
                    "ip_version": 4,
                    "enable_dhcp": False,
                }
                for i, network in zip(indices, networks, strict=True)
            ]
        },
        201,
    )["subnets"]
    made = routers()
    for router, subnet in zip(made, subnets, strict=True):
        api(
            "PUT",
            f"/v2.0/routers/{router['id']}/add_router_interface",
            {"subnet_id": subnet["id"]},
        )
    return [str(r["id"]) for r in made]


def _create_in_process(
    db_url: str, project_id: str, public_id: str, count: int, interfaces: bool = True
) -> None:
    """The same routers made by the API's own code (`astara.api`'s
    networks, subnets and routers: the rules, the IP allocation and the
    outbox events a request makes), in this process and 500 to a
    transaction, not over HTTP: over HTTP, bulk POSTs serialize on the
    project's quota lock (about 2 routers a second on a loaded 2-core
    machine, hours for 10,000). The orchestrator learns of them from the
    outbox, as it would from requests."""
    from sqlalchemy.orm import Session

    from astara.api import networks, routers, subnets
    from astara.api.attributes import prepare_body
    from astara.api.auth import Caller
    from astara.api.http.dependencies import now
    from astara.db.engine import make_engine

    caller = Caller(project_id, "admin", True)

    def values(resource: Any, member: dict[str, Any]) -> dict[str, Any]:
        return prepare_body(
            resource,
            {resource.member: member},
            method="POST",
            project_id=project_id,
            is_admin=True,
        )

    engine = make_engine(db_url)
    started = time.monotonic()
    try:
        for first in range(0, count, 500):
            with Session(engine) as session, session.begin():
                for i in range(first, min(first + 500, count)):
                    router = routers.create(
                        session,
                        caller,
                        values(
                            routers.RESOURCE,
                            {"name": f"r{i}", "external_gateway_info": {"network_id": public_id}},
                        ),
                        now(),
                    )
                    if not interfaces:
                        continue
                    network = networks.create(
                        session, caller, values(networks.RESOURCE, {"name": f"n{i}"}), now()
                    )
                    session.flush()
                    subnet = subnets.create(
                        session,
                        caller,
                        values(
                            subnets.RESOURCE,
                            {
                                "network_id": network.id,
                                "cidr": f"10.{i // 256}.{i % 256}.0/24",
                                "ip_version": 4,
                                "enable_dhcp": False,
                            },
                        ),
                        now(),
                    )
                    session.flush()
                    routers.add_interface(
                        session, caller, router.id, {"subnet_id": subnet.id}, now()
                    )
            log(f"hollow: {min(first + 500, count)} made, {time.monotonic() - started:.0f} s")
    finally:
        engine.dispose()


def _all_active(api: Cloud, count: int) -> int:
    routers = api("GET", "/v2.0/routers?fields=id&fields=status")["routers"]
    return sum(1 for r in routers if r["status"] == "ACTIVE")


def _bare_client(clients: dict[str, AgentClient], stop: threading.Event) -> None:
    """The minimum the goal needs: a heartbeat per host every 0.5 s and one
    appliance list per host every 10 s."""
    next_list = 0.0
    while not stop.wait(0.5):
        for client in clients.values():
            client.health()
        if time.monotonic() >= next_list:
            next_list = time.monotonic() + 10.0
            for client in clients.values():
                client.appliances(observe=False)


def _py_spy() -> str | None:
    return shutil.which("py-spy") or (str(BIN / "py-spy") if (BIN / "py-spy").exists() else None)


def bench_hollow(
    settings: Settings,
    report: Report,
    count: int | None = None,
    hosts: int = HOSTS,
    *,
    window_s: float | None = None,
    resync_s: float = RESYNC_S,
    health_s: float = HEALTH_S,
    profile: Path | None = None,
    interfaces: bool = True,
    over_http: bool = False,
    active_timeout_s: float = 3600.0,
) -> None:
    """`profile`: also record the orchestrator with py-spy over the window
    (a flame graph, SVG; speedscope if the name ends in .json, collapsed
    stacks if .txt).
    `interfaces`: False, routers with their gateway only (created by bulk
    POSTs alone: adding interfaces one by one takes hours at 10,000 on a
    loaded 2-core machine). `over_http`: create them through the tenant API
    over HTTP (bulk POSTs), not by its code in this process.
    `active_timeout_s`: how long to wait for every router to be ACTIVE;
    then the window is measured all the same (with how many were)."""
    count = count or (1_000 if settings.quick else 10_000)
    window_s = window_s or (20.0 if settings.quick else WINDOW_S)
    with tempfile.TemporaryDirectory(prefix="astara-bench-hollow-") as work:
        root = Path(work)
        postgres = PostgresServer().start() if binaries() else None
        controller: Controller | None = None
        hollows: Hollows | None = None
        try:
            controller_dir = root / "controller"
            db_url = postgres.create_database() if postgres else sqlite_url(controller_dir)
            extra = ["--db-url", db_url] if postgres else []
            controller = Controller(
                controller_dir, *extra, "--resync-s", str(resync_s), "--health-s", str(health_s)
            )
            controller.start()
            api = Cloud(controller, timeout_s=300)
            api.unlimited_quotas()
            hollows = Hollows(controller, api, root)
            hollows.start(hosts)
            public = api.create(
                "networks",
                "network",
                name="public",
                **{
                    "router:external": True,
                    "provider:network_type": "flat",
                    "provider:physical_network": "public",
                },
            )
            api.create(
                "subnets",
                "subnet",
                network_id=public["id"],
                cidr="100.64.0.0/16",
                ip_version=4,
                enable_dhcp=False,
            )
            how = "over HTTP" if over_http else "by the API's code in this process"
            log(f"hollow: creating {count} routers {how}")
            load_at_start = _load()
            started = time.monotonic()
            if over_http:
                done = 0

                def create(first: int) -> list[str]:
                    nonlocal done
                    made = _create(api, public["id"], first, min(BATCH, count - first), interfaces)
                    done += len(made)
                    if done % 1000 < BATCH:
                        log(f"hollow: {done} created, {time.monotonic() - started:.0f} s")
                    return made

                with ThreadPoolExecutor(CLIENTS) as pool:
                    list(pool.map(create, range(0, count, BATCH)))
            else:
                project_id = api("GET", "/v2.0/quotas/project")["project"]["project_id"]
                _create_in_process(db_url, project_id, public["id"], count, interfaces)
            created_s = time.monotonic() - started
            log(f"hollow: created in {created_s:.0f} s; waiting for all ACTIVE")
            active = 0

            def all_active() -> bool:
                nonlocal active
                active = _all_active(api, count)
                return active == count

            try:
                wait_until(all_active, active_timeout_s, 5.0, f"{count} routers ACTIVE")
            except AssertionError:
                # Measured all the same: what keeping them costs while it lags.
                log(f"hollow: only {active} ACTIVE after {active_timeout_s:.0f} s; measuring")
            active_s = time.monotonic() - started
            assert controller.process is not None
            pid = controller.process.pid
            log(f"hollow: all ACTIVE after {active_s:.0f} s; watching {window_s:.0f} s")
            clients = hollows.clients()
            # The steady state, not the end of the creation: every router's
            # first settled look had (at most 1% queued: full looks come and
            # go), then two resyncs begun.
            try:
                wait_until(
                    lambda: api.orchestrator()["queued"] <= count // 100, SETTLE_S, 1.0, "queue"
                )
            except AssertionError:
                queued = api.orchestrator()["queued"]
                log(f"hollow: {queued} keys still queued after {SETTLE_S:.0f} s; measuring")
            target = api.orchestrator()["resyncs"] + 2
            wait_until(lambda: api.orchestrator()["resyncs"] >= target, 600, 0.5, "2 resyncs")
            spy: subprocess.Popen[bytes] | None = None
            if profile is not None and (found := _py_spy()) is not None:
                spy = subprocess.Popen(
                    [
                        found,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(int(window_s)),
                        "--rate",
                        "50",
                        "--threads",
                        # Only threads holding the GIL: where its CPU goes,
                        # not its waits on PostgreSQL and the agents.
                        "--gil",
                        "--output",
                        str(profile),
                        "--format",
                        {".json": "speedscope", ".txt": "raw"}.get(profile.suffix, "flamegraph"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            elif profile is not None:
                log("hollow: py-spy not found; no profile")
            for client in clients.values():
                client.request("POST", "/hollow/checks/reset")
            load_before = _load()
            metrics_before = scrape(api)
            status_before = api.orchestrator()
            hollow_pids = [p.pid for p in hollows.processes.values()]
            cpu_before = cpu_seconds(pid)
            hollow_before = sum(cpu_seconds(p) for p in hollow_pids)
            time.sleep(window_s)
            orchestrator_cores = (cpu_seconds(pid) - cpu_before) / window_s
            hollow_cores = (sum(cpu_seconds(p) for p in hollow_pids) - hollow_before) / window_s
            memory = memory_bytes(pid)
            checks = [client.request("GET", "/hollow/checks") for client in clients.values()]
            load_after = _load()
            metrics_after = scrape(api)
            status_after = api.orchestrator()
            if spy is not None:
                spy.wait(60)
            gaps = sorted(g for c in checks for g in c["gaps_s"])
            longest_gap = max(c["longest_gap_s"] for c in checks)
            unchecked = sum(c["unchecked"] for c in checks)
            in_window = {
                "resyncs": status_after["resyncs"] - status_before["resyncs"],
                "router_reconciles": moved(
                    metrics_before, metrics_after, "astara_reconcile_seconds_count", kind="router"
                ),
                "observations_agent": moved(
                    metrics_before, metrics_after, "astara_observations_total", source="agent"
                ),
                "observations_listed": moved(
                    metrics_before, metrics_after, "astara_observations_total", source="listed"
                ),
                "pushes": moved(metrics_before, metrics_after, "astara_pushes_total"),
                "reads_seen_by_agents": sum(c["reads"] for c in checks),
                "keys_waiting_at_end": status_after["queued"],
                "keys_busy_at_end": status_after["busy"],
            }
            log(f"hollow: window: {in_window}")
            # The baseline: the same window, a bare client, this process's CPU.
            stop = threading.Event()
            own_before = resource.getrusage(resource.RUSAGE_SELF)
            bare = threading.Thread(target=_bare_client, args=(clients, stop), daemon=True)
            bare.start()
            time.sleep(window_s)
            stop.set()
            bare.join()
            own_after = resource.getrusage(resource.RUSAGE_SELF)
            bare_cores = (
                own_after.ru_utime + own_after.ru_stime - own_before.ru_utime - own_before.ru_stime
            ) / window_s
            report.emit(
                {
                    "name": "hollow.steady_state",
                    "routers": count,
                    "hosts": hosts,
                    "database": "postgresql" if postgres else "sqlite",
                    "resync_s": resync_s,
                    "health_s": health_s,
                    "shape": "gateway + 1 interface" if interfaces else "gateway only",
                    "created": "over HTTP" if over_http else "by the API's code, in-process",
                    "api_calls_s": seconds(created_s),
                    "all_active_s": seconds(active_s) if active == count else None,
                    "active_at_window": active,
                    "window_s": window_s,
                    "orchestrator_cores": round(orchestrator_cores, 3),
                    "orchestrator_rss_bytes": memory.get("rss"),
                    "orchestrator_pss_bytes": memory.get("pss"),
                    "orchestrator_peak_rss_bytes": memory.get("peak_rss"),
                    "longest_check_gap_s": round(longest_gap, 3),
                    "check_gap_p99_s": round(percentile(gaps, 0.99), 3),
                    "check_gap_p50_s": round(percentile(gaps, 0.50), 3),
                    "appliances_never_checked": unchecked,
                    "in_window": in_window,
                    "hollow_agents_cores": round(hollow_cores, 3),
                    "load_average": {
                        "at_creation": load_at_start,
                        "window_start": load_before,
                        "window_end": load_after,
                    },
                    "baseline": "a bare client: heartbeats every 0.5 s, a list per host every 10 s",
                    "baseline_cores": round(bare_cores, 3),
                    "ratio": ratio(orchestrator_cores, bare_cores),
                }
            )
        finally:
            if hollows is not None:
                hollows.stop()
            if controller is not None:
                controller.stop()
            if postgres is not None:
                postgres.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hollow", description=__doc__)
    parser.add_argument("--routers", type=int, default=10_000, metavar="N")
    parser.add_argument("--hosts", type=int, default=HOSTS)
    parser.add_argument("--window", type=float, default=WINDOW_S, metavar="S")
    parser.add_argument("--resync-s", type=float, default=RESYNC_S, metavar="S")
    parser.add_argument("--health-s", type=float, default=HEALTH_S, metavar="S")
    parser.add_argument(
        "--profile", type=Path, metavar="FILE", help="py-spy over the window (.svg, .json or .txt)"
    )
    parser.add_argument(
        "--gateway-only",
        action="store_true",
        help="routers with a gateway and no interface (bulk POSTs only: quicker to create)",
    )
    parser.add_argument(
        "--over-http",
        action="store_true",
        help="create the routers over HTTP (bulk POSTs), not by the API's code in-process",
    )
    parser.add_argument(
        "--active-timeout",
        type=float,
        default=3600.0,
        metavar="S",
        help="measure after this long even if not every router is ACTIVE",
    )
    parser.add_argument("--output", type=Path, help="also write the results here (JSON)")
    args = parser.parse_args(argv)
    report = Report()
    bench_hollow(
        Settings(),
        report,
        args.routers,
        args.hosts,
        window_s=args.window,
        resync_s=args.resync_s,
        health_s=args.health_s,
        profile=args.profile,
        interfaces=not args.gateway_only,
        over_http=args.over_http,
        active_timeout_s=args.active_timeout,
    )
    if args.output is not None:
        args.output.write_text(json.dumps(report.results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
