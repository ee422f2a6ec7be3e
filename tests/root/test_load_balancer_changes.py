"""A load balancer's promises with real packets (issue 12, tests 1, 3, 4
and 5): a floating IP on its VIP from the outside host; what each algorithm
and persistence mode does to requests; changes under a steady client load
failing no request; a config haproxy refuses leaving the old one serving;
haproxy killed or its namespace deleted, and the load balancer back on its
own with its history saying why.

One cloud and one load balancer (three members that name themselves, a
client, an outside host behind a router) serve every test of the module:
each test leaves the pool as it found it (ROUND_ROBIN, no persistence)."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from astara.agent.client import AgentClient, AgentError
from astara.appliance import lbstats
from astara.linux import cleanup, netns
from astara.linux.cleanup import default_run_dir
from astara.linux.run import CommandError, in_netns, run
from astara.testing.agent import unique_prefix
from astara.testing.load import HttpLoad, LoadResult
from astara.testing.net import NamedHttpServer, http_get, wait_until
from astara.testing.server import Cloud, Server

from .test_load_balancers import LB, wait_active

pytestmark = pytest.mark.root

MEMBERS = ("m1", "m2", "m3")


@dataclass
class Web:
    cloud: Cloud
    balancer: dict[str, Any]
    listener: dict[str, Any]
    pool: dict[str, Any]
    members: dict[str, dict[str, Any]]  # by name
    addresses: dict[str, str]  # by name: members' and the client's
    subnet: dict[str, Any]
    client: str  # namespaces
    outside: str
    floating_ip: str
    servers: dict[str, NamedHttpServer]

    @property
    def id(self) -> str:
        return str(self.balancer["id"])

    @property
    def vip(self) -> str:
        return str(self.balancer["vip_address"])

    @property
    def appliance_id(self) -> str:
        return f"lb-{self.id}"

    @property
    def namespace(self) -> str:
        return f"{self.cloud.server.prefix}-appliance-{self.appliance_id}"

    def active(self) -> dict[str, Any]:
        return wait_active(self.cloud, self.id)

    def set_pool(self, **fields: Any) -> None:
        self.cloud("PUT", f"{LB}/pools/{self.pool['id']}", {"pool": fields})
        self.active()

    def names(self, url: str = "", count: int = 9, cookie: str | None = None) -> list[str]:
        """Who answered each of `count` GETs from the client."""
        return [get(self.client, f"http://{self.vip}/{url}", cookie)[0] for _ in range(count)]

    @property
    def run_directory(self) -> Path:
        """The appliance's runtime files (haproxy's config, pid file, sockets)."""
        return default_run_dir(self.cloud.server.prefix or "") / "appliances" / self.appliance_id

    def stats(self) -> list[dict[str, str]]:
        """haproxy's `show stat` rows, read on the appliance's stats socket."""
        return lbstats.read_stat(self.run_directory / "stats.sock") or []

    def busy_members(self) -> int:
        """How many members hold a request now (haproxy's current sessions)."""
        servers = [r for r in self.stats() if r["svname"] not in ("FRONTEND", "BACKEND")]
        return sum(1 for r in servers if int(r["scur"] or 0) > 0)

    def agent(self) -> AgentClient:
        return AgentClient(f"unix:{self.cloud.server.state_dir / 'agent.sock'}")


def get(namespace: str, url: str, cookie: str | None = None) -> tuple[str, dict[str, str]]:
    """A GET's body and the cookies it set (curl, from `namespace`)."""
    argv = ["curl", "-s", "-f", "-m", "5", "-D", "-", url]
    if cookie is not None:
        argv += ["-b", cookie]
    answer = run(argv, netns=namespace, timeout_s=10).stdout
    head, _, body = answer.partition("\n\n")  # newlines as text mode reads them
    cookies = {}
    for line in head.splitlines():
        if line.lower().startswith("set-cookie:"):
            name, _, value = line.split(":", 1)[1].strip().split(";")[0].partition("=")
            cookies[name] = value
    return body, cookies


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    prefix = unique_prefix("o")
    server = Server(tmp_path_factory.mktemp("lbops") / "var", prefix, "--resync-s", "2")
    servers: dict[str, NamedHttpServer] = {}
    try:
        server.start()
        cloud = Cloud(server)
        public, outside = cloud.public_network()
        subnet, addresses = cloud.workload_network("web", "10.82.0.0/24", *MEMBERS, "client")
        router = cloud.create(
            "routers", "router", name="edge", external_gateway_info={"network_id": public["id"]}
        )
        cloud(
            "PUT",
            f"/v2.0/routers/{router['id']}/add_router_interface",
            {"subnet_id": subnet["id"]},
        )
        for name in MEMBERS:
            servers[name] = NamedHttpServer(f"{prefix}-{name}", name)
        balancer = cloud.create(
            "lbaas/loadbalancers", "loadbalancer", name="web", vip_subnet_id=subnet["id"]
        )
        wait_active(cloud, balancer["id"])
        listener = cloud.create(
            "lbaas/listeners",
            "listener",
            loadbalancer_id=balancer["id"],
            protocol="HTTP",
            protocol_port=80,
        )
        wait_active(cloud, balancer["id"])
        pool = cloud.create(
            "lbaas/pools",
            "pool",
            listener_id=listener["id"],
            protocol="HTTP",
            lb_algorithm="ROUND_ROBIN",
        )
        wait_active(cloud, balancer["id"])
        members = {}
        for name in MEMBERS:
            members[name] = cloud.create(
                f"lbaas/pools/{pool['id']}/members",
                "member",
                address=addresses[name],
                protocol_port=8000,
                name=name,
            )
            wait_active(cloud, balancer["id"])
        cloud.create(
            "lbaas/healthmonitors",
            "healthmonitor",
            pool_id=pool["id"],
            type="HTTP",
            delay=1,
            timeout=1,
            max_retries=1,
        )
        balancer = wait_active(cloud, balancer["id"])
        floating = cloud.create(
            "floatingips",
            "floatingip",
            floating_network_id=public["id"],
            port_id=balancer["vip_port_id"],
        )
        web = Web(
            cloud,
            balancer,
            listener,
            pool,
            members,
            addresses,
            subnet,
            f"{prefix}-client",
            outside,
            floating["floating_ip_address"],
            servers,
        )
        wait_until(
            lambda: set(web.names(count=6)) == set(MEMBERS), 60, 0.2, "every member to serve"
        )
        yield web
    finally:
        for running in servers.values():
            running.stop()
        server.stop()
        cleanup.remove_all(prefix)
        assert not any(cleanup.leftovers(prefix).values())


# --- test 1: the floating IP, and how requests are spread ----------------------------


def test_a_floating_ip_on_the_vip_serves_the_outside_host(web: Web) -> None:
    """The VIP port is a port like any other: a floating IP on it takes the
    outside host's requests to the members, and the members see them."""
    url = f"http://{web.floating_ip}/"
    wait_until(lambda: http_get(web.outside, url) in MEMBERS, 60, 0.3, "the floating IP")
    answers = {http_get(web.outside, url) for _ in range(9)}
    assert answers == set(MEMBERS)
    floating = web.cloud("GET", f"/v2.0/floatingips?port_id={web.balancer['vip_port_id']}")
    assert [f["status"] for f in floating["floatingips"]] == ["ACTIVE"]


def test_round_robin_gives_each_member_its_turn(web: Web) -> None:
    assert Counter(web.names(count=9)) == dict.fromkeys(MEMBERS, 3)


def test_source_ip_persistence_keeps_a_client_on_one_member(web: Web) -> None:
    web.set_pool(session_persistence={"type": "SOURCE_IP"})
    try:
        assert len(set(web.names())) == 1
        # Another client (the outside host, through the floating IP) is
        # remembered on its own: it too sticks to one member.
        outside = {http_get(web.outside, f"http://{web.floating_ip}/") for _ in range(6)}
        assert len(outside) == 1 and outside <= set(MEMBERS)
    finally:
        web.set_pool(session_persistence=None)
    assert set(web.names()) == set(MEMBERS)


def test_the_source_ip_algorithm_keeps_a_client_on_one_member(web: Web) -> None:
    web.set_pool(lb_algorithm="SOURCE_IP")
    try:
        assert len(set(web.names())) == 1
    finally:
        web.set_pool(lb_algorithm="ROUND_ROBIN")


def test_http_cookie_persistence_sticks_a_client_that_sends_the_cookie_back(web: Web) -> None:
    web.set_pool(session_persistence={"type": "HTTP_COOKIE"})
    try:
        # Without the cookie: spread (round robin), each answer offering one.
        first, cookies = get(web.client, f"http://{web.vip}/")
        assert "SRV" in cookies
        assert set(web.names()) == set(MEMBERS)
        # With it: always the member that set it.
        assert set(web.names(cookie=f"SRV={cookies['SRV']}")) == {first}
    finally:
        web.set_pool(session_persistence=None)


def test_app_cookie_persistence_sticks_by_the_applications_cookie(web: Web) -> None:
    web.set_pool(session_persistence={"type": "APP_COOKIE", "cookie_name": "APPID"})
    try:
        # Each member's answers set APPID=<its name>; haproxy learns them.
        assert set(web.names()) == set(MEMBERS)
        for name in MEMBERS:
            assert set(web.names(count=4, cookie=f"APPID={name}")) == {name}
    finally:
        web.set_pool(session_persistence=None)


def test_least_connections_sends_new_requests_away_from_busy_members(web: Web) -> None:
    """Two slow requests hold two members; while they do, every new request
    goes to the third (round robin would give the busy ones their turns)."""
    web.set_pool(lb_algorithm="LEAST_CONNECTIONS")
    slow = [
        subprocess.Popen(
            # Long enough that both are held at once on a loaded machine.
            in_netns(web.client, ["curl", "-s", "-m", "40", f"http://{web.vip}/?sleep_s=12"]),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        wait_until(lambda: web.busy_members() == 2, 20, 0.05, "two members to be busy")
        quick = web.names(count=6)
        busy = {process.communicate(timeout=40)[0] for process in slow}
        assert len(busy) == 2 and busy <= set(MEMBERS)
        assert set(quick) == set(MEMBERS) - busy
    finally:
        for process in slow:
            if process.poll() is None:
                process.kill()
                process.wait()
        web.set_pool(lb_algorithm="ROUND_ROBIN")


def http_status(web: Web, port: int) -> str:
    """The HTTP status the VIP answers on `port` ("000": no connection)."""
    argv = ["curl", "-s", "-o", "/dev/null", "-m", "5", "-w", "%{http_code}"]
    return run([*argv, f"http://{web.vip}:{port}/"], netns=web.client, check=False).stdout


def test_a_change_is_served_as_soon_as_the_agent_says_it_is_applied(web: Web) -> None:
    """haproxy's reload returns at once; its new worker serves a little
    later. The agent answers (and the load balancer becomes ACTIVE) only once
    the new worker serves: a listener added is there at once, each time."""
    with web.agent() as agent:
        current = agent.rendered(web.appliance_id)["config"]
        before = agent.get_appliance(web.appliance_id)
        added = copy.deepcopy(current)
        listener = {"id": "added-listener", "protocol": "HTTP", "port": 8082}
        added["loadbalancer"]["listeners"].append(listener)
        # The VIP's group opens it too (the API does this for a listener it makes).
        opened = {
            "ethertype": "IPv4",
            "protocol": 6,
            "port_range_min": 8082,
            "port_range_max": 8082,
        }
        added["loadbalancer"]["vip_security"].append(opened)
        try:
            for _ in range(3):
                agent.put_appliance(web.appliance_id, added, before["epoch"])
                assert http_status(web, 8082) == "503"  # haproxy's: no pool behind it
                agent.put_appliance(web.appliance_id, current, before["epoch"])
        finally:
            agent.put_appliance(web.appliance_id, current, before["epoch"])
        assert agent.get_appliance(web.appliance_id)["config_hash"] == before["config_hash"]
    web.active()


# --- test 3: changes under a steady load ---------------------------------------------


@dataclass
class Change:
    name: str
    start: float
    end: float


def changes_under_load(web: Web) -> list[Change]:
    """Remove a member and add it back, change the algorithm there and back,
    add a listener and remove it: each through the API, each waited for
    until ACTIVE (so haproxy runs it). What was done, and when."""
    done: list[Change] = []

    def change(name: str, method: str, path: str, body: Any = None) -> Any:
        start = time.monotonic()
        answer = web.cloud(method, path, body)
        web.active()
        done.append(Change(name, start, time.monotonic()))
        return answer

    members = f"{LB}/pools/{web.pool['id']}/members"
    m3 = web.members["m3"]
    change("remove a member", "DELETE", f"{members}/{m3['id']}")
    fields = {"address": web.addresses["m3"], "protocol_port": 8000, "name": "m3"}
    web.members["m3"] = change("add a member", "POST", members, {"member": fields})["member"]
    pool = f"{LB}/pools/{web.pool['id']}"
    change("change the algorithm", "PUT", pool, {"pool": {"lb_algorithm": "LEAST_CONNECTIONS"}})
    change("change it back", "PUT", pool, {"pool": {"lb_algorithm": "ROUND_ROBIN"}})
    body = {"listener": {"loadbalancer_id": web.id, "protocol": "HTTP", "protocol_port": 8080}}
    listener = change("add a listener", "POST", f"{LB}/listeners", body)["listener"]
    change("remove the listener", "DELETE", f"{LB}/listeners/{listener['id']}")
    return done


def report(kind: str, result: LoadResult, changes: list[Change]) -> None:
    print(f"\n{kind}: {len(result.done)} requests served, {len(result.failed)} failed")
    for made in changes:
        print(
            f"  {made.name}: {made.end - made.start:.2f} s until ACTIVE,"
            f" {result.done_between(made.start, made.end)} requests served meanwhile"
        )
    for at, error, reused in result.failed:
        print(f"  failed at {at:.3f}: {error} ({'reused' if reused else 'new'} connection)")


def test_changes_under_a_load_of_new_connections_fail_no_request(web: Web) -> None:
    """Clients opening a new connection per request: each reload passes the
    listening sockets to the new worker, so no SYN is refused and no request
    fails, while every change goes through to ACTIVE."""
    with HttpLoad(web.client, web.vip, clients=4) as load:
        changes = changes_under_load(web)
        result = load.stop()
    report("new connection per request", result, changes)
    assert result.failed == []
    for made in changes:
        assert result.done_between(made.start, made.end) > 0, made
    assert set(web.names()) == set(MEMBERS)


def test_changes_under_a_load_of_keep_alive_clients(web: Web) -> None:
    """Clients keeping their connection open across requests: a reload's old
    worker finishes the request under way and answers it with `Connection:
    close` (`option idle-close-on-response`), so the client reconnects
    instead of sending its next request on a connection being closed."""
    with HttpLoad(web.client, web.vip, clients=16, keep_alive=True, pause_s=0.05) as load:
        changes = changes_under_load(web)
        result = load.stop()
    report("keep-alive", result, changes)
    closed_by_reload = [f for f in result.failed if f[2]]
    assert closed_by_reload == []
    assert result.failed == []
    for made in changes:
        assert result.done_between(made.start, made.end) > 0, made


# --- test 5: haproxy killed, the namespace deleted: back on its own ------------------


def haproxy_pids(web: Web) -> tuple[int, list[int]]:
    """The master's pid (its pid file) and its workers'."""
    master = int((web.run_directory / "loadbalancer.pid").read_text())
    workers = run(["pgrep", "-P", str(master)], check=False).stdout.split()
    return master, [int(pid) for pid in workers]


def appliance(web: Web) -> dict[str, Any]:
    """The operators' view: the orchestrator's record and history, and what
    the agent shows (its last repair)."""
    shown: dict[str, Any] = web.cloud("GET", f"/astara/v1/appliances/{web.appliance_id}")[
        "appliance"
    ]
    return shown


def history_says(web: Web, text: str) -> list[str]:
    """The appliance's history events that say `text`."""
    return [e["message"] for e in appliance(web)["events"] if text in e["message"]]


def serves_every_member(web: Web) -> bool:
    try:
        return set(web.names(count=6)) == set(MEMBERS)
    except CommandError:
        return False


def test_killed_haproxy_is_restarted_by_the_agent_and_its_repair_says_why(web: Web) -> None:
    master, workers = haproxy_pids(web)
    assert workers
    for pid in (master, *workers):
        os.kill(pid, signal.SIGKILL)

    def repaired() -> dict[str, Any] | None:
        repair = (appliance(web).get("appliance") or {}).get("last_repair")
        return repair if repair and repair["outcome"] == "repaired" else None

    repair = wait_until(repaired, 30, 0.1, "the agent to repair it")
    assert "loadbalancer is not running" in repair["problems"]
    assert "loadbalancer started" in repair["actions"]
    wait_until(lambda: serves_every_member(web), 30, 0.1, "the load balancer to serve again")
    assert haproxy_pids(web)[0] != master
    # The orchestrator's next look puts it in the appliance's history.
    wait_until(
        lambda: history_says(web, "agent repaired it on its own: loadbalancer is not running"),
        30,
        0.2,
        "the history to say why",
    )
    web.active()


def test_killed_haproxy_is_restarted_by_the_orchestrator_and_its_history_says_why(
    web: Web,
) -> None:
    """With the agent's own repairs held (as an operator debugging it on the
    host would), the orchestrator's resync finds it and rebuilds it."""
    with web.agent() as agent:
        epoch = agent.get_appliance(web.appliance_id)["epoch"]
        agent.hold_appliance(web.appliance_id, True, epoch)
        try:
            noticed = "-> degraded: unhealthy: loadbalancer is not running"
            before = len(history_says(web, noticed))
            master, workers = haproxy_pids(web)
            for pid in (master, *workers):
                os.kill(pid, signal.SIGKILL)
            wait_until(
                lambda: len(history_says(web, noticed)) > before,
                60,
                0.2,
                "the orchestrator to notice",
            )
            wait_until(lambda: serves_every_member(web), 60, 0.2, "the load balancer to serve")
            assert haproxy_pids(web)[0] != master
        finally:
            agent.hold_appliance(web.appliance_id, False, epoch)
    web.active()


def test_a_deleted_namespace_is_rebuilt_and_the_history_says_why(web: Web) -> None:
    master, _ = haproxy_pids(web)
    netns.delete(web.namespace)

    def repaired() -> dict[str, Any] | None:
        repair = (appliance(web).get("appliance") or {}).get("last_repair")
        return repair if repair and "namespace" in " ".join(repair["problems"]) else None

    repair = wait_until(repaired, 30, 0.1, "the agent to rebuild it")
    assert repair["outcome"] == "repaired", repair
    wait_until(
        lambda: history_says(web, "agent repaired it on its own: namespace"),
        30,
        0.2,
        "the history to say why",
    )
    wait_until(lambda: serves_every_member(web), 30, 0.1, "the load balancer to serve again")
    assert netns.exists(web.namespace) and haproxy_pids(web)[0] != master
    # The floating IP on the VIP too.
    url = f"http://{web.floating_ip}/"
    wait_until(lambda: http_get(web.outside, url) in MEMBERS, 30, 0.2, "the floating IP")
    web.active()


# --- test 4: a config haproxy refuses ------------------------------------------------


def test_a_config_the_agent_refuses_leaves_the_old_one_serving(web: Web) -> None:
    """Pushed to the agent as the orchestrator would (the tenant API lets
    neither in): a listener timeout past haproxy's timers, which only
    `haproxy -c` refuses, and a listener naming a pool that does not exist
    (a semantic error). Each gets 422 naming the field and the reason, and
    the running haproxy keeps its config and its process, serving on."""
    with web.agent() as agent, HttpLoad(web.client, web.vip, clients=2) as load:
        before = agent.get_appliance(web.appliance_id)
        rendered = agent.rendered(web.appliance_id)
        master = haproxy_pids(web)[0]
        for field, value, loc, reason in (
            (
                "timeout_client_data_ms",
                3_000_000_000,
                ["body", "rendered", "loadbalancer.cfg"],
                "timer overflow",
            ),
            (
                "default_pool",
                "nope",
                ["body", "loadbalancer", "listeners", 0, "default_pool"],
                "no pool nope",
            ),
        ):
            wrong = copy.deepcopy(rendered["config"])
            wrong["loadbalancer"]["listeners"][0][field] = value
            with pytest.raises(AgentError) as refused:
                agent.put_appliance(web.appliance_id, wrong, before["epoch"])
            assert refused.value.status_code == 422
            errors = refused.value.body["detail"]
            assert any(e["loc"] == loc and reason in e["msg"] for e in errors), errors
        after = agent.get_appliance(web.appliance_id)
        assert (after["config_hash"], after["generation"]) == (
            before["config_hash"],
            before["generation"],
        )
        assert agent.rendered(web.appliance_id)["files"] == rendered["files"]
        assert haproxy_pids(web)[0] == master
        result = load.stop()
    assert result.failed == [] and result.done
    assert serves_every_member(web)


def test_a_config_haproxy_cannot_load_ends_in_error_and_the_old_one_serves(web: Web) -> None:
    """A new listener's port is taken in the appliance's namespace (by a
    process of ours): `haproxy -c` passes, the reload fails. The old worker
    serves on, the apply fails, and after its retries the load balancer is
    ERROR with the reason in its history (a router's contract). Once the
    port is free, an operator's rebuild brings it back to ACTIVE."""
    squatter = subprocess.Popen(
        in_netns(web.namespace, ["socat", "TCP-LISTEN:8081,reuseaddr,fork", "SYSTEM:echo taken"]),
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: ":8081 " in run(["ss", "-Htln"], netns=web.namespace).stdout,
            10,
            0.05,
            "the port to be taken",
        )
        body = {"loadbalancer_id": web.id, "protocol": "HTTP", "protocol_port": 8081}
        listener = web.cloud.create("lbaas/listeners", "listener", **body)

        def in_error() -> dict[str, Any] | None:
            shown = web.cloud("GET", f"{LB}/loadbalancers/{web.id}")["loadbalancer"]
            return shown if shown["provisioning_status"] == "ERROR" else None

        wait_until(in_error, 120, 0.5, "the load balancer to be ERROR")
        shown = web.cloud("GET", f"{LB}/listeners/{listener['id']}")["listener"]
        assert shown["provisioning_status"] == "ERROR"
        history = [e["message"] for e in appliance(web)["events"]]
        print(history[-2:])
        assert any(
            "error after 5 failures" in m and "could not load the new config" in m for m in history
        ), history
        assert serves_every_member(web)
    finally:
        squatter.terminate()
        squatter.wait()
    web.cloud("POST", f"/astara/v1/appliances/{web.appliance_id}/rebuild")

    def active() -> bool:
        shown = web.cloud("GET", f"{LB}/loadbalancers/{web.id}")["loadbalancer"]
        return bool(shown["provisioning_status"] == "ACTIVE")

    wait_until(active, 60, 0.2, "the rebuild to make it ACTIVE")
    shown = web.cloud("GET", f"{LB}/listeners/{listener['id']}")["listener"]
    assert shown["provisioning_status"] == "ACTIVE"
    url = f"http://{web.vip}:8081/"
    status = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url]
    assert run(status, netns=web.client).stdout == "503"  # haproxy's: no pool behind it
    assert serves_every_member(web)
