"""Neutron's agents (`/v2.0/agents`, the `agent` extension), from the hosts.

Each host is one agent of type "L3 agent", binary `astara-agent`: that is
what `openstack network agent list` users look for to see where routers can
run and whether that host is alive. The same agent also serves the DHCP
appliances, but listing it again as a "DHCP agent" would show one host
twice and invite `network agent add network`, which Astara does not do.

Admins only, as Neutron's policy (`get_agent`: admin): anyone else gets an
empty list and 404 for one agent. `admin_state_up` false is a drained host;
DELETE removes the host (as `astara host remove`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.api import hosts
from astara.api.attributes import Attribute, Resource, to_any, to_bool
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.db.models import Host

AGENT_TYPE = "L3 agent"
BINARY = "astara-agent"
TOPIC = "l3_agent"

RESOURCE = Resource(
    "agents",
    "agent",
    (
        Attribute("id", allow_post=False, allow_put=False),
        Attribute("agent_type", allow_post=False, allow_put=False),
        Attribute("binary", allow_post=False, allow_put=False),
        Attribute("topic", allow_post=False, allow_put=False),
        Attribute("host", allow_post=False, allow_put=False),
        Attribute("admin_state_up", to_bool, allow_post=False),
        Attribute("created_at", allow_post=False, allow_put=False, filter=False),
        Attribute("started_at", allow_post=False, allow_put=False, filter=False),
        Attribute("heartbeat_timestamp", allow_post=False, allow_put=False, filter=False),
        Attribute("alive", to_bool, allow_post=False, allow_put=False),
        Attribute("configurations", to_any, allow_post=False, allow_put=False, filter=False),
        # No column holds one: shown empty, not updatable (Neutron lets it be set).
        Attribute("description", allow_post=False, allow_put=False),
        Attribute("availability_zone", allow_post=False, allow_put=False),
    ),
)


def _time(value: datetime | None) -> str | None:
    """Neutron's agents show times as `YYYY-MM-DD HH:MM:SS` (UTC)."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else None


def view(session: Session, host: Host) -> dict[str, Any]:
    started = (host.reported or {}).get("started_at")
    return {
        "id": host.id,
        "agent_type": AGENT_TYPE,
        "binary": BINARY,
        "topic": TOPIC,
        "host": host.name,
        "admin_state_up": not host.drained,
        "alive": host.alive,
        "created_at": _time(host.created_at),
        "started_at": started if isinstance(started, str) else _time(host.created_at),
        "heartbeat_timestamp": _time(host.last_heartbeat),
        "configurations": {
            "physnets": dict(host.physnets or {}),
            "underlay_address": host.underlay_address,
            "appliances": len(hosts.appliances_on(session, host)),
        },
        "description": "",
        "availability_zone": host.availability_zone,
    }


def hidden() -> NeutronError:
    """What a non-admin gets for one agent: Neutron hides what policy forbids reading."""
    return NeutronError(404, "HTTPNotFound", "The resource could not be found.")


def get(session: Session, caller: Caller, agent_id: str) -> Host:
    if not caller.is_admin:
        raise hidden()
    host = session.get(Host, agent_id)
    if host is None:
        raise NeutronError(404, "AgentNotFound", f"Agent {agent_id} could not be found.")
    return host


def listing(session: Session, caller: Caller) -> list[dict[str, Any]]:
    if not caller.is_admin:
        return []
    return [view(session, h) for h in session.scalars(select(Host).order_by(Host.name))]


def update(
    session: Session, caller: Caller, agent_id: str, values: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """`admin_state_up`: false drains the host, true undrains it."""
    host = get(session, caller, agent_id)
    if "admin_state_up" in values:
        hosts.set_drained(session, caller, host.name, not values["admin_state_up"], now)
    return view(session, host)


def delete(session: Session, caller: Caller, agent_id: str, now: datetime) -> None:
    host = get(session, caller, agent_id)
    hosts.remove_host(session, caller, host.name, now)
