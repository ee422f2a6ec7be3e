"""Neutron's `l3_agent_scheduler` extension, read-only: which agents (hosts,
see `api.agents`) run a router (`GET /v2.0/routers/{id}/l3-agents`), with
each HA member's role, and which routers an agent runs
(`GET /v2.0/agents/{id}/l3-routers`).

Admins only, as Neutron's policies `get_l3-agents` and `get_l3-routers`,
checked before the router or agent is looked up (Neutron's controllers
enforce them first): anyone else gets 403.

Where a router runs is what the orchestrator recorded (`ApplianceState.host`):
an HA router's two members (`ha0-`, `ha1-<id>`), any other router's one
appliance (its own id); an appliance not placed yet, or placed on a host
that was removed, is on no agent. Placement is the orchestrator's (zone
hints, load, `astara router move`), so Neutron's manual scheduling (`POST
/v2.0/agents/{id}/l3-routers`, `DELETE …/l3-routers/{router id}`) is
refused (400, `scheduling_refused`).

A member's `ha_state` is the role its host last reported
(`ApplianceState.ha_state`) in Neutron's words (`member_states`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from astara.api import access, agents, routers
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.db.models import ApplianceState, Host, Router, ha_member

# Neutron's HA_ROUTER_STATE_*: a member is active, standby or unknown. A
# member whose host reports a fault is not serving: it stands by.
ACTIVE, STANDBY, UNKNOWN = "active", "standby", "unknown"
NEUTRON_STATE = {"active": ACTIVE, "standby": STANDBY, "fault": STANDBY}


def member_states(members: Sequence[tuple[str | None, bool]]) -> list[str]:
    """Each member's `ha_state`, from (the role its host last reported, or
    None; whether that host is alive). Neutron's rewrite for dead agents
    (`_get_bindings_and_update_router_state_for_dead_agents`): a member
    reported active on a host that is no longer alive is shown standby if
    another member's host is alive (the router may fail over there), else
    unknown (maybe only the hosts' link to the controller is down).

    A drained host is not dead here (Neutron counts an agent with
    `admin_state_up` false as one): its appliances keep running and their
    roles are what they report."""
    shown = [NEUTRON_STATE.get(reported or "", UNKNOWN) for reported, _ in members]
    for index, (_, alive) in enumerate(members):
        if shown[index] == ACTIVE and not alive:
            others_alive = any(up for other, (_, up) in enumerate(members) if other != index)
            shown[index] = STANDBY if others_alive else UNKNOWN
    return shown


def _admin_only(caller: Caller, policy: str) -> None:
    if not caller.is_admin:
        raise access.forbidden(f"rule:{policy}")


def hosting(session: Session, caller: Caller, router_id: str) -> list[dict[str, Any]]:
    """The agents a router runs on: each an agent's view (`agents.view`)
    with `ha_state` (null for a router that is not HA)."""
    _admin_only(caller, "get_l3-agents")
    router = routers.get(session, caller, router_id)
    ids = routers.appliance_ids(router)
    records = {
        state.appliance_id: state
        for state in session.scalars(
            select(ApplianceState).where(ApplianceState.appliance_id.in_(ids))
        )
    }
    named = [records[i].host for i in ids if i in records and records[i].host is not None]
    hosts = {h.name: h for h in session.scalars(select(Host).where(Host.name.in_(named)))}
    placed = [
        (records[i], hosts[host])
        for i in ids
        if i in records and (host := records[i].host) is not None and host in hosts
    ]
    if not router.ha:
        return [{**agents.view(session, host), "ha_state": None} for _, host in placed]
    states = member_states([(record.ha_state, host.alive) for record, host in placed])
    return [
        {**agents.view(session, host), "ha_state": state}
        for (_, host), state in zip(placed, states, strict=True)
    ]


def routers_on(session: Session, caller: Caller, agent_id: str) -> list[dict[str, Any]]:
    """The routers with an appliance on the agent's host (for an HA router,
    one of its members), as `GET /v2.0/routers` shows them."""
    _admin_only(caller, "get_l3-routers")
    host = agents.get(session, caller, agent_id)
    plain: set[str] = set()
    members: set[str] = set()
    for appliance_id in session.scalars(
        select(ApplianceState.appliance_id).where(ApplianceState.host == host.name)
    ):
        member = ha_member(appliance_id)
        if member is not None:
            members.add(member[0])
        else:
            plain.add(appliance_id)
    # A router's appliances of what it is now: a router turned HA may keep
    # its old appliance there a moment, which is not the router any more.
    statement = (
        select(Router)
        .where(
            or_(
                and_(Router.id.in_(sorted(plain)), Router.ha.is_(False)),
                and_(Router.id.in_(sorted(members)), Router.ha.is_(True)),
            )
        )
        .order_by(Router.id)
    )
    return routers.views(session, statement)


def scheduling_refused(
    session: Session, caller: Caller, agent_id: str, action: str
) -> NeutronError:
    """What Neutron's manual scheduling (`action`: `create_l3-router`,
    `delete_l3-router`) gets: for an admin, on an agent that exists, the
    400 that says how placement works here (raised by the route)."""
    _admin_only(caller, action)
    agents.get(session, caller, agent_id)
    return NeutronError(
        400,
        "BadRequest",
        "Bad agent request: routers are not scheduled by hand: the orchestrator places"
        " each router's appliances (availability_zone_hints, load); an operator moves one"
        " with `astara router move ROUTER --host HOST`.",
    )
