"""The astara-agent v1 REST API: desired state in, observed state out.

Used by the orchestrator and by operators' debugging tools. Every PUT is
idempotent and level-triggered: it converges the object on the body and
returns what is observed afterwards (201 if the object was new, else 200).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import ValidationError

from astara import __version__
from astara.agent.service import Agent, AgentSettings, Conflict, Invalid, NotFound, StaleEpoch
from astara.appliance.apply import ApplyFailed, ValidationFailed
from astara.appliance.checks import TOOLS
from astara.appliance.phases import phase, recording
from astara.appliance.schema import ApplianceConfig
from astara.fabric.firewall import FirewallUnavailable
from astara.linux.run import CommandError, MissingTool
from astara.model.fabric import AddressSetSpec, NetworkSpec, PortSpec, SecurityGroupSpec
from astara.naming import ID_PATTERN

log = logging.getLogger(__name__)

ObjectId = Annotated[str, PathParam(pattern=ID_PATTERN.pattern, description="Object id")]
Epoch = Annotated[
    int,
    Query(
        ge=0,
        description="The orchestrator's epoch of this appliance; one older than the newest"
        " seen is refused (409 stale_epoch)",
    ),
]

__all__ = ["AgentSettings", "create_app"]


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
        self.apply_phase_seconds = Histogram(
            "astara_agent_appliance_apply_phase_seconds",
            "Time an appliance PUT spent in each phase (astara.appliance.phases)",
            ["phase"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.appliances = Gauge(
            "astara_agent_appliances",
            "Appliances on this agent by state at their last observation"
            " (active, degraded, fenced; unobserved: not since the agent started)",
            ["state"],
            registry=self.registry,
        )
        self.rebuilds = Counter(
            "astara_agent_appliance_rebuilds",
            "Applies that had to make an existing appliance again from its namespace up",
            registry=self.registry,
        )
        self.failures = Counter(
            "astara_agent_failures",
            "Requests refused or failed, by kind (invalid, stale_epoch, missing_tool,"
            " apply_failed, command_failed, internal_error)",
            ["kind"],
            registry=self.registry,
        )

        self.repairs = Counter(
            "astara_agent_appliance_repairs",
            "Appliances found drifted by the watch, by what was done (repaired, failed,"
            " deferred while fenced, held while an operator debugs them)",
            ["outcome"],
            registry=self.registry,
        )

    def observe_phases(self, spent: dict[str, float]) -> None:
        for name, seconds in spent.items():
            self.apply_phase_seconds.labels(name).observe(seconds)

    def count_appliances(self, agent: Agent) -> None:
        """Set the gauge from the agent's last observations (at scrape time)."""
        counts = dict.fromkeys(("active", "degraded", "fenced", "unobserved"), 0)
        for appliance_id in agent.appliances.ids():
            state = agent.states.get(appliance_id, "unobserved")
            counts[state] = counts.get(state, 0) + 1
        for state, count in counts.items():
            self.appliances.labels(state).set(count)


def _parse_config(body: bytes) -> ApplianceConfig:
    """The body as an appliance config; errors as FastAPI reports a body's
    (422, each error's `loc` starting with "body")."""
    try:
        return ApplianceConfig.model_validate_json(body)
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)],
            body=body,
        ) from error


def _created(response: Response, new: bool) -> None:
    response.status_code = 201 if new else 200


def missing_tool_response(error: MissingTool, applied_part: bool = False) -> JSONResponse:
    """503: this host cannot serve the request until `tool` is installed (the
    request itself is fine, so not a 422, and retrying later may succeed)."""
    tool = TOOLS.get(error.tool)
    message = str(error) + (f"; it is needed for {tool.purpose}" if tool else "")
    if applied_part:
        message += " (the apply stopped part-way; the last good config was restored)"
    else:
        message += " (nothing was changed)"
    return JSONResponse(
        status_code=503,
        content={"detail": {"kind": "missing_tool", "tool": error.tool, "message": message}},
    )


def watchdog(agent: Agent, stop: threading.Event) -> None:
    """Self-fencing: check, several times per bound, whether the agent has
    gone `fence_after_s` without contact."""
    bound = agent.settings.fence_after_s
    assert bound
    interval_s = min(0.1, bound / 10)
    while not stop.wait(interval_s):
        try:
            agent.check_fence()
        except Exception:
            log.exception("fencing failed; trying again")


def quiesce_on_exit_signals(agent: Agent) -> None:
    """Stop the watch's repairs as soon as SIGTERM or SIGINT arrives, not
    once the server has drained its connections: what is removed after a
    shutdown began must not be rebuilt. Wraps the server's own handlers
    (uvicorn installs them before the lifespan starts); only possible on
    the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    for number in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(number)
        if not callable(previous):
            continue

        def handler(
            sig: int, frame: FrameType | None, previous: Callable[..., Any] = previous
        ) -> None:
            if agent.watch is not None:
                agent.watch.quiesce()
            previous(sig, frame)

        signal.signal(number, handler)


def create_app(settings: AgentSettings, agent: Agent | None = None) -> FastAPI:
    """The agent API over `agent` (default: the real one on `settings`)."""
    agent = agent or Agent(settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Blocking netlink work runs in a thread, never on the event loop.
        await asyncio.to_thread(agent.start)
        agent.start_metadata()
        agent.start_watching(lambda outcome: metrics.repairs.labels(outcome).inc())
        quiesce_on_exit_signals(agent)
        agent.note_contact()  # the bound counts from when the agent is ready
        stop = threading.Event()
        if settings.fence_after_s:
            threading.Thread(
                target=watchdog, args=(agent, stop), name="fence-watchdog", daemon=True
            ).start()
        try:
            yield
        finally:
            stop.set()
            await asyncio.to_thread(agent.stop_watching)
            await asyncio.to_thread(agent.stop_metadata)

    app = FastAPI(
        title="astara-agent",
        version=__version__,
        description="Per-host agent: L2 fabric, workload ports and appliances.",
        lifespan=lifespan,
    )
    app.state.agent = agent

    @app.middleware("http")
    async def contact(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # Every request that reaches the app was admitted (the unix socket's
        # peer check and TLS's client certificate come before): it is contact.
        with agent.request():
            return await call_next(request)

    def detail(status: int) -> Any:
        async def handler(_: Request, error: Exception) -> JSONResponse:
            return JSONResponse(status_code=status, content={"detail": str(error)})

        return handler

    app.add_exception_handler(NotFound, detail(404))
    app.add_exception_handler(Conflict, detail(409))
    app.add_exception_handler(Invalid, detail(422))
    app.add_exception_handler(FirewallUnavailable, detail(503))

    @app.exception_handler(StaleEpoch)
    async def stale_epoch(_: Request, error: StaleEpoch) -> JSONResponse:
        metrics.failures.labels("stale_epoch").inc()
        return JSONResponse(
            status_code=409,
            content={"detail": {"kind": "stale_epoch", "epoch": error.epoch, "seen": error.seen}},
        )

    @app.exception_handler(MissingTool)
    async def missing_tool(_: Request, error: MissingTool) -> JSONResponse:
        metrics.failures.labels("missing_tool").inc()
        return missing_tool_response(error)

    @app.exception_handler(ApplyFailed)
    async def apply_failed(_: Request, error: ApplyFailed) -> JSONResponse:
        metrics.failures.labels("apply_failed").inc()
        if isinstance(error.__cause__, MissingTool):
            return missing_tool_response(error.__cause__, applied_part=True)
        return JSONResponse(status_code=500, content={"detail": str(error)})

    @app.exception_handler(Exception)
    async def internal_error(_: Request, error: Exception) -> JSONResponse:
        # A bug, not a foreseeable condition (those have their own handlers):
        # the traceback goes to the agent's log, the caller gets the error's
        # type and text instead of a bare "Internal Server Error".
        metrics.failures.labels("internal_error").inc()
        return JSONResponse(
            status_code=500,
            content={
                "detail": {"kind": "internal_error", "message": f"{type(error).__name__}: {error}"}
            },
        )

    @app.exception_handler(CommandError)
    async def command_failed(_: Request, error: CommandError) -> JSONResponse:
        metrics.failures.labels("command_failed").inc()
        log.error("%s", error)
        return JSONResponse(
            status_code=500,
            content={
                "detail": {
                    "kind": "command_failed",
                    "command": error.argv,
                    "returncode": error.returncode,
                    "message": str(error),
                }
            },
        )

    @app.exception_handler(ValidationFailed)
    async def validation_failed(_: Request, failure: ValidationFailed) -> JSONResponse:
        metrics.applies.labels("invalid").inc()
        metrics.failures.labels("invalid").inc()
        return JSONResponse(
            status_code=422, content={"detail": [e.as_dict() for e in failure.errors]}
        )

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        # On the event loop, not in the thread pool that applies fill: a
        # heartbeat is answered at once however busy the agent is (it reads
        # memory and a few files; the tools were probed at start).
        return agent.health()

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> str:
        metrics.count_appliances(agent)
        return generate_latest(metrics.registry).decode()

    # --- networks ----------------------------------------------------------------------

    @app.get("/v1/networks")
    def list_networks(observe: bool = True) -> dict[str, Any]:
        """Every network; `observe=false`: the stored specs only (cheap at scale)."""
        if not observe:
            ids = agent.store.ids("networks")
            return {
                "networks": [{"id": n, **agent.network(n).model_dump(mode="json")} for n in ids]
            }
        return {"networks": [agent.observe_network(n) for n in agent.store.ids("networks")]}

    @app.put("/v1/networks/{network_id}")
    def put_network(network_id: ObjectId, spec: NetworkSpec, response: Response) -> dict[str, Any]:
        _created(response, agent.put_network(network_id, spec))
        return agent.observe_network(network_id)

    @app.get("/v1/networks/{network_id}")
    def get_network(network_id: ObjectId) -> dict[str, Any]:
        return agent.observe_network(network_id)

    @app.delete("/v1/networks/{network_id}", status_code=204)
    def delete_network(network_id: ObjectId) -> None:
        agent.delete_network(network_id)

    # --- ports -------------------------------------------------------------------------

    @app.get("/v1/ports")
    def list_ports() -> dict[str, Any]:
        return {"ports": [agent.observe_port(p) for p in agent.store.ids("ports")]}

    @app.put("/v1/ports/{port_id}")
    def put_port(port_id: ObjectId, spec: PortSpec, response: Response) -> dict[str, Any]:
        _created(response, agent.put_port(port_id, spec))
        return agent.observe_port(port_id)

    @app.get("/v1/ports/{port_id}")
    def get_port(port_id: ObjectId) -> dict[str, Any]:
        return agent.observe_port(port_id)

    @app.delete("/v1/ports/{port_id}", status_code=204)
    def delete_port(port_id: ObjectId) -> None:
        agent.delete_port(port_id)

    # --- security groups and address sets ----------------------------------------------

    @app.get("/v1/security-groups")
    def list_security_groups() -> dict[str, Any]:
        return {
            "security_groups": [
                {"id": g, **spec.model_dump(mode="json")}
                for g, spec in sorted(agent.security.groups().items())
            ]
        }

    @app.put("/v1/security-groups/{group_id}")
    def put_security_group(
        group_id: ObjectId, spec: SecurityGroupSpec, response: Response
    ) -> dict[str, Any]:
        _created(response, agent.put_security_group(group_id, spec))
        return {"id": group_id, **spec.model_dump(mode="json")}

    @app.delete("/v1/security-groups/{group_id}", status_code=204)
    def delete_security_group(group_id: ObjectId) -> None:
        agent.delete_security_group(group_id)

    @app.get("/v1/address-sets")
    def list_address_sets() -> dict[str, Any]:
        held = {s: agent.security.address_set(s) for s in agent.store.ids("address-sets")}
        return {
            "address_sets": [
                {"id": s, **spec.model_dump(mode="json")}
                for s, spec in sorted(held.items())
                if spec is not None
            ]
        }

    @app.put("/v1/address-sets/{set_id}")
    def put_address_set(
        set_id: ObjectId, spec: AddressSetSpec, response: Response
    ) -> dict[str, Any]:
        _created(response, agent.put_address_set(set_id, spec))
        return {"id": set_id, **spec.model_dump(mode="json")}

    @app.delete("/v1/address-sets/{set_id}", status_code=204)
    def delete_address_set(set_id: ObjectId) -> None:
        agent.delete_address_set(set_id)

    # --- appliances --------------------------------------------------------------------

    @app.get("/v1/appliances")
    def list_appliances(observe: bool = True) -> dict[str, Any]:
        """Every appliance; `observe=false`: what the agent recorded of each
        (id, epoch, generation, config hash), without looking at the host:
        the orchestrator's batched resync."""
        if not observe:
            return {"appliances": agent.recorded_appliances()}
        return {"appliances": agent.observe_appliances()}

    def apply_body(
        appliance_id: str, body: bytes, response: Response, epoch: int
    ) -> dict[str, Any]:
        started = time.monotonic()
        # The body the config in force came from, byte for byte, is not even
        # parsed again (a router with 10,000 floating IPs takes a tenth of a
        # second to parse, and as long to hash).
        digest = hashlib.sha256(body).hexdigest()
        with recording() as spent:
            try:
                found = agent.put_unchanged(appliance_id, digest, epoch, body)
                if found is not None:
                    result, observed = found
                    new = False
                else:
                    with phase("parse"):
                        config = _parse_config(body)
                    new, result, observed = agent.put_appliance(
                        appliance_id, config, epoch, digest, body
                    )
            except ApplyFailed:
                metrics.applies.labels("failed").inc()
                raise
            except RequestValidationError:
                metrics.failures.labels("invalid").inc()
                raise
            finally:
                metrics.observe_phases(spent)
        metrics.applies.labels("changed" if result.changed else "unchanged").inc()
        if result.rebuilt:
            metrics.rebuilds.inc()
        metrics.apply_seconds.observe(time.monotonic() - started)
        _created(response, new)
        return {**observed, "changed": result.changed, "actions": result.actions}

    @app.put(
        "/v1/appliances/{appliance_id}",
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "An appliance config (docs/appliance-config.md)",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def put_appliance(
        appliance_id: ObjectId, request: Request, response: Response, epoch: Epoch = 0
    ) -> dict[str, Any]:
        body = await request.body()
        return await run_in_threadpool(apply_body, appliance_id, body, response, epoch)

    @app.get("/v1/appliances/{appliance_id}")
    def get_appliance(appliance_id: ObjectId) -> dict[str, Any]:
        return agent.observe_appliance(appliance_id)

    @app.get("/v1/appliances/{appliance_id}/rendered")
    def get_rendered(appliance_id: ObjectId) -> dict[str, Any]:
        return agent.rendered(appliance_id)

    @app.delete("/v1/appliances/{appliance_id}", status_code=204)
    def delete_appliance(appliance_id: ObjectId, epoch: Epoch = 0) -> None:
        agent.delete_appliance(appliance_id, epoch)

    @app.put("/v1/appliances/{appliance_id}/hold", status_code=204)
    def hold_appliance(appliance_id: ObjectId, epoch: Epoch = 0) -> None:
        """An operator debugs it: the agent repairs nothing on its own."""
        agent.hold(appliance_id, True, epoch)

    @app.delete("/v1/appliances/{appliance_id}/hold", status_code=204)
    def release_appliance(appliance_id: ObjectId, epoch: Epoch = 0) -> None:
        agent.hold(appliance_id, False, epoch)

    @app.put("/v1/appliances/{appliance_id}/demote", status_code=204)
    def demote_appliance(appliance_id: ObjectId, epoch: Epoch = 0) -> None:
        """An HA member found active beside its peer (a split brain): it
        gives up the role until its peer answers on the HA network again."""
        agent.demote(appliance_id, epoch)

    return app
