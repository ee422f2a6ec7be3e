"""The astara-agent v1 REST API: desired state in, observed state out.

Used by the orchestrator and by operators' debugging tools. Every PUT is
idempotent and level-triggered: it converges the object on the body and
returns what is observed afterwards.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from astara import __version__
from astara.agent.store import JsonStore
from astara.appliance.apply import (
    ApplianceManager,
    ApplyFailed,
    NetworkInfo,
    ValidationFailed,
)
from astara.appliance.schema import ApplianceConfig
from astara.fabric import networks as fabric_networks
from astara.fabric import ports as fabric_ports
from astara.fabric.networks import NetworkSpec
from astara.fabric.ports import PortError, PortPaths, PortSpec
from astara.linux import netns
from astara.linux.cleanup import default_run_dir
from astara.naming import ID_PATTERN, Names

ObjectId = Annotated[str, PathParam(pattern=ID_PATTERN.pattern, description="Object id")]


@dataclass
class AgentSettings:
    state_dir: Path
    prefix: str = "ast"
    run_dir: Path | None = None

    @property
    def runtime_dir(self) -> Path:
        return self.run_dir or default_run_dir(self.prefix)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.applies = Counter(
            "astara_agent_appliance_applies",
            "Appliance config applies by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.apply_seconds = Histogram(
            "astara_agent_appliance_apply_seconds",
            "Time to validate and apply an appliance config",
            registry=self.registry,
        )


class Agent:
    """The agent's state and operations; the HTTP layer only translates."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.names = Names(settings.prefix)
        self.store = JsonStore(settings.state_dir)
        self.appliances = ApplianceManager(
            self.names, settings.state_dir, settings.runtime_dir, self.network_info
        )
        self.fabric_lock = threading.RLock()
        self.metrics = Metrics()

    # networks
    def network_spec(self, network_id: str) -> NetworkSpec | None:
        document = self.store.get("networks", network_id)
        return NetworkSpec.model_validate(document) if document is not None else None

    def network_info(self, network_id: str) -> NetworkInfo | None:
        spec = self.network_spec(network_id)
        return NetworkInfo(mtu=spec.mtu) if spec is not None else None

    def network_users(self, network_id: str) -> list[str]:
        users = [
            f"port {port_id}"
            for port_id in self.store.ids("ports")
            if (self.store.get("ports", port_id) or {}).get("spec", {}).get("network_id")
            == network_id
        ]
        for appliance_id in self.appliances.ids():
            config = self.appliances.config(appliance_id)
            if config and any(i.network_id == network_id for i in config.interfaces):
                users.append(f"appliance {appliance_id}")
        return users

    def start(self) -> None:
        """Bring the fabric back after a restart (or a host reboot)."""
        with self.fabric_lock:
            for network_id in self.store.ids("networks"):
                spec = self.network_spec(network_id)
                if spec is not None:
                    fabric_networks.ensure_network(self.names, network_id, spec)

    # ports
    def port_paths(self, port_id: str) -> PortPaths:
        return PortPaths(self.settings.runtime_dir / "ports" / port_id)

    def port_record(self, port_id: str) -> tuple[PortSpec, dict[str, bool]] | None:
        document = self.store.get("ports", port_id)
        if document is None:
            return None
        return PortSpec.model_validate(document["spec"]), document.get("created", {})


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def create_app(settings: AgentSettings) -> FastAPI:
    agent = Agent(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Blocking netlink work runs in a thread, never on the event loop.
        await asyncio.to_thread(agent.start)
        yield

    app = FastAPI(
        title="astara-agent",
        version=__version__,
        description="Per-host agent: L2 fabric, workload ports and appliances.",
        lifespan=lifespan,
    )
    app.state.agent = agent

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        meminfo = _meminfo()
        return {
            "status": "ok",
            "version": __version__,
            "prefix": agent.names.prefix,
            "capacity": {
                "cpus": os.cpu_count(),
                "memory_total_bytes": meminfo.get("MemTotal", 0),
                "memory_available_bytes": meminfo.get("MemAvailable", 0),
                "load_1m": os.getloadavg()[0],
            },
            "counts": {
                "networks": len(agent.store.ids("networks")),
                "ports": len(agent.store.ids("ports")),
                "appliances": len(agent.appliances.ids()),
            },
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        return generate_latest(agent.metrics.registry).decode()

    # --- networks ----------------------------------------------------------------------

    @app.get("/v1/networks")
    def list_networks() -> dict[str, Any]:
        return {"networks": [network_view(n) for n in agent.store.ids("networks")]}

    def network_view(network_id: str) -> dict[str, Any]:
        spec = agent.network_spec(network_id)
        if spec is None:
            raise _error(404, f"network {network_id} not found")
        return {
            "id": network_id,
            **spec.model_dump(),
            **fabric_networks.observe_network(agent.names, network_id),
        }

    @app.put("/v1/networks/{network_id}")
    def put_network(network_id: ObjectId, spec: NetworkSpec, response: Response) -> dict[str, Any]:
        with agent.fabric_lock:
            existing = agent.network_spec(network_id)
            if (
                existing is not None
                and existing.mtu != spec.mtu
                and agent.network_users(network_id)
            ):
                users = ", ".join(agent.network_users(network_id))
                raise _error(
                    409,
                    f"network {network_id} has attachments ({users});"
                    " remove them before changing its MTU",
                )
            fabric_networks.ensure_network(agent.names, network_id, spec)
            agent.store.put("networks", network_id, spec.model_dump())
            response.status_code = 201 if existing is None else 200
            return network_view(network_id)

    @app.get("/v1/networks/{network_id}")
    def get_network(network_id: ObjectId) -> dict[str, Any]:
        return network_view(network_id)

    @app.delete("/v1/networks/{network_id}", status_code=204)
    def delete_network(network_id: ObjectId) -> None:
        with agent.fabric_lock:
            if agent.network_spec(network_id) is None:
                raise _error(404, f"network {network_id} not found")
            users = agent.network_users(network_id)
            if users:
                raise _error(409, f"network {network_id} is in use by {', '.join(users)}")
            fabric_networks.delete_network(agent.names, network_id)
            agent.store.delete("networks", network_id)
            if not agent.store.ids("networks"):
                fabric_networks.delete_fabric(agent.names)

    # --- ports -------------------------------------------------------------------------

    def port_view(port_id: str) -> dict[str, Any]:
        record = agent.port_record(port_id)
        if record is None:
            raise _error(404, f"port {port_id} not found")
        spec, _ = record
        return {
            "id": port_id,
            "spec": spec.model_dump(mode="json"),
            **fabric_ports.observe(agent.names, port_id, spec, agent.port_paths(port_id)),
        }

    @app.get("/v1/ports")
    def list_ports() -> dict[str, Any]:
        return {"ports": [port_view(p) for p in agent.store.ids("ports")]}

    @app.put("/v1/ports/{port_id}")
    def put_port(port_id: ObjectId, spec: PortSpec, response: Response) -> dict[str, Any]:
        with agent.fabric_lock:
            network = agent.network_spec(spec.network_id)
            if network is None:
                raise _error(
                    422, f"unknown network {spec.network_id}: PUT /v1/networks/{{id}} first"
                )
            previous = agent.port_record(port_id)
            for other_id in agent.store.ids("ports"):
                other = agent.port_record(other_id)
                if (
                    other_id != port_id
                    and other
                    and other[0].netns == spec.netns
                    and other[0].ifname == spec.ifname
                ):
                    raise _error(409, f"port {other_id} already uses {spec.ifname} in {spec.netns}")
            if previous is not None and (previous[0].netns, previous[0].ifname) != (
                spec.netns,
                spec.ifname,
            ):
                raise _error(
                    409, "a port's netns and ifname cannot change; delete and plug it again"
                )
            created = previous[1] if previous else {}
            try:
                made = fabric_ports.plug(
                    agent.names,
                    port_id,
                    spec,
                    network.mtu,
                    agent.port_paths(port_id),
                    new=previous is None,
                )
            except PortError as error:
                raise _error(422, str(error)) from error
            created = {k: created.get(k, False) or v for k, v in made.items()}
            agent.store.put(
                "ports", port_id, {"spec": spec.model_dump(mode="json"), "created": created}
            )
            response.status_code = 201 if previous is None else 200
            return port_view(port_id)

    @app.get("/v1/ports/{port_id}")
    def get_port(port_id: ObjectId) -> dict[str, Any]:
        return port_view(port_id)

    @app.delete("/v1/ports/{port_id}", status_code=204)
    def delete_port(port_id: ObjectId) -> None:
        with agent.fabric_lock:
            record = agent.port_record(port_id)
            if record is None:
                raise _error(404, f"port {port_id} not found")
            spec, created = record
            others = [
                other_id
                for other_id in agent.store.ids("ports")
                if other_id != port_id
                and (r := agent.port_record(other_id))
                and r[0].netns == spec.netns
            ]
            if others and created.get("created_netns"):
                # The namespace outlives this port; hand its ownership on.
                heir = agent.port_record(others[0])
                if heir is not None:
                    agent.store.put(
                        "ports",
                        others[0],
                        {
                            "spec": heir[0].model_dump(mode="json"),
                            "created": {**heir[1], **created},
                        },
                    )
            fabric_ports.unplug(
                agent.names,
                port_id,
                spec,
                agent.port_paths(port_id),
                created,
                netns_still_used=bool(others),
            )
            agent.store.delete("ports", port_id)

    # --- appliances --------------------------------------------------------------------

    def appliance_view(appliance_id: str) -> dict[str, Any]:
        if agent.appliances.config(appliance_id) is None:
            raise _error(404, f"appliance {appliance_id} not found")
        return agent.appliances.observe(appliance_id)

    @app.get("/v1/appliances")
    def list_appliances() -> dict[str, Any]:
        return {"appliances": [agent.appliances.observe(a) for a in agent.appliances.ids()]}

    @app.put("/v1/appliances/{appliance_id}", response_model=None)
    def put_appliance(
        appliance_id: ObjectId, config: ApplianceConfig, response: Response
    ) -> dict[str, Any] | JSONResponse:
        started = time.monotonic()
        with agent.appliances.lock(appliance_id):
            existed = agent.appliances.config(appliance_id) is not None
            try:
                rendered = agent.appliances.prepare(appliance_id, config)
            except ValidationFailed as failure:
                agent.metrics.applies.labels("invalid").inc()
                return JSONResponse(
                    status_code=422, content={"detail": [e.as_dict() for e in failure.errors]}
                )
            try:
                result = agent.appliances.apply(appliance_id, config, rendered)
            except ApplyFailed as failure:
                agent.metrics.applies.labels("failed").inc()
                raise _error(500, str(failure)) from failure
            agent.metrics.applies.labels("changed" if result.changed else "unchanged").inc()
            agent.metrics.apply_seconds.observe(time.monotonic() - started)
            response.status_code = 200 if existed else 201
            return {
                **agent.appliances.observe(appliance_id),
                "changed": result.changed,
                "actions": result.actions,
            }

    @app.get("/v1/appliances/{appliance_id}")
    def get_appliance(appliance_id: ObjectId) -> dict[str, Any]:
        return appliance_view(appliance_id)

    @app.get("/v1/appliances/{appliance_id}/rendered")
    def get_rendered(appliance_id: ObjectId) -> dict[str, Any]:
        if agent.appliances.config(appliance_id) is None:
            raise _error(404, f"appliance {appliance_id} not found")
        return {"id": appliance_id, **agent.appliances.rendered_texts(appliance_id)}

    @app.delete("/v1/appliances/{appliance_id}", status_code=204)
    def delete_appliance(appliance_id: ObjectId) -> None:
        with agent.appliances.lock(appliance_id):
            known = agent.appliances.config(appliance_id) is not None
            if not known and not netns.exists(agent.names.appliance_netns(appliance_id)):
                raise _error(404, f"appliance {appliance_id} not found")
            agent.appliances.delete(appliance_id)

    return app


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            values[key] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    return values
