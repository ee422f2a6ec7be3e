"""An HA router's two members, as the agent runs them, on real packets: one
agent carries both (their fabric ends on one bridge per network, only the
active one's up), keepalived between them over their HA network, and the
standard lab's workloads and outside host around them.

The orchestrator's side (two hosts, placement, split brains) is shown in
test_ha_routers.py; here the agent's own: roles from keepalived, links on
or off the wire, conntrackd keeping NAT'ed connections across a failover,
a dead member coming back as the standby, config changes that keep the
role, demotion and its lifting.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from astara.appliance.render.ha import FENCE_FILE
from astara.linux import netlink
from astara.testing.failover import Pinger, Stream
from astara.testing.lab import HA_LINKS, Lab, ha_member
from astara.testing.net import Capture, ping, wait_for_ping, wait_until
from tests.root.conftest import FLOATING_IP, MAC, OUTSIDE, build_standard, router_config

pytestmark = pytest.mark.root

MEMBERS = ("ha0-r", "ha1-r")
# Interfaces on the wire only on the active member (the standard router's).
WIRED = (MAC["router_ext"], MAC["router_n1"], MAC["router_n2"], MAC["router_n6"])
HA_MAC = HA_LINKS[0][0]


def member(slot: int, **changes: Any) -> dict[str, Any]:
    return ha_member(router_config(**changes), slot)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    from astara.testing.agent import AgentProcess

    process = AgentProcess(tmp_path_factory.mktemp("agent"))
    try:
        lab = build_standard(Lab(process.start(), process.prefix))
        lab.client.request("DELETE", "/v1/appliances/r1")
        lab.network("ha")
        for slot, appliance_id in enumerate(MEMBERS):
            lab.router(appliance_id, member(slot))
        wait_until(lambda: active(lab), 10, 0.05, "an active member")
        yield lab
    finally:
        process.remove_everything()


def roles(lab: Lab) -> dict[str, str]:
    found: dict[str, str] = lab.client.request("GET", "/v1/health")["ha_roles"]
    return found


def active(lab: Lab) -> str | None:
    found = [a for a, role in roles(lab).items() if role == "active"]
    return found[0] if len(found) == 1 else None


def on_wire(lab: Lab, appliance_id: str) -> dict[str, bool]:
    """Each of the member's wired interfaces: whether its fabric end is up."""
    with netlink.netns(f"{lab.prefix}-fabric") as fabric:
        found = {}
        for mac in WIRED:
            state = netlink.link_state(
                fabric, lab_names(lab).appliance_fabric_link(appliance_id, mac)
            )
            assert state is not None
            found[mac] = state.up
        return found


def lab_names(lab: Lab) -> Any:
    from astara.naming import Names

    return Names(lab.prefix)


def run_directory(lab: Lab, appliance_id: str) -> Path:
    return Path(f"/run/astara/{lab.prefix}/appliances/{appliance_id}")


def flowing(stream: Stream, seconds: float = 0.5) -> bool:
    """Whether numbers still arrive (one every 10 ms is written)."""
    before = stream.received
    time.sleep(seconds)
    return stream.received - before > seconds * 100 / 2


def settled_pair(lab: Lab) -> tuple[str, str]:
    """(active, standby) once one of each stands."""
    wait_until(
        lambda: sorted(roles(lab).values()) == ["active", "standby"], 15, 0.05, "active + standby"
    )
    first = active(lab)
    assert first is not None
    return first, next(a for a in MEMBERS if a != first)


def test_one_member_is_on_the_wire_and_serves(pair: Lab) -> None:
    lab = pair
    serving, standing_by = settled_pair(lab)
    assert all(on_wire(lab, serving).values())
    assert not any(on_wire(lab, standing_by).values())
    # The standby keeps every address and route: off the wire, not down.
    shown = lab.client.request("GET", f"/v1/appliances/{standing_by}")
    assert shown["ha"] == {"role": "standby", "fenced": False}
    assert shown["problems"] == []
    wait_for_ping(lab.netns("w2"), OUTSIDE)
    wait_for_ping(lab.netns("outside"), FLOATING_IP)
    # keepalived only decides: its config names no tenant address.
    rendered = lab.client.request("GET", f"/v1/appliances/{serving}/rendered")["files"]
    assert "198.51.100" not in rendered["keepalived.conf"]
    assert "169.254.0.1/32 dev" in rendered["keepalived.conf"]


def test_a_dead_member_fails_over_keeping_nated_connections_and_comes_back_standby(
    pair: Lab,
) -> None:
    lab = pair
    serving, standing_by = settled_pair(lab)
    outside, w1, w2 = lab.netns("outside"), lab.netns("w1"), lab.netns("w2")
    wait_for_ping(w2, OUTSIDE)
    wait_for_ping(outside, FLOATING_IP)
    # The outside pushes into w2's SNAT'ed connection; w1 pushes out of
    # its floating IP: both directions a conntrack entry must be there for.
    with (
        Stream(outside, w2, OUTSIDE, 5101, pusher="server") as snat,
        Stream(w1, outside, FLOATING_IP, 5102, pusher="client") as floating,
        Pinger(w2, OUTSIDE) as pinger,
        Capture(f"{lab.prefix}-fabric", lab_names(lab).bridge("ext"), "arp or icmp6") as seen,
    ):
        time.sleep(0.5)
        start = pinger.mark()
        # The member dies as a host would: keepalived and conntrackd killed
        # (no farewell advert), its links off the wire at once.
        directory = run_directory(lab, serving)
        for name in ("keepalived.pid", "keepalived-vrrp.pid", "conntrackd.pid"):
            if (directory / name).exists():
                os.kill(int((directory / name).read_text()), signal.SIGKILL)
        wait_until(lambda: active(lab) == standing_by, 10, 0.02, "the standby to take over")
        time.sleep(1.0)
        # The new active member announced its addresses (same MACs: the
        # bridges and VXLAN tables learn where they are now).
        seen.wait_for("who-has 198.51.100.2 tell 198.51.100.2")
        seen.wait_for("neighbor advertisement, tgt is 2001:db8:ff::2")
        lost = pinger.lost(since=start)
        # Both connections go on through the new active member.
        assert flowing(snat) and flowing(floating)
    assert snat.errors == [] and floating.errors == []
    assert lost < 50, f"{lost} pings lost"
    # The dead member was repaired by its agent: back as the standby, off the wire.
    assert settled_pair(lab) == (standing_by, serving)
    assert not any(on_wire(lab, serving).values())


def test_config_changes_keep_the_active_member_and_lose_no_ping(pair: Lab) -> None:
    lab = pair
    serving, standing_by = settled_pair(lab)
    w2 = lab.netns("w2")
    wait_for_ping(w2, OUTSIDE)
    with Pinger(w2, OUTSIDE) as pinger:
        time.sleep(0.3)
        start = pinger.mark()
        # A floating IP added (a delta on both), then an extra route (a full apply).
        more = {FLOATING_IP: "10.1.0.10", "198.51.100.51": "10.2.0.10"}
        for appliance_id in (standing_by, serving):
            lab.router(appliance_id, member(MEMBERS.index(appliance_id), floating_ips=more))
        for appliance_id in (standing_by, serving):
            config = member(MEMBERS.index(appliance_id), floating_ips=more)
            config["routes"].append({"destination": "192.0.2.0/24", "nexthop": "198.51.100.1"})
            lab.router(appliance_id, config)
        time.sleep(0.5)
        assert pinger.lost(since=start) == 0
    assert active(lab) == serving
    wait_for_ping(lab.netns("outside"), "198.51.100.51")
    assert not any(on_wire(lab, standing_by).values())
    for appliance_id in MEMBERS:
        lab.router(appliance_id, member(MEMBERS.index(appliance_id)))


def test_a_demoted_member_leaves_the_election_until_its_peer_answers(pair: Lab) -> None:
    lab = pair
    serving, standing_by = settled_pair(lab)
    epoch = lab.client.request("GET", f"/v1/appliances/{serving}")["epoch"]
    lab.client.request("PUT", f"/v1/appliances/{serving}/demote?epoch={epoch}")
    # Out of the election: its peer takes over; and since the peer answers
    # on the HA network, the demotion is lifted and it stands by again.
    wait_until(lambda: active(lab) == standing_by, 10, 0.02, "the peer to take over")
    wait_until(
        lambda: (run_directory(lab, serving) / FENCE_FILE).read_text().strip() == "0",
        10,
        0.1,
        "the demotion lifted",
    )
    assert settled_pair(lab) == (standing_by, serving)
    # Not a member here: refused.
    response = lab.client.http.request("PUT", "/v1/appliances/nothing/demote")
    assert response.status_code == 404


def test_members_of_an_agent_cut_off_leave_the_election_until_a_push(tmp_path: Path) -> None:
    """An agent that hears nothing from the controller for `--fence-after`
    fences its HA members: out of the election (keepalived stopped, the
    role handed over), off the wire, and kept so by its repairs; a PUT
    (the controller back) lets each back in."""
    from astara.testing.agent import AgentProcess

    process = AgentProcess(tmp_path, args=["--fence-after", "1"])
    try:
        lab = build_standard(Lab(process.start(), process.prefix))
        lab.client.request("DELETE", "/v1/appliances/r1")
        lab.network("ha")
        for slot, appliance_id in enumerate(MEMBERS):
            lab.router(appliance_id, member(slot))
        wait_until(lambda: active(lab), 10, 0.05, "an active member")
        outside = lab.netns("outside")
        wait_for_ping(outside, FLOATING_IP)
        # Silence: nothing asked of the agent for longer than the bound.
        time.sleep(2.0)
        health = lab.client.request("GET", "/v1/health")
        assert health["fenced"] is True and sorted(health["fenced_appliances"]) == list(MEMBERS)
        assert sorted(health["ha_roles"].values()) == ["fault", "fault"]
        for appliance_id in MEMBERS:
            assert not any(on_wire(lab, appliance_id).values())
        assert not ping(outside, FLOATING_IP, timeout_s=0.5)
        # Its repairs leave keepalived stopped.
        time.sleep(2.0)
        for appliance_id in MEMBERS:
            shown = lab.client.request("GET", f"/v1/appliances/{appliance_id}")
            assert shown["ha"] == {"role": "fault", "fenced": True}
            assert not any(on_wire(lab, appliance_id).values())
        # The controller is back: each push lets its member back in.
        for slot, appliance_id in enumerate(MEMBERS):
            lab.router(appliance_id, member(slot))
        assert lab.client.request("GET", "/v1/health")["fenced"] is False
        wait_until(lambda: active(lab), 10, 0.05, "an active member again")
        wait_for_ping(outside, FLOATING_IP)
    finally:
        process.remove_everything()
