"""The whole system: `astara serve` (API, orchestrator, local agent).

Provisioning latency: for each of N routers, a workload is plugged on a new
tenant network first (static address, default route through the router to
be, pinging the outside host every 5 ms); then, timed, the router is created
with its gateway and the interface is added through the tenant API; the
figure is the time to the first echo reply. Baseline, in the same run, for
the same router: the operator pauses it (`debug`), its appliance is deleted
through the agent, and the very config the orchestrator built is PUT straight
to the agent API, timed the same way; then it is handed back (`manage`).

Scale: M routers (gateway + one interface each; M = 200, 30 with `--quick`,
or `--scale M`) created through the API; time until all are ACTIVE (read
from the server's own `/metrics`: appliances by state), and the memory
per appliance, measured on the agent alone: before any router is made, the
local agent (`astara serve`'s child) is moved into a memory cgroup of its
own (cgroup v1, `bench.harness.MemoryCgroup`), so that what it and its
children (dnsmasq, radvd, `ip`, `nft`) allocate, kernel memory included
(namespaces, links, nftables objects, sockets), is charged there; the
figure is the cgroup's growth over M routers divided by M, split into kernel
(kmem) and user (rss + cache) memory, with the daemons' own share (their
PSS) beside it. `astara serve` stays outside: its Python memory is the
orchestrator's and the API's, not the appliance's; its growth is reported
apart. The host's MemAvailable before and after is kept as a cross-check. Then
`astara serve` is stopped and started again: the time until the
orchestrator has converged on every appliance (routers' and DHCP: each
found running the config planned from the database now, as its record has
it, on its host at the recorded epoch; the status's `converged`), with no
config pushed (the data plane untouched: every appliance's generation is
unchanged), each stage's end and the CPU seconds spent (`astara serve`'s
and its agent's), and what one steady resync after that costs (appliances
observed through the agent, and those whose listing stood for an
observation). Baseline for the
convergence: the same M configs PUT directly to the agent, 8 at a time (the
orchestrator's parallelism), after deleting them. The orchestrator's own
figures (pushes, rebuilds, reconciles and their mean time, the deepest
queue seen, failures) come from its `/metrics`.

    python -m bench.orchestrator --scale 1000      # the scale part only, 1,000 routers
    python -m bench.run --only orchestrator        # both parts, as `make bench` runs them
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from astara.agent.client import AgentClient
from astara.db.engine import make_engine, sqlite_url
from astara.db.models import Router
from astara.drivers import router as driver
from astara.linux import cleanup
from astara.testing.agent import unique_prefix
from astara.testing.net import wait_until
from astara.testing.server import Cloud, Server
from bench.create import first_reply, forget_neighbours, quick_arp
from bench.harness import (
    MemoryCgroup,
    MemoryReading,
    Report,
    Settings,
    log,
    pss_bytes,
    ratio,
    seconds,
)

OUTSIDE = "198.51.100.1"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(api: Cloud) -> Samples:
    """The server's `/metrics`, parsed by prometheus-client's own parser."""
    response = api.http.get("/metrics")
    response.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def _setup(api: Cloud, prefix: str) -> str:
    api.unlimited_quotas()
    public = api.create("networks", "network", name="public", **{"router:external": True})
    # DHCP off where workloads are plugged before a router joins (they are
    # addressed statically): a DHCP appliance would come and go inside the
    # measured window, and this measures routers.
    api.create(
        "subnets",
        "subnet",
        network_id=public["id"],
        cidr="198.51.96.0/20",
        ip_version=4,
        enable_dhcp=False,
    )
    outside = api.create(
        "ports", "port", network_id=public["id"], fixed_ips=[{"ip_address": OUTSIDE}]
    )
    api.plug(outside["id"], f"{prefix}-outside")
    return str(public["id"])


def _plan(state_dir: Path, router_id: str) -> dict[str, Any]:
    """The config the orchestrator built for a router, read like it does."""
    engine = make_engine(sqlite_url(state_dir))
    try:
        with engine.connect() as connection:
            from sqlalchemy.orm import Session

            with Session(bind=connection) as session:
                router = session.scalar(select(Router).where(Router.id == router_id))
                assert router is not None
                plan = driver.plan(session, router)
                assert plan.config is not None
                return plan.config.model_dump(mode="json")
    finally:
        engine.dispose()


def _in_state(api: Cloud, router_id: str, state: str) -> bool:
    return bool(api.router(router_id)["state"] == state)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def provisioning(settings: Settings, report: Report, server: Server, api: Cloud) -> None:
    prefix = server.prefix
    assert prefix is not None
    public_id = _setup(api, prefix)
    agent = AgentClient(f"unix:{server.state_dir / 'agent.sock'}")
    count = 5 if settings.quick else 20
    api_runs: list[float] = []
    calls_runs: list[float] = []  # the two API calls, as the client waits for them
    direct_runs: list[float] = []
    pushes = 0.0
    for n in range(count):
        network = api.create("networks", "network", name=f"p{n}")
        subnet = api.create(
            "subnets",
            "subnet",
            network_id=network["id"],
            cidr=f"10.{n}.0.0/24",
            ip_version=4,
            enable_dhcp=False,
        )
        vm = api.create("ports", "port", network_id=network["id"])
        workload = f"{prefix}-p{n}"
        api.plug(vm["id"], workload)
        outside = f"{prefix}-outside"
        quick_arp(workload, outside)  # measure the router, not ARP's 1 s timer
        forget_neighbours(workload, outside)
        before = scrape(api)
        with first_reply(workload, OUTSIDE) as wait:
            started = time.time()
            router = api.create(
                "routers", "router", name=f"p{n}", external_gateway_info={"network_id": public_id}
            )
            api(
                "PUT",
                f"/v2.0/routers/{router['id']}/add_router_interface",
                {"subnet_id": subnet["id"]},
            )
            calls_runs.append(time.time() - started)
            api_runs.append(wait() - started)
        wait_until(functools.partial(_in_state, api, router["id"], "active"), 60, 0.05)
        pushes += moved(before, scrape(api), "astara_pushes_total")
        # The same appliance, straight through the agent API.
        api("POST", f"/astara/v1/routers/{router['id']}/debug")
        wait_until(functools.partial(_in_state, api, router["id"], "paused"), 60, 0.05, "pausing")
        config = _plan(server.state_dir, router["id"])
        # With the epoch the host holds (it refuses an older one).
        epoch = int(agent.get_appliance(router["id"])["epoch"])
        agent.delete_appliance(router["id"], epoch=epoch)
        forget_neighbours(workload, outside)
        with first_reply(workload, OUTSIDE) as wait:
            started = time.time()
            agent.put_appliance(router["id"], config, epoch=epoch)
            direct_runs.append(wait() - started)
        api("POST", f"/astara/v1/routers/{router['id']}/manage")
        log(
            f"router #{n + 1}: through the API {api_runs[-1]:.3f} s, direct {direct_runs[-1]:.3f} s"
        )
    agent.close()
    p50, direct_p50 = statistics.median(api_runs), statistics.median(direct_runs)
    samples = scrape(api)

    def mean_request_s(method: str, route: str) -> float:
        labels = {"method": method, "route": route}
        count = total(samples, "astara_api_request_seconds_count", **labels)
        return seconds(total(samples, "astara_api_request_seconds_sum", **labels) / max(count, 1))

    report.emit(
        {
            "name": "orchestrator.provisioning",
            "routers": count,
            "p50_s": seconds(p50),
            "p95_s": seconds(_percentile(api_runs, 0.95)),
            "runs_s": [seconds(s) for s in api_runs],
            "baseline": "the same appliance config PUT directly to the agent API",
            "baseline_p50_s": seconds(direct_p50),
            "baseline_p95_s": seconds(_percentile(direct_runs, 0.95)),
            "baseline_runs_s": [seconds(s) for s in direct_runs],
            "ratio": ratio(p50, direct_p50),
            # 1.0: each router applied once (its gateway and interface in one push).
            "pushes_per_router": round(pushes / count, 2),
            "api_calls_p50_s": seconds(statistics.median(calls_runs)),
            "api_router_create_mean_s": mean_request_s("POST", "/v2.0/routers"),
            "api_add_interface_mean_s": mean_request_s("PUT", "/v2.0/routers/{router_id}/{action}"),
        }
    )


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def per_appliance_memory(
    before: MemoryReading, after: MemoryReading, agent_pid: int, count: int
) -> dict[str, Any]:
    """The agent's cgroup's growth over `count` appliances, per appliance
    (bytes): `total` (everything charged), `kernel` (kmem) and `user` (rss +
    cache: anonymous memory, and page cache such as the files it writes);
    `daemons_pss`: the PSS of every process in it but the agent (its
    daemons: none run before the first appliance), `agent_pss`: the agent
    process's own growth."""
    return {
        "total": round((after.usage - before.usage) / count),
        "kernel": round((after.kernel - before.kernel) / count),
        "user": round((after.user - before.user) / count),
        "user_rss": round((after.rss - before.rss) / count),
        "user_cache": round((after.cache - before.cache) / count),
        "daemons_pss": round(
            (after.pss_except({agent_pid}) - before.pss_except({agent_pid})) / count
        ),
        "agent_pss": round((after.pss.get(agent_pid, 0) - before.pss.get(agent_pid, 0)) / count),
    }


def _daemons(reading: MemoryReading, agent_pid: int) -> dict[str, int]:
    """How many processes of each command run in the cgroup, the agent apart."""
    found: dict[str, int] = {}
    for pid, name in reading.commands.items():
        if pid != agent_pid:
            found[name] = found.get(name, 0) + 1
    return found


def scale(
    settings: Settings, report: Report, server: Server, api: Cloud, count: int | None = None
) -> None:
    prefix = server.prefix
    assert prefix is not None
    public_id = _setup(api, prefix)
    count = count or (30 if settings.quick else 200)
    cgroup = MemoryCgroup(prefix) if MemoryCgroup.available() else None
    try:
        _scale(settings, report, server, api, count, public_id, cgroup)
    finally:
        if cgroup is not None:
            cgroup.remove()


def _scale(
    settings: Settings,
    report: Report,
    server: Server,
    api: Cloud,
    count: int,
    public_id: str,
    cgroup: MemoryCgroup | None,
) -> None:
    assert server.process is not None
    serve_pid = server.process.pid
    agent_pid = int((server.state_dir / "agent.pid").read_text())
    cgroup_before: MemoryReading | None = None
    if cgroup is not None:
        cgroup.create()
        cgroup.add(agent_pid)
        time.sleep(1)
        cgroup_before = cgroup.read()
    else:
        log("no cgroup v1 memory controller with kmem: memory from MemAvailable only")
    serve_pss_before = pss_bytes(serve_pid)
    memory_before = _mem_available()
    metrics_before = scrape(api)
    deepest = 0.0
    cpu_before = _cpu_split(serve_pid, agent_pid)
    started = time.monotonic()

    def make(n: int) -> str:
        cidr = f"10.{n // 250}.{n % 250}.0/24"
        return str(api.routed_network(f"s{n}", cidr, public_id)[2]["id"])

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(make, range(count)))
    api_done = time.monotonic() - started

    def all_active() -> bool:
        # One grouped count per look, not a list of every router.
        nonlocal deepest
        samples = scrape(api)
        deepest = max(deepest, total(samples, "astara_reconcile_queue_depth"))
        return total(samples, "astara_appliances", state="active") >= count

    wait_until(all_active, 1800, 0.2, "all routers ACTIVE")
    converged = time.monotonic() - started
    cpu_spent = {
        name: round(after - before, 1)
        for (name, after), before in zip(
            _cpu_split(serve_pid, agent_pid).items(), cpu_before.values(), strict=True
        )
    }
    assert sum(r["status"] == "ACTIVE" for r in api.routers()) == count
    metrics_after = scrape(api)

    def delta(name: str, **labels: str) -> float:
        return moved(metrics_before, metrics_after, name, **labels)

    reconciles = delta("astara_reconcile_seconds_count", kind="router")
    orchestrator = {
        "pushes": delta("astara_pushes_total"),
        "rebuilds": delta("astara_rebuilds_total"),
        "router_reconciles": reconciles,
        "router_reconcile_mean_s": seconds(
            delta("astara_reconcile_seconds_sum", kind="router") / max(reconciles, 1)
        ),
        "l2_passes": delta("astara_reconcile_seconds_count", kind="l2"),
        "l2_pass_total_s": seconds(delta("astara_reconcile_seconds_sum", kind="l2")),
        "failures": delta("astara_reconcile_failures_total"),
        "deepest_queue": deepest,
        # CPU seconds from the first API call to the last router ACTIVE.
        "cpu_s": cpu_spent,
        "api_requests": delta("astara_api_request_seconds_count"),
        "api_request_mean_s": seconds(
            delta("astara_api_request_seconds_sum")
            / max(delta("astara_api_request_seconds_count"), 1)
        ),
    }
    log(f"orchestrator while converging: {orchestrator}")
    time.sleep(2)
    host_per_appliance = (memory_before - _mem_available()) / count
    memory: dict[str, Any] = {}
    if cgroup is not None and cgroup_before is not None:
        cgroup_after = cgroup.read()
        memory = per_appliance_memory(cgroup_before, cgroup_after, agent_pid, count)
        memory["daemons"] = _daemons(cgroup_after, agent_pid)
        # The restart below must find every process back where it was.
        cgroup.remove()
    memory["orchestrator_pss"] = round((pss_bytes(serve_pid) - serve_pss_before) / count)
    memory["host_memavailable"] = round(host_per_appliance)
    log(f"memory per appliance (bytes): {memory}")
    # On its own too, at once: the restart below may fail on a loaded machine.
    report.emit(
        {
            "name": "orchestrator.memory_per_appliance",
            "routers": count,
            "bytes": memory.get("total", memory["host_memavailable"]),
            "measured_by": "the agent's memory cgroup" if "total" in memory else "MemAvailable",
            "detail_bytes": memory,
            "baseline": "the host's MemAvailable before and after, per appliance",
            "baseline_bytes": memory["host_memavailable"],
            "ratio": ratio(
                memory.get("total", memory["host_memavailable"]), memory["host_memavailable"]
            ),
        }
    )
    log(f"{count} routers: API {api_done:.1f} s, all ACTIVE after {converged:.1f} s")

    agent = AgentClient(f"unix:{server.state_dir / 'agent.sock'}")
    generations = {a["id"]: a["generation"] for a in agent.appliances(observe=False)}
    agent.close()
    server.stop()
    restart = _restart(server, len(generations))
    resync, status = restart["converged_s"], restart["status"]
    api = Cloud(server)
    agent = AgentClient(f"unix:{server.state_dir / 'agent.sock'}")
    untouched = generations == {a["id"]: a["generation"] for a in agent.appliances(observe=False)}
    log(f"restart: converged in {resync:.1f} s, {status['pushes']} pushes, untouched={untouched}")
    log(f"restart, stage by stage (s after the spawn): {restart['stages_s']}")
    log(f"restart, CPU seconds: {restart['cpu_s']}; what checked each appliance: {restart['how']}")

    # One steady resync (every appliance seen since the restart): what it observes.
    steady_before = scrape(api)
    target = status["resyncs"] + 2  # the one under way may have started before the restart's end
    wait_until(
        lambda: api.orchestrator()["resyncs"] >= target and api.orchestrator()["busy"] == 0,
        600,
        0.2,
        "a steady resync",
    )
    steady_after = scrape(api)
    steady = {
        source: moved(steady_before, steady_after, "astara_observations_total", source=source)
        for source in ("agent", "listed")
    }
    log(f"a steady resync (2 counted): observations {steady}")

    # Baseline: the same configs straight to the agent, 8 at a time.
    own = api("GET", "/v2.0/quotas/project")["project"]["project_id"]
    api("POST", f"/astara/v1/projects/{own}/debug")
    wait_until(lambda: all(r["state"] == "paused" for r in api.routers()), 600, 0.2, "pausing")
    configs = {router_id: _plan(server.state_dir, router_id) for router_id in ids}
    epochs = {a["id"]: int(a["epoch"]) for a in agent.appliances(observe=False)}
    for router_id in ids:
        agent.delete_appliance(router_id, epoch=epochs[router_id])
    lock = threading.Lock()
    direct_started = time.monotonic()

    def put(router_id: str) -> None:
        with lock:
            config = configs[router_id]
        agent.put_appliance(router_id, config, epoch=epochs[router_id])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, ids))
    direct = time.monotonic() - direct_started
    api("POST", f"/astara/v1/projects/{own}/manage")
    agent.close()
    report.emit(
        {
            "name": "orchestrator.scale",
            "routers": count,
            "api_calls_s": seconds(api_done),
            "converged_s": seconds(converged),
            "baseline": f"the same {count} configs PUT directly to the agent, 8 at a time",
            "baseline_s": seconds(direct),
            "ratio": ratio(converged, direct),
            # The agent's cgroup (MemAvailable's figure without a cgroup).
            "memory_per_appliance_bytes": memory.get("total", memory["host_memavailable"]),
            "memory_per_appliance_detail_bytes": memory,
            "restart_resync_s": seconds(resync),
            "restart_stages_s": restart["stages_s"],
            "restart_cpu_s": restart["cpu_s"],
            "restart_checked_by": restart["how"],
            "restart_pushes": status["pushes"],
            "restart_data_plane_untouched": untouched,
            "orchestrator_while_converging": orchestrator,
            "two_steady_resyncs_observations": steady,
        }
    )


def _proc_started(pid: int) -> float:
    """When a process started (wall clock)."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    boot = next(
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime")
    )
    return boot + int(fields[19]) / ticks


def _cpu_split(serve_pid: int, agent_pid: int) -> dict[str, float]:
    """CPU seconds so far: `astara serve`, the agent, the agent's reaped
    children (its `nft`, `ip`, `dnsmasq` starters...), this benchmark."""
    fields = Path(f"/proc/{agent_pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "serve": _cpu_s(serve_pid),
        "agent": _cpu_s(agent_pid),
        "agent_children": (int(fields[13]) + int(fields[14])) / ticks,
        "benchmark": time.process_time(),
    }


def _cpu_s(pid: int) -> float:
    """A process's own CPU seconds (user + system, its children apart)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _restart(server: Server, appliances: int) -> dict[str, Any]:
    """Start `astara serve` again and wait until its orchestrator has
    converged on all `appliances` (its status's `converged`: each found
    running the config planned from the database now, as recorded, on its
    host at the recorded epoch). Each stage's end in seconds after the
    spawn: the local agent's process started, the orchestrator made (the
    agent answering), its first resync's listing, check and wakes, the API
    answering, every appliance converged; the CPU seconds `astara serve`
    and its agent spent until then; and how the appliances were checked
    (the resync's check against the listing, reconciles, agent calls)."""
    spawned = time.time()
    server.start()
    answering = time.time()
    assert server.process is not None
    serve_pid = server.process.pid
    agent_pid = int((server.state_dir / "agent.pid").read_text())
    api = Cloud(server)

    def converged() -> bool:
        status = api("GET", "/astara/v1/orchestrator")["orchestrator"]
        # (Before `converged` existed: the reconciles, one per appliance.)
        return bool(status.get("converged", status["reconciles"]) >= appliances)

    wait_until(converged, 1800, 0.1, "the restarted orchestrator to converge")
    done = time.time()
    cpu: dict[str, float] = {
        "serve": round(_cpu_s(serve_pid), 2),
        "agent": round(_cpu_s(agent_pid), 2),
    }
    status = api("GET", "/astara/v1/orchestrator")["orchestrator"]
    samples = scrape(api)
    stages = {"agent_process": _proc_started(agent_pid)}
    stages.update(status.get("timeline", {}))
    cpu.update({f"serve_at_{k}": v for k, v in status.get("timeline_cpu_s", {}).items()})
    stages.update(api_answering=answering, converged=done)
    how = {
        "reconciles": status["reconciles"],
        **{
            f"observations_{source}": total(samples, "astara_observations_total", source=source)
            for source in ("agent", "listed")
        },
    }
    return {
        "converged_s": done - spawned,
        "stages_s": {name: round(at - spawned, 2) for name, at in stages.items()},
        "cpu_s": cpu,
        "how": how,
        "status": status,
    }


def bench_orchestrator(
    settings: Settings,
    report: Report,
    parts: tuple[str, ...] = ("provisioning", "scale"),
    count: int | None = None,
) -> None:
    for name in parts:
        prefix = unique_prefix("b")
        with tempfile.TemporaryDirectory(prefix="astara-bench-") as scratch:
            server = Server(Path(scratch) / "var", prefix, "--log-level", "warning")
            try:
                server.start()
                if name == "scale":
                    scale(settings, report, server, Cloud(server), count)
                else:
                    provisioning(settings, report, server, Cloud(server))
            finally:
                server.stop()
                cleanup.remove_all(prefix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.orchestrator", description=__doc__)
    parser.add_argument("--scale", type=int, metavar="N", help="routers for the scale part")
    parser.add_argument(
        "--part",
        action="append",
        choices=("provisioning", "scale"),
        help="run only this part (repeatable); default: scale with --scale, else both",
    )
    parser.add_argument("--quick", action="store_true", help="fewer routers")
    parser.add_argument("--output", type=Path, help="also write the results here (JSON)")
    args = parser.parse_args(argv)
    parts = tuple(args.part or (("scale",) if args.scale else ("provisioning", "scale")))
    report = Report()
    bench_orchestrator(Settings(quick=args.quick), report, parts, args.scale)
    if args.output is not None:
        args.output.write_text(json.dumps(report.results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
