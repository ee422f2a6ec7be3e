"""Print a run's results as the Markdown tables of docs/performance.md.

python -m bench.report [bench/results/latest.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.run import RESULTS


def _gbit(bits_per_s: float) -> str:
    return f"{bits_per_s / 1e9:.2f}"


def _ms(value_s: float) -> str:
    return f"{value_s * 1000:,.1f}"


def _spread(values: list[float], scale: float = 1.0) -> str:
    return f"{min(values) * scale:,.1f} to {max(values) * scale:,.1f}"


def throughput_table(results: list[dict[str, Any]]) -> list[str]:
    rows = [r for r in results if r["name"].startswith("throughput.")]
    if not rows:
        return []
    lines = [
        "| path | Gbit/s (median) | runs, Gbit/s | bare veth, Gbit/s (median) | ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['name'].removeprefix('throughput.')} | {_gbit(r['throughput_bits_per_s'])}"
            f" | {_spread(r['runs_bits_per_s'], 1e-9)}"
            f" | {_gbit(r['baseline_bits_per_s'])} | {r['ratio']:.2f} |"
        )
    return lines


def floating_ip_table(results: list[dict[str, Any]]) -> list[str]:
    rows = [r for r in results if r["name"].startswith("floating_ips.")]
    if not rows:
        return []
    lines = [
        "| case | PUT, ms (median) | runs, ms | nft baseline, ms | ratio"
        " | + local routes by `ip`, ms | ratio to kernel floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r["name"] == "floating_ips.apply":
            case = f"apply {r['floating_ips']:,} (fresh appliance)"
            nft_s, route_s = r["baseline_nft_load_s"], r["baseline_local_routes_ip_batch_s"]
        else:
            case = f"add one to {r['floating_ips_before']:,}"
            nft_s, route_s = r["baseline_nft_add_element_s"], r["baseline_ip_route_add_local_s"]
        lines.append(
            f"| {case} | {_ms(r['apply_s'])} | {_spread(r['runs_s'], 1000)}"
            f" | {_ms(nft_s)} | {r['ratio']:,.1f} | {_ms(route_s)}"
            f" | {r['ratio_to_kernel_floor']:,.1f} |"
        )
    return lines


def create_table(results: list[dict[str, Any]]) -> list[str]:
    rows = [r for r in results if r["name"].startswith("create.")]
    if not rows:
        return []
    lines = [
        "| case | to first reply, ms (median) | runs, ms | PUT returns, ms"
        " | by hand, ms (median) | runs, ms | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| one router | {_ms(r['forwarding_s'])} | {_spread(r['runs_s'], 1000)}"
            f" | {_ms(r['put_s'])} | {_ms(r['baseline_forwarding_s'])}"
            f" | {_spread(r['baseline_runs_s'], 1000)} | {r['ratio']:.2f} |"
        )
    return lines


def loadbalancer_table(results: list[dict[str, Any]]) -> list[str]:
    rows = [r for r in results if r["name"].startswith("loadbalancer.requests.")]
    if not rows:
        return []
    lines = [
        "| client | Astara, req/s (median) | hand haproxy, req/s | ratio (paired)"
        " | Astara p99, ms | hand p99, ms | p99 ratio (paired) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['name'].removeprefix('loadbalancer.requests.')} | {r['requests_per_s']:,}"
            f" | {r['baseline_requests_per_s']:,} | {r['ratio']:.2f} ({r['paired_ratio']:.2f})"
            f" | {r['p99_ms']:.1f} | {r['baseline_p99_ms']:.1f}"
            f" | {r['p99_ratio']:.2f} ({r['paired_p99_ratio']:.2f}) |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    document = json.loads(Path(args[0] if args else RESULTS).read_text())
    results = document["results"]
    machine = document["machine"]
    print(
        f"Run of {document['started_at']} ({document['duration_s']} s, "
        f"`{document['command']}`), {machine['nproc']} CPUs ({machine['cpu_model']}), "
        f"kernel {machine['kernel']}, load average at start {machine['load_average_at_start']}"
    )
    tables = (
        throughput_table(results),
        floating_ip_table(results),
        create_table(results),
        loadbalancer_table(results),
    )
    for table in tables:
        if table:
            print()
            print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
