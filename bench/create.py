"""Time to create one router appliance, from nothing to forwarding.

Measured from the moment `PUT /v1/appliances/{id}` is sent to the first
echo reply that a workload (static address, so no DHCP client is timed)
receives from the outside host through the new router (SNAT). A pinger runs
in the workload throughout, every 5 ms, and stamps each reply (`ping -D`).

Baseline: the same router hand-built with plain commands run one after the
other, as a shell script would: `ip netns add`, `ip_forward`, `nft -f` of the
same rendered ruleset, two veths into the same bridges with the same MACs and
names, addresses, the default route; timed the same way, from the first
command to the first reply. The ruleset goes in before any interface exists:
a packet forwarded while a NAT chain is being loaded gets a conntrack entry
with no translation, and the pinger's steady flow then keeps that entry alive
(about 1 run in 10 hung that way when the ruleset was loaded last).

Between runs (untimed) the router is removed and the workload's and outside
host's neighbour caches are flushed, so every run resolves ARP afresh. The
workload retries ARP every 10 ms instead of every second, so a run measures
the router, not the client's ARP timer. Runs alternate, median of each.

`create.burst` (`python -m bench.create --burst N`): the agent's own create
at scale, as the orchestrator drives it for issue 10's 1,000-router figure.
N routers, each a tenant network PUT and then its router appliance PUT (a
gateway on one shared external network, one interface on the tenant
network, DHCP served there by dnsmasq), 8 clients at a time straight to the
agent. Figures: the wall time, the mean time of each kind of PUT, and where
the appliance PUTs' time went, by phase, from the agent's own
`astara_agent_appliance_apply_phase_seconds`. No baseline: the figure is
compared with itself across commits (and the kernel's share by hand).
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from astara.agent.client import AgentClient
from astara.appliance.render.nftables import render_nftables
from astara.linux.run import run
from astara.naming import Names, appliance_interface
from astara.testing.agent import AgentProcess, unique_prefix
from astara.testing.lab import Lab
from bench import topology
from bench.harness import (
    Report,
    Scratch,
    Settings,
    agent_lab,
    background,
    log,
    median,
    ratio,
    seconds,
)

PING_INTERVAL_S = "0.005"
NEIGHBOUR_RETRANS_MS = "10"
FORWARDING_TIMEOUT_S = 30.0


@contextmanager
def first_reply(netns_name: str, address: str) -> Iterator[Callable[[], float]]:
    """Ping `address` from `netns_name` every 5 ms; the block gets a function
    that waits for the first reply and returns its wall-clock time."""
    argv = ["ping", "-n", "-D", "-i", PING_INTERVAL_S, address]
    with background(netns_name, argv) as pinger:
        replies: queue.Queue[float] = queue.Queue()

        def read() -> None:
            assert pinger.stdout is not None
            for line in pinger.stdout:
                # "[1700000000.123456] 64 bytes from 100.64.0.1: icmp_seq=..."
                if " bytes from " in line and line.startswith("["):
                    replies.put(float(line[1 : line.index("]")]))

        threading.Thread(target=read, daemon=True).start()

        def wait() -> float:
            try:
                return replies.get(timeout=FORWARDING_TIMEOUT_S)
            except queue.Empty:
                raise TimeoutError(
                    f"no reply from {address} in {netns_name} within {FORWARDING_TIMEOUT_S} s"
                ) from None

        yield wait


def build_lab(lab: Lab) -> tuple[str, str]:
    """Networks, the outside host and one workload; no router yet."""
    lab.network(topology.EXTERNAL_NETWORK, external=True)
    lab.network(topology.INTERNAL_NETWORK)
    outside = lab.workload(
        "outside",
        topology.EXTERNAL_NETWORK,
        topology.MAC["outside"],
        addresses=(f"{topology.OUTSIDE}/{topology.EXTERNAL_PREFIXLEN}",),
    )
    workload = lab.workload(
        "w1",
        topology.INTERNAL_NETWORK,
        topology.MAC["snat_workload"],
        addresses=(f"{topology.SNAT_WORKLOAD}/{topology.INTERNAL_PREFIXLEN}",),
        routes=(("0.0.0.0/0", topology.ROUTER_INTERNAL),),
    )
    quick_arp(outside, workload)
    return outside, workload


def quick_arp(*namespaces: str) -> None:
    """ARP retried every 10 ms on eth0, not every second: a run then measures
    the router, not the client's ARP timer."""
    for namespace in namespaces:
        run(
            ["sysctl", "-q", "-w", f"net.ipv4.neigh.eth0.retrans_time_ms={NEIGHBOUR_RETRANS_MS}"],
            netns=namespace,
        )


def diagnose(side: str, names: Names, router: str, *namespaces: str) -> None:
    """On a timeout, log what the namespaces hold, to tell a slow router from
    a broken one."""
    log(f"create: no forwarding through the router built {side}; state follows")
    for namespace in (router, *namespaces, names.fabric_netns):
        for argv in (["-br", "link"], ["-br", "addr"], ["route"], ["neigh"]):
            result = run(["ip", "-n", namespace, *argv], check=False)
            log(f"  {namespace}: ip {' '.join(argv)}:\n{result.stdout}{result.stderr}")
    result = run(["nft", "list", "ruleset"], netns=router, check=False)
    log(f"  {router}: nft list ruleset:\n{result.stdout}{result.stderr}")
    result = run(["conntrack", "-L"], netns=router, check=False)
    log(f"  {router}: conntrack -L:\n{result.stdout}{result.stderr}")


def forget_neighbours(*namespaces: str) -> None:
    for namespace in namespaces:
        run(["ip", "-n", namespace, "neigh", "flush", "all"])


def hand_built_commands(
    names: Names, namespace: str, fabric_links: tuple[str, str], config: dict[str, Any]
) -> list[tuple[list[str], str | None]]:
    """The router of `config` as plain commands: (argv, stdin) in order."""
    fabric = names.fabric_netns
    parsed = topology.parsed(config)
    commands: list[tuple[list[str], str | None]] = [
        (["ip", "netns", "add", namespace], None),
        (["ip", "-n", namespace, "link", "set", "lo", "up"], None),
        (
            ["ip", "netns", "exec", namespace, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
            None,
        ),
        # Before the links: see the module's docstring (a NAT-less conntrack entry).
        (["ip", "netns", "exec", namespace, "nft", "-f", "-"], render_nftables(parsed).text()),
    ]
    for interface, fabric_link in zip(parsed.interfaces, fabric_links, strict=True):
        inside = appliance_interface(interface.role.value, interface.mac)
        bridge = names.bridge(interface.network_id)
        commands += [
            (
                [
                    *("ip", "-n", fabric, "link", "add", fabric_link, "type", "veth"),
                    *("peer", "name", inside, "address", interface.mac, "netns", namespace),
                ],
                None,
            ),
            (["ip", "-n", fabric, "link", "set", fabric_link, "master", bridge, "up"], None),
        ]
        commands += [
            (["ip", "-n", namespace, "addr", "add", str(address), "dev", inside], None)
            for address in interface.addresses
        ]
        commands.append((["ip", "-n", namespace, "link", "set", inside, "up"], None))
    for route in parsed.routes:
        add_route = ["ip", "-n", namespace, "route", "add", str(route.destination)]
        commands.append(([*add_route, "via", str(route.nexthop)], None))
    return commands


def bench_create(settings: Settings, report: Report) -> None:
    config = topology.router_config()
    with agent_lab() as lab, Scratch(lab.prefix) as scratch:
        names = Names(lab.prefix)
        outside, workload = build_lab(lab)
        astara_runs: list[float] = []
        put_runs: list[float] = []
        manual_runs: list[float] = []
        commands = 0
        for repeat in range(settings.create_repeats):
            # Astara: one PUT, then wait for forwarding.
            forget_neighbours(outside, workload)
            appliance_id = f"r{repeat}"
            with first_reply(workload, topology.OUTSIDE) as wait:
                started = time.time()
                lab.router(appliance_id, config)
                put_s = time.time() - started
                try:
                    forwarding_s = wait() - started
                except TimeoutError:
                    router = names.appliance_netns(appliance_id)
                    diagnose(f"by the agent (run {repeat + 1})", names, router, outside, workload)
                    raise
            lab.client.delete_appliance(appliance_id)
            astara_runs.append(forwarding_s)
            put_runs.append(put_s)

            # Baseline: the same router by hand.
            forget_neighbours(outside, workload)
            namespace = f"{lab.prefix}-hand{repeat}"
            fabric_links = (f"{lab.prefix}h{repeat}e", f"{lab.prefix}h{repeat}i")
            steps = hand_built_commands(names, namespace, fabric_links, config)
            commands = len(steps)
            scratch.made.append(namespace)  # removed in the finally however this ends
            try:
                with first_reply(workload, topology.OUTSIDE) as wait:
                    started = time.time()
                    for argv, stdin in steps:
                        run(argv, input_text=stdin)
                    try:
                        manual_s = wait() - started
                    except TimeoutError:
                        diagnose(f"by hand (run {repeat + 1})", names, namespace, outside, workload)
                        raise
            finally:
                for link in fabric_links:
                    run(["ip", "-n", names.fabric_netns, "link", "del", link], check=False)
                scratch.remove(namespace)
            manual_runs.append(manual_s)
            log(
                f"create #{repeat + 1}: astara {forwarding_s:.3f} s (PUT {put_s:.3f} s),"
                f" by hand {manual_s:.3f} s"
            )
        forwarding, manual = median(astara_runs), median(manual_runs)
        report.emit(
            {
                "name": "create.router_to_forwarding",
                "forwarding_s": seconds(forwarding),
                "runs_s": [seconds(s) for s in astara_runs],
                "put_s": seconds(median(put_runs)),
                "put_runs_s": [seconds(s) for s in put_runs],
                "baseline": f"the same router hand-built with {commands} ip/sysctl/nft commands",
                "baseline_forwarding_s": seconds(manual),
                "baseline_runs_s": [seconds(s) for s in manual_runs],
                "ratio": ratio(forwarding, manual),
                "repeats": settings.create_repeats,
            }
        )


BURST_EXTERNAL = "pub"
BURST_CLIENTS = 8


def burst_router(n: int) -> tuple[str, dict[str, Any]]:
    """Router number `n` of a burst: its tenant network's id and its config,
    shaped as the orchestrator's router driver builds it."""
    network_id = f"t{n}"
    internal_mac = f"fa:16:3e:01:{n // 256:02x}:{n % 256:02x}"
    cidr = f"10.{n // 250}.{n % 250}.0/24"
    gateway = f"10.{n // 250}.{n % 250}.1"
    external = f"100.64.{4 + n // 250}.{n % 250 + 1}"
    config = {
        "schema_version": 1,
        "kind": "router",
        "interfaces": [
            {
                "mac": f"fa:16:3e:02:{n // 256:02x}:{n % 256:02x}",
                "network_id": BURST_EXTERNAL,
                "role": "external",
                "addresses": [f"{external}/16"],
                "mtu": 1500,
            },
            {
                "mac": internal_mac,
                "network_id": network_id,
                "role": "internal",
                "addresses": [f"{gateway}/24"],
                "mtu": 1500,
            },
        ],
        "subnets": [
            {
                "cidr": cidr,
                "interface_mac": internal_mac,
                "gateway_ip": gateway,
                "enable_dhcp": True,
                "dns_nameservers": [],
                "host_routes": [],
            }
        ],
        "dhcp_hosts": [],
        "routes": [{"destination": "0.0.0.0/0", "nexthop": topology.OUTSIDE}],
        "snat": {"enabled": True},
        "floating_ips": [],
        "forwarding": True,
    }
    return network_id, config


def _phase_sums(client: AgentClient) -> dict[str, tuple[float, float]]:
    """phase → (seconds in all, count), from the agent's `/metrics`."""
    response = client.http.get("/metrics")
    response.raise_for_status()
    found: dict[str, tuple[float, float]] = {}
    for family in text_string_to_metric_families(response.text):
        if family.name != "astara_agent_appliance_apply_phase_seconds":
            continue
        for sample in family.samples:
            name = sample.labels.get("phase", "")
            total, count = found.get(name, (0.0, 0.0))
            if sample.name.endswith("_sum"):
                found[name] = (sample.value, count)
            elif sample.name.endswith("_count"):
                found[name] = (total, sample.value)
    return found


def _cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and of the children it collected (its commands)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def bench_burst(report: Report, count: int, clients: int = BURST_CLIENTS) -> None:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="astara-bench-") as work:
        agent = AgentProcess(Path(work), unique_prefix("b"))
        try:
            _burst(report, Lab(agent.start(), agent.prefix), agent, count, clients, load_before)
        finally:
            agent.remove_everything()


def _burst(
    report: Report,
    lab: Lab,
    agent: AgentProcess,
    count: int,
    clients: int,
    load_before: tuple[float, float, float],
) -> None:
    assert agent.process is not None
    pid = agent.process.pid
    lab.network(BURST_EXTERNAL, external=True)
    plans = [burst_router(n) for n in range(count)]
    network_s: list[float] = []
    appliance_s: list[float] = []
    lock = threading.Lock()

    def create(plan: tuple[str, dict[str, Any]]) -> None:
        network_id, config = plan
        started = time.monotonic()
        lab.client.put_network(network_id)
        put = time.monotonic()
        lab.client.put_appliance(f"r{network_id}", config)
        with lock:
            network_s.append(put - started)
            appliance_s.append(time.monotonic() - put)

    cpu_before = _cpu_s(pid)
    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(create, plans))
    wall = time.monotonic() - started
    cpu = _cpu_s(pid) - cpu_before
    load_after = os.getloadavg()
    phases = _phase_sums(lab.client)
    log(f"burst of {count}: {wall:.1f} s, agent CPU {cpu:.1f} s; load {load_before} → {load_after}")
    report.emit(
        {
            "name": "create.burst",
            "routers": count,
            "clients": clients,
            "wall_s": seconds(wall),
            "per_router_s": seconds(wall / count),
            # The agent's own CPU and its commands': steadier than the wall
            # time on a shared machine.
            "agent_cpu_s": seconds(cpu),
            "agent_cpu_per_router_s": seconds(cpu / count),
            "network_put_mean_s": seconds(sum(network_s) / count),
            "appliance_put_mean_s": seconds(sum(appliance_s) / count),
            "appliance_phases_s": {
                name: {"total": seconds(total), "mean": seconds(total / max(n, 1))}
                for name, (total, n) in sorted(phases.items())
            },
            "load_average_before": list(load_before),
            "load_average_after": list(load_after),
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.create", description=__doc__)
    parser.add_argument("--burst", type=int, metavar="N", help="only the N-router burst")
    parser.add_argument("--clients", type=int, default=BURST_CLIENTS)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    report = Report()
    if args.burst:
        bench_burst(report, args.burst, args.clients)
    else:
        bench_create(Settings(quick=args.quick), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
