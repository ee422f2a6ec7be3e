"""Port plugs under `/astara/v1/ports/{id}/binding` (admin tokens, `astara
port plug|unplug`): a port bound to a workload namespace on a host, checked
as the agent checks it before anything is stored; the orchestrator plugs it
(an outbox event wakes it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, delete, select
from sqlalchemy.orm import Session

from astara.api import hosts
from astara.api.admin import require_admin
from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.db import outbox
from astara.db.models import Port, PortBinding
from astara.model.fabric import check_ifname, check_netns_name, check_workload_netns
from astara.naming import Names

# The binding table's column: a longer name passes PortSpec but does not fit.
_NETNS_COLUMN = PortBinding.__table__.c.netns.type
_NETNS_MAX = _NETNS_COLUMN.length if isinstance(_NETNS_COLUMN, String) else None


def _port(session: Session, port_id: str) -> Port:
    port = session.get(Port, port_id) or session.scalar(select(Port).where(Port.name == port_id))
    if port is None:
        raise NeutronError(404, "PortNotFound", f"Port {port_id} could not be found.")
    return port


def plug(
    session: Session,
    caller: Caller,
    port_id: str,
    body: Any,
    now: datetime,
    names: Names | None = None,
) -> dict[str, Any]:
    """Bind a port to a workload namespace; the orchestrator plugs it. With
    the agent's `names`, the namespace is checked against its prefix too."""
    require_admin(caller)
    port = _port(session, port_id)
    if not isinstance(body, dict) or not isinstance(body.get("netns"), str):
        raise NeutronError(
            400, "HTTPBadRequest", 'Body must be {"netns": NAME, "ifname": NAME, "dhcp": BOOL}'
        )
    netns, ifname, dhcp = body["netns"], body.get("ifname", "eth0"), body.get("dhcp", False)
    # The host to plug it on (binding:host_id); none: the local host.
    host = body.get("host")
    if host is not None:
        if not isinstance(host, str):
            raise NeutronError(400, "HTTPBadRequest", "host: must be a host's name")
        host = hosts.find(session, host).name
    if not isinstance(ifname, str):
        raise NeutronError(400, "HTTPBadRequest", "ifname: must be a string")
    if not isinstance(dhcp, bool):
        raise NeutronError(400, "HTTPBadRequest", "dhcp: must be true or false")
    # PortSpec's own rules: a binding the agent would refuse must never be
    # stored, or every fabric pass of the orchestrator fails on it.
    for field, value, check in (
        ("netns", netns, check_netns_name),
        ("ifname", ifname, check_ifname),
    ):
        try:
            check(value)
        except ValueError as error:
            raise NeutronError(400, "HTTPBadRequest", f"{field}: {error}") from None
    if names is not None:
        try:
            check_workload_netns(names, netns)
        except ValueError as error:
            raise NeutronError(400, "HTTPBadRequest", f"netns: {error}") from None
    if _NETNS_MAX is not None and len(netns) > _NETNS_MAX:
        raise NeutronError(400, "HTTPBadRequest", f"netns: at most {_NETNS_MAX} characters")
    if port.device_owner.startswith("network:"):
        raise NeutronError(409, "PortInUse", f"Port {port.id} belongs to {port.device_owner}.")
    taken = session.scalar(
        select(PortBinding).where(
            PortBinding.netns == netns,
            PortBinding.ifname == ifname,
            PortBinding.port_id != port.id,
            # Namespaces are per host: the same name on two hosts is two namespaces.
            PortBinding.host.is_(None) if host is None else PortBinding.host == host,
        )
    )
    if taken is not None:
        raise NeutronError(
            409, "PortInUse", f"{ifname} in {netns} is already port {taken.port_id}."
        )
    binding = session.get(PortBinding, port.id)
    if binding is None:
        binding = PortBinding(port_id=port.id, created_at=now)
        session.add(binding)
    binding.netns, binding.ifname, binding.dhcp = netns, ifname, dhcp
    binding.host = host
    outbox.record(
        session,
        resource_type="port",
        resource_id=port.id,
        project_id=port.project_id,
        action="plug",
        now=now,
    )
    return {"port_id": port.id, "netns": netns, "ifname": ifname, "dhcp": dhcp, "host": host}


def unplug(session: Session, caller: Caller, port_id: str, now: datetime) -> None:
    require_admin(caller)
    port = _port(session, port_id)
    if session.get(PortBinding, port.id) is None:
        raise NeutronError(404, "PortNotFound", f"Port {port_id} is not plugged.")
    session.execute(delete(PortBinding).where(PortBinding.port_id == port.id))
    outbox.record(
        session,
        resource_type="port",
        resource_id=port.id,
        project_id=port.project_id,
        action="unplug",
        now=now,
    )
