"""HA members' roles as the heartbeats record them, and two actives seen
for two rounds in a row as a split brain (SQLite and PostgreSQL). The
agents' answers are given as a round would receive them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from astara.db.engine import session_factory
from astara.db.models import ApplianceState, Host, ha_member_id
from astara.orchestrator.hosts import SPLIT_ROUNDS, Hosts
from tests.component.conftest import NOW

ROUTER = "9d7e3a1c-0000-4000-8000-000000000001"
M0, M1 = ha_member_id(ROUTER, 0), ha_member_id(ROUTER, 1)


def setup(engine: Engine) -> Hosts:
    sessions = session_factory(engine)
    with sessions.begin() as session:
        for name in ("h1", "h2", "h3"):
            session.add(Host(id=f"id-{name}", name=name, address=f"unix:/{name}", created_at=NOW))
        for appliance_id, host, epoch in ((M0, "h1", 3), (M1, "h2", 5)):
            session.add(
                ApplianceState(
                    appliance_id=appliance_id,
                    kind="router",
                    project_id="p",
                    state="active",
                    host=host,
                    epoch=epoch,
                    updated_at=NOW,
                )
            )
    return Hosts(sessions, clock=lambda: NOW)


def health(**roles: str) -> dict[str, Any]:
    return {"ha_roles": roles}


def round_(hosts: Hosts, answers: dict[str, dict[str, Any] | None]) -> dict[str, tuple[str, str]]:
    """What `Hosts.beat` does with a round's answers."""
    with hosts.sessions.begin() as session:
        roles = {
            name: hosts._record_roles(session, name, answer) for name, answer in answers.items()
        }
        found = hosts._splits(session, answers, roles)
    hosts._roles.update(roles)
    return found


def states(hosts: Hosts) -> dict[str, str | None]:
    with hosts.sessions.begin() as session:
        rows = session.execute(select(ApplianceState.appliance_id, ApplianceState.ha_state))
        return dict(rows.all())  # type: ignore[arg-type]


def test_roles_are_recorded_where_the_record_places_the_member(engine: Engine) -> None:
    hosts = setup(engine)
    round_(hosts, {"h1": health(**{M0: "active"}), "h2": health(**{M1: "standby"})})
    assert states(hosts) == {M0: "active", M1: "standby"}
    # A stale copy on another host (it was moved away) says nothing of the member.
    round_(hosts, {"h3": health(**{M0: "standby"})})
    assert states(hosts)[M0] == "active"
    # A host that does not answer: its members' roles are unknown.
    round_(hosts, {"h1": None, "h2": health(**{M1: "active"})})
    assert states(hosts) == {M0: None, M1: "active"}


def test_two_actives_for_two_rounds_are_a_split_brain(engine: Engine) -> None:
    hosts = setup(engine)
    both = {"h1": health(**{M0: "active"}), "h2": health(**{M1: "active"})}
    assert round_(hosts, both) == {}  # one round may catch a failover half done
    for _ in range(SPLIT_ROUNDS - 1):
        found = round_(hosts, both)
    assert found == {ROUTER: (M0, M1)}
    # Resolved: one demoted (fault), and the count starts again.
    round_(hosts, {"h1": health(**{M0: "fault"}), "h2": health(**{M1: "active"})})
    assert round_(hosts, both) == {}


def test_an_active_member_on_a_silent_host_is_no_split_brain(engine: Engine) -> None:
    """Its host died: its peer took over, and the dead one's last word was
    "active". Only roles of hosts that answer count."""
    hosts = setup(engine)
    round_(hosts, {"h1": health(**{M0: "active"}), "h2": health(**{M1: "standby"})})
    for _ in range(SPLIT_ROUNDS + 1):
        assert round_(hosts, {"h1": None, "h2": health(**{M1: "active"})}) == {}
