"""Load balancers (issue 12's figures), through a whole `astara serve` under
a unique prefix: one tenant network, three member namespaces, a client
namespace and a "hand" namespace, each on a port of that network (plugged
through the API, port security off), so both load balancers below sit on
the same fabric, in front of the same members, for the same client.

Members: each runs a haproxy of its own, one thread, that answers every
request with its name (`http-request return`): a real server in C that
Debian ships and `make` installs anyway, far faster than the balancers it
sits behind, so the members are never what is measured (Python's
http.server manages a few thousand requests/s; busybox httpd forks per
connection). The client namespace retries ARP every 10 ms (`quick_arp`)
and reuses ports in TIME_WAIT for new connections (`reuse_time_wait`).

- `loadbalancer.requests.keepalive` / `loadbalancer.requests.close`:
  requests/s and p99 latency from `wrk` in the client namespace (2 threads,
  32 connections), through an Astara load balancer (an HTTP listener on
  port 80, a ROUND_ROBIN pool of the three members, an HTTP health monitor
  every second), beside the baseline, in the same run: haproxy started by
  hand in the hand namespace with the config a person would write for the
  same objects (`hand_config`: the same listener, balance, check and
  timeouts, haproxy's defaults otherwise, threads included). With
  keep-alive, and with `Connection: close` (a new connection per request).
  Runs alternate Astara and hand; medians. `ratio` is Astara's requests/s
  ÷ the hand one's; `p99_ratio` is the hand p99 ÷ Astara's, so that for
  both, 1.0 is parity and the issue's goal is ≥ 0.95. `paired_ratio` and
  `paired_p99_ratio`: the median of each Astara run against the hand run
  right after it (steadier when other work comes and goes).
- `loadbalancer.create`: from one fully populated `POST
  /v2/lbaas/loadbalancers` (listener, pool, members and monitor in the
  body, as Octavia allows) to the first request served through the VIP,
  seen by a prober in the client namespace that tries a GET every 2 ms
  (`vip_address` is given in the body, so the prober runs before the POST).
  Breakdown: the API's answer, ACTIVE seen (polled every 20 ms), first
  request. If the API refuses the single call, the same objects are made
  the long way (load balancer, then listener, pool, members, monitor, each
  after ACTIVE) and `mode` says which was measured. Goal: ≤ 1 s. Each run
  deletes its load balancer (cascade) and waits until its namespace is gone.

    python -m bench.run --only loadbalancer [--quick]
    python -m bench.loadbalancer --part create --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from astara.appliance.apply import MAX_CONNECTIONS
from astara.linux import cleanup, netns
from astara.linux.run import run
from astara.testing.agent import unique_prefix
from astara.testing.net import http_get, wait_until
from astara.testing.server import Cloud, Server
from bench.create import quick_arp
from bench.harness import Report, Settings, background, log, median, ratio, seconds

LB = "/v2/lbaas"
SUBNET = "10.90.0.0/24"
VIPS = "10.90.0.{}"  # one fresh VIP per create run, from .200 on
MEMBERS = ("m1", "m2", "m3")
MEMBER_PORT = 8000
LISTENER_PORT = 80
WRK_THREADS, WRK_CONNECTIONS = 2, 32
# The monitor both load balancers run: Octavia's knobs and haproxy's words.
DELAY_S, TIMEOUT_S, RETRIES = 1, 1, 3
ACTIVE_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 30.0

# wrk's summary as one JSON line (its `done` hook), latencies in µs.
WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
    .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, '
    .. '"p50_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""

# A GET every 2 ms until one is answered 200 by a member (bounded: 30 s);
# prints the wall-clock time of that answer and its body.
PROBE = """
import socket, sys, time
address, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
request = b"GET / HTTP/1.1\\r\\nHost: vip\\r\\nConnection: close\\r\\n\\r\\n"
print("ready", flush=True)
end = time.monotonic() + limit
while time.monotonic() < end:
    data = b""
    try:
        with socket.create_connection((address, port), timeout=0.05) as s:
            s.settimeout(1)
            s.sendall(request)
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        pass
    if data.startswith(b"HTTP/1.1 200"):
        print(time.time(), data.partition(b"\\r\\n\\r\\n")[2].decode(), flush=True)
        sys.exit(0)
    time.sleep(0.002)
print("timeout", flush=True)
"""


def member_config(name: str, port: int = MEMBER_PORT) -> str:
    """A member: haproxy answering every request with its name, one thread."""
    return "\n".join(
        [
            "global",
            "\tnbthread 1",
            "\tmaxconn 4096",
            "defaults",
            "\tmode http",
            "\ttimeout client 50s",
            "frontend member",
            f"\tbind :{port}",
            f"\thttp-request return status 200 content-type text/plain string {name}",
            "",
        ]
    )


def hand_config(address: str, members: dict[str, str]) -> str:
    """The baseline: what a person writes for an HTTP listener on port 80, a
    round-robin pool of `members` (name: address) on port 8000 and an HTTP
    check every second (timeout 1 s, 3 retries), with Octavia's default
    timeouts (connect 5 s, client and server 50 s), and as many connections
    as this host lets one haproxy hold (its descriptor limit: haproxy refuses
    to start past it), the limit Astara's config gets too."""
    servers = [
        f"\tserver {name} {member}:{MEMBER_PORT} check inter {DELAY_S}s"
        f" fall {RETRIES} rise {RETRIES}"
        for name, member in members.items()
    ]
    return "\n".join(
        [
            "global",
            f"\tmaxconn {MAX_CONNECTIONS}",
            "defaults",
            "\tmode http",
            "\toption http-keep-alive",
            "\ttimeout connect 5s",
            "\ttimeout client 50s",
            "\ttimeout server 50s",
            "frontend web",
            f"\tbind {address}:{LISTENER_PORT}",
            "\tdefault_backend members",
            "backend members",
            "\tbalance roundrobin",
            "\toption httpchk GET /",
            "\thttp-check expect status 200",
            f"\ttimeout check {TIMEOUT_S}s",
            *servers,
            "",
        ]
    )


def full_body(subnet_id: str, vip: str, members: dict[str, str], name: str) -> dict[str, Any]:
    """Octavia's fully populated load balancer: everything in one POST."""
    return {
        "loadbalancer": {
            "name": name,
            "vip_subnet_id": subnet_id,
            "vip_address": vip,
            "listeners": [
                {
                    "name": f"{name}-http",
                    "protocol": "HTTP",
                    "protocol_port": LISTENER_PORT,
                    "default_pool": {
                        "name": f"{name}-pool",
                        "protocol": "HTTP",
                        "lb_algorithm": "ROUND_ROBIN",
                        "healthmonitor": {
                            "type": "HTTP",
                            "delay": DELAY_S,
                            "timeout": TIMEOUT_S,
                            "max_retries": RETRIES,
                            "url_path": "/",
                            "expected_codes": "200",
                        },
                        "members": [
                            {"name": member, "address": address, "protocol_port": MEMBER_PORT}
                            for member, address in members.items()
                        ],
                    },
                }
            ],
        }
    }


def sequential_calls(body: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The same objects as `full_body` the long way: (collection, member,
    fields) in order, with `{lb}`, `{listener}` and `{pool}` standing for
    the ids the earlier calls return."""
    balancer = dict(body["loadbalancer"])
    listeners = balancer.pop("listeners")
    calls: list[tuple[str, str, dict[str, Any]]] = [("loadbalancers", "loadbalancer", balancer)]
    for nested in listeners:
        listener = dict(nested)
        pool = dict(listener.pop("default_pool"))
        monitor, members = pool.pop("healthmonitor"), pool.pop("members")
        calls.append(("listeners", "listener", {**listener, "loadbalancer_id": "{lb}"}))
        calls.append(("pools", "pool", {**pool, "listener_id": "{listener}"}))
        calls += [("pools/{pool}/members", "member", member) for member in members]
        calls.append(("healthmonitors", "healthmonitor", {**monitor, "pool_id": "{pool}"}))
    return calls


def parse_wrk(stdout: str) -> dict[str, Any]:
    """The JSON line `WRK_SCRIPT` prints, with requests/s worked out."""
    line = next(x for x in reversed(stdout.splitlines()) if x.startswith("{"))
    found: dict[str, Any] = json.loads(line)
    found["requests_per_s"] = found["requests"] / (found["duration_us"] / 1e6)
    found["errors"] = sum(
        found[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return found


def wrk(
    client: str, url: str, script: Path, duration_s: int, keepalive: bool = True
) -> dict[str, Any]:
    """One `wrk` run from `client` against `url`; its summary."""
    argv = ["wrk", "-t", str(WRK_THREADS), "-c", str(WRK_CONNECTIONS), "-d", f"{duration_s}s"]
    argv += ["--timeout", "2s", "-s", str(script)]
    if not keepalive:
        argv += ["-H", "Connection: close"]
    return parse_wrk(run([*argv, url], netns=client, timeout_s=duration_s + 60).stdout)


@contextmanager
def haproxy(namespace: str, config: Path, port: int) -> Iterator[None]:
    """haproxy in the foreground in `namespace` for the block, once it listens."""
    with background(namespace, ["haproxy", "-db", "-f", str(config)]) as process:

        def listening() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"haproxy in {namespace} exited: {process.stderr.read()}")  # type: ignore[union-attr]
            return f":{port} " in run(["ss", "-Htln"], netns=namespace).stdout

        wait_until(listening, 10, 0.05, f"haproxy on port {port} in {namespace}")
        yield


def reuse_time_wait(namespace: str) -> None:
    """Let the client's new connections take ports still in TIME_WAIT (what
    a load generator's host is set to do). wrk closes first, so with a new
    connection per request the client holds the TIME_WAITs; without this,
    once they fill half the port range, finding a free port for each
    connect() costs more than the request (measured: 12,700 requests/s
    falling to 500 within 30 s, whatever the server)."""
    run(["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"], netns=namespace)


class Topology:
    """The tenant network and its namespaces, made through the API."""

    def __init__(self, cloud: Cloud, prefix: str) -> None:
        self.cloud = cloud
        self.prefix = prefix
        network = cloud.create("networks", "network", name="web")
        self.subnet_id: str = cloud.create(
            "subnets",
            "subnet",
            network_id=network["id"],
            cidr=SUBNET,
            ip_version=4,
            enable_dhcp=False,
        )["id"]
        self.addresses: dict[str, str] = {}
        for name in (*MEMBERS, "client", "hand"):
            port = cloud.create(
                "ports", "port", network_id=network["id"], name=name, port_security_enabled=False
            )
            cloud.plug(port["id"], self.namespace(name))
            self.addresses[name] = port["fixed_ips"][0]["ip_address"]
        self.client = self.namespace("client")
        quick_arp(self.client)
        reuse_time_wait(self.client)

    def namespace(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    @property
    def members(self) -> dict[str, str]:
        return {name: self.addresses[name] for name in MEMBERS}

    def spreads(self, address: str) -> bool:
        """True once a few GETs through `address` reach every member."""
        return {http_get(self.client, f"http://{address}/") for _ in range(6)} == set(MEMBERS)


def wait_active(cloud: Cloud, balancer_id: str, interval_s: float = 0.02) -> None:
    def active() -> bool:
        shown = cloud("GET", f"{LB}/loadbalancers/{balancer_id}")["loadbalancer"]
        if shown["provisioning_status"] == "ERROR":
            raise RuntimeError(f"load balancer {balancer_id} went ERROR: {shown}")
        return bool(shown["provisioning_status"] == "ACTIVE")

    wait_until(active, ACTIVE_TIMEOUT_S, interval_s, f"load balancer {balancer_id} ACTIVE")


class Creator:
    """Makes a load balancer from a fully populated body: in one call while
    the API takes it, else the long way from then on (`mode`)."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.mode = "single-call"
        self.refusal: str | None = None

    def create(self, body: dict[str, Any], started: float) -> dict[str, float | str]:
        """Make it; the balancer's id and when (since `started`, a
        perf_counter reading) the first and the last API call answered."""
        if self.mode == "single-call":
            response = self.cloud.http.post(f"{LB}/loadbalancers", json=body)
            answered = time.perf_counter() - started
            if response.status_code == 201:
                made = response.json()["loadbalancer"]
                return {"id": made["id"], "api_s": answered, "last_api_s": answered}
            if response.status_code >= 500:
                raise RuntimeError(f"single-call create: {response.status_code} {response.text}")
            self.mode, self.refusal = "sequential", f"{response.status_code} {response.text}"
            log(f"loadbalancer: the single call was refused ({self.refusal}); sequential calls")
        return self._sequential(body, started)

    def _sequential(self, body: dict[str, Any], started: float) -> dict[str, float | str]:
        ids: dict[str, str] = {}
        first: float | None = None
        for collection, member, fields in sequential_calls(body):
            filled = {k: v.format(**ids) if isinstance(v, str) else v for k, v in fields.items()}
            made = self.cloud.create(f"lbaas/{collection.format(**ids)}", member, **filled)
            answered = time.perf_counter() - started
            first = answered if first is None else first
            if member == "loadbalancer":
                ids["lb"] = made["id"]
            elif member in ("listener", "pool"):
                ids[member] = made["id"]
            if member != "healthmonitor":
                wait_active(self.cloud, ids["lb"])
        assert first is not None
        return {"id": ids["lb"], "api_s": first, "last_api_s": answered}


def delete(cloud: Cloud, balancer_id: str, namespaces_before: int, prefix: str) -> None:
    """Cascade delete; until the API forgets it and its namespace is gone."""
    cloud("DELETE", f"{LB}/loadbalancers/{balancer_id}?cascade=true", ok=204)
    wait_until(
        lambda: cloud.http.get(f"{LB}/loadbalancers/{balancer_id}").status_code == 404,
        ACTIVE_TIMEOUT_S,
        0.05,
        f"load balancer {balancer_id} gone from the API",
    )
    wait_until(
        lambda: _count(prefix) <= namespaces_before,
        ACTIVE_TIMEOUT_S,
        0.05,
        f"load balancer {balancer_id}'s namespace gone",
    )


def _count(prefix: str) -> int:
    return sum(1 for name in netns.names() if name.startswith(f"{prefix}-"))


def create_runs(settings: Settings, report: Report, topology: Topology) -> None:
    cloud, creator = topology.cloud, Creator(topology.cloud)
    runs: list[dict[str, float]] = []
    # Run 0 warms up (and finds out whether the single call is taken): not counted.
    for index in range(settings.create_repeats + 1):
        vip = VIPS.format(200 + index)
        before = _count(topology.prefix)
        body = full_body(topology.subnet_id, vip, topology.members, f"lb{index}")
        run(["ip", "-n", topology.client, "neigh", "flush", "all"])
        with background(
            topology.client, ["python3", "-c", PROBE, vip, str(LISTENER_PORT), str(PROBE_TIMEOUT_S)]
        ) as prober:
            assert prober.stdout is not None
            assert prober.stdout.readline().strip() == "ready"
            wall, started = time.time(), time.perf_counter()
            made = creator.create(body, started)
            wait_active(cloud, str(made["id"]))
            active_s = time.perf_counter() - started
            answer = prober.stdout.readline().split(maxsplit=1)
            prober.wait(PROBE_TIMEOUT_S + 5)
        if len(answer) != 2 or answer[1].strip() not in MEMBERS:
            raise RuntimeError(f"no request served through {vip}: {answer}")
        first_s = float(answer[0]) - wall
        log(f"loadbalancer: create ({creator.mode}) first request after {first_s:.3f} s")
        delete(cloud, str(made["id"]), before, topology.prefix)
        if index:
            runs.append(
                {
                    "api_s": float(made["api_s"]),
                    "last_api_s": float(made["last_api_s"]),
                    "active_s": active_s,
                    "first_request_s": first_s,
                }
            )
    figure = median([r["first_request_s"] for r in runs])
    report.emit(
        {
            "name": "loadbalancer.create",
            "mode": creator.mode,
            **({"single_call_refused": creator.refusal} if creator.refusal else {}),
            "first_request_s": seconds(figure),
            "api_s": seconds(median([r["api_s"] for r in runs])),
            "last_api_s": seconds(median([r["last_api_s"] for r in runs])),
            "active_s": seconds(median([r["active_s"] for r in runs])),
            "runs_s": [seconds(r["first_request_s"]) for r in runs],
            "runs": [{k: seconds(v) for k, v in r.items()} for r in runs],
            "baseline": "the goal (Octavia boots a VM per load balancer)",
            "goal_s": 1.0,
            "ratio": ratio(figure, 1.0),
        }
    )


def request_runs(settings: Settings, report: Report, topology: Topology, work: Path) -> None:
    cloud = topology.cloud
    vip = VIPS.format(250)
    made = Creator(cloud).create(
        full_body(topology.subnet_id, vip, topology.members, "bench"), time.perf_counter()
    )
    wait_active(cloud, str(made["id"]))
    hand = topology.addresses["hand"]
    config = work / "hand.cfg"
    config.write_text(hand_config(hand, topology.members))
    script = work / "summary.lua"
    script.write_text(WRK_SCRIPT)
    duration = 2 if settings.quick else 5
    with haproxy(topology.namespace("hand"), config, LISTENER_PORT):
        for address in (vip, hand):
            wait_until(partial(topology.spreads, address), 30, 0.2, f"{address} to spread")
        for keepalive in (True, False):
            found: dict[str, list[dict[str, Any]]] = {"astara": [], "hand": []}
            for address in (vip, hand):  # warm-up, not counted
                wrk(topology.client, f"http://{address}/", script, 1, keepalive)
            for _ in range(settings.throughput_repeats):
                for side, address in (("astara", vip), ("hand", hand)):
                    found[side].append(
                        wrk(topology.client, f"http://{address}/", script, duration, keepalive)
                    )
                    log(
                        f"loadbalancer: {side} {'keep-alive' if keepalive else 'close'}"
                        f" {found[side][-1]['requests_per_s']:.0f} req/s,"
                        f" p99 {found[side][-1]['p99_us'] / 1000:.2f} ms"
                    )
            report.emit(_requests_result(found, keepalive, duration))


def _requests_result(
    found: dict[str, list[dict[str, Any]]], keepalive: bool, duration: int
) -> dict[str, Any]:
    def rate(side: str) -> float:
        return median([r["requests_per_s"] for r in found[side]])

    def p99_ms(side: str) -> float:
        return median([r["p99_us"] / 1000 for r in found[side]])

    pairs = list(zip(found["astara"], found["hand"], strict=True))

    return {
        "name": f"loadbalancer.requests.{'keepalive' if keepalive else 'close'}",
        "client": f"wrk -t {WRK_THREADS} -c {WRK_CONNECTIONS} -d {duration}s"
        + ("" if keepalive else " -H 'Connection: close'"),
        "requests_per_s": round(rate("astara")),
        "p99_ms": round(p99_ms("astara"), 3),
        "runs_requests_per_s": [round(r["requests_per_s"]) for r in found["astara"]],
        "runs_p99_ms": [round(r["p99_us"] / 1000, 3) for r in found["astara"]],
        "errors": sum(r["errors"] for r in found["astara"]),
        "baseline": "haproxy configured by hand in a namespace on the same network",
        "baseline_requests_per_s": round(rate("hand")),
        "baseline_p99_ms": round(p99_ms("hand"), 3),
        "baseline_runs_requests_per_s": [round(r["requests_per_s"]) for r in found["hand"]],
        "baseline_runs_p99_ms": [round(r["p99_us"] / 1000, 3) for r in found["hand"]],
        "baseline_errors": sum(r["errors"] for r in found["hand"]),
        "ratio": ratio(rate("astara"), rate("hand")),
        "p99_ratio": ratio(p99_ms("hand"), p99_ms("astara")),
        # Each Astara run against the hand run right after it: on a busy
        # machine the load moves between pairs more than within one.
        "paired_ratio": round(
            median([a["requests_per_s"] / h["requests_per_s"] for a, h in pairs]), 3
        ),
        "paired_p99_ratio": round(median([h["p99_us"] / a["p99_us"] for a, h in pairs]), 3),
        "goal_ratio": 0.95,
    }


PARTS: dict[str, Callable[[Settings, Report, Topology, Path], None]] = {
    "create": lambda settings, report, topology, _: create_runs(settings, report, topology),
    "requests": request_runs,
}


def bench_loadbalancer(
    settings: Settings, report: Report, parts: tuple[str, ...] = ("create", "requests")
) -> None:
    prefix = unique_prefix("b")
    with tempfile.TemporaryDirectory(prefix="astara-bench-") as scratch:
        work = Path(scratch)
        server = Server(work / "var", prefix, "--log-level", "warning")
        stack = ExitStack()
        try:
            server.start()
            cloud = Cloud(server)
            topology = Topology(cloud, prefix)
            for name in MEMBERS:
                config = work / f"{name}.cfg"
                config.write_text(member_config(name))
                stack.enter_context(haproxy(topology.namespace(name), config, MEMBER_PORT))
            for name in parts:
                PARTS[name](settings, report, topology, work)
        except httpx.HTTPError as error:
            raise RuntimeError(f"the API: {error}; server log: {server.log()[-2000:]}") from error
        finally:
            stack.close()
            server.stop()
            cleanup.remove_all(prefix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadbalancer", description=__doc__)
    parser.add_argument("--part", action="append", choices=sorted(PARTS), help="repeatable")
    parser.add_argument("--quick", action="store_true", help="one run of each, 2 s of load")
    args = parser.parse_args(argv)
    bench_loadbalancer(Settings(quick=args.quick), Report(), tuple(args.part or PARTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
