"""The orchestrator in-process against a real database and a real agent (or
one that does not answer): what must keep working when parts of it fail.

The API runs in-process too (no orchestrator poke: the poller finds every
event by itself), so a test can also write what the API never would.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, func, select, update
from sqlalchemy.orm import Session

from astara.agent.client import AgentClient
from astara.api.app import create_app, now
from astara.api.bootstrap import ensure_admin
from astara.db import outbox
from astara.db.engine import make_engine, session_factory, sqlite_url
from astara.db.migrate import upgrade
from astara.db.models import ApplianceState, OutboxEvent, PortBinding, Router
from astara.drivers import router as router_driver
from astara.linux import netns
from astara.orchestrator.reconciler import Orchestrator
from astara.testing.agent import AgentProcess
from astara.testing.net import wait_until
from astara.testing.postgres import PostgresServer

pytestmark = pytest.mark.root


class Api:
    """The tenant and operators' API in-process, as the admin."""

    def __init__(self, engine: Engine, state_dir: Path, agent: AgentClient | None = None) -> None:
        token = ensure_admin(engine, state_dir, "http://testserver", now())
        self.client = TestClient(create_app(engine, agent))
        self.headers = {"X-Auth-Token": token}

    def __call__(self, method: str, path: str, body: Any = None, ok: int = 200) -> Any:
        response = self.client.request(method, path, json=body, headers=self.headers)
        assert response.status_code == ok, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def create(self, collection: str, member: str, **fields: Any) -> dict[str, Any]:
        created: dict[str, Any] = self("POST", f"/v2.0/{collection}", {member: fields}, 201)[member]
        return created


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(sqlite_url(tmp_path))
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def orchestrators() -> Iterator[Callable[..., Orchestrator]]:
    """Make orchestrators (not started); every one is stopped at the end."""
    made: list[Orchestrator] = []

    def make(engine: Engine, agent: AgentClient, **options: Any) -> Orchestrator:
        options = {"resync_s": 600.0, "poll_s": 0.05, **options}
        orchestrator = Orchestrator(engine, agent, **options)
        made.append(orchestrator)
        return orchestrator

    yield make
    for orchestrator in made:
        orchestrator.stop()


def nobody(tmp_path: Path) -> AgentClient:
    """An agent that does not answer: nothing listens on its socket."""
    return AgentClient(f"unix:{tmp_path / 'nobody.sock'}", timeout_s=5)


def router_state(engine: Engine, router_id: str) -> ApplianceState | None:
    with session_factory(engine).begin() as session:
        return session.get(ApplianceState, router_id)


def last_sequence(engine: Engine) -> int:
    with session_factory(engine).begin() as session:
        return session.scalar(select(func.max(OutboxEvent.sequence))) or 0


def settle(engine: Engine, orchestrator: Orchestrator, router_id: str) -> None:
    """Until the router is ACTIVE (as far as the orchestrator goes) and nothing runs."""

    def settled() -> bool:
        row = router_state(engine, router_id)
        return row is not None and row.state == "active" and orchestrator.idle()

    wait_until(settled, 60, 0.05, f"router {router_id} to settle")


def forget_it_was_seen(engine: Engine, router_id: str) -> None:
    """Mark a settled router `creating`: the next reconcile (and only that)
    makes it `active` again, so a test can see whether it was woken."""
    with session_factory(engine).begin() as session:
        session.execute(
            update(ApplianceState)
            .where(ApplianceState.appliance_id == router_id)
            .values(state="creating")
        )


def woken(engine: Engine, router_id: str) -> bool:
    row = router_state(engine, router_id)
    return row is not None and row.state == "active"


class Refusing(httpx.BaseTransport):
    """The agent's own transport, except that one request is answered 500:
    an agent that fails to remove one thing."""

    def __init__(self, socket: Path, method: str, path: str) -> None:
        self.inner = httpx.HTTPTransport(uds=str(socket))
        self.refused = (method, path)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if (request.method, request.url.path) == self.refused:
            return httpx.Response(500, json={"detail": "refused by the test"}, request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class BrokenShow(Refusing):
    """An appliance the agent cannot show (its GET answers 500, as with a
    corrupt stored config) but can delete: after a DELETE, it is gone (404)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        _, path = self.refused
        if (request.method, request.url.path) == ("DELETE", path):
            self.refused = ("", "")
        return super().handle_request(request)


class Gate(httpx.BaseTransport):
    """The agent's own transport, except that the first request to a path
    under `prefix` waits until the test opens the gate: an agent call caught
    in the middle."""

    def __init__(self, socket: Path, method: str, prefix: str) -> None:
        self.inner = httpx.HTTPTransport(uds=str(socket))
        self.method, self.prefix = method, prefix
        self.entered, self.opened = threading.Event(), threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        caught = request.method == self.method and request.url.path.startswith(self.prefix)
        if caught and not self.entered.is_set():
            self.entered.set()
            self.opened.wait(60)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def through(agent: AgentProcess, transport: httpx.BaseTransport) -> AgentClient:
    client = AgentClient(agent.listen)
    client.http.close()
    client.http = httpx.Client(base_url="http://agent", transport=transport, timeout=120)
    return client


def refusing(agent: AgentProcess, method: str, path: str) -> AgentClient:
    return through(agent, Refusing(agent.socket, method, path))


def routed(api: Api, cidr: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A router with one interface on a new network: the router, and the interface body."""
    network = api.create("networks", "network", name="n1")
    subnet = api.create("subnets", "subnet", network_id=network["id"], cidr=cidr, ip_version=4)
    router = api.create("routers", "router", name="r1")
    interface = {"subnet_id": subnet["id"]}
    api("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", interface)
    return router, interface


def removed_from_host(engine: Engine, namespace: str, router_id: str) -> None:
    """Until the appliance's namespace is gone and the router's record dropped."""
    wait_until(lambda: not netns.exists(namespace), 30, 0.1, "the appliance to be removed")
    wait_until(lambda: router_state(engine, router_id) is None, 30, 0.1, "the record dropped")


def router_updated(session: Session, router: dict[str, Any]) -> None:
    """An outbox event for `router`, in `session`'s transaction."""
    outbox.record(
        session,
        resource_type="router",
        resource_id=router["id"],
        project_id=router["project_id"],
        action="update",
        now=now(),
    )


def stray_appliance(agent: AgentProcess, appliance_id: str, octet: int) -> None:
    assert agent.client is not None
    agent.client.put_network("stray-net")
    agent.client.put_appliance(
        appliance_id,
        {
            "interfaces": [
                {
                    "mac": f"fa:16:3e:99:99:{octet:02x}",
                    "network_id": "stray-net",
                    "role": "internal",
                    "addresses": [f"10.99.{octet}.1/24"],
                }
            ]
        },
    )


# --- the loop never stops -------------------------------------------------------------------


def test_an_agent_that_does_not_answer_never_stops_the_outbox(
    engine: Engine, tmp_path: Path, orchestrators: Callable[..., Orchestrator]
) -> None:
    """Every resync fails (the agent cannot be listed); events are read all
    the same and the routers they concern are looked at. (The host is not
    marked down meanwhile: the router is then found placed on it and its
    agent unreachable, however slowly the API runs here.)"""
    api = Api(engine, tmp_path)
    orchestrator = orchestrators(engine, nobody(tmp_path), down_after_s=600.0).start()
    router, _ = routed(api, "10.9.0.0/24")  # with a port: it needs an appliance
    wait_until(
        lambda: orchestrator.cursor >= last_sequence(engine), 30, 0.05, "the outbox to be read"
    )

    def tried() -> bool:
        row = router_state(engine, router["id"])
        return row is not None and "agent unreachable" in (row.last_error or "")

    wait_until(tried, 30, 0.05, "the router to be looked at")


def test_an_orphan_that_cannot_be_removed_leaves_the_others_removed(
    agent: AgentProcess, engine: Engine, orchestrators: Callable[..., Orchestrator]
) -> None:
    stray_appliance(agent, "stray-a", 1)
    stray_appliance(agent, "stray-b", 2)
    client = refusing(agent, "DELETE", "/v1/appliances/stray-a")
    try:
        removed = orchestrators(engine, client).cleanup()
    finally:
        client.close()
    assert "appliance stray-b" in removed and "appliance stray-a" not in removed
    assert not netns.exists(f"{agent.prefix}-appliance-stray-b")
    assert netns.exists(f"{agent.prefix}-appliance-stray-a")


# --- the l2 pass: one bad port never stops the others ----------------------------------------


def test_a_binding_that_cannot_be_plugged_leaves_the_others_plugged(
    agent: AgentProcess,
    engine: Engine,
    tmp_path: Path,
    orchestrators: Callable[..., Orchestrator],
) -> None:
    """A binding the agent's spec rejects (stored before the API checked
    them) is DOWN; the port next to it is plugged and ACTIVE."""
    assert agent.client is not None
    api = Api(engine, tmp_path)
    network = api.create("networks", "network", name="n1")
    api.create("subnets", "subnet", network_id=network["id"], cidr="10.7.0.0/24", ip_version=4)
    good = api.create("ports", "port", network_id=network["id"], name="good")
    bad = api.create("ports", "port", network_id=network["id"], name="bad")
    api("PUT", f"/astara/v1/ports/{good['id']}/binding", {"netns": f"{agent.prefix}-good"})
    with session_factory(engine).begin() as session:
        session.add(
            PortBinding(
                port_id=bad["id"], netns=f"{agent.prefix}-bad", ifname="1bad", created_at=now()
            )
        )
    orchestrators(engine, agent.client).l2.reconcile()
    assert api("GET", f"/v2.0/ports/{good['id']}")["port"]["status"] == "ACTIVE"
    assert api("GET", f"/v2.0/ports/{bad['id']}")["port"]["status"] == "DOWN"
    assert netns.exists(f"{agent.prefix}-good") and not netns.exists(f"{agent.prefix}-bad")
    assert {p["id"] for p in agent.client.ports()} == {good["id"]}


def test_a_plug_the_agent_would_refuse_is_refused_before_it_is_stored(
    agent: AgentProcess, engine: Engine, tmp_path: Path
) -> None:
    """With an agent, the API knows its prefix: a namespace outside it, or
    the fabric's or an appliance's, is a 400 and no binding is stored."""
    assert agent.client is not None
    api = Api(engine, tmp_path, agent.client)
    network = api.create("networks", "network", name="n1")
    api.create("subnets", "subnet", network_id=network["id"], cidr="10.8.0.0/24", ip_version=4)
    port = api.create("ports", "port", network_id=network["id"])
    binding = f"/astara/v1/ports/{port['id']}/binding"
    for netns_name in ("vm1", f"{agent.prefix}-fabric", f"{agent.prefix}-appliance-x"):
        response = api.client.put(binding, json={"netns": netns_name}, headers=api.headers)
        assert response.status_code == 400, (netns_name, response.text)
        assert "netns" in response.json()["NeutronError"]["message"]
    with session_factory(engine).begin() as session:
        assert session.scalars(select(PortBinding)).all() == []
    api("PUT", binding, {"netns": f"{agent.prefix}-web"})


def test_stop_ends_an_l2_pass_between_two_ports(
    agent: AgentProcess,
    engine: Engine,
    tmp_path: Path,
    orchestrators: Callable[..., Orchestrator],
) -> None:
    """Stopping while the first of three ports is being plugged: that call
    finishes, the other two are not started (each agent call may take long)."""
    assert agent.client is not None
    api = Api(engine, tmp_path)
    network = api.create("networks", "network", name="n1")
    api.create("subnets", "subnet", network_id=network["id"], cidr="10.5.0.0/24", ip_version=4)
    for n in range(3):
        port = api.create("ports", "port", network_id=network["id"], name=f"w{n}")
        api("PUT", f"/astara/v1/ports/{port['id']}/binding", {"netns": f"{agent.prefix}-w{n}"})
    gate = Gate(agent.socket, "PUT", "/v1/ports/")
    client = through(agent, gate)
    try:
        orchestrator = orchestrators(engine, client).start()  # its first resync wakes the l2 key
        assert gate.entered.wait(60), "the l2 pass to plug the first port"
        stopping = threading.Thread(target=orchestrator.stop)
        stopping.start()
        wait_until(orchestrator._stop.is_set, 30, 0.05, "stop() to be asked")
        gate.opened.set()
        stopping.join(120)
        assert not stopping.is_alive()
    finally:
        gate.opened.set()
        client.close()
    assert len(agent.client.ports()) == 1


# --- operators' requests --------------------------------------------------------------------


def test_a_rebuild_asked_for_while_the_agent_is_down_is_kept(
    engine: Engine, tmp_path: Path, orchestrators: Callable[..., Orchestrator]
) -> None:
    api = Api(engine, tmp_path)
    router = api.create("routers", "router", name="r1")
    with session_factory(engine).begin() as session:
        session.add(
            ApplianceState(
                appliance_id=router["id"],
                kind="router",
                project_id=router["project_id"],
                state="active",
                attempts=0,
                updated_at=now(),
                paused=False,
                rebuild_requested=True,
                host="local",  # the orchestrator's local host (`host_name`)
                epoch=1,
            )
        )
    orchestrators(engine, nobody(tmp_path)).reconcile_appliance(router["id"])
    row = router_state(engine, router["id"])
    assert row is not None and "agent unreachable" in (row.last_error or "")
    assert row.rebuild_requested, "the rebuild waits for the agent"


def test_a_router_deleted_while_paused_is_removed_from_the_host(
    agent: AgentProcess,
    engine: Engine,
    tmp_path: Path,
    orchestrators: Callable[..., Orchestrator],
) -> None:
    """An operator debugs a router, the tenant deletes it: the tenant wins,
    the appliance is removed and the record dropped (else it leaks forever:
    a paused router is never touched, and no orphan either)."""
    assert agent.client is not None
    api = Api(engine, tmp_path)
    router, interface = routed(api, "10.6.0.0/24")
    orchestrator = orchestrators(engine, agent.client, resync_s=1.0).start()
    settle(engine, orchestrator, router["id"])
    namespace = f"{agent.prefix}-appliance-{router['id']}"
    assert netns.exists(namespace)
    api("POST", f"/astara/v1/routers/{router['id']}/debug")
    wait_until(
        lambda: api("GET", f"/astara/v1/routers/{router['id']}")["router"]["state"] == "paused",
        30,
        0.05,
        "paused",
    )
    api("PUT", f"/v2.0/routers/{router['id']}/remove_router_interface", interface)
    api("DELETE", f"/v2.0/routers/{router['id']}", ok=204)
    removed_from_host(engine, namespace, router["id"])


def test_an_appliance_the_agent_cannot_show_is_removed_all_the_same(
    agent: AgentProcess,
    engine: Engine,
    tmp_path: Path,
    orchestrators: Callable[..., Orchestrator],
) -> None:
    """The tenant deletes a router whose appliance the agent fails to show
    (a 500 on every GET): nothing is to run there, so it is removed anyway,
    not counted as a failure until ERROR and left running."""
    assert agent.client is not None
    api = Api(engine, tmp_path)
    router, interface = routed(api, "10.7.0.0/24")
    first = orchestrators(engine, agent.client).start()
    settle(engine, first, router["id"])
    first.stop()
    namespace = f"{agent.prefix}-appliance-{router['id']}"
    client = through(agent, BrokenShow(agent.socket, "GET", f"/v1/appliances/{router['id']}"))
    try:
        orchestrators(engine, client, resync_s=1.0).start()
        api("PUT", f"/v2.0/routers/{router['id']}/remove_router_interface", interface)
        api("DELETE", f"/v2.0/routers/{router['id']}", ok=204)
        removed_from_host(engine, namespace, router["id"])
    finally:
        client.close()


# --- the outbox -----------------------------------------------------------------------------


def test_an_event_committed_after_a_later_one_is_still_read(
    agent: AgentProcess,
    postgres: PostgresServer,
    tmp_path: Path,
    orchestrators: Callable[..., Orchestrator],
) -> None:
    """On PostgreSQL a sequence is taken at INSERT: transaction A takes one,
    B takes the next and commits first, and the poller reads B's. A's event,
    committed later, must still wake its router (not wait for a resync)."""
    engine = make_engine(postgres.create_database())
    try:
        upgrade(engine)
        api = Api(engine, tmp_path)
        assert agent.client is not None
        orchestrator = orchestrators(engine, agent.client).start()
        router = api.create("routers", "router", name="r1")  # no ports: no appliance
        settle(engine, orchestrator, router["id"])
        forget_it_was_seen(engine, router["id"])
        late = session_factory(engine)()
        try:
            late.begin()
            router_updated(late, router)
            late.flush()  # its sequence is taken now
            api.create("networks", "network", name="meanwhile")  # the next sequence, committed
            wait_until(
                lambda: orchestrator.cursor >= last_sequence(engine), 30, 0.05, "the later event"
            )
            assert not woken(engine, router["id"])
            late.commit()
        finally:
            late.close()
        wait_until(lambda: woken(engine, router["id"]), 15, 0.05, "the router to be woken")
    finally:
        engine.dispose()


class FailingClock:
    """The orchestrator's clock, except that in the poller (its main thread)
    it fails `times` times once the outbox holds sequence `after`: a poll
    that fails after reading that event."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.after: int | None = None
        self.times = 0

    def __call__(self) -> datetime:
        poller = threading.current_thread().name == "orchestrator"
        armed = poller and self.times > 0 and self.after is not None
        if armed and last_sequence(self.engine) >= (self.after or 0):
            self.times -= 1
            raise RuntimeError("the clock failed (the test's doing)")
        return now()


def test_an_event_read_by_a_poll_that_failed_is_read_again(
    agent: AgentProcess,
    engine: Engine,
    tmp_path: Path,
    orchestrators: Callable[..., Orchestrator],
) -> None:
    assert agent.client is not None
    api = Api(engine, tmp_path)
    clock = FailingClock(engine)
    orchestrator = orchestrators(engine, agent.client, clock=clock).start()
    router = api.create("routers", "router", name="r1")  # no ports: no appliance
    settle(engine, orchestrator, router["id"])
    forget_it_was_seen(engine, router["id"])
    clock.after, clock.times = last_sequence(engine) + 1, 2
    with session_factory(engine).begin() as session:
        router_updated(session, router)
    wait_until(lambda: woken(engine, router["id"]), 15, 0.05, "the router to be woken")
    assert clock.times == 0


def test_routers_of_a_deleted_object_are_found_through_the_event(
    agent: AgentProcess,
    engine: Engine,
    tmp_path: Path,
    orchestrators: Callable[..., Orchestrator],
) -> None:
    """A port (or floating IP) is gone when its delete event is read: the
    routers on its network (or its router) come from the event's detail,
    whatever project they belong to."""
    assert agent.client is not None
    api = Api(engine, tmp_path)
    network = api.create("networks", "network", name="shared", shared=True)
    subnet = api.create(
        "subnets", "subnet", network_id=network["id"], cidr="10.8.0.0/24", ip_version=4
    )
    router = api.create("routers", "router", name="r1")
    api("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": subnet["id"]})
    orchestrator = orchestrators(engine, agent.client).start()
    settle(engine, orchestrator, router["id"])
    for resource_type, detail in (
        ("port", {"network_id": network["id"]}),
        ("floatingip", {"router_id": router["id"]}),
    ):
        forget_it_was_seen(engine, router["id"])
        with session_factory(engine).begin() as session:
            outbox.record(
                session,
                resource_type=resource_type,
                resource_id=str(uuid.uuid4()),  # deleted: no row left
                project_id="another-project",
                action="delete",
                now=now(),
                detail=detail,
            )
        wait_until(lambda: woken(engine, router["id"]), 15, 0.05, f"a {resource_type} delete")
        settle(engine, orchestrator, router["id"])


def test_events_read_long_ago_are_pruned_and_the_newest_kept(
    engine: Engine, tmp_path: Path, orchestrators: Callable[..., Orchestrator]
) -> None:
    api = Api(engine, tmp_path)
    long_ago = now() - timedelta(days=2)
    with session_factory(engine).begin() as session:
        for n in range(20):
            outbox.record(
                session,
                resource_type="project",
                resource_id=str(uuid.uuid4()),
                project_id="p",
                action="update",
                now=long_ago + timedelta(seconds=n),
            )
    orchestrator = orchestrators(
        engine, nobody(tmp_path), keep_events=5, keep_events_for=timedelta(days=1), prune_s=0.05
    )
    orchestrator.start()
    recent = api.create("networks", "network", name="recent")
    first_kept = last_sequence(engine) - 4
    wait_until(lambda: orchestrator.cursor >= last_sequence(engine), 30, 0.05, "the outbox read")

    def pruned() -> list[int]:
        return [e["sequence"] for e in api("GET", "/astara/v1/events?since=0")["events"]]

    # The newest 5 (old or not) are kept, and so is anything younger than a day.
    young = _young_sequences(engine, now() - timedelta(days=1))
    expected = sorted(set(range(first_kept, last_sequence(engine) + 1)) | set(young))
    wait_until(lambda: pruned() == expected, 30, 0.05, f"only {expected} kept")
    assert recent["id"] in {e["resource_id"] for e in api("GET", "/astara/v1/events")["events"]}


def _young_sequences(engine: Engine, since: datetime) -> list[int]:
    with session_factory(engine).begin() as session:
        return list(
            session.scalars(select(OutboxEvent.sequence).where(OutboxEvent.created_at >= since))
        )


def test_the_l2_pass_repairs_a_segment_whatever_its_cache_says(
    agent: AgentProcess,
    engine: Engine,
    tmp_path: Path,
    orchestrators: Callable[..., Orchestrator],
) -> None:
    """A segment PUT from a stale view (a push racing a later change) is
    corrected by the next pass: it compares with what the agent holds."""
    assert agent.client is not None
    api = Api(engine, tmp_path)
    router, _ = routed(api, "10.7.0.0/24")
    orchestrator = orchestrators(engine, agent.client).start()
    settle(engine, orchestrator, router["id"])
    (network,) = [n for n in agent.client.networks(observe=False)]
    wanted = {k: network[k] for k in ("mtu", "external")}
    # A stale write lands after the right one: the cache still says "right".
    agent.client.put_network(network["id"], mtu=network["mtu"], external=not network["external"])
    orchestrator.l2.reconcile()
    (repaired,) = agent.client.networks(observe=False)
    assert {k: repaired[k] for k in ("mtu", "external")} == wanted


def test_a_refused_stale_epoch_catches_up_and_the_appliance_comes_back(
    agent: AgentProcess,
    engine: Engine,
    tmp_path: Path,
    orchestrators: Callable[..., Orchestrator],
) -> None:
    """A host saw a higher epoch than the record holds (a record made anew,
    a DHCP appliance's id coming back, an answer lost): the push it refuses
    raises the record's epoch above it, and the next push goes through."""
    assert agent.client is not None
    api = Api(engine, tmp_path)
    router, _ = routed(api, "10.6.0.0/24")
    orchestrator = orchestrators(engine, agent.client).start()
    settle(engine, orchestrator, router["id"])
    row = router_state(engine, router["id"])
    assert row is not None and row.epoch == 1
    agent.client.delete_appliance(router["id"], epoch=5)  # the host now holds 5
    orchestrator.wake(router["id"])

    def caught_up() -> bool:
        state = router_state(engine, router["id"])
        return state is not None and state.epoch == 6 and state.state == "active"

    wait_until(caught_up, 60, 0.1, "the record to catch up and the router to be back")
    assert agent.client.get_appliance(router["id"])["epoch"] == 6


# --- one apply per burst ------------------------------------------------------------------


def test_a_router_made_in_one_burst_is_applied_once(
    agent: AgentProcess,
    engine: Engine,
    tmp_path: Path,
    orchestrators: Callable[..., Orchestrator],
) -> None:
    """A router created with its gateway, then given two interfaces, a few
    ms apart through the API (which pokes the orchestrator after each
    write, as in `astara serve`): its wakes fold into one reconcile, so
    the agent applies it once (generation 1), not once per call. The
    settle time is generous here so that a slow machine still folds the
    burst; how short it can be is a benchmark figure."""
    assert agent.client is not None
    orchestrator = orchestrators(engine, agent.client, settle_s=2.0).start()
    token = ensure_admin(engine, tmp_path, "http://testserver", now())
    api = Api(engine, tmp_path)
    api.client = TestClient(create_app(engine, agent.client, orchestrator))
    api.headers = {"X-Auth-Token": token}
    public = api.create("networks", "network", name="public", **{"router:external": True})
    api.create(
        "subnets",
        "subnet",
        network_id=public["id"],
        cidr="198.51.100.0/24",
        ip_version=4,
        enable_dhcp=False,
    )
    subnets = []
    for n in (1, 2):
        network = api.create("networks", "network", name=f"n{n}")
        subnets.append(
            api.create(
                "subnets",
                "subnet",
                network_id=network["id"],
                cidr=f"10.8.{n}.0/24",
                ip_version=4,
                enable_dhcp=False,
            )
        )
    pushes = orchestrator.pushes
    router = api.create(
        "routers", "router", name="r1", external_gateway_info={"network_id": public["id"]}
    )
    for subnet in subnets:
        api(
            "PUT",
            f"/v2.0/routers/{router['id']}/add_router_interface",
            {"subnet_id": subnet["id"]},
        )
    settle(engine, orchestrator, router["id"])
    shown = agent.client.get_appliance(router["id"])
    assert len(shown["interfaces"]) == 3  # the gateway and both interfaces
    assert shown["generation"] == 1
    assert orchestrator.pushes == pushes + 1


class Counting(httpx.BaseTransport):
    """The agent's own transport, keeping every request's method and path."""

    def __init__(self, socket: Path) -> None:
        self.inner = httpx.HTTPTransport(uds=str(socket))
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append((request.method, request.url.path))
        return self.inner.handle_request(request)

    def taken(self) -> list[tuple[str, str]]:
        with self.lock:
            taken, self.requests = self.requests, []
        return taken

    def close(self) -> None:
        self.inner.close()


def test_a_resync_lists_each_host_once_and_observes_only_what_changed(
    agent: AgentProcess,
    engine: Engine,
    tmp_path: Path,
    orchestrators: Callable[..., Orchestrator],
) -> None:
    """Three routers, settled. Then resyncs (every 2 s) ask the agent for one
    listing (generations and config hashes) per resync, and neither observe
    the appliances it lists unchanged nor read them from the database. One
    changed behind Astara's back (another config PUT straight to the agent)
    lists another hash: only it is observed, and the resync puts it right."""
    assert agent.client is not None
    api = Api(engine, tmp_path)
    routers = [routed(api, f"10.9.{n}.0/24")[0] for n in range(3)]
    counting = Counting(agent.socket)
    orchestrator = orchestrators(
        engine, through(agent, counting), resync_s=2.0, health_s=600.0
    ).start()
    for router in routers:
        settle(engine, orchestrator, router["id"])

    def resyncs_done(count: int) -> None:
        target = orchestrator.resyncs + count
        wait_until(
            lambda: orchestrator.resyncs >= target and orchestrator.idle(),
            60,
            0.05,
            f"{count} more resyncs",
        )

    resyncs_done(1)
    counting.taken()
    statements: list[str] = []

    def keep(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", keep)
    resyncs_done(3)
    event.remove(engine, "before_cursor_execute", keep)
    taken = counting.taken()
    observed = [path for method, path in taken if path.startswith("/v1/appliances/")]
    assert observed == []
    assert taken.count(("GET", "/v1/appliances")) >= 3
    # Nor does it read them from the database: no record is read one by one.
    assert not [q for q in statements if "appliance_states.appliance_id = " in q]

    changed = routers[0]["id"]
    before = agent.client.get_appliance(changed)
    agent.client.put_network("stray-net")
    stray = {
        "interfaces": [
            {
                "mac": "fa:16:3e:99:99:01",
                "network_id": "stray-net",
                "role": "internal",
                "addresses": ["10.99.1.1/24"],
            }
        ]
    }
    agent.client.put_appliance(changed, stray, epoch=before["epoch"])

    def put_right() -> bool:
        shown = agent.client.get_appliance(changed)  # type: ignore[union-attr]
        return bool(shown["config_hash"] == before["config_hash"])

    wait_until(put_right, 60, 0.1, "the resync to put the changed appliance right")
    resyncs_done(1)
    observed = [p for _, p in counting.taken() if p.startswith("/v1/appliances/")]
    assert observed and {p.split("/")[3] for p in observed} == {changed}


def test_a_restarted_orchestrator_trusts_what_the_host_lists_as_recorded(
    agent: AgentProcess,
    engine: Engine,
    tmp_path: Path,
    orchestrators: Callable[..., Orchestrator],
) -> None:
    """Three routers, settled by one orchestrator, which stops. While none
    runs, one router's appliance is changed behind Astara's back. A new
    orchestrator (nothing seen yet) lists the host once and observes only
    that one: the listing vouches for every other appliance, as the record
    has it (host, epoch, config hash). It puts the changed one right and
    pushes nothing else."""
    assert agent.client is not None
    api = Api(engine, tmp_path)
    routers = [routed(api, f"10.10.{n}.0/24")[0] for n in range(3)]
    first = orchestrators(engine, agent.client).start()
    for router in routers:
        settle(engine, first, router["id"])
    first.stop()
    listed = agent.client.appliances(observe=False)
    assert len(listed) == 3

    changed = routers[0]["id"]
    before = agent.client.get_appliance(changed)
    agent.client.put_network("stray-net")
    stray = {
        "interfaces": [
            {
                "mac": "fa:16:3e:99:99:02",
                "network_id": "stray-net",
                "role": "internal",
                "addresses": ["10.99.2.1/24"],
            }
        ]
    }
    agent.client.put_appliance(changed, stray, epoch=before["epoch"])

    counting = Counting(agent.socket)
    second = orchestrators(engine, through(agent, counting), resync_s=600.0).start()

    def put_right() -> bool:
        shown = agent.client.get_appliance(changed)  # type: ignore[union-attr]
        return bool(shown["config_hash"] == before["config_hash"])

    wait_until(put_right, 60, 0.1, "the new orchestrator to put the changed appliance right")
    wait_until(lambda: second.resyncs >= 1 and second.idle(), 60, 0.05, "every appliance")
    taken = counting.taken()
    asked = {path.split("/")[3] for _, path in taken if path.startswith("/v1/appliances/")}
    assert asked == {changed}
    assert taken.count(("GET", "/v1/appliances")) == 1
    assert second.pushes == 1
    # The others were checked by the first resync (planned, compared with
    # their records and the listing), not reconciled one by one.
    assert second.reconciles == 1
    assert second.status()["converged"] == 3
    generations = {a["id"]: a["generation"] for a in listed}
    now = {a["id"]: a["generation"] for a in agent.client.appliances(observe=False)}
    assert {k for k in now if now[k] != generations[k]} == {changed}


def test_a_router_changed_while_no_orchestrator_runs_is_pushed_at_the_restart(
    agent: AgentProcess,
    engine: Engine,
    tmp_path: Path,
    orchestrators: Callable[..., Orchestrator],
) -> None:
    """Three routers and a network's DHCP appliance, settled by one
    orchestrator, which stops. While none runs, a tenant gives one router
    an extra route (its outbox event is written then, and a new
    orchestrator reads the outbox from its newest event on: it never sees
    that one). The new orchestrator's first resync plans every appliance
    from the database: that router's plan differs from what its record says
    was applied, so it is pushed at once, without waiting for its full
    look; the others are vouched for by the plan, the record, the Neutron
    statuses and the listing together, and left untouched."""
    assert agent.client is not None
    api = Api(engine, tmp_path)
    made = [routed(api, f"10.12.{n}.0/24")[0] for n in range(3)]
    isolated = api.create("networks", "network", name="isolated")
    api.create("subnets", "subnet", network_id=isolated["id"], cidr="10.12.9.0/24", ip_version=4)
    api.create("ports", "port", network_id=isolated["id"])  # a workload: DHCP serves it
    dhcp = f"dhcp-{isolated['id']}"
    first = orchestrators(engine, agent.client).start()
    for appliance_id in [*(r["id"] for r in made), dhcp]:
        settle(engine, first, appliance_id)
    first.stop()
    generations = {a["id"]: a["generation"] for a in agent.client.appliances(observe=False)}
    assert set(generations) == {*(r["id"] for r in made), dhcp}

    changed = made[0]["id"]
    routes = [{"destination": "10.200.0.0/24", "nexthop": "10.12.0.5"}]
    api("PUT", f"/v2.0/routers/{changed}", {"router": {"routes": routes}})
    with Session(engine) as session:
        router = session.get(Router, changed)
        assert router is not None
        wanted = router_driver.plan(session, router).digest

    counting = Counting(agent.socket)
    # No resync but the first, no full look for 10 minutes: only the
    # first resync's check can find the change.
    second = orchestrators(engine, through(agent, counting), resync_s=600.0, health_s=600.0).start()

    def pushed() -> bool:
        shown = agent.client.get_appliance(changed)  # type: ignore[union-attr]
        return bool(shown["config_hash"] == wanted)

    wait_until(pushed, 60, 0.1, "the change made while no orchestrator ran to be pushed")
    wait_until(lambda: second.resyncs >= 1 and second.idle(), 60, 0.05, "every appliance")
    assert second.resyncs == 1
    assert second.pushes == 1
    assert second.reconciles == 1
    assert second.status()["converged"] == 4
    asked = {p.split("/")[3] for _, p in counting.taken() if p.startswith("/v1/appliances/")}
    assert asked == {changed}
    now = {a["id"]: a["generation"] for a in agent.client.appliances(observe=False)}
    assert {k for k in now if now[k] != generations[k]} == {changed}
    assert router_state(engine, changed).applied_hash == wanted  # type: ignore[union-attr]


def test_a_new_appliance_is_pushed_without_asking_the_agent_first(
    agent: AgentProcess,
    engine: Engine,
    tmp_path: Path,
    orchestrators: Callable[..., Orchestrator],
) -> None:
    """An appliance never placed (no record, or the record of a router
    without ports) has never been pushed under this database: the reconcile
    that places it pushes it without a GET first (the agent's round trip
    would only delay provisioning)."""
    assert agent.client is not None
    counting = Counting(agent.socket)
    orchestrator = orchestrators(engine, through(agent, counting)).start()
    api = Api(engine, tmp_path)
    router, _ = routed(api, "10.13.0.0/24")
    wait_until(lambda: orchestrator.pushes >= 1, 60, 0.05, "the push")
    settle(engine, orchestrator, router["id"])
    about = [r for r in counting.taken() if r[1] == f"/v1/appliances/{router['id']}"]
    assert about[0] == ("PUT", f"/v1/appliances/{router['id']}")
    assert orchestrator.pushes == 1


def test_a_new_record_for_an_appliance_a_host_still_holds_is_put_right_by_its_push(
    agent: AgentProcess,
    engine: Engine,
    tmp_path: Path,
    orchestrators: Callable[..., Orchestrator],
) -> None:
    """The host holds an appliance under a router's id (epoch 3, another
    config: a record lost, an id used before) that the database has no
    record of. The first reconcile does not ask the agent: its push (epoch 1)
    is refused as stale, the record catches up (epoch 4), and the next push
    replaces the config."""
    assert agent.client is not None
    api = Api(engine, tmp_path)
    router, _ = routed(api, "10.14.0.0/24")
    agent.client.put_network("stray-net")
    stray = {
        "interfaces": [
            {
                "mac": "fa:16:3e:99:99:03",
                "network_id": "stray-net",
                "role": "internal",
                "addresses": ["10.99.3.1/24"],
            }
        ]
    }
    agent.client.put_appliance(router["id"], stray, epoch=3)
    with Session(engine) as session:
        row = session.get(Router, router["id"])
        assert row is not None
        wanted = router_driver.plan(session, row).digest
    orchestrator = orchestrators(engine, agent.client).start()
    settle(engine, orchestrator, router["id"])
    shown = agent.client.get_appliance(router["id"])
    assert (shown["config_hash"], shown["epoch"]) == (wanted, 4)
    record = router_state(engine, router["id"])
    assert record is not None and (record.epoch, record.applied_hash) == (4, wanted)
