"""Many hosts: TCP throughput between workloads on two hosts over VXLAN, and
pings lost while traffic is interrupted.

All of it runs in a `MultiHostLab` (astara.testing.hosts): host namespaces
on a shared underlay bridge, nothing in the root namespace.

- `fabric.hand_built_vxlan`: iperf3 between two workload namespaces, one
  behind each of two lab hosts, over a VXLAN pair built by hand with `ip`
  (in each host namespace: a VXLAN device over the underlay, a bridge, and a
  veth to the workload; MTU 1450). Baseline: the underlay itself, host to
  host, no VXLAN. This hand-built pair is in turn the baseline that the
  issue names for Astara's fabric between the same two host namespaces
  (goal: at least 0.95 of it): measure that with `transfer`/`measure` next to it, in the
  same run, and emit it with `emit_throughput(..., baseline="hand_built_vxlan")`.
- `fabric.ping_loss_underlay_cut`: pings at 10 ms between the two workloads
  while one host's underlay is cut for a fixed time: the outage the
  workloads see against the cut's own duration (the difference is the
  kernel bringing the link back: its link-state work is batched, up to a
  second). A check of `pings_lost`, the function the `router move` and
  host-death figures are to be measured with.

Each throughput path runs `throughput_repeats` times, interleaved with the
others, and the median counts.
"""

from __future__ import annotations

import itertools
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from astara.linux import netns
from astara.linux.run import in_netns, run
from astara.testing.deployment import Deployment
from astara.testing.hosts import LabHost, MultiHostLab
from astara.testing.net import wait_for_ping, wait_until
from bench.harness import Report, Settings, log, median, ratio
from bench.throughput import Path as IperfPath
from bench.throughput import Transfer, iperf

HAND_BUILT_VNI = 4242
VXLAN_PORT = 4789
WORKLOAD_MTU = 1450  # the underlay's 1500 - 50
HAND_BUILT_ADDRESSES = ("10.250.0.1", "10.250.0.2")
WORKLOAD_PREFIXLEN = 24
PING_INTERVAL_S = 0.01


@dataclass(frozen=True)
class Endpoint:
    """Where one end of a measurement runs: a namespace and the address its
    peer reaches it at."""

    netns: str
    address: str


Pair = tuple[Endpoint, Endpoint]  # (client, server): the client sends


def transfer(client: Endpoint, server: Endpoint, duration_s: int) -> Transfer:
    """One iperf3 TCP run, `client` sending to `server`."""
    return iperf(IperfPath("pair", client.netns, server.netns, server.address), duration_s)


def gbit_per_s(client: Endpoint, server: Endpoint, duration_s: int) -> float:
    """TCP throughput from `client` to `server`, Gbit/s."""
    return transfer(client, server, duration_s).bits_per_s / 1e9


def measure(pairs: dict[str, Pair], settings: Settings) -> dict[str, list[Transfer]]:
    """Every pair `throughput_repeats` times, interleaved, so that a burst of
    noise on this small machine hits all of them alike."""
    measured: dict[str, list[Transfer]] = {name: [] for name in pairs}
    for repeat in range(settings.throughput_repeats):
        for name, (client, server) in pairs.items():
            result = transfer(client, server, settings.iperf_duration_s)
            measured[name].append(result)
            log(f"fabric {name} #{repeat + 1}: {result.bits_per_s / 1e9:.2f} Gbit/s")
    return measured


def emit_throughput(
    report: Report,
    settings: Settings,
    measured: dict[str, list[Transfer]],
    name: str,
    *,
    baseline: str,
    baseline_description: str,
) -> None:
    runs, base = measured[name], measured[baseline]
    bits = median([t.bits_per_s for t in runs])
    baseline_bits = median([t.bits_per_s for t in base])
    report.emit(
        {
            "name": f"fabric.{name}",
            "throughput_bits_per_s": round(bits),
            "runs_bits_per_s": [round(t.bits_per_s) for t in runs],
            "retransmits": [t.retransmits for t in runs],
            "baseline": baseline_description,
            "baseline_bits_per_s": round(baseline_bits),
            "baseline_runs_bits_per_s": [round(t.bits_per_s) for t in base],
            "ratio": ratio(bits, baseline_bits),
            "duration_s": settings.iperf_duration_s,
            "repeats": settings.throughput_repeats,
        }
    )


# -- the hand-built VXLAN pair -------------------------------------------------


def build_vxlan_pair(
    lab: MultiHostLab,
    a: str = "h1",
    b: str = "h2",
    *,
    vni: int = HAND_BUILT_VNI,
    addresses: tuple[str, str] = HAND_BUILT_ADDRESSES,
) -> Pair:
    """A workload behind each of hosts `a` and `b`, joined by a VXLAN pair
    made with `ip` alone: in each host namespace a VXLAN device (local = the
    host's underlay address, remote = the other's, port 4789) and a veth to
    the workload's namespace on one bridge; MTU 1450. Returns (a's workload,
    b's workload) once they ping each other. Everything is under the lab's
    prefix and goes when the lab closes."""
    sides: list[tuple[LabHost, LabHost, str]] = [
        (lab.host(a), lab.host(b), addresses[0]),
        (lab.host(b), lab.host(a), addresses[1]),
    ]
    endpoints = []
    vxlan, bridge, veth = lab.link_name("hvx"), lab.link_name("hvb"), lab.link_name("hvw")
    for host, peer, address in sides:
        workload = lab.netns_name(f"hv-{host.name}")
        netns.create(workload)
        batch = [
            f"link add {vxlan} type vxlan id {vni} local {host.underlay_address}"
            f" remote {peer.underlay_address} dstport {VXLAN_PORT} dev {host.underlay_ifname}",
            f"link add {bridge} type bridge",
            f"link add {veth} mtu {WORKLOAD_MTU} type veth peer name eth0 netns {workload}",
            f"link set {vxlan} mtu {WORKLOAD_MTU} master {bridge} up",
            f"link set {veth} master {bridge} up",
            f"link set {bridge} up",
        ]
        run(["ip", "-n", host.netns, "-batch", "-"], input_text="\n".join(batch) + "\n")
        run(["ip", "-n", workload, "link", "set", "eth0", "mtu", str(WORKLOAD_MTU), "up"])
        run(["ip", "-n", workload, "addr", "add", f"{address}/{WORKLOAD_PREFIXLEN}", "dev", "eth0"])
        endpoints.append(Endpoint(workload, address))
    wait_for_ping(endpoints[0].netns, endpoints[1].address, timeout_s=20)
    return endpoints[0], endpoints[1]


def underlay_pair(lab: MultiHostLab, a: str = "h1", b: str = "h2") -> Pair:
    """Host `a` to host `b` over the underlay itself: no VXLAN."""
    host_a, host_b = lab.host(a), lab.host(b)
    return Endpoint(host_a.netns, host_a.underlay_address), Endpoint(
        host_b.netns, host_b.underlay_address
    )


# -- pings lost ----------------------------------------------------------------

_REPLY = re.compile(r"^\[(?P<time>\d+\.\d+)\] \d+ bytes from .* icmp_seq=(?P<seq>\d+) ")
_SUMMARY = re.compile(r"(?P<sent>\d+) packets transmitted, (?P<received>\d+) received")


@dataclass(frozen=True)
class PingLoss:
    """Pings at a fixed interval across an interruption.

    `lost` counts the requests without a reply between the first reply and
    the last (the in-flight ones at start and stop do not count), as ping
    counts them: note that iputils ping sends more slowly while nothing
    answers (about every 16 ms at `-i 0.01` here), so a 1 s outage loses
    about 60 pings, not 100; `longest_gap_s` is the longest time between two
    consecutive replies, the outage as the workload saw it (the figure for
    "time to traffic restored"); `restored`: a reply came after the
    interruption ended."""

    interval_s: float
    sent: int
    received: int
    lost: int
    longest_gap_s: float
    restored: bool


@dataclass
class Pinger:
    """`ping -i INTERVAL` in a namespace, its replies collected as they come
    (icmp_seq wraps after 65,536 requests: 11 minutes at 10 ms)."""

    netns: str
    address: str
    interval_s: float = PING_INTERVAL_S
    replies: list[tuple[float, int]] = field(default_factory=list)  # (time, seq)
    summary: str = ""

    def __post_init__(self) -> None:
        argv = ["ping", "-n", "-D", "-i", f"{self.interval_s:g}", "-W", "1", self.address]
        self.process = subprocess.Popen(
            in_netns(self.netns, argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            reply = _REPLY.match(line)
            if reply:
                self.replies.append((float(reply["time"]), int(reply["seq"])))
            elif "packets transmitted" in line:
                self.summary = line

    def wait_for_reply(self, after: float = 0.0, timeout_s: float = 10.0) -> bool:
        """Whether a reply arrives (timestamped after `after`) within the time."""
        try:
            wait_until(
                lambda: bool(self.replies) and self.replies[-1][0] > after,
                timeout_s,
                self.interval_s,
                f"a ping reply from {self.address}",
            )
        except AssertionError:
            return False
        return True

    def stop(self, restored: bool) -> PingLoss:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # ping prints its summary
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)
        summary = _SUMMARY.search(self.summary)
        seqs = sorted({seq for _, seq in self.replies})
        times = [t for t, _ in self.replies]
        return PingLoss(
            interval_s=self.interval_s,
            sent=int(summary["sent"]) if summary else 0,
            received=int(summary["received"]) if summary else len(seqs),
            lost=(seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0,
            longest_gap_s=round(max((b - a for a, b in itertools.pairwise(times)), default=0.0), 6),
            restored=restored,
        )


def pings_lost(
    netns_name: str,
    address: str,
    during: Callable[[], object],
    *,
    interval_s: float = PING_INTERVAL_S,
    restore_timeout_s: float = 30.0,
    settle_s: float = 0.2,
) -> PingLoss:
    """Ping `address` from `netns_name` every `interval_s` while `during()`
    runs (a `router move`, a host's death...): starts once replies flow,
    stops once they flow again after `during` returns (or after
    `restore_timeout_s`), plus `settle_s`."""
    pinger = Pinger(netns_name, address, interval_s)
    restored = False
    try:
        if not pinger.wait_for_reply():
            raise RuntimeError(f"no ping reply from {address} in {netns_name} to start with")
        during()
        restored = pinger.wait_for_reply(after=time.time(), timeout_s=restore_timeout_s)
        time.sleep(settle_s)
    finally:
        loss = pinger.stop(restored)
    return loss


# -- the benchmark -------------------------------------------------------------


def bench_fabric(settings: Settings, report: Report) -> None:
    from bench.hosts import astara_pairs, bench_failover, bench_router_move, tenant

    with MultiHostLab(hosts=3) as lab, tempfile.TemporaryDirectory() as state:
        hand_built = build_vxlan_pair(lab, "h1", "h2")
        cloud = Deployment(lab, Path(state))
        try:
            cloud.start()
            world = tenant(cloud)
            pairs: dict[str, Pair] = {
                "underlay": underlay_pair(lab, "h1", "h2"),
                "hand_built_vxlan": hand_built,
                **astara_pairs(world),
            }
            measured = measure(pairs, settings)
            emit_throughput(
                report,
                settings,
                measured,
                "hand_built_vxlan",
                baseline="underlay",
                baseline_description="the underlay itself between the same two hosts (no VXLAN)",
            )
            for name in ("astara_vxlan", "astara_routed"):
                emit_throughput(
                    report,
                    settings,
                    measured,
                    name,
                    baseline="hand_built_vxlan",
                    baseline_description="a VXLAN pair built by hand between the same two"
                    " host namespaces, in the same run",
                )
            bench_underlay_cut(lab, hand_built, settings, report)
            bench_router_move(world, settings, report)
            bench_failover(world, report)
        finally:
            cloud.close()


def bench_underlay_cut(lab: MultiHostLab, pair: Pair, settings: Settings, report: Report) -> None:
    """Pings between the hand-built pair while h2's underlay is cut a while."""
    hand_built = pair
    cut_s = 0.5 if settings.quick else 1.0

    def cut() -> None:
        lab.cut_underlay("h2")
        time.sleep(cut_s)
        lab.restore_underlay("h2")

    losses = [
        pings_lost(hand_built[0].netns, hand_built[1].address, cut) for _ in range(settings.repeats)
    ]
    for loss in losses:
        log(f"fabric ping loss, underlay cut {cut_s}s: {loss}")
    outage = median([loss.longest_gap_s for loss in losses])
    report.emit(
        {
            "name": "fabric.ping_loss_underlay_cut",
            "outage_s": outage,
            "runs_outage_s": [loss.longest_gap_s for loss in losses],
            "pings_lost": median([loss.lost for loss in losses]),
            "runs_pings_lost": [loss.lost for loss in losses],
            "runs_pings_sent": [loss.sent for loss in losses],
            "restored": all(loss.restored for loss in losses),
            "baseline": "the cut itself (underlay link down for this long)",
            "baseline_s": cut_s,
            "ratio": ratio(outage, cut_s),
            "interval_s": PING_INTERVAL_S,
            "repeats": settings.repeats,
        }
    )
