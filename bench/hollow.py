"""One orchestrator, 10,000 routers, ten hosts: what keeping them costs.

Ten hollow agents (`astara.testing.hollow`: the real agent API, join and
mutual TLS, no kernel) join a real `astara serve --agent none` on
PostgreSQL (SQLite when PostgreSQL is not installed), all on loopback. N
routers (gateway + one interface each) are created through the tenant API
and placed over the ten hosts. Once every router is `ACTIVE`, the steady
state is watched for a window: the serve process's CPU (utime + stime of all
its threads, from /proc) and memory (its resident set, and PSS from
smaps_rollup), and, from the hollow agents, the longest gap between two
checks of any one appliance (a heartbeat answers for the host; a check of
an appliance is the orchestrator reading its state: a list entry or a GET).

Goal (issue 10): 10,000 routers across 10 hosts, each checked at least every
10 s, at most 1 core and 1 GB. Baseline, in the same run: a bare client doing
only the minimum the goal needs, over the same mutual TLS to the same agents
(a heartbeat per host every 0.5 s and one appliance list per host every
10 s), its CPU over the same window.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from astara.agent.client import AgentClient
from astara.agent.tls import ClientTLS
from astara.testing.net import wait_until
from astara.testing.postgres import PostgresServer, binaries
from astara.testing.server import Cloud, Server
from bench.harness import Report, Settings, log, ratio, seconds

HOSTS = 10
WINDOW_S = 60.0
CLIENTS = 4
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
    """Resident set and proportional set size of a process, in bytes."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            found[key.lower()] = int(rest.split()[0]) * 1024
    return found


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
            port = _free_port()
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


def _create(api: Cloud, public_id: str, index: int) -> str:
    network = api.create("networks", "network", name=f"n{index}")
    subnet = api.create(
        "subnets",
        "subnet",
        network_id=network["id"],
        cidr=f"10.{index // 256}.{index % 256}.0/24",
        ip_version=4,
        enable_dhcp=False,
    )
    router = api.create(
        "routers", "router", name=f"r{index}", external_gateway_info={"network_id": public_id}
    )
    api(
        "PUT",
        f"/v2.0/routers/{router['id']}/add_router_interface",
        {"subnet_id": subnet["id"]},
    )
    return str(router["id"])


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


def bench_hollow(
    settings: Settings, report: Report, count: int | None = None, hosts: int = HOSTS
) -> None:
    count = count or (1_000 if settings.quick else 10_000)
    window_s = 20.0 if settings.quick else WINDOW_S
    with tempfile.TemporaryDirectory(prefix="astara-bench-hollow-") as work:
        root = Path(work)
        postgres = PostgresServer().start() if binaries() else None
        controller: Controller | None = None
        hollows: Hollows | None = None
        try:
            extra = ["--db-url", postgres.create_database()] if postgres else []
            controller = Controller(root / "controller", *extra)
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
            log(f"hollow: creating {count} routers through the API ({CLIENTS} clients)")
            started = time.monotonic()
            with ThreadPoolExecutor(CLIENTS) as pool:
                list(pool.map(lambda i: _create(api, public["id"], i), range(count)))
            created_s = time.monotonic() - started
            log(f"hollow: created in {created_s:.0f} s; waiting for all ACTIVE")
            wait_until(
                lambda: _all_active(api, count) == count,
                3600,
                5.0,
                f"{count} routers ACTIVE",
            )
            active_s = time.monotonic() - started
            assert controller.process is not None
            pid = controller.process.pid
            log(f"hollow: all ACTIVE after {active_s:.0f} s; watching {window_s:.0f} s")
            clients = hollows.clients()
            for client in clients.values():
                client.request("POST", "/hollow/checks/reset")
            cpu_before = cpu_seconds(pid)
            time.sleep(window_s)
            orchestrator_cores = (cpu_seconds(pid) - cpu_before) / window_s
            memory = memory_bytes(pid)
            gaps = [client.request("GET", "/hollow/checks") for client in clients.values()]
            longest_gap = max(g["longest_gap_s"] for g in gaps)
            unchecked = sum(g["unchecked"] for g in gaps)
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
                    "api_calls_s": seconds(created_s),
                    "all_active_s": seconds(active_s),
                    "window_s": window_s,
                    "orchestrator_cores": round(orchestrator_cores, 3),
                    "orchestrator_rss_bytes": memory.get("rss"),
                    "orchestrator_pss_bytes": memory.get("pss"),
                    "longest_check_gap_s": round(longest_gap, 3),
                    "appliances_never_checked": unchecked,
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
