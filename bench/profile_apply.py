"""Where the time of `PUT /v1/appliances/{id}` goes with N floating IPs.

    python -m bench.profile_apply [--floating-ips 10000] [--cprofile] [--top 25]

The agent serves PUTs from worker threads, out of reach of a profiler
attached to its main thread, so this runs the same steps as the handler
(parse the body, `Agent.put_appliance`, `observe`) in this process: a fresh
appliance with N floating IPs, the PUT that adds one more, the same PUT
again twice (unchanged), and a GET of the appliance (observe, which lists the
nftables table to report drift). For each it prints the wall time of the
agent's steps (netlink, nft, validation, ...), measured by wrapping those
functions for the duration of the run, and the time outside all of them;
with `--cprofile`, also cProfile's top functions.
Everything is made under a fresh prefix and removed afterwards.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from astara.agent.service import Agent, AgentSettings
from astara.appliance import apply as apply_module
from astara.appliance import daemons as daemons_module
from astara.appliance import execute as execute_module
from astara.appliance import plan as plan_module
from astara.appliance.schema import ApplianceConfig
from astara.linux import cleanup, garp, netlink, netns, nft, routes
from astara.model.fabric import NetworkSpec
from astara.testing.agent import unique_prefix
from bench import topology

# (owner, attribute, label): the steps whose wall time is reported. A label
# starting with "  of which" is part of the step above it.
STEPS: tuple[tuple[Any, str, str], ...] = (
    (sys.modules[__name__], "parse_body", "parse the PUT body (pydantic)"),
    (apply_module, "validate_semantics", "validate_semantics"),
    (apply_module, "render", "render (nft, dnsmasq, radvd texts)"),
    (apply_module, "tool_checks", "tool checks (nft -c, dnsmasq, radvd)"),
    (nft, "check", "  of which: nft -c"),
    (apply_module.ApplianceManager, "config", "read config.json (pydantic)"),
    (apply_module, "observe_for_apply", "observe the namespace (for the plan, with a nft list)"),
    (apply_module, "plan_apply", "plan (pure)"),
    (plan_module, "render_nftables", "  of which: render_nftables (previous, for the delta)"),
    (netns, "create", "netns create + sysctls"),
    (netlink, "ensure_veth", "netlink ensure_veth"),
    (netlink, "links_with_prefix", "netlink list links"),
    (netlink, "sync_addresses", "netlink sync_addresses"),
    (netlink, "addresses", "  of which: dump addresses"),
    (routes, "sync", "routes sync (ip -j, ip -batch)"),
    (routes, "current", "  of which: ip -j route show (read)"),
    (nft, "list_table", "nft list table (drift check, saved listing)"),
    (nft, "load", "nft -f (load)"),
    (daemons_module.ApplianceDaemons, "start", "daemons"),
    (daemons_module.ApplianceDaemons, "reload", "daemons"),
    (daemons_module.ApplianceDaemons, "remove", "daemons"),
    (execute_module, "run", "conntrack forget"),  # the executor's only direct command
    (garp, "announce", "gratuitous ARP"),
    (apply_module, "config_hash", "config_hash"),
    (apply_module, "write_atomic", "write config/status files"),
    (apply_module.ApplianceManager, "observe", "observe (response body)"),
)

COVERED = "(inside some step)"


def parse_body(body: str) -> ApplianceConfig:
    return ApplianceConfig.model_validate_json(body)


@contextmanager
def step_timer() -> Iterator[dict[str, float]]:
    """Wrap every step in STEPS with a wall-time accumulator (outermost calls
    of each step only). COVERED accumulates the time inside any step at all."""
    totals: dict[str, float] = defaultdict(float)
    depth: dict[str, int] = defaultdict(int)
    active = [0]  # steps running, whatever their label
    originals: list[tuple[Any, str, Any]] = []

    def wrap(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            depth[label] += 1
            active[0] += 1
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.perf_counter() - started
                depth[label] -= 1
                active[0] -= 1
                if depth[label] == 0:
                    totals[label] += spent
                if active[0] == 0:
                    totals[COVERED] += spent

        return timed

    for owner, attribute, label in STEPS:
        original = getattr(owner, attribute, None)
        if original is None:  # the agent's code moved on: time what still exists
            print(f"profile_apply: no {attribute} in {owner.__name__}", file=sys.stderr)
            continue
        originals.append((owner, attribute, original))
        setattr(owner, attribute, wrap(label, original))
    try:
        yield totals
    finally:
        for owner, attribute, original in originals:
            setattr(owner, attribute, original)


def put(agent: Agent, appliance_id: str, body: str) -> dict[str, Any]:
    """What the agent's PUT handler does, minus HTTP: parse the body, apply,
    observe, serialize the answer."""
    config = parse_body(body)
    _, result, observed = agent.put_appliance(appliance_id, config)
    json.dumps({**observed, "changed": result.changed, "actions": result.actions})
    return observed


def measure(label: str, action: Callable[[], object], use_cprofile: bool, top: int) -> None:
    with step_timer() as totals:
        started = time.perf_counter()
        action()
        elapsed = time.perf_counter() - started
    print(f"\n=== {label}: {elapsed:.3f} s ===")
    labels = dict.fromkeys(step[2] for step in STEPS)  # in order, each once
    for label in labels:  # in the order the handler runs them; parts under their step
        spent = totals.get(label)
        if spent is not None:
            print(f"  {spent:8.3f} s  {spent / elapsed:6.1%}  {label}")
    rest = elapsed - totals[COVERED]
    print(f"  {rest:8.3f} s  {rest / elapsed:6.1%}  the rest (outside every step above)")
    if use_cprofile:
        profile = cProfile.Profile()
        profile.runcall(action)
        stats = pstats.Stats(profile, stream=sys.stdout)
        stats.sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_apply", description=__doc__)
    parser.add_argument("--floating-ips", type=int, default=10_000)
    parser.add_argument("--cprofile", action="store_true", help="also print cProfile's top")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    prefix = unique_prefix("p")
    count = args.floating_ips
    try:
        with tempfile.TemporaryDirectory(prefix="astara-profile-") as work:
            agent = Agent(AgentSettings(state_dir=Path(work), prefix=prefix))
            for network_id, external in (
                (topology.EXTERNAL_NETWORK, True),
                (topology.INTERNAL_NETWORK, False),
            ):
                agent.put_network(network_id, NetworkSpec(external=external))
            bodies = [
                json.dumps(topology.router_config(topology.floating_ips(n)))
                for n in (count, count + 1, count + 2)
            ]
            # With --cprofile each step runs twice (timed, then profiled): the
            # second create is then a change to the same appliance, so each
            # measurement uses its own appliance id where it must be fresh.
            measure(
                f"create with {count} floating IPs",
                lambda: put(agent, "p0", bodies[0]),
                False,
                args.top,
            )
            if args.cprofile:
                profile = cProfile.Profile()
                profile.runcall(lambda: put(agent, "p1", bodies[0]))
                print(f"\n=== cProfile: create with {count} floating IPs ===")
                pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative").print_stats(
                    args.top
                )
            measure(
                f"add one to {count}",
                lambda: put(agent, "p0", bodies[1]),
                False,
                args.top,
            )
            measure(
                f"unchanged at {count + 1}",
                lambda: put(agent, "p0", bodies[1]),
                args.cprofile,
                args.top,
            )
            # The first unchanged PUT after a change parses config.json again
            # (its version changed); the next one finds it parsed.
            measure(
                f"unchanged again at {count + 1}",
                lambda: put(agent, "p0", bodies[1]),
                False,
                args.top,
            )
            measure(
                f"GET (observe) at {count + 1}",
                lambda: json.dumps(agent.observe_appliance("p0")),
                False,
                args.top,
            )
    finally:
        cleanup.remove_all(prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
