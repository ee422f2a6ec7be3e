"""TCP throughput through a router appliance, ÷ a bare veth pair.

Paths (iperf3, one TCP stream, the client sends):
- `snat`: a workload (no floating IP) → the outside host, SNAT to the
  router's external address;
- `floating_ip_inbound`: the outside host → a workload's floating IP (DNAT);
- `floating_ip_outbound`: that workload → the outside host, leaving with its
  floating IP as source;
- `same_network`: workload → workload on one network (veth, bridge, veth),
  no router: how much of the cost is the fabric rather than the appliance.

Baseline: two namespaces joined by one veth pair, made in the same run.
Each path runs `repeats` times, interleaved with the others, and the median
counts, so a burst of noise on this small machine hits all paths alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from astara.linux.run import run
from astara.testing.lab import Lab
from astara.testing.net import sh, wait_for_ping, wait_until
from bench import topology
from bench.harness import Report, Scratch, Settings, agent_lab, background, log, median, ratio

IPERF_PORT = 5201
BARE_A = "192.0.2.1"
BARE_B = "192.0.2.2"


@dataclass(frozen=True)
class Path:
    name: str
    client_netns: str
    server_netns: str
    address: str


@dataclass(frozen=True)
class Transfer:
    bits_per_s: float
    retransmits: int


def iperf(path: Path, duration_s: int) -> Transfer:
    """One iperf3 run along `path`: the server answers one test and exits."""
    with background(path.server_netns, ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)]) as server:
        wait_until(
            lambda: f":{IPERF_PORT} " in sh(path.server_netns, ["ss", "-Htln"]),
            10,
            0.05,
            f"iperf3 listening in {path.server_netns}",
        )
        argv = ["iperf3", "-c", path.address, "-p", str(IPERF_PORT), "-t", str(duration_s), "-J"]
        output = run(argv, netns=path.client_netns, timeout_s=duration_s + 30).stdout
        server.wait(10)
    end = json.loads(output)["end"]
    return Transfer(
        bits_per_s=float(end["sum_received"]["bits_per_second"]),
        retransmits=int(end["sum_sent"].get("retransmits", 0)),
    )


def build_router_lab(lab: Lab) -> dict[str, str]:
    """The router with one floating IP, the outside host and two workloads;
    returns their namespaces once traffic flows along every path."""
    lab.network(topology.EXTERNAL_NETWORK, external=True)
    lab.network(topology.INTERNAL_NETWORK)
    lab.router(
        "r1",
        topology.router_config({topology.WORKLOAD_FLOATING_IP: topology.FLOATING_WORKLOAD}),
    )
    default = (("0.0.0.0/0", topology.ROUTER_INTERNAL),)
    internal_len = topology.INTERNAL_PREFIXLEN
    namespaces = {
        "outside": lab.workload(
            "outside",
            topology.EXTERNAL_NETWORK,
            topology.MAC["outside"],
            addresses=(f"{topology.OUTSIDE}/{topology.EXTERNAL_PREFIXLEN}",),
        ),
        "snat": lab.workload(
            "snat",
            topology.INTERNAL_NETWORK,
            topology.MAC["snat_workload"],
            addresses=(f"{topology.SNAT_WORKLOAD}/{internal_len}",),
            routes=default,
        ),
        "floating": lab.workload(
            "floating",
            topology.INTERNAL_NETWORK,
            topology.MAC["floating_workload"],
            addresses=(f"{topology.FLOATING_WORKLOAD}/{internal_len}",),
            routes=default,
        ),
    }
    wait_for_ping(namespaces["snat"], topology.OUTSIDE)
    wait_for_ping(namespaces["outside"], topology.WORKLOAD_FLOATING_IP)
    wait_for_ping(namespaces["snat"], topology.FLOATING_WORKLOAD)
    return namespaces


def build_bare_pair(scratch: Scratch) -> tuple[str, str]:
    """Two namespaces and one veth pair between them, nothing else."""
    a, b = scratch.netns("bare-a"), scratch.netns("bare-b")
    link_a, link_b = f"{scratch.prefix}va", f"{scratch.prefix}vb"
    run(["ip", "-n", a, "link", "add", link_a, "type", "veth", "peer", "name", link_b, "netns", b])
    for namespace, link, address in ((a, link_a, BARE_A), (b, link_b, BARE_B)):
        run(["ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", link])
        run(["ip", "-n", namespace, "link", "set", link, "up"])
    wait_for_ping(a, BARE_B)
    return a, b


def bench_throughput(settings: Settings, report: Report) -> None:
    with agent_lab() as lab, Scratch(lab.prefix) as scratch:
        namespaces = build_router_lab(lab)
        bare_a, bare_b = build_bare_pair(scratch)
        baseline = Path("bare_veth", bare_a, bare_b, BARE_B)
        paths = [
            Path("snat", namespaces["snat"], namespaces["outside"], topology.OUTSIDE),
            Path(
                "floating_ip_inbound",
                namespaces["outside"],
                namespaces["floating"],
                topology.WORKLOAD_FLOATING_IP,
            ),
            Path(
                "floating_ip_outbound",
                namespaces["floating"],
                namespaces["outside"],
                topology.OUTSIDE,
            ),
            Path(
                "same_network",
                namespaces["snat"],
                namespaces["floating"],
                topology.FLOATING_WORKLOAD,
            ),
        ]
        measured: dict[str, list[Transfer]] = {p.name: [] for p in [baseline, *paths]}
        for repeat in range(settings.throughput_repeats):
            for path in [baseline, *paths]:
                transfer = iperf(path, settings.iperf_duration_s)
                measured[path.name].append(transfer)
                log(f"throughput {path.name} #{repeat + 1}: {transfer.bits_per_s / 1e9:.2f} Gbit/s")
        baseline_bits = median([t.bits_per_s for t in measured[baseline.name]])
        for path in paths:
            bits = median([t.bits_per_s for t in measured[path.name]])
            report.emit(
                {
                    "name": f"throughput.{path.name}",
                    "throughput_bits_per_s": round(bits),
                    "runs_bits_per_s": [round(t.bits_per_s) for t in measured[path.name]],
                    "retransmits": [t.retransmits for t in measured[path.name]],
                    "baseline": "bare veth pair between two namespaces",
                    "baseline_bits_per_s": round(baseline_bits),
                    "baseline_runs_bits_per_s": [
                        round(t.bits_per_s) for t in measured[baseline.name]
                    ],
                    "ratio": ratio(bits, baseline_bits),
                    "duration_s": settings.iperf_duration_s,
                    "repeats": settings.throughput_repeats,
                }
            )
