"""Time to apply a router config with many floating IPs, ÷ a bare `nft -f`.

- `floating_ips.apply`: the wall time of `PUT /v1/appliances/{id}` creating a
  fresh appliance with N floating IPs (N = 1, 100, 1,000, 10,000): namespace,
  links, addresses, routes (one `local` route per floating IP in the `local`
  table, so the kernel answers ARP for it), the nftables table with its two
  maps, gratuitous ARPs, and the observed state the agent answers with.
- `floating_ips.add_one`: the PUT that adds one floating IP to the appliance
  that already has the largest N (`appliance.floating`: an element delta and
  one local route, over the table the agent's nft genid vouches for), five
  times in a row; then the PUT that removes the last one, the same config
  PUT again (`unchanged_put_s`) and a GET (`get_s`), five times each. These
  bodies are encoded before the clock starts, as an orchestrator holds its
  body: the figure is the agent's answer, not the client's JSON encoding.

Baselines, measured in the same run in a scratch namespace:
- the same rendered ruleset text loaded with a bare `nft -f` (the required
  baseline; `ratio` is against it);
- that plus the same local routes (`route add local F/32 dev X table local`)
  added with one `ip -batch` (what the kernel must do at the least:
  `ratio_to_kernel_floor` is against the sum);
- for add_one: one `nft add element` and one `ip route add local`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from astara.appliance.render.nftables import render_nftables
from astara.linux.run import run
from astara.testing.lab import Lab
from bench import topology
from bench.harness import (
    Report,
    Scratch,
    Settings,
    agent_lab,
    log,
    median,
    ratio,
    run_timed,
    seconds,
)

SCRATCH_LINK = "e0"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class AgentCpu:
    """The CPU time of the lab's agent process and of the children it
    collected (its commands), in seconds: on a shared machine, the figure
    that wall time hides. Resolution: a clock tick (10 ms); read medians."""

    def __init__(self, prefix: str) -> None:
        self.stat: Path | None = None
        for entry in Path("/proc").iterdir():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"astara.agent" in argv and prefix.encode() in argv:
                self.stat = entry / "stat"
                break

    def seconds(self) -> float:
        if self.stat is None:
            return 0.0
        fields = self.stat.read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime


def put_timed(lab: Lab, appliance_id: str, config: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    result = lab.router(appliance_id, config)
    elapsed = time.perf_counter() - started
    count = len(config["floating_ips"])
    if result["state"] != "active" or result["floating_ips"] != count:
        raise RuntimeError(f"appliance {appliance_id} is not active with {count} floating IPs")
    return elapsed, result


def put_body_timed(lab: Lab, appliance_id: str, config: dict[str, Any]) -> tuple[float, Any]:
    """A PUT of `config` encoded beforehand: the time of the request alone."""
    body = json.dumps(config).encode()
    started = time.perf_counter()
    response = lab.client.http.request(
        "PUT",
        f"/v1/appliances/{appliance_id}?epoch=0",
        content=body,
        headers={"content-type": "application/json"},
    )
    elapsed = time.perf_counter() - started
    if response.status_code not in (200, 201):
        raise RuntimeError(f"PUT {appliance_id}: {response.status_code} {response.text[:300]}")
    result = response.json()
    count = len(config["floating_ips"])
    if result["state"] != "active" or result["floating_ips"] != count:
        raise RuntimeError(f"appliance {appliance_id} is not active with {count} floating IPs")
    return elapsed, result


def get_timed(lab: Lab, appliance_id: str) -> float:
    started = time.perf_counter()
    response = lab.client.http.get(f"/v1/appliances/{appliance_id}")
    elapsed = time.perf_counter() - started
    if response.status_code != 200 or response.json()["state"] != "active":
        raise RuntimeError(f"GET {appliance_id}: {response.status_code} {response.text[:300]}")
    return elapsed


def ruleset_text(config: dict[str, Any]) -> str:
    return render_nftables(topology.parsed(config)).text()


def local_route(floating_ip: str) -> list[str]:
    """How the agent answers ARP for a floating IP: a local route (the agent
    marks its routes `proto static` and writes them with `ip -batch`)."""
    route = ["route", "add", "local", f"{floating_ip}/32", "dev", SCRATCH_LINK]
    return [*route, "proto", "static", "table", "local"]


def local_route_batch(floating: dict[str, str]) -> str:
    return "".join(" ".join(local_route(f)) + "\n" for f in floating)


def scratch_router(scratch: Scratch, name: str) -> str:
    """A namespace with one veth link up, to hold a ruleset and local routes."""
    namespace = scratch.netns(name)
    run(["ip", "-n", namespace, "link", "add", SCRATCH_LINK, "type", "veth", "peer", "name", "e1"])
    run(["ip", "-n", namespace, "link", "set", SCRATCH_LINK, "up"])
    return namespace


def bench_floating_ips(settings: Settings, report: Report) -> None:
    counts = settings.floating_ip_counts
    largest = counts[-1]
    with agent_lab() as lab, Scratch(lab.prefix) as scratch:
        lab.network(topology.EXTERNAL_NETWORK, external=True)
        lab.network(topology.INTERNAL_NETWORK)
        kept: tuple[str, str] | None = None  # (appliance, scratch namespace) with `largest`
        for count in counts:
            floating = topology.floating_ips(count)
            config = topology.router_config(floating)
            text = ruleset_text(config)
            batch = local_route_batch(floating)
            apply_runs: list[float] = []
            nft_runs: list[float] = []
            route_runs: list[float] = []
            actions: list[str] = []
            for repeat in range(settings.repeats):
                appliance_id = f"fip{count}-{repeat}"
                apply_s, result = put_timed(lab, appliance_id, config)
                actions = result["actions"]
                namespace = scratch_router(scratch, f"nft{count}-{repeat}")
                nft_s = run_timed(["nft", "-f", "-"], namespace, input_text=text)
                route_s = run_timed(["ip", "-n", namespace, "-batch", "-"], input_text=batch)
                apply_runs.append(apply_s)
                nft_runs.append(nft_s)
                route_runs.append(route_s)
                log(
                    f"floating_ips apply {count} #{repeat + 1}: {apply_s:.3f} s"
                    f" (nft -f {nft_s:.3f} s, ip -batch of local routes {route_s:.3f} s)"
                )
                if count == largest and repeat == settings.repeats - 1:
                    kept = (appliance_id, namespace)
                else:
                    lab.client.delete_appliance(appliance_id)
                    scratch.remove(namespace)
            apply_s, nft_s, route_s = median(apply_runs), median(nft_runs), median(route_runs)
            report.emit(
                {
                    "name": "floating_ips.apply",
                    "floating_ips": count,
                    "apply_s": seconds(apply_s),
                    "runs_s": [seconds(s) for s in apply_runs],
                    "baseline": "nft -f of the same rendered ruleset in a scratch namespace",
                    "baseline_nft_load_s": seconds(nft_s),
                    "ratio": ratio(apply_s, nft_s),
                    "baseline_local_routes_ip_batch_s": seconds(route_s),
                    "baseline_local_routes_runs_s": [seconds(s) for s in route_runs],
                    "baseline_kernel_floor_s": seconds(nft_s + route_s),
                    "ratio_to_kernel_floor": ratio(apply_s, nft_s + route_s),
                    "ruleset_bytes": len(text),
                    "actions": actions,
                    "repeats": settings.repeats,
                }
            )
        assert kept is not None
        bench_add_one(lab, settings, report, largest, *kept)


ADD_ONE_REPEATS = 5


def bench_add_one(
    lab: Lab, settings: Settings, report: Report, count: int, appliance_id: str, namespace: str
) -> None:
    """Add one floating IP at a time to the appliance holding `count`."""
    apply_runs: list[float] = []
    element_runs: list[float] = []
    route_runs: list[float] = []
    actions: list[str] = []
    repeats = ADD_ONE_REPEATS if not settings.quick else 2
    cpu = AgentCpu(lab.prefix)
    cpu_runs: dict[str, list[float]] = {"add": [], "remove": [], "unchanged": [], "get": []}

    def timed_cpu(kind: str, call: Any, *args: Any) -> Any:
        before = cpu.seconds()
        found = call(*args)
        cpu_runs[kind].append(cpu.seconds() - before)
        return found

    for repeat in range(repeats):
        total = count + repeat + 1
        floating = topology.floating_ips(total)
        new_floating, new_fixed = list(floating.items())[-1]
        apply_s, result = timed_cpu(
            "add", put_body_timed, lab, appliance_id, topology.router_config(floating)
        )
        actions = result["actions"]
        element = f"{{ {new_floating} : {new_fixed} }}"
        element_s = run_timed(
            ["nft", "add", "element", "inet", "astara", "floating_dnat", element], namespace
        )
        route_s = run_timed(["ip", "-n", namespace, *local_route(new_floating)])
        apply_runs.append(apply_s)
        element_runs.append(element_s)
        route_runs.append(route_s)
        log(
            f"floating_ips add one to {total - 1} #{repeat + 1}: {apply_s:.4f} s"
            f" (nft add element {element_s:.4f} s, ip route add local {route_s:.4f} s)"
        )
    last = topology.router_config(topology.floating_ips(count + repeats - 1))
    remove_s, removed = timed_cpu("remove", put_body_timed, lab, appliance_id, last)
    log(f"floating_ips remove one from {count + repeats}: {remove_s:.4f} s {removed['actions']}")
    unchanged_runs: list[float] = []
    for _ in range(repeats):
        unchanged_s, unchanged = timed_cpu("unchanged", put_body_timed, lab, appliance_id, last)
        if unchanged["changed"]:
            raise RuntimeError(f"re-applying the same config changed {appliance_id}")
        unchanged_runs.append(unchanged_s)
    get_runs = [timed_cpu("get", get_timed, lab, appliance_id) for _ in range(repeats)]
    log(
        "floating_ips unchanged PUT: "
        + ", ".join(f"{s:.4f}" for s in unchanged_runs)
        + " s; GET: "
        + ", ".join(f"{s:.4f}" for s in get_runs)
        + " s"
    )
    apply_s, element_s, route_s = median(apply_runs), median(element_runs), median(route_runs)
    report.emit(
        {
            "name": "floating_ips.add_one",
            "floating_ips_before": count,
            "apply_s": seconds(apply_s),
            "runs_s": [seconds(s) for s in apply_runs],
            "baseline": "nft add element of one element to the same table in a scratch namespace",
            "baseline_nft_add_element_s": seconds(element_s),
            "ratio": ratio(apply_s, element_s),
            "baseline_ip_route_add_local_s": seconds(route_s),
            "baseline_kernel_floor_s": seconds(element_s + route_s),
            "ratio_to_kernel_floor": ratio(apply_s, element_s + route_s),
            "remove_one_s": seconds(remove_s),
            "remove_one_actions": removed["actions"],
            "unchanged_put_s": seconds(median(unchanged_runs)),
            "unchanged_put_runs_s": [seconds(s) for s in unchanged_runs],
            "get_s": seconds(median(get_runs)),
            "get_runs_s": [seconds(s) for s in get_runs],
            "actions": actions,
            "repeats": repeats,
            # The agent's CPU (its own and its commands'), per request: median, all.
            "agent_cpu_s": {kind: seconds(median(runs)) for kind, runs in cpu_runs.items()},
            "agent_cpu_runs_s": {
                kind: [seconds(s) for s in runs] for kind, runs in cpu_runs.items()
            },
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
    )
