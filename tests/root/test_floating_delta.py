"""Floating IPs changed alone are applied as a delta (`appliance.floating`):
what the kernel holds after it is exactly what a full apply of the same
config makes, real packets follow it both ways, it never lists the table
or reads every route, and drift found before it sends the PUT through the
full apply, which repairs it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from astara.agent.service import Agent, AgentSettings
from astara.appliance import record
from astara.appliance.actions import ChangeFloatingElements
from astara.appliance.apply import ApplyResult
from astara.appliance.schema import ApplianceConfig
from astara.linux import cleanup, nft, routes
from astara.linux.run import run
from astara.model.fabric import NetworkSpec
from astara.testing.agent import AgentProcess, unique_prefix
from astara.testing.lab import Lab
from astara.testing.net import WhoAmI, never_pings, ping, seen_source, sh, wait_until
from tests.root.conftest import FLOATING_IP, OUTSIDE, router_config

pytestmark = pytest.mark.root

DELTA = "nftables: floating IP elements changed in place"
NEW_FLOATING_IP = "198.51.100.60"  # to w2 (10.2.0.10)


def make_agent(state_dir: Path) -> Agent:
    agent = Agent(AgentSettings(state_dir=state_dir, prefix=unique_prefix()))
    for network in ("ext", "n1", "n2", "n6"):
        agent.put_network(network, NetworkSpec(external=network == "ext"))
    return agent


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[tuple[Agent, Agent]]:
    """Two agents on their own fabrics: one applies by delta, the other in full."""
    made: list[Agent] = []
    try:
        for name in ("delta", "full"):
            made.append(make_agent(tmp_path / name))
        yield made[0], made[1]
    finally:
        for agent in made:
            cleanup.remove_all(agent.names.prefix)


@pytest.fixture
def expensive(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often the steps that grow with the config ran: `nft -c`, a
    listing of the table, a read of a route table."""
    counted = {"check": 0, "list": 0, "routes": 0}

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counted[name] += 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(nft, "check", counting("check", nft.check))
    monkeypatch.setattr(nft, "list_table", counting("list", nft.list_table))
    monkeypatch.setattr(routes, "current", counting("routes", routes.current))
    return counted


def put_body(agent: Agent, appliance_id: str, document: dict[str, Any]) -> ApplyResult:
    """A PUT as the agent's server takes it: the raw body first (unchanged
    or a delta), else parsed and applied in full."""
    body = json.dumps(document).encode()
    digest = hashlib.sha256(body).hexdigest()
    found = agent.put_unchanged(appliance_id, digest, 0, body)
    if found is not None:
        return found[0]
    config = ApplianceConfig.model_validate_json(body)
    return agent.put_appliance(appliance_id, config, body_digest=digest, body=body)[1]


def _normalized(value: Any) -> Any:
    """`nft -j` output without handles, set elements in a stable order."""
    if isinstance(value, dict):
        return {
            key: sorted(map(_normalized, item), key=json.dumps)
            if key == "elem"
            else _normalized(item)
            for key, item in value.items()
            if key != "handle"
        }
    if isinstance(value, list):
        return [_normalized(item) for item in value]
    return value


def kernel_state(agent: Agent, appliance_id: str) -> dict[str, Any]:
    """The appliance's nftables table and every route of its namespace."""
    namespace = agent.names.appliance_netns(appliance_id)
    table = json.loads(sh(namespace, ["nft", "-j", "list", "table", "inet", "astara"]))
    state: dict[str, Any] = {"nftables": _normalized(table["nftables"][1:])}
    for family in ("-4", "-6"):
        listing = json.loads(
            run(["ip", "-n", namespace, family, "-j", "route", "show", "table", "all"]).stdout
        )
        state[f"routes{family}"] = sorted(json.dumps(r, sort_keys=True) for r in listing)
    return state


def floating(pairs: dict[str, str]) -> dict[str, Any]:
    return router_config(floating_ips=pairs)


def test_a_delta_leaves_what_a_full_apply_of_the_same_config_makes(
    agents: tuple[Agent, Agent], expensive: dict[str, int]
) -> None:
    by_delta, in_full = agents
    before = {FLOATING_IP: "10.1.0.10", "198.51.100.61": "10.1.0.11", "198.51.100.62": "10.1.0.12"}
    put_body(by_delta, "r1", floating(before))
    generation = by_delta.appliances.status("r1").generation
    expensive.update(check=0, list=0, routes=0)

    # One added, one removed, one moved to another fixed IP, one kept.
    after = {
        FLOATING_IP: "10.1.0.10",
        "198.51.100.62": "10.2.0.12",
        NEW_FLOATING_IP: "10.2.0.10",
    }
    result = put_body(by_delta, "r1", floating(after))
    assert isinstance(result.plan[0], ChangeFloatingElements), result.actions
    assert result.actions[:2] == [DELTA, "floating IPs answered: 1 added, 1 removed"]
    assert expensive == {"check": 0, "list": 0, "routes": 0}
    assert by_delta.appliances.status("r1").generation == generation + 1

    put_body(in_full, "r1", floating(after))
    assert kernel_state(by_delta, "r1") == kernel_state(in_full, "r1")
    # What was recorded is the config of the body, as a full apply records it.
    recorded, expected = by_delta.appliances.status("r1"), in_full.appliances.status("r1")
    assert recorded.config_hash == expected.config_hash
    assert by_delta.appliances.config("r1") == in_full.appliances.config("r1")
    observed = by_delta.observe_appliance("r1")
    assert observed["state"] == "active" and observed["floating_ips"] == 3, observed["problems"]

    # A second delta is read by its difference from the first's body.
    again = {**after, "198.51.100.63": "10.1.0.13"}
    del again[FLOATING_IP]
    expensive.update(check=0, list=0, routes=0)
    result = put_body(by_delta, "r1", floating(again))
    assert isinstance(result.plan[0], ChangeFloatingElements), result.actions
    assert expensive == {"check": 0, "list": 0, "routes": 0}
    put_body(in_full, "r1", floating(again))
    assert kernel_state(by_delta, "r1") == kernel_state(in_full, "r1")
    after = again

    # A full apply after it (another route) trusts the table the delta left:
    # no table replaced, and still the same kernel state as applied in full.
    routed = floating(after)
    routed["routes"].append({"destination": "203.0.113.0/24", "nexthop": OUTSIDE})
    full = put_body(by_delta, "r1", routed)
    assert not isinstance(full.plan[0], ChangeFloatingElements)
    assert not any(a.startswith("nftables") for a in full.actions), full.actions
    put_body(in_full, "r1", routed)
    assert kernel_state(by_delta, "r1") == kernel_state(in_full, "r1")


def test_a_hand_edit_is_repaired_by_a_full_apply_not_built_upon(
    agents: tuple[Agent, Agent],
) -> None:
    agent, in_full = agents
    namespace = agent.names.appliance_netns("r1")
    put_body(agent, "r1", floating({FLOATING_IP: "10.1.0.10"}))

    # The floating IP's translation deleted by hand, then a delta PUT: the
    # genid moved, so the PUT is applied in full and the table replaced.
    sh(
        namespace,
        ["nft", "delete", "element", "inet", "astara", "floating_dnat", f"{{ {FLOATING_IP} }}"],
    )
    wanted = {FLOATING_IP: "10.1.0.10", NEW_FLOATING_IP: "10.2.0.10"}
    repaired = put_body(agent, "r1", floating(wanted))
    assert not isinstance(repaired.plan[0], ChangeFloatingElements)
    assert "nftables: table replaced" in repaired.actions, repaired.actions
    put_body(in_full, "r1", floating(wanted))
    assert kernel_state(agent, "r1") == kernel_state(in_full, "r1")

    # After a delta, a hand edit that exactly undoes it (the table then
    # lists as it did before the delta) is drift too.
    third = {**wanted, "198.51.100.61": "10.1.0.11"}
    assert put_body(agent, "r1", floating(third)).actions[0] == DELTA
    for map_name, element in (
        ("floating_dnat", "198.51.100.61 : 10.1.0.11"),
        ("floating_snat", "10.1.0.11 : 198.51.100.61"),
    ):
        sh(namespace, ["nft", "delete", "element", "inet", "astara", map_name, f"{{ {element} }}"])
    assert agent.observe_appliance("r1")["state"] == "degraded"
    fourth = {**third, "198.51.100.62": "10.1.0.12"}
    repaired = put_body(agent, "r1", floating(fourth))
    assert "nftables: table replaced" in repaired.actions, repaired.actions
    put_body(in_full, "r1", floating(fourth))
    assert kernel_state(agent, "r1") == kernel_state(in_full, "r1")

    # A local route deleted by hand: the delta that would remove it fails,
    # and the full apply that follows converges the routes.
    sh(namespace, ["ip", "route", "del", "local", "198.51.100.62/32", "table", "local"])
    fifth = {k: v for k, v in fourth.items() if k != "198.51.100.62"}
    put_body(agent, "r1", floating(fifth))
    put_body(in_full, "r1", floating(fifth))
    assert kernel_state(agent, "r1") == kernel_state(in_full, "r1")


def test_packets_follow_a_delta_both_ways(standard: Lab) -> None:
    lab = standard
    w2, outside = lab.netns("w2"), lab.netns("outside")
    lab.router("r1", router_config())
    wait_until(
        lambda: "10.2.0.10/24" in lab.client.request("GET", "/v1/ports/w2")["addresses"],
        what="w2's DHCP lease",
    )

    added = lab.router(
        "r1", router_config(floating_ips={FLOATING_IP: "10.1.0.10", NEW_FLOATING_IP: "10.2.0.10"})
    )
    assert added["actions"][0] == DELTA, added["actions"]
    assert added["state"] == "active", added["problems"]
    with WhoAmI(w2) as server:
        seen = wait_until(
            lambda: seen_source(outside, NEW_FLOATING_IP, server.port), what="inbound via new FIP"
        )
    assert seen == OUTSIDE
    with WhoAmI(outside) as server:
        assert seen_source(w2, OUTSIDE, server.port) == NEW_FLOATING_IP

    removed = lab.router("r1", router_config())
    assert removed["actions"][0] == DELTA, removed["actions"]
    with WhoAmI(w2) as server:
        assert seen_source(outside, NEW_FLOATING_IP, server.port, timeout_s=2) is None
    assert never_pings(outside, NEW_FLOATING_IP)
    assert ping(outside, FLOATING_IP)  # the control: the floating IP kept still answers
    metrics = lab.client.http.get("/metrics").text
    assert 'astara_agent_appliance_apply_phase_seconds_count{phase="delta"}' in metrics


def checks_settled(agent: Agent) -> int:
    """The watch's count of checks once it is idle and stayed so for a
    while (late events of an apply, such as IPv6 DAD, come and go)."""
    watch = agent.watch
    assert watch is not None
    seen: list[int] = []

    def quiet() -> bool:
        status = watch.status()
        seen.append(status["checks"] if status["idle"] else -1)
        return len(seen) >= 30 and len(set(seen[-30:])) == 1 and seen[-1] >= 0

    wait_until(quiet, 60, 0.1, "the watch to stay idle")
    return seen[-1]


def test_a_delta_makes_the_watch_check_nothing(tmp_path: Path) -> None:
    """The routes a delta adds and removes cause netlink events; they are
    the delta's own, so the watch must not check the appliance for them (a
    check waits for the appliance's lock and reads every route: the next
    PUT would wait for it). The watch reacts at once here (no debounce),
    so any event left to it would be checked."""
    agent = make_agent(tmp_path / "agent")
    try:
        agent.start_watching()
        assert agent.watch is not None
        agent.watch.schedule.debounce_s = 0.0
        pairs = {f"198.51.100.{60 + n}": f"10.1.0.{20 + n}" for n in range(8)}
        put_body(agent, "r1", floating(pairs))
        before = checks_settled(agent)
        for floating_ip in list(pairs)[:4]:
            del pairs[floating_ip]  # removals also forget conntrack: the delta lasts
            assert put_body(agent, "r1", floating(pairs)).actions[0] == DELTA
            pairs[floating_ip.replace("198.51.100.", "198.51.100.1")] = "10.2.0.30"
            assert put_body(agent, "r1", floating(pairs)).actions[0] == DELTA
            pairs.popitem()
        assert checks_settled(agent) == before
        assert agent.watch.status()["repairs"] == 0
    finally:
        agent.stop_watching()
        cleanup.remove_all(agent.names.prefix)


def test_a_delta_acknowledged_survives_a_crash(agent: AgentProcess, lab: Lab) -> None:
    """A delta is recorded as one journal line (the 600 KB config is not
    written again), and is on disk when the PUT answers: an agent killed
    right after comes back with that config, and serves it."""
    lab.network("ext", external=True)
    for network in ("n1", "n2", "n6"):
        lab.network(network)
    pairs = {FLOATING_IP: "10.1.0.10", "198.51.100.61": "10.1.0.11"}
    lab.router("r1", floating(pairs))
    stored = agent.state_dir / "agent" / "appliances" / "r1"
    whole = (stored / record.CONFIG).stat()

    pairs[NEW_FLOATING_IP] = "10.2.0.10"
    answered = lab.router("r1", floating(pairs))
    assert answered["actions"][0] == DELTA, answered["actions"]
    assert answered["config_hash"] and answered["generation"] == 2
    assert (stored / record.CONFIG).stat().st_ino == whole.st_ino  # not written again
    assert (stored / record.JOURNAL).read_bytes().count(b"\n") == 1

    agent.kill()  # SIGKILL, right after the answer
    client = agent.start()
    after = client.request("GET", "/v1/appliances/r1", ok=(200,))
    assert (after["config_hash"], after["generation"]) == (
        answered["config_hash"],
        answered["generation"],
    )
    assert after["state"] == "active" and after["floating_ips"] == 3, after["problems"]
    held = client.request("GET", "/v1/appliances/r1/rendered", ok=(200,))["config"]
    assert held == ApplianceConfig.model_validate(floating(pairs)).model_dump(mode="json")
    # The same body again is the config in force: nothing to do.
    again = lab.router("r1", floating(pairs))
    assert not again["changed"], again["actions"]
    assert again["config_hash"] == answered["config_hash"]
    # And the next delta builds on it.
    del pairs[FLOATING_IP]
    assert lab.router("r1", floating(pairs))["floating_ips"] == 2
