"""HA members per host (issue 13's goal: 1,000 on one host, four times the
227-250 HA routers at which Neutron's L3 agents were reported to break).

On one agent under a unique prefix: P router pairs, so 2P members (P = 500;
25 with `--quick`), each pair the smallest realistic HA router: a gateway
on the shared external network (one address, SNAT, a default route) and one
interface on a tenant network of its own, no DHCP and no RA, so the only
daemons are keepalived and conntrackd. The pairs' HA links are on HA
networks of 250 pairs each (one per project in Neutron, whose virtual
router ids, 1-255, limit a project to 255 HA routers): distinct /18
addresses and MACs per member. Each pair's tenant network and both members
are PUT straight to the agent by 8 clients at a time (as `create.burst`).

Figures: the time to create them all; whether every pair settles to one
active and one standby member (`GET /v1/health`'s `ha_roles`), and how
long after the last PUT; roles that change during a 30 s watch afterwards
(a host too loaded to keep its adverts would flap), and the CPU the
members' daemons (by kind) and the agent use meanwhile; memory: each
member's keepalived parent, VRRP child and conntrackd by their PSS
(`smaps_rollup`: shared pages divided among the processes sharing them),
mean and total; the agent's RSS; the growth of a memory cgroup the agent is
moved into before the first member (cgroup v1, as `bench.orchestrator`
does: what the agent and its children allocate, kernel memory included:
namespaces, links, rulesets, sockets, the daemons), per member; and the
host's MemAvailable before and after, per member (the cross-check, moved
by anything else the host does). Then every member's daemons are SIGKILLed
(keepalived takes a second to exit on the SIGTERM that the teardown would
send, namespace by namespace: 17 minutes for 1,000), everything is removed
(`remove_everything`) and what is left under the prefix is reported, which
must be nothing.

The ratio's baseline is not measured: it is the 250 HA routers per node at
which Neutron's L3 agents were reported to break (figure: members running
÷ 250). A run that would not fit stops creating when the host's
MemAvailable falls under 2 GiB or after 20 minutes, and reports what it
reached.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from astara.linux import cleanup
from astara.testing.lab import Lab, ha_member
from bench.harness import (
    MemoryCgroup,
    MemoryReading,
    Report,
    Settings,
    agent_process,
    log,
    pss_bytes,
    ratio,
    seconds,
)
from bench.orchestrator import per_appliance_memory

PAIRS, QUICK_PAIRS = 500, 25
PAIRS_PER_HA_NETWORK = 250
CLIENTS = 8
CREATE_BUDGET_S = 1200.0
MIN_AVAILABLE_BYTES = 2 << 30
SETTLE_TIMEOUT_S = 300.0
WATCH_S, QUICK_WATCH_S = 30.0, 10.0
NEUTRON_BREAK_POINT = 250
EXTERNAL_NETWORK = "ext"
OUTSIDE = ipaddress.IPv4Address("100.64.0.1")
FIRST_GATEWAY = ipaddress.IPv4Address("100.64.2.0")
HA_SUBNET = ipaddress.IPv4Network("169.254.192.0/18")
TENANT_SUBNETS = ipaddress.IPv4Network("10.0.0.0/8")
DAEMON_PIDS = ("keepalived.pid", "keepalived-vrrp.pid", "conntrackd.pid")


def _mac(kind: int, pair: int) -> str:
    return f"fa:16:3e:{kind:02x}:{pair >> 8:02x}:{pair & 0xFF:02x}"


def member_id(pair: int, slot: int) -> str:
    return f"p{pair:04d}-{slot}"


def tenant_network(pair: int) -> str:
    return f"t{pair:04d}"


def ha_network(pair: int) -> str:
    return f"ha{pair // PAIRS_PER_HA_NETWORK}"


def pair_configs(pair: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two members' configs of pair `pair` (pure): the same interfaces,
    MACs and addresses, each its own link on the pair's HA network."""
    tenant = ipaddress.IPv4Network((TENANT_SUBNETS.network_address + (pair + 1) * 256, 24))
    router = {
        "schema_version": 1,
        "kind": "router",
        "interfaces": [
            {
                "mac": _mac(0x10, pair),
                "network_id": EXTERNAL_NETWORK,
                "role": "external",
                "addresses": [f"{FIRST_GATEWAY + pair}/16"],
            },
            {
                "mac": _mac(0x20, pair),
                "network_id": tenant_network(pair),
                "role": "internal",
                "addresses": [f"{tenant.network_address + 1}/24"],
            },
        ],
        "routes": [{"destination": "0.0.0.0/0", "nexthop": str(OUTSIDE)}],
        "snat": {"enabled": True},
        "floating_ips": [],
    }
    index = pair % PAIRS_PER_HA_NETWORK
    links = {
        slot: (_mac(0x30 + slot, pair), str(HA_SUBNET.network_address + 2 * index + slot + 1))
        for slot in (0, 1)
    }
    return (
        ha_member(router, 0, ha_network(pair), virtual_router_id=index + 1, links=links),
        ha_member(router, 1, ha_network(pair), virtual_router_id=index + 1, links=links),
    )


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_ticks(pid: int) -> int:
    """User and system time of `pid` so far, in clock ticks (0 once gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[11]) + int(fields[12])


def daemon_pids(prefix: str, member: str) -> dict[str, int]:
    """The member's daemons' pids by pid file name (keepalived's parent,
    its VRRP child, conntrackd)."""
    directory = cleanup.default_run_dir(prefix) / "appliances" / member
    found = {}
    for name in DAEMON_PIDS:
        try:
            found[name] = int((directory / name).read_text().strip())
        except (FileNotFoundError, ValueError):
            continue
    return found


def kill_daemons(prefix: str) -> None:
    """SIGKILL every member's daemons: keepalived takes a second to exit on
    the SIGTERM that the teardown sends, namespace by namespace (a host's
    death is quicker)."""
    for directory in (cleanup.default_run_dir(prefix) / "appliances").glob("*"):
        for pid in daemon_pids(prefix, directory.name).values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def settled_pairs(roles: dict[str, str], pairs: list[int]) -> dict[str, int]:
    """How the pairs stand (pure): `settled` (one active, one standby),
    `two_active`, and `other`."""
    counts = {"settled": 0, "two_active": 0, "other": 0}
    for pair in pairs:
        both = sorted(roles.get(member_id(pair, slot), "") for slot in (0, 1))
        if both == ["active", "standby"]:
            counts["settled"] += 1
        elif both == ["active", "active"]:
            counts["two_active"] += 1
        else:
            counts["other"] += 1
    return counts


class Creator:
    """Creates pairs with a few clients until done, out of time or memory."""

    def __init__(self, lab: Lab, budget_s: float) -> None:
        self.lab = lab
        self.deadline = time.monotonic() + budget_s
        self.made: list[int] = []
        self.stopped: str | None = None
        self.put_s: list[float] = []
        self._lock = threading.Lock()

    def create(self, pair: int) -> None:
        if self.stopped is not None:
            return
        if time.monotonic() > self.deadline:
            self.stopped = f"the {CREATE_BUDGET_S:.0f} s budget ran out"
            return
        if available_bytes() < MIN_AVAILABLE_BYTES:
            self.stopped = "MemAvailable fell under 2 GiB"
            return
        self.lab.client.put_network(tenant_network(pair))
        for slot, config in enumerate(pair_configs(pair)):
            started = time.monotonic()
            self.lab.router(member_id(pair, slot), config)
            with self._lock:
                self.put_s.append(time.monotonic() - started)
        with self._lock:
            self.made.append(pair)
            if len(self.made) % 50 == 0:
                log(f"ha scale: {2 * len(self.made)} members")


def steady(
    roles: Callable[[], dict[str, str]],
    pids: dict[str, dict[str, int]],
    agent_pid: int,
    watch_s: float,
) -> tuple[set[str], dict[str, float], float]:
    """Over `watch_s`: the members whose role changed (looked at every
    second), the cores the members' daemons used, by kind, and the agent's."""
    kinds = {
        kind: [found[kind] for found in pids.values() if kind in found] for kind in DAEMON_PIDS
    }
    ticks = {kind: sum(cpu_ticks(p) for p in found) for kind, found in kinds.items()}
    agent_ticks = cpu_ticks(agent_pid)
    watched = roles()
    flips: set[str] = set()
    started = time.monotonic()
    while time.monotonic() - started < watch_s:
        time.sleep(1.0)
        now = roles()
        flips |= {m for m in pids if now.get(m) != watched.get(m)}
        watched = now
    elapsed = time.monotonic() - started
    tick = os.sysconf("SC_CLK_TCK")
    cores = {
        kind.removesuffix(".pid"): round(
            (sum(cpu_ticks(p) for p in found) - ticks[kind]) / tick / elapsed, 3
        )
        for kind, found in kinds.items()
    }
    return flips, cores, (cpu_ticks(agent_pid) - agent_ticks) / tick / elapsed


def bench_scale(settings: Settings, report: Report, pairs: int | None = None) -> None:
    pairs = pairs or (QUICK_PAIRS if settings.quick else PAIRS)
    watch_s = QUICK_WATCH_S if settings.quick else WATCH_S
    with agent_process("s") as (process, lab), ExitStack() as stack:
        assert process.process is not None
        agent_pid = process.process.pid
        lab.network(EXTERNAL_NETWORK, external=True)
        for group in range((pairs + PAIRS_PER_HA_NETWORK - 1) // PAIRS_PER_HA_NETWORK):
            lab.network(f"ha{group}")
        stack.callback(kill_daemons, lab.prefix)  # on the way out, however it ends
        # The agent in a memory cgroup of its own: what it and its children
        # (the daemons, the commands) allocate, kernel memory included, is
        # charged there (see bench.orchestrator).
        cgroup = MemoryCgroup(lab.prefix) if MemoryCgroup.available() else None
        cgroup_before: MemoryReading | None = None
        memory: dict[str, Any] = {}
        if cgroup is not None:
            stack.callback(cgroup.remove)
            cgroup.create()
            cgroup.add(agent_pid)
            time.sleep(1)
            cgroup_before = cgroup.read()
        available_before, agent_rss_before = available_bytes(), rss_bytes(agent_pid)
        load_before = os.getloadavg()
        creator = Creator(lab, CREATE_BUDGET_S)
        started = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(creator.create, range(pairs)))
        create_s = time.monotonic() - started
        made = sorted(creator.made)
        members = [member_id(p, s) for p in made for s in (0, 1)]
        log(f"ha scale: {len(members)} members made in {create_s:.0f} s; waiting for roles")

        def roles() -> dict[str, str]:
            found: dict[str, str] = lab.client.request("GET", "/v1/health")["ha_roles"]
            return found

        settle_started = time.monotonic()
        counts = settled_pairs(roles(), made)
        while (
            counts["settled"] < len(made) and time.monotonic() < settle_started + SETTLE_TIMEOUT_S
        ):
            time.sleep(0.25)
            counts = settled_pairs(roles(), made)
        settle_s = time.monotonic() - settle_started
        log(f"ha scale: {counts} after {settle_s:.0f} s")

        pids = {m: daemon_pids(lab.prefix, m) for m in members}
        flips, daemons_cpu, agent_cpu = steady(roles, pids, agent_pid, watch_s)

        pss = {m: {kind: pss_bytes(pid) for kind, pid in pids[m].items()} for m in members}
        per_member = [sum(found.values()) for found in pss.values()]
        by_kind = (
            {
                kind.removesuffix(".pid"): statistics.fmean(
                    found.get(kind, 0) for found in pss.values()
                )
                for kind in DAEMON_PIDS
            }
            if members
            else {}
        )
        complete = sum(1 for found in pss.values() if len(found) == 3 and all(found.values()))
        available_after, agent_rss = available_bytes(), rss_bytes(agent_pid)
        load_after = os.getloadavg()

        if cgroup is not None and cgroup_before is not None:
            memory = per_appliance_memory(
                cgroup_before, cgroup.read(), agent_pid, max(len(members), 1)
            )
            cgroup.remove()

        removed_started = time.monotonic()
        kill_daemons(lab.prefix)
        process.remove_everything()
        teardown_s = time.monotonic() - removed_started
        left = {k: v for k, v in cleanup.leftovers(lab.prefix).items() if v}

        mib = 1 << 20
        count = len(members)
        report.emit(
            {
                "name": "ha.scale",
                "members_wanted": 2 * pairs,
                "members_running": count,
                "stopped_early": creator.stopped,
                "clients": CLIENTS,
                "create_s": seconds(create_s),
                "per_member_put_mean_s": seconds(statistics.fmean(creator.put_s or [0.0])),
                "pairs_settled": counts["settled"],
                "pairs_two_active": counts["two_active"],
                "pairs_other": counts["other"],
                "settled_after_last_put_s": seconds(settle_s),
                "members_whose_role_changed_in_watch": len(flips),
                "watch_s": watch_s,
                "members_with_their_3_daemons": complete,
                "daemons_cpu_cores": round(sum(daemons_cpu.values()), 3),
                "daemons_cpu_cores_by_daemon": daemons_cpu,
                "agent_cpu_cores": round(agent_cpu, 3),
                "member_daemons_pss_mean_mib": round(statistics.fmean(per_member) / mib, 2),
                "member_daemons_pss_total_mib": round(sum(per_member) / mib, 1),
                "member_daemons_pss_mean_mib_by_daemon": {
                    kind: round(value / mib, 2) for kind, value in by_kind.items()
                },
                "agent_rss_mib": round(agent_rss / mib, 1),
                "agent_rss_before_mib": round(agent_rss_before / mib, 1),
                "mem_available_before_mib": round(available_before / mib),
                "mem_available_after_mib": round(available_after / mib),
                "host_memory_per_member_mib": round(
                    (available_before - available_after) / max(count, 1) / mib, 2
                ),
                # The agent's cgroup's growth per member (bytes): everything
                # charged, kernel (kmem) and user (rss + cache).
                "cgroup_per_member_bytes": {
                    k: memory[k] for k in ("total", "kernel", "user", "daemons_pss") if k in memory
                },
                "load_average_before": list(load_before),
                "load_average_after": list(load_after),
                "teardown_s": seconds(teardown_s),
                "left_behind": left,
                "baseline": "cited, not measured: Neutron's L3 agents reported breaking"
                " at 227-250 HA routers per node",
                "baseline_members": NEUTRON_BREAK_POINT,
                "ratio": ratio(count, NEUTRON_BREAK_POINT),
                "goal_members": 1000,
                "goal_met": count >= 1000 and counts["settled"] == len(made) and not flips,
            }
        )
