"""A whole multi-host deployment on one machine, for tests and benchmarks:
`astara serve` in the lab's controller namespace (no local agent), and one
`astara-agent` per lab host, each joined with its own one-time token and
speaking mutual TLS, with its underlay address and its `public` physnet.

The test process reaches the controller's API from inside the controller
namespace (`netns_client`): nothing is added to the root namespace.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from astara.testing.hosts import (
    OUTSIDE,
    PHYSNET,
    LabHost,
    MultiHostLab,
    bin_path,
    netns_client,
)
from astara.testing.net import wait_until

API_PORT = 9696
CONTROL_PORT = 9697
AGENT_PORT = 9443


class Deployment:
    """A controller and the lab's hosts, joined. `api(...)` calls the
    controller's API as the admin."""

    def __init__(
        self,
        lab: MultiHostLab,
        state_dir: Path,
        serve_args: Sequence[str] = (),
        zones: dict[str, str] | None = None,
    ) -> None:
        """`zones`: hosts' availability zones (default: nova)."""
        self.lab = lab
        self.zones = dict(zones or {})
        self.state_dir = state_dir
        self.serve_args = tuple(serve_args)
        self.url = f"http://{lab.controller_address}:{API_PORT}"
        self.control_url = f"https://{lab.controller_address}:{CONTROL_PORT}"
        self.serve: subprocess.Popen[bytes] | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.http: httpx.Client | None = None
        self.token = ""

    # --- the controller -----------------------------------------------------------------

    def start(self, hosts: Sequence[str] | None = None) -> Deployment:
        controller = self.state_dir / "controller"
        controller.mkdir(parents=True, exist_ok=True)
        self.serve = self.lab.spawn(
            self.lab.controller_netns,
            [
                bin_path("astara"),
                "serve",
                "--state-dir",
                str(controller),
                "--listen",
                f"{self.lab.controller_address}:{API_PORT}",
                "--control-listen",
                f"{self.lab.controller_address}:{CONTROL_PORT}",
                "--agent",
                "none",
                "--log-level",
                "info",
                *self.serve_args,
            ],
            controller / "serve.log",
        )
        token_file = controller / "admin-token"
        wait_until(token_file.exists, 60, 0.1, "the controller's admin token")
        self.token = token_file.read_text().strip()
        self.http = netns_client(
            self.lab.controller_netns,
            self.url,
            headers={"X-Auth-Token": self.token},
            timeout=60,
        )

        def answering() -> bool:
            assert self.serve is not None
            if self.serve.poll() is not None:
                raise AssertionError(f"astara serve exited:\n{self.log()}")
            try:
                return self.http is not None and self.http.get("/").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answering, 60, 0.2, "the controller's API")
        for name in hosts if hosts is not None else [h.name for h in self.lab.hosts]:
            self.join(name)
        self.wait_alive(*(hosts if hosts is not None else [h.name for h in self.lab.hosts]))
        return self

    def log(self) -> str:
        path = self.state_dir / "controller" / "serve.log"
        return path.read_text(errors="replace")[-20_000:] if path.exists() else ""

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None
        for process in list(self.agents.values()) + ([self.serve] if self.serve else []):
            if process.poll() is None:
                self.lab.stop(process)

    def api(self, method: str, path: str, body: Any = None, ok: int | None = None) -> Any:
        assert self.http is not None
        response = self.http.request(method, path, json=body)
        expected = ok if ok is not None else (201 if method == "POST" else 200)
        if method == "DELETE" and ok is None:
            expected = 204
        assert response.status_code == expected, (
            method,
            path,
            response.status_code,
            response.text,
        )
        return response.json() if response.content else None

    def create(self, collection: str, member: str, **fields: Any) -> dict[str, Any]:
        created: dict[str, Any] = self.api("POST", f"/v2.0/{collection}", {member: fields})[member]
        return created

    def unlimited_quotas(self) -> None:
        """The admin project may create as much as a benchmark needs."""
        own = self.api("GET", "/v2.0/quotas/project")["project"]["project_id"]
        names = ("network", "subnet", "port", "router", "floatingip")
        self.api("PUT", f"/v2.0/quotas/{own}", {"quota": dict.fromkeys(names, -1)})

    # --- hosts --------------------------------------------------------------------------

    def agent_dir(self, name: str) -> Path:
        return self.state_dir / name

    def join(self, name: str) -> subprocess.Popen[bytes]:
        """A join token, and the host's agent joining with it."""
        token = self.api("POST", "/astara/v1/hosts/join-tokens", {"ttl_s": 600})["token"]
        return self.start_agent(name, ["--join", self.control_url, "--token", token])

    def start_agent(self, name: str, extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        """The host's agent (joined already, unless `extra` joins it)."""
        host = self.lab.host(name)
        directory = self.agent_dir(name)
        directory.mkdir(parents=True, exist_ok=True)
        process = self.lab.spawn(
            host.netns,
            [
                sys.executable,
                "-m",
                "astara.agent",
                "--name",
                name,
                "--listen",
                f"tcp:{host.underlay_address}:{AGENT_PORT}",
                "--advertise",
                f"{host.underlay_address}:{AGENT_PORT}",
                "--underlay-address",
                host.underlay_address,
                "--physnet",
                host.physnet,
                "--availability-zone",
                self.zones.get(name, "nova"),
                "--prefix",
                host.agent_prefix,
                "--state-dir",
                str(directory / "state"),
                "--run-dir",
                str(directory / "run"),
                "--log-level",
                "info",
                *extra,
            ],
            directory / "agent.log",
        )
        self.agents[name] = process
        return process

    def stop_agent(self, name: str) -> None:
        process = self.agents.pop(name, None)
        if process is not None and process.poll() is None:
            self.lab.stop(process)

    def hosts(self) -> dict[str, dict[str, Any]]:
        return {h["name"]: h for h in self.api("GET", "/astara/v1/hosts")["hosts"]}

    def wait_alive(self, *names: str, alive: bool = True, timeout_s: float = 60) -> None:
        def state() -> bool:
            found = self.hosts()
            return all(n in found and bool(found[n]["alive"]) is alive for n in names)

        wait_until(state, timeout_s, 0.2, f"hosts {names} alive={alive}")

    def host(self, name: str) -> LabHost:
        return self.lab.host(name)

    # --- tenants' things ----------------------------------------------------------------

    def public_network(self, cidr: str = "198.51.100.0/24") -> tuple[dict[str, Any], str]:
        """The flat provider network on the `public` physnet (the lab's
        outside host is its gateway), and its subnet's id."""
        network = self.create(
            "networks",
            "network",
            name="public",
            **{
                "router:external": True,
                "provider:network_type": "flat",
                "provider:physical_network": PHYSNET,
            },
        )
        subnet = self.create(
            "subnets",
            "subnet",
            network_id=network["id"],
            cidr=cidr,
            ip_version=4,
            gateway_ip=OUTSIDE,
            allocation_pools=[{"start": "198.51.100.2", "end": "198.51.100.99"}],
            enable_dhcp=False,
        )
        return network, subnet["id"]

    def plug(self, port_id: str, host: str, netns: str, *, dhcp: bool = False) -> dict[str, Any]:
        found: dict[str, Any] = self.api(
            "PUT",
            f"/astara/v1/ports/{port_id}/binding",
            {"netns": netns, "host": host, "dhcp": dhcp},
        )
        return found

    def router(self, router_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.api("GET", f"/astara/v1/routers/{router_id}")["router"]
        return found

    def wait_router(
        self, router_id: str, *, host: str | None = None, timeout_s: float = 60
    ) -> dict[str, Any]:
        """Until the router is active (on `host`, if given)."""

        def ready() -> dict[str, Any]:
            shown = self.router(router_id)
            if shown.get("state") != "active":
                return {}
            if host is not None and shown.get("host") != host:
                return {}
            return shown

        return wait_until(ready, timeout_s, 0.2, f"router {router_id} active on {host}")


@contextmanager
def deployment(
    state_dir: Path,
    hosts: int = 3,
    serve_args: Sequence[str] = (),
    zones: dict[str, str] | None = None,
) -> Iterator[Deployment]:
    """A lab with `hosts` hosts, its controller, and every host joined;
    everything removed afterwards, however the block ends."""
    with MultiHostLab(hosts) as lab:
        found = Deployment(lab, state_dir, serve_args, zones)
        try:
            found.start()
            yield found
        finally:
            found.close()
