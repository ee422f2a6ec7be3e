"""Several orchestrators (`astara serve --role orchestrator`, three
processes) on one PostgreSQL, coordinated through a real etcd or Redis,
driving one real agent; the tenant API is a fourth process (`--role api`).

Every router is owned by exactly one of them; a member killed with SIGKILL
hands its routers to the others, and a router changed meanwhile converges;
a member paused past the membership timeout loses its routers: the others
take them over with a new epoch, so a push it had decided before (with the
epoch it held) is refused by the agent, and once resumed it rejoins and
leaves what is no longer its own."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from astara.agent.client import AgentClient, AgentError
from astara.db.engine import make_engine
from astara.db.migrate import upgrade
from astara.db.models import ApplianceEvent, ApplianceState
from astara.orchestrator.coordination import Ring
from astara.orchestrator.reconciler import Orchestrator
from astara.testing.agent import AgentProcess
from astara.testing.coordination import CoordinationServer, EtcdServer, RedisServer
from astara.testing.net import wait_until
from astara.testing.postgres import PostgresServer
from astara.testing.server import Cloud, Server
from tests.root.test_reconciler import Api

pytestmark = pytest.mark.root

ROUTERS = 60
MEMBERSHIP_TIMEOUT_S = 5


@pytest.fixture(params=["etcd", "redis"])
def coordination(request: pytest.FixtureRequest) -> Iterator[CoordinationServer]:
    server: CoordinationServer = EtcdServer() if request.param == "etcd" else RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Member:
    """One `astara serve --role orchestrator` and its status API."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.cloud = Cloud(server, timeout_s=30)

    def status(self) -> dict[str, Any]:
        return self.cloud.orchestrator()

    def name(self) -> str:
        member: str = self.status()["coordination"]["member"]
        return member


def owners(members: list[Member]) -> dict[str, list[str]] | None:
    """Router → the members that say they own it; None while they disagree
    on who the members are."""
    views = [m.status() for m in members]
    names = {view["coordination"]["member"] for view in views}
    if any(set(view["coordination"]["members"]) != names for view in views):
        return None
    owned: dict[str, list[str]] = {}
    for view in views:
        for key in view["owned"]:
            owned.setdefault(key, []).append(view["coordination"]["member"])
    return owned


def partitioned(members: list[Member], routers: set[str]) -> dict[str, str]:
    """Router → its one owner, once every router has exactly one (by the
    ring of exactly these members)."""
    owned = owners(members)
    if owned is None or set(owned) != routers or any(len(o) != 1 for o in owned.values()):
        return {}
    ring = Ring(m.name() for m in members)
    single = {router: names[0] for router, names in owned.items()}
    assert all(ring.owner(router) == owner for router, owner in single.items())
    return single


def epochs(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            row.appliance_id: row.epoch
            for row in connection.execute(select(ApplianceState.appliance_id, ApplianceState.epoch))
        }


def taken_over_by(engine: Engine) -> dict[str, str]:
    """Appliance → the member that took it over last (its history)."""
    found: dict[str, str] = {}
    with engine.connect() as connection:
        rows = connection.execute(
            select(ApplianceEvent.appliance_id, ApplianceEvent.message)
            .where(ApplianceEvent.message.like("taken over by %"))
            .order_by(ApplianceEvent.id)
        )
        for appliance_id, message in rows:
            found[appliance_id] = message.split()[3]
    return found


def all_active(api: Cloud, routers: set[str]) -> bool:
    shown = {r["id"]: r for r in api.routers() if r["id"] in routers}
    return len(shown) == len(routers) and all(
        r["state"] == "active" and r["status"] == "ACTIVE" for r in shown.values()
    )


def add_interface(api: Cloud | Api, router_id: str, name: str, cidr: str) -> None:
    network = api.create("networks", "network", name=name)
    subnet = api.create(
        "subnets", "subnet", network_id=network["id"], cidr=cidr, ip_version=4, enable_dhcp=False
    )
    api("PUT", f"/v2.0/routers/{router_id}/add_router_interface", {"subnet_id": subnet["id"]})


def interfaces_on_agent(client: AgentClient, router_id: str) -> int:
    observed = client.request("GET", f"/v1/appliances/{router_id}", ok=(200,))
    return len(observed.get("interfaces") or ())


def agent_epochs_within(client: AgentClient, engine: Engine, routers: set[str]) -> None:
    """No agent saw an epoch the database does not hold yet (a takeover
    raises the record's; the agent learns it at the new owner's next push)."""
    on_agent = {a["id"]: a["epoch"] for a in client.appliances(observe=False)}
    held = epochs(engine)
    assert all(on_agent[r] <= held[r] for r in routers), (on_agent, held)


@pytest.mark.timeout(1200)  # a loaded 2-core machine: the deadlines below are generous
def test_three_orchestrators_share_routers_fail_over_and_fence(
    tmp_path: Path,
    agent: AgentProcess,
    postgres: PostgresServer,
    coordination: CoordinationServer,
) -> None:
    db_url = postgres.create_database()
    engine = make_engine(db_url)
    servers: list[Server] = []
    try:
        assert agent.client is not None
        client = agent.client
        api_server = Server(tmp_path / "api", None, "--db-url", db_url)
        servers.append(api_server)
        api_server.start()
        api = Cloud(api_server)
        api.unlimited_quotas()
        members: list[Member] = []
        for index in range(3):
            server = Server(
                tmp_path / f"orchestrator{index}",
                None,
                "--db-url",
                db_url,
                "--agent",
                agent.listen,
                "--host-name",
                f"{agent.prefix}-host",
                "--coordination",
                coordination.url(),
                "--membership-timeout-s",
                str(MEMBERSHIP_TIMEOUT_S),
                "--resync-s",
                "10",
                role="orchestrator",
            )
            servers.append(server)
            server.start()  # one after the other: each registers the agent's host
            members.append(Member(server))

        # The members agree on the group before the routers come: while a
        # member has not seen the last one join, it takes over what the
        # whole ring gives another (fenced, and left when it sees the join;
        # the churn this test makes on purpose comes below).
        wait_until(
            lambda: (
                all(len(m.status()["coordination"]["members"]) == 3 for m in members)
                and owners(members) is not None
            ),
            120,
            0.2,
            "the three members to agree on the group",
        )
        started = time.monotonic()
        routers: set[str] = set()
        for index in range(ROUTERS):
            router = api.create("routers", "router", name=f"r{index}")
            add_interface(api, router["id"], f"n{index}", f"10.{index}.0.0/24")
            routers.add(router["id"])
        created_s = time.monotonic() - started
        wait_until(lambda: all_active(api, routers), 300, 0.5, "every router ACTIVE")
        print(
            f"\n{ROUTERS} routers: created in {created_s:.1f} s, all ACTIVE after"
            f" {time.monotonic() - started:.1f} s"
        )

        # Every router is owned by exactly one member, the one the ring
        # says, and that member took it over last (the history says who).
        owner = wait_until(lambda: partitioned(members, routers), 120, 0.2, "one owner each")
        assert len(set(owner.values())) == 3, "each member owns some of the routers"
        wait_until(
            lambda: {r: taken_over_by(engine).get(r) for r in routers} == owner,
            120,
            0.2,
            "each router taken over by its owner",
        )
        agent_epochs_within(client, engine, routers)

        # kill -9 one member: the others take its routers over (a new
        # epoch each), and a router of its changed meanwhile converges.
        victim, rest = members[0], members[1:]
        victim_name = victim.name()
        orphaned = {r for r, name in owner.items() if name == victim_name}
        changed = sorted(orphaned)[0]
        before = epochs(engine)
        killed_at = time.monotonic()
        victim.server.kill()
        add_interface(api, changed, "killed-window", "10.200.0.0/24")
        owner = wait_until(lambda: partitioned(rest, routers), 180, 0.2, "the others to take over")
        assert victim_name not in owner.values()
        wait_until(
            lambda: all(epochs(engine)[r] > before[r] for r in orphaned),
            180,
            0.2,
            "the killed member's routers taken over",
        )
        failover_s = time.monotonic() - killed_at
        wait_until(lambda: interfaces_on_agent(client, changed) == 2, 120, 0.2, "the change")
        wait_until(lambda: all_active(api, routers), 180, 0.5, "every router ACTIVE")
        print(f"\n{coordination.url().split(':')[0]}: failover after SIGKILL {failover_s:.1f} s")

        # SIGSTOP another: past the membership timeout the last one takes
        # its routers over. A push the paused one had decided (its config,
        # the epoch it held) is refused by the agent once the new owner has
        # pushed, and the appliance is left as the new owner made it.
        paused, last = rest
        paused_name = paused.name()
        assert paused.server.process is not None
        mine = sorted(r for r, name in owner.items() if name == paused_name)
        target = next(r for r in mine if r != changed)  # one interface
        held_by_paused = epochs(engine)[target]
        config_file = next(agent.state_dir.rglob(f"appliances/{target}/config.json"))
        stale_config = json.loads(config_file.read_text())
        before = epochs(engine)
        paused_at = time.monotonic()
        os.kill(paused.server.process.pid, signal.SIGSTOP)
        try:
            wait_until(
                lambda: all(epochs(engine)[r] > before[r] for r in mine),
                180,
                0.2,
                "the paused member's routers taken over",
            )
            pause_failover_s = time.monotonic() - paused_at
            add_interface(api, target, "paused-window", "10.201.0.0/24")
            wait_until(lambda: interfaces_on_agent(client, target) == 2, 120, 0.2, "the change")
            now = client.request("GET", f"/v1/appliances/{target}", ok=(200,))
            with pytest.raises(AgentError) as refused:
                client.put_appliance(target, stale_config, epoch=held_by_paused)
            assert refused.value.status_code == 409
            assert refused.value.body["detail"]["kind"] == "stale_epoch"
            after = client.request("GET", f"/v1/appliances/{target}", ok=(200,))
            assert (after["config_hash"], after["generation"]) == (
                now["config_hash"],
                now["generation"],
            )
            assert interfaces_on_agent(client, target) == 2
        finally:
            os.kill(paused.server.process.pid, signal.SIGCONT)
        print(f"failover after SIGSTOP {pause_failover_s:.1f} s")

        # Resumed, it finds itself dropped, joins again and takes over its
        # new share afresh; nobody owns a router twice, and it leaves alone
        # what it lost: every router ends at the epoch its last owner set.
        wait_until(
            lambda: "not in the group" in paused.server.log(),
            120,
            0.2,
            "the paused member rejoining",
        )
        owner = wait_until(lambda: partitioned(rest, routers), 120, 0.2, "one owner each again")
        assert set(owner.values()) == {paused_name, last.name()}
        wait_until(
            lambda: {r: taken_over_by(engine).get(r) for r in routers} == owner,
            120,
            0.2,
            "each router taken over by its owner",
        )
        wait_until(lambda: all_active(api, routers), 180, 0.5, "every router ACTIVE")
        agent_epochs_within(client, engine, routers)
        assert interfaces_on_agent(client, target) == 2
        assert interfaces_on_agent(client, changed) == 2
    finally:
        for server in servers[1:]:  # what the orchestrators went through, for the record
            log = server.log()
            print(
                f"{server.state_dir.name}: {log.count('members now')} membership changes,"
                f" {log.count('after a lapse')} lapses, {log.count('taken over by another')}"
                " appliances left to another"
            )
        for server in reversed(servers):
            if server.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server.process.pid, signal.SIGCONT)
            server.stop()
        engine.dispose()


def test_a_member_whose_appliance_was_taken_over_leaves_it(
    tmp_path: Path, agent: AgentProcess, postgres: PostgresServer
) -> None:
    """Two orchestrators in-process on PostgreSQL and one agent, each told
    by its own `owns` what it owns. A still believes it owns the router (its
    view of the ring is stale) after B took it over: A neither pushes the
    router's change nor removes the appliance, and B's push of it stands."""
    engine = make_engine(postgres.create_database())
    upgrade(engine)
    assert agent.client is not None
    api = Api(engine, tmp_path)
    a_owns: set[str] = set()
    b_owns: set[str] = set()
    a = Orchestrator(
        engine, agent.client, resync_s=600.0, owns=lambda key: key in a_owns, member="a"
    )
    b = Orchestrator(
        engine, agent.client, resync_s=600.0, owns=lambda key: key in b_owns, member="b"
    )
    try:
        router = api.create("routers", "router", name="r")
        add_interface(api, router["id"], "n1", "10.1.0.0/24")
        a_owns.add(router["id"])
        a.reconcile_appliance(router["id"])
        assert interfaces_on_agent(agent.client, router["id"]) == 1
        assert taken_over_by(engine) == {router["id"]: "a"}
        pushed_by_a = a.pushes

        b_owns.add(router["id"])  # the ring moved it; A has not noticed
        b.reconcile_appliance(router["id"])
        assert taken_over_by(engine) == {router["id"]: "b"}
        add_interface(api, router["id"], "n2", "10.2.0.0/24")
        a.reconcile_appliance(router["id"])
        assert a.pushes == pushed_by_a
        assert interfaces_on_agent(agent.client, router["id"]) == 1
        b.reconcile_appliance(router["id"])
        assert interfaces_on_agent(agent.client, router["id"]) == 2

        # Told of a new membership (its claims forgotten), A takes it over
        # afresh when the ring gives it back, and acts again.
        b_owns.clear()
        a.rebalance()
        b.rebalance()
        api("PUT", f"/v2.0/routers/{router['id']}", {"router": {"name": "renamed"}})
        a.reconcile_appliance(router["id"])
        assert taken_over_by(engine) == {router["id"]: "a"}
        on_agent = {x["id"]: x["epoch"] for x in agent.client.appliances(observe=False)}
        assert on_agent[router["id"]] <= epochs(engine)[router["id"]]
    finally:
        a.stop()
        b.stop()
        engine.dispose()
