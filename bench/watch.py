"""Heal in a second: from a fault behind the agent's back to traffic back,
with no API call (the agent's watch notices and repairs).

Faults, on a router between a workload and an outside host, pinged every
5 ms through the router:
- `namespace`: the router's namespace deleted as an orphan cleaner would
  (kill what runs inside, `ip netns del`);
- `veth`: the fabric end of its internal veth deleted.
The figure is the time from the fault to the first reply after the outage.
Baseline, in the same run: the agent rebuilding the same router when told
(DELETE, then PUT of the same config, to the first reply): the floor any
repair has, so the ratio is what noticing costs on top.

`python -m bench.watch [--quick]` (or `python -m bench.run --only watch`).
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from astara.naming import Names
from astara.testing.lab import Lab
from bench.harness import Report, Settings, agent_lab, background, log, median, ratio, seconds

OUTSIDE = "198.51.100.1"
ROUTER_MACS = {"external": "fa:16:3e:00:01:01", "internal": "fa:16:3e:00:02:01"}
W1_MAC, OUTSIDE_MAC = "fa:16:3e:00:02:10", "fa:16:3e:00:01:10"
PING_INTERVAL_S = "0.005"
OUTAGE_GAP_S = 0.05  # replies this far apart: traffic was down
STEADY_S = 0.5  # replies without a gap for this long: traffic is back
DEADLINE_S = 60.0


def router_config() -> dict[str, Any]:
    """A router between a provider network and one tenant subnet with DHCP."""
    return {
        "schema_version": 1,
        "kind": "router",
        "interfaces": [
            {
                "mac": ROUTER_MACS["external"],
                "network_id": "ext",
                "role": "external",
                "addresses": ["198.51.100.2/24"],
            },
            {
                "mac": ROUTER_MACS["internal"],
                "network_id": "n1",
                "role": "internal",
                "addresses": ["10.1.0.1/24"],
            },
        ],
        "subnets": [
            {
                "cidr": "10.1.0.0/24",
                "interface_mac": ROUTER_MACS["internal"],
                "gateway_ip": "10.1.0.1",
                "enable_dhcp": True,
            }
        ],
        "routes": [{"destination": "0.0.0.0/0", "nexthop": OUTSIDE}],
        "snat": {"enabled": True},
    }


def delete_namespace(name: str) -> None:
    """What an orphan cleaner does: kill what runs inside, `ip netns del`."""
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    for pid in map(int, pids.split()):
        os.kill(pid, signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], check=True)


class Pinger:
    """Replies' wall-clock times, from a ping every 5 ms."""

    def __init__(self, netns_name: str, address: str) -> None:
        self.argv = ["ping", "-n", "-D", "-i", PING_INTERVAL_S, address]
        self.netns_name = netns_name
        self.replies: list[float] = []

    def read(self, pinger: subprocess.Popen[str]) -> None:
        assert pinger.stdout is not None
        for line in pinger.stdout:
            # "[1700000000.123456] 64 bytes from 198.51.100.1: icmp_seq=..."
            if " bytes from " in line and line.startswith("["):
                self.replies.append(float(line[1 : line.index("]")]))

    def back_after(self, fault_at: float) -> float:
        """Wait for traffic to be steady again after `fault_at`; the time
        from the fault to the first reply after the outage (0 if none)."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            time.sleep(0.05)
            after = [t for t in self.replies if t >= fault_at - OUTAGE_GAP_S]
            if not after or time.time() - after[-1] > OUTAGE_GAP_S:
                continue  # down, or not yet back
            gaps = [(a, b) for a, b in itertools.pairwise(after) if b - a > OUTAGE_GAP_S]
            back = gaps[-1][1] if gaps else after[0]
            if after[-1] - back >= STEADY_S:
                return max(0.0, back - fault_at) if gaps else 0.0
        raise TimeoutError(f"traffic not back within {DEADLINE_S} s")


def measure(lab: Lab, w1: str, fault: Callable[[], None]) -> float:
    pinger = Pinger(w1, OUTSIDE)
    with background(w1, pinger.argv) as process:
        threading.Thread(target=pinger.read, args=(process,), daemon=True).start()
        wait = time.monotonic() + DEADLINE_S
        while not pinger.replies and time.monotonic() < wait:
            time.sleep(0.01)
        fault_at = time.time()
        fault()
        return pinger.back_after(fault_at)


def bench_watch(settings: Settings, report: Report) -> None:
    repeats = settings.repeats
    with agent_lab("w") as lab:
        names = Names(lab.prefix)
        lab.network("ext", external=True)
        lab.network("n1")
        lab.router("r1", router_config())
        lab.workload("outside", "ext", OUTSIDE_MAC, addresses=(f"{OUTSIDE}/24",))
        w1 = lab.workload(
            "w1", "n1", W1_MAC, addresses=("10.1.0.10/24",), routes=(("0.0.0.0/0", "10.1.0.1"),)
        )
        fabric_end = names.appliance_fabric_link("r1", ROUTER_MACS["internal"])

        def rebuild() -> None:
            lab.client.delete_appliance("r1")
            lab.router("r1", router_config())

        def delete_veth() -> None:
            subprocess.run(["ip", "-n", names.fabric_netns, "link", "del", fabric_end], check=True)

        faults: dict[str, Callable[[], None]] = {
            "namespace": lambda: delete_namespace(lab.router_netns("r1")),
            "veth": delete_veth,
        }
        # Interleaved, each run after a rebuild (which resets the repairs'
        # back-off): what is measured is a fault's first repair.
        baseline_runs: list[float] = []
        runs: dict[str, list[float]] = {name: [] for name in faults}
        for _ in range(repeats):
            baseline_runs.append(measure(lab, w1, rebuild))
            log(f"watch: rebuild when told {baseline_runs[-1]:.3f} s")
            for fault_name, fault in faults.items():
                runs[fault_name].append(measure(lab, w1, fault))
                repair = lab.client.get_appliance("r1")["last_repair"] or {}
                log(
                    f"watch: {fault_name} back after {runs[fault_name][-1]:.3f} s"
                    f" (the repair took {repair.get('seconds')} s)"
                )
        baseline = median(baseline_runs)
        for fault_name, fault_runs in runs.items():
            figure = median(fault_runs)
            report.emit(
                {
                    "name": f"watch.{fault_name}_deleted_to_traffic",
                    "traffic_back_s": seconds(figure),
                    "runs_s": [seconds(s) for s in fault_runs],
                    "max_s": seconds(max(fault_runs)),
                    "goal_s": 2.0,
                    "baseline": "the agent rebuilding the same router when told"
                    " (DELETE + PUT) to the first reply",
                    "baseline_s": seconds(baseline),
                    "baseline_runs_s": [seconds(s) for s in baseline_runs],
                    "ratio": ratio(figure, baseline),
                    "repeats": repeats,
                }
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args()
    bench_watch(Settings(quick=arguments.quick), Report())


if __name__ == "__main__":
    main()
