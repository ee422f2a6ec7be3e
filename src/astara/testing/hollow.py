"""Hollow agents, for benchmarks only: the real agent API, the real join and
mutual TLS, the real bookkeeping (configs, generations, epochs, fencing
state on disk), and no kernel. An appliance is validated, rendered and
hashed like on a real agent, then kept as applied without a namespace; its
observation reports it running. Like Kubernetes' kubemark hollow nodes,
they let one machine show what the orchestrator costs at 10,000 routers on
ten hosts. They never stand in for the real agent in a test of behaviour.

    python -m astara.testing.hollow --join https://CONTROLLER:PORT --token T \
        --name hollow1 --listen tcp:127.0.0.1:PORT --state-dir DIR
"""

from __future__ import annotations

import ipaddress
import logging
import math
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from astara.agent.join import TlsFiles
from astara.agent.main import joined_or_join, serve_tls
from astara.agent.server import create_app
from astara.agent.service import Agent, AgentSettings, NotFound
from astara.appliance.actions import Done, Plan
from astara.appliance.apply import ApplianceManager, Prepared, ValidationFailed
from astara.appliance.render import Rendered
from astara.appliance.render.dnsmasq import dhcp_subnets
from astara.appliance.render.radvd import ra_subnets
from astara.appliance.schema import ApplianceConfig, config_hash, validate_semantics
from astara.model.fabric import NetworkSpec, PortSpec
from astara.naming import appliance_interface

log = logging.getLogger(__name__)


class HollowAppliances(ApplianceManager):
    """Appliances kept as files only: prepared (validated, rendered, hashed)
    like real ones, converged by doing nothing, observed as running."""

    def prepare(self, appliance_id: str, config: ApplianceConfig) -> Prepared:
        mtus = self._network_mtus(config)
        errors = validate_semantics(config, known_networks=set(mtus), network_mtus=mtus)
        if errors:
            raise ValidationFailed(errors)
        return Prepared(config, self._render(appliance_id, config), config_hash(config))

    def unchanged(self, appliance_id: str, config: ApplianceConfig, digest: str | None) -> bool:
        status = self.status(appliance_id)
        if status.config_hash is None or status.last_error:
            return False
        return (digest or config_hash(config)) == status.config_hash

    def _converge(
        self,
        appliance_id: str,
        config: ApplianceConfig,
        rendered: Rendered,
        previous: ApplianceConfig | None,
    ) -> tuple[Plan, list[Done]]:
        self.directory(appliance_id).mkdir(parents=True, exist_ok=True)
        return (), []

    def delete(self, appliance_id: str, config: ApplianceConfig | None = None) -> None:
        shutil.rmtree(self.run_directory(appliance_id), ignore_errors=True)
        shutil.rmtree(self.directory(appliance_id), ignore_errors=True)

    def observe(
        self,
        appliance_id: str,
        config: ApplianceConfig | None = None,
        nftables_verified: bool = False,
    ) -> dict[str, Any]:
        config = config or self.config(appliance_id)
        status = self.status(appliance_id).as_dict()
        interfaces: list[dict[str, Any]] = [
            {
                "name": appliance_interface(i.role.value, i.mac),
                "mac": i.mac,
                "role": i.role.value,
                "network_id": i.network_id,
                "present": True,
                "up": True,
                "mtu": None,
                "counters": {},
            }
            for i in (config.interfaces if config is not None else ())
        ]
        expected = {
            "dnsmasq": bool(config and dhcp_subnets(config)),
            "radvd": bool(config and ra_subnets(config)),
        }
        problems = [status["last_error"]] if status.get("last_error") else []
        return {
            "id": appliance_id,
            "namespace": self.names.appliance_netns(appliance_id),
            "state": "degraded" if problems else "active",
            "problems": problems,
            **status,
            "interfaces": interfaces,
            "daemons": {
                name: {"expected": wanted, "pid": 1 if wanted else None, "running": wanted}
                for name, wanted in expected.items()
            },
            "floating_ips": len(config.floating_ips) if config else 0,
        }

    def rendered_texts(self, appliance_id: str) -> dict[str, Any]:
        config = self.config(appliance_id)
        if config is None:
            return {}
        return {"files": self._render(appliance_id, config).texts(), "nftables_live": ""}


class Checks:
    """When the orchestrator last read each appliance's state, and the
    longest gap between two such reads of each appliance since the last
    reset (a read is a list entry or a GET)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._since = clock()
        self._last: dict[str, float] = {}
        self._longest: dict[str, float] = {}
        self._reads = 0

    def saw(self, appliance_ids: Iterable[str]) -> None:
        now = self._clock()
        with self._lock:
            for appliance_id in appliance_ids:
                gap = now - self._last.get(appliance_id, self._since)
                if gap > self._longest.get(appliance_id, 0.0):
                    self._longest[appliance_id] = gap
                self._last[appliance_id] = now
                self._reads += 1

    def reset(self) -> None:
        with self._lock:
            self._since = self._clock()
            self._last.clear()
            self._longest.clear()
            self._reads = 0

    def report(self, appliance_ids: list[str]) -> dict[str, Any]:
        """Each appliance's longest gap between two reads since the reset,
        counting the time before its first read and since its last one (so
        an appliance never read has the whole window as its gap): the
        longest of all, and the 50th and 99th percentiles over appliances."""
        now = self._clock()
        with self._lock:
            gaps = sorted(
                max(self._longest.get(a, 0.0), now - self._last.get(a, self._since))
                for a in appliance_ids
            )
            return {
                "appliances": len(appliance_ids),
                "unchecked": sum(1 for a in appliance_ids if a not in self._last),
                "reads": self._reads,
                "longest_gap_s": gaps[-1] if gaps else 0.0,
                "gap_p50_s": percentile(gaps, 0.50),
                "gap_p99_s": percentile(gaps, 0.99),
                # Every appliance's gap, for percentiles over several agents.
                "gaps_s": [round(g, 3) for g in gaps],
                "window_s": now - self._since,
            }


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class HollowAgent(Agent):
    """The agent's API and bookkeeping over hollow appliances and networks
    that are stored, never built."""

    def __init__(self, settings: AgentSettings) -> None:
        super().__init__(settings)
        self.appliances = HollowAppliances(
            self.names, settings.state_dir, settings.runtime_dir, self.network_info
        )
        self.checks = Checks()

    def observe_appliance(self, appliance_id: str) -> dict[str, Any]:
        self.checks.saw([appliance_id])
        return super().observe_appliance(appliance_id)

    def recorded_appliances(self) -> list[dict[str, Any]]:
        found = super().recorded_appliances()
        self.checks.saw(a["id"] for a in found)
        return found

    def start(self) -> None:
        pass  # nothing to restore: nothing was built

    def start_watching(self, on_repair: Callable[[str], None] | None = None) -> None:
        pass  # nothing in the kernel to watch

    def observe_network(self, network_id: str) -> dict[str, Any]:
        spec = self.network(network_id)
        return {
            "id": network_id,
            **spec.model_dump(mode="json"),
            "bridge": self.names.bridge(network_id),
            "present": True,
            "mtu": spec.mtu,
            "up": True,
            "members": [],
            "segment_link": None,
        }

    def put_network(self, network_id: str, spec: NetworkSpec) -> bool:
        with self.l2_lock.exclusive():
            new = self.network_info(network_id) is None
            self.store.put("networks", network_id, spec.model_dump(mode="json"))
            return new

    def delete_network(self, network_id: str) -> None:
        with self.l2_lock.exclusive():
            self.network(network_id)
            self.store.delete("networks", network_id)

    def observe_port(self, port_id: str) -> dict[str, Any]:
        return {"id": port_id, **self.port(port_id).spec.model_dump(mode="json"), "present": True}

    def put_port(self, port_id: str, spec: PortSpec) -> bool:
        raise NotFound("hollow agents plug no workload ports")


cli = typer.Typer(add_completion=False, help="A hollow astara-agent (benchmarks only).")


@cli.command()
def serve(
    join: Annotated[str, typer.Option(help="https://CONTROLLER:PORT")],
    token: Annotated[str, typer.Option()],
    name: Annotated[str, typer.Option()],
    listen: Annotated[str, typer.Option(help="tcp:HOST:PORT")],
    state_dir: Annotated[Path, typer.Option()],
    underlay_address: Annotated[str, typer.Option()] = "127.0.0.1",
    physnet: Annotated[str, typer.Option(help="NAME=IFACE (stored, never touched)")] = (
        "public=eth0"
    ),
    log_level: Annotated[str, typer.Option()] = "warning",
) -> None:
    """Join the deployment and serve the agent API over mutual TLS."""
    from astara.agent.listen import parse_listen

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    where = parse_listen(listen, tls=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    physnets = dict([physnet.split("=", 1)])
    files = TlsFiles(state_dir / "tls")
    joined = joined_or_join(
        files,
        join,
        token,
        name,
        f"{where.host}:{where.port}",
        underlay_address,
        physnets,
        "nova",
    )
    settings = AgentSettings(
        state_dir=state_dir.resolve(),
        prefix="hollow",
        run_dir=state_dir.resolve() / "run",
        underlay_address=ipaddress.ip_address(underlay_address),
        physnets=physnets,
        availability_zone="nova",
        fence_after_s=None,
    )
    agent = HollowAgent(settings)
    app = create_app(settings, agent)

    @app.get("/hollow/checks")
    def checks() -> dict[str, Any]:
        return agent.checks.report(agent.appliances.ids())

    @app.post("/hollow/checks/reset")
    def reset() -> dict[str, Any]:
        agent.checks.reset()
        return {}

    serve_tls(app, files, joined, where, log_level)


if __name__ == "__main__":
    cli()
