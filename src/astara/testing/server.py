"""A live `astara serve` for tests and benchmarks, on a free local port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from astara.testing.net import free_ports, wait_until

BIN = Path(sys.executable).parent


class Server:
    """`astara serve` in `state_dir`. Without `prefix` it serves the API only
    (no agent, no orchestrator); with one it runs everything, its local agent
    making only objects under that prefix. `role`: `--role` (its agent and
    coordination in `extra`), instead of either."""

    def __init__(
        self, state_dir: Path, prefix: str | None = None, *extra: str, role: str | None = None
    ) -> None:
        # Its own control listener port too, so servers can run side by side.
        self.port, self.control_port = free_ports(2)
        self.state_dir = state_dir
        self.prefix = prefix
        self.extra = extra
        self.role = role
        self.url = f"http://127.0.0.1:{self.port}"
        self.control_url = f"https://127.0.0.1:{self.control_port}"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.role is not None:
            roles = ["--role", self.role, "--log-level", "info"]
        elif self.prefix is None:
            roles = ["--role", "api"]
        else:
            roles = ["--prefix", self.prefix, "--log-level", "info"]
        return [
            str(BIN / "astara"),
            "serve",
            "--state-dir",
            str(self.state_dir),
            "--listen",
            f"127.0.0.1:{self.port}",
            *roles,
            *(
                []
                if "--control-listen" in self.extra
                else ["--control-listen", f"127.0.0.1:{self.control_port}"]
            ),
            *self.extra,
        ]

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / "serve.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def answering() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"astara serve exited: {self.log()[-3000:]}")
            try:
                return httpx.get(self.url, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answering, 60, 0.1, "astara serve to answer")

    def log(self) -> str:
        path = self.state_dir / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "OS_CLIENT_CONFIG_FILE": str(self.state_dir / "clouds.yaml")}


def open_security_group(create: Callable[..., dict[str, Any]], **owner: Any) -> str:
    """A security group that lets any traffic in (IPv4 and IPv6), in the
    owner's project: what a tenant makes for a workload the outside must
    reach. `create(collection, member, **fields)` makes one resource."""
    made: str = create("security-groups", "security_group", name="open", **owner)["id"]
    for ethertype in ("IPv4", "IPv6"):
        create(
            "security-group-rules",
            "security_group_rule",
            security_group_id=made,
            direction="ingress",
            ethertype=ethertype,
        )
    return made


class Cloud:
    """A running server's tenant API as its admin, plus the operators' API:
    what the root tests and the benchmarks drive it with."""

    def __init__(self, server: Server, timeout_s: float = 120) -> None:
        self.server = server
        token = (server.state_dir / "admin-token").read_text().strip()
        self.http = httpx.Client(
            base_url=server.url, headers={"X-Auth-Token": token}, timeout=timeout_s
        )

    def __call__(self, method: str, path: str, body: Any = None, ok: int | None = None) -> Any:
        """One request; its JSON. Fails on an error status, or on any other
        status than `ok` when given."""
        response = self.http.request(method, path, json=body)
        wrong = response.status_code != ok if ok is not None else response.status_code >= 400
        if wrong:
            raise AssertionError((method, path, response.status_code, response.text))
        return response.json() if response.content else None

    def create(self, collection: str, member: str, **fields: Any) -> dict[str, Any]:
        created: dict[str, Any] = self("POST", f"/v2.0/{collection}", {member: fields}, 201)[member]
        return created

    def router(self, router_id: str) -> dict[str, Any]:
        shown: dict[str, Any] = self("GET", f"/astara/v1/routers/{router_id}")["router"]
        return shown

    def routers(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self("GET", "/astara/v1/routers")["routers"]
        return listed

    def wait_active(self, router_id: str, timeout_s: float = 60) -> dict[str, Any]:
        def active() -> dict[str, Any] | None:
            shown = self.router(router_id)
            return shown if shown["state"] == "active" and shown["status"] == "ACTIVE" else None

        shown = wait_until(active, timeout_s, 0.05, f"router {router_id} to be ACTIVE")
        assert shown is not None
        return shown

    def public_network(
        self, cidr: str = "198.51.100.0/24", outside: str = "198.51.100.1"
    ) -> tuple[dict[str, Any], str]:
        """An external network with an IPv4 subnet (no DHCP), and a host on
        it at `outside` that stands in for the Internet (unfiltered): the
        network and that host's namespace."""
        public = self.create("networks", "network", name="public", **{"router:external": True})
        self.create(
            "subnets", "subnet", network_id=public["id"], cidr=cidr, ip_version=4, enable_dhcp=False
        )
        port = self.create(
            "ports",
            "port",
            network_id=public["id"],
            name="outside",
            fixed_ips=[{"ip_address": outside}],
            port_security_enabled=False,
        )
        namespace = f"{self.server.prefix}-outside"
        self.plug(port["id"], namespace)
        return public, namespace

    def plug(self, port_id: str, namespace: str) -> None:
        self("PUT", f"/astara/v1/ports/{port_id}/binding", {"netns": namespace})
        wait_until(
            lambda: self("GET", f"/v2.0/ports/{port_id}")["port"]["status"] == "ACTIVE",
            60,
            0.05,
            f"port {port_id} to be plugged",
        )

    def network(
        self, name: str, cidr: str, **subnet_fields: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A network and an IPv4 subnet on it: (network, subnet)."""
        network = self.create("networks", "network", name=name)
        fields = {"network_id": network["id"], "cidr": cidr, "ip_version": 4, **subnet_fields}
        return network, self.create("subnets", "subnet", **fields)

    def workload_network(
        self, name: str, cidr: str, *workloads: str, **subnet_fields: Any
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """A network with a subnet without DHCP (and `subnet_fields`), and a
        workload per name in its namespace `<prefix>-<name>` (no port
        security): the subnet, and each workload's address."""
        network, subnet = self.network(name, cidr, enable_dhcp=False, **subnet_fields)
        addresses = {}
        for workload in workloads:
            fields = {"network_id": network["id"], "name": workload, "port_security_enabled": False}
            port = self.create("ports", "port", **fields)
            self.plug(port["id"], f"{self.server.prefix}-{workload}")
            addresses[workload] = port["fixed_ips"][0]["ip_address"]
        return subnet, addresses

    def orchestrator(self) -> dict[str, Any]:
        status: dict[str, Any] = self("GET", "/astara/v1/orchestrator")["orchestrator"]
        return status

    def wait_resyncs(self, count: int = 1, timeout_s: float = 120) -> None:
        """Until `count` more full resyncs have run (every router looked at)."""
        target = self.orchestrator()["resyncs"] + count
        wait_until(
            lambda: self.orchestrator()["resyncs"] >= target and self.orchestrator()["busy"] == 0,
            timeout_s,
            0.1,
            f"{count} more resync(s)",
        )

    def unlimited_quotas(self) -> None:
        own = self("GET", "/v2.0/quotas/project")["project"]["project_id"]
        names = ("network", "subnet", "port", "router", "floatingip")
        self("PUT", f"/v2.0/quotas/{own}", {"quota": dict.fromkeys(names, -1)})

    def routed_network(
        self, name: str, cidr: str, external_network_id: str, **owner: Any
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """A network and subnet behind a new router with a gateway on the
        external network: (network, subnet, router)."""
        network = self.create("networks", "network", name=name, **owner)
        subnet = self.create(
            "subnets", "subnet", network_id=network["id"], cidr=cidr, ip_version=4, **owner
        )
        router = self.create(
            "routers",
            "router",
            name=f"r-{name}",
            external_gateway_info={"network_id": external_network_id},
            **owner,
        )
        self(
            "PUT",
            f"/v2.0/routers/{router['id']}/add_router_interface",
            {"subnet_id": subnet["id"]},
        )
        return network, subnet, router
