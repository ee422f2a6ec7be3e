"""Many hosts, through Astara: a controller and three joined hosts on the
lab (astara.testing.deployment), measured in the same run as the
hand-built VXLAN pair of `bench.fabric` on the same host namespaces.

- `fabric.astara_vxlan`: iperf3 between workloads on h1 and h2 on one
  tenant network (Astara's VXLAN segments). Baseline: the hand-built pair
  between the same two host namespaces (goal: at least 0.95 of it).
- `fabric.astara_routed`: iperf3 from the workload on h1 through a router
  on h3 to a workload on another network on h2: two VXLAN hops and a
  router. Baseline: the hand-built pair.
- `hosts.router_move`: pings at 10 ms from a workload to the outside host
  while its router moves to another host (`astara router move`): pings
  lost (goal ≤ 50) and the longest gap. Baseline: the interval.
- `hosts.failover`: ten routers on h1, each with a workload pinging the
  outside every 10 ms from h2 or h3; h1 dies (agent and namespaces gone):
  the longest gap any workload sees, i.e. time from the death to traffic
  restored (goal ≤ 5 s with default settings). Baseline: Neutron's
  default `agent_down_time` (75 s), after which it only starts to
  reschedule a dead L3 agent's routers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from astara.testing.deployment import Deployment
from astara.testing.hosts import OUTSIDE
from astara.testing.net import wait_for_ping, wait_until
from bench.fabric import PING_INTERVAL_S, Endpoint, Pair, Pinger, pings_lost
from bench.harness import Report, Settings, log, median, ratio

NEUTRON_AGENT_DOWN_TIME_S = 75.0
FAILOVER_ROUTERS = 10


@dataclass
class Tenant:
    cloud: Deployment
    public_id: str

    def network(self, name: str, cidr: str) -> tuple[str, str]:
        network = self.cloud.create("networks", "network", name=name)
        subnet = self.cloud.create(
            "subnets", "subnet", network_id=network["id"], cidr=cidr, ip_version=4
        )
        return network["id"], subnet["id"]

    def router(self, name: str, *subnets: str) -> str:
        router = self.cloud.create(
            "routers", "router", name=name, external_gateway_info={"network_id": self.public_id}
        )
        for subnet in subnets:
            self.cloud.api(
                "PUT",
                f"/v2.0/routers/{router['id']}/add_router_interface",
                {"subnet_id": subnet},
            )
        router_id: str = router["id"]
        return router_id

    def workload(self, name: str, network_id: str, host: str) -> Endpoint:
        port = self.cloud.create("ports", "port", network_id=network_id, name=name)
        namespace = f"{self.cloud.host(host).agent_prefix}-{name}"
        self.cloud.plug(port["id"], host, namespace)
        return Endpoint(namespace, port["fixed_ips"][0]["ip_address"])


def tenant(cloud: Deployment) -> Tenant:
    cloud.unlimited_quotas()
    public, _ = cloud.public_network()
    return Tenant(cloud, public["id"])


def place_on(cloud: Deployment, host: str, make: Callable[[], list[str]]) -> list[str]:
    """Run `make` (it makes routers: their ids) with every other host
    drained, so the routers are placed on `host` (they are active there
    before the others are undrained)."""
    others = [h.name for h in cloud.lab.hosts if h.name != host]
    for name in others:
        cloud.api("POST", f"/astara/v1/hosts/{name}/drain", ok=200)
    try:
        made = make()
        for router in made:
            cloud.wait_router(router, host=host, timeout_s=120)
        return made
    finally:
        for name in others:
            cloud.api("POST", f"/astara/v1/hosts/{name}/undrain", ok=200)


def astara_pairs(world: Tenant) -> dict[str, Pair]:
    """The workloads the throughput figures run between, once they ping."""
    a_id, a_subnet = world.network("bench-a", "10.61.0.0/24")
    b_id, b_subnet = world.network("bench-b", "10.62.0.0/24")
    place_on(world.cloud, "h3", lambda: [world.router("bench-r", a_subnet, b_subnet)])
    a1 = world.workload("ta1", a_id, "h1")
    a2 = world.workload("ta2", a_id, "h2")
    b2 = world.workload("tb2", b_id, "h2")
    for client, server in ((a1, a2), (a1, b2)):
        wait_for_ping(client.netns, server.address, 60)
    return {"astara_vxlan": (a1, a2), "astara_routed": (a1, b2)}


def bench_router_move(world: Tenant, settings: Settings, report: Report) -> None:
    cloud = world.cloud
    network_id, subnet = world.network("bench-m", "10.63.0.0/24")
    (router,) = place_on(cloud, "h1", lambda: [world.router("bench-move", subnet)])
    workload = world.workload("tm", network_id, "h2")
    wait_for_ping(workload.netns, OUTSIDE, 60)
    losses = []
    hosts = ["h3", "h1", "h3", "h1", "h3"][: settings.repeats]
    for target in hosts:

        def move(target: str = target) -> None:
            cloud.api("POST", f"/astara/v1/routers/{router}/move", {"host": target}, ok=200)
            cloud.wait_router(router, host=target)

        loss = pings_lost(workload.netns, OUTSIDE, move)
        log(f"router move to {target}: {loss}")
        losses.append(loss)
    lost = median([loss.lost for loss in losses])
    report.emit(
        {
            "name": "hosts.router_move",
            "pings_lost": lost,
            "runs_pings_lost": [loss.lost for loss in losses],
            "longest_gap_s": median([loss.longest_gap_s for loss in losses]),
            "runs_longest_gap_s": [loss.longest_gap_s for loss in losses],
            "restored": all(loss.restored for loss in losses),
            "goal_pings_lost": 50,
            "baseline": "the ping interval (one ping lost)",
            "baseline_s": PING_INTERVAL_S,
            "ratio": ratio(median([loss.longest_gap_s for loss in losses]), PING_INTERVAL_S),
            "interval_s": PING_INTERVAL_S,
            "repeats": len(losses),
        }
    )


def bench_failover(world: Tenant, report: Report) -> None:
    cloud = world.cloud

    networks: list[str] = []

    def routers() -> list[str]:
        made = []
        for index in range(FAILOVER_ROUTERS):
            network_id, subnet = world.network(f"bench-f{index}", f"10.64.{index}.0/24")
            made.append(world.router(f"bench-f{index}", subnet))
            networks.append(network_id)
        return made

    made = list(zip(place_on(cloud, "h1", routers), networks, strict=True))
    workloads = [
        world.workload(f"tf{index}", network_id, "h2" if index % 2 else "h3")
        for index, (_, network_id) in enumerate(made)
    ]
    for workload in workloads:
        wait_for_ping(workload.netns, OUTSIDE, 60)
    pingers = [Pinger(w.netns, OUTSIDE) for w in workloads]
    try:
        for pinger in pingers:
            wait_until(pinger.wait_for_reply, 10, 0.05, "replies before the death")
        died = time.time()
        cloud.lab.kill_host("h1")
        restored = [p.wait_for_reply(after=died + 0.05, timeout_s=120) for p in pingers]
        time.sleep(0.3)
    finally:
        losses = [p.stop(True) for p in pingers]
    gaps = [loss.longest_gap_s for loss in losses]
    log(f"failover gaps (s): {gaps}")
    placed = {cloud.router(router)["host"] for router, _ in made}
    worst = max(gaps)
    report.emit(
        {
            "name": "hosts.failover",
            "routers": FAILOVER_ROUTERS,
            "restored_s": worst,
            "median_restored_s": median(gaps),
            "runs_restored_s": gaps,
            "restored": all(restored),
            "rebuilt_on": sorted(placed),
            "goal_s": 5.0,
            "baseline": "Neutron's agent_down_time (default 75 s) before it reschedules",
            "baseline_s": NEUTRON_AGENT_DOWN_TIME_S,
            "ratio": ratio(worst, NEUTRON_AGENT_DOWN_TIME_S),
            "interval_s": PING_INTERVAL_S,
        }
    )
