"""Run Astara's benchmarks: `python -m bench.run [--only NAME] [--quick]`.

Each result is printed as one JSON line on stdout as soon as it is measured;
progress goes to stderr. The whole run, with the machine it ran on, is also
written to bench/results/latest.json (git-ignored). Needs root: benchmarks
create namespaces, links and nftables tables, all under a unique prefix and
all removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.api import bench_api
from bench.create import bench_create
from bench.fabric import bench_fabric
from bench.floating_ips import bench_floating_ips
from bench.ha import bench_ha
from bench.harness import Report, Settings, log
from bench.hollow import bench_hollow
from bench.loadbalancer import bench_loadbalancer
from bench.orchestrator import bench_orchestrator
from bench.security import bench_security
from bench.throughput import bench_throughput
from bench.watch import bench_watch

BENCHMARKS: dict[str, Callable[[Settings, Report], None]] = {
    "throughput": bench_throughput,
    "floating_ips": bench_floating_ips,
    "create": bench_create,
    "api": bench_api,
    "orchestrator": bench_orchestrator,
    # Issue 10's figure: 1,000 routers through `astara serve` (about 17 minutes).
    "scale": lambda settings, report: bench_orchestrator(
        settings, report, parts=("scale",), count=100 if settings.quick else 1_000
    ),
    "fabric": bench_fabric,
    # 10,000 routers with their gateway only (made in-process by the API's
    # code: see bench/hollow.py); 1,000 with an interface each with --quick.
    "hollow": lambda settings, report: bench_hollow(
        settings, report, interfaces=settings.quick, active_timeout_s=1800
    ),
    "watch": bench_watch,
    "security": bench_security,
    # Issue 12: requests through a load balancer beside hand-configured
    # haproxy, and one fully populated create to the first served request.
    "loadbalancer": bench_loadbalancer,
    # Issue 13: HA routers' failovers beside bare keepalived's (100 and 30 ms
    # adverts, 10 failovers each) and 1,000 HA members on one host (about
    # 5 minutes in all; --quick: 3 failovers, 50 members).
    "ha": bench_ha,
}
RESULTS = Path(__file__).parent / "results" / "latest.json"


def _first_line(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "unavailable"
    return (result.stdout or result.stderr).strip().splitlines()[0]


def machine() -> dict[str, Any]:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nft": _first_line(["nft", "--version"]),
        "iperf3": _first_line(["iperf3", "--version"]),
        "iproute2": _first_line(["ip", "-V"]),
        # Other work on a 2-core machine shows up in every figure.
        "load_average_at_start": list(os.getloadavg()),
    }


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        help="run only this benchmark (repeatable); default: all",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats and smaller sizes (about a minute)"
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help=f"JSON file for the run (default {RESULTS})"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (it creates namespaces and nftables tables)", file=sys.stderr)
        return 1
    # A terminated run still removes what it made: SIGTERM unwinds through
    # the benchmarks' `finally` blocks like Ctrl-C does.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    settings = Settings(quick=args.quick)
    names = args.only or list(BENCHMARKS)
    report = Report()
    started = time.time()
    # Read now: its load average is the one the run started with.
    host = machine()
    failed: list[str] = []
    for name in names:
        log(f"running {name}")
        try:
            BENCHMARKS[name](settings, report)
        except Exception as error:  # report it, run the rest
            log(f"{name} failed: {type(error).__name__}: {error}")
            failed.append(name)
    document = {
        "command": shlex.join(
            [Path(sys.executable).name, "-m", "bench.run", *(argv or sys.argv[1:])]
        ),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "quick": settings.quick,
        "machine": host,
        "failed": failed,
        "results": report.results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    log(f"wrote {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
