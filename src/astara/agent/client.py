"""A small client for the agent API (used by the CLI, tests and benchmarks)."""

from __future__ import annotations

from typing import Any

import httpx

from astara.agent.listen import parse_listen
from astara.agent.tls import ClientTLS, client_context

CONNECT_TIMEOUT_S = 3.0


class AgentError(RuntimeError):
    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        try:
            self.body: Any = response.json()
        except ValueError:
            self.body = response.text
        super().__init__(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {self.body}"
        )


class AgentClient:
    """An agent at `unix:PATH`, `tcp:HOST:PORT` (loopback, no TLS) or
    `https://ADDR:PORT` (a joined host: mutual TLS with `tls`, the
    controller's certificate; the agent's must carry ADDR)."""

    def __init__(
        self,
        listen: str,
        timeout_s: float = 120.0,
        tls: ClientTLS | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        """`timeout_s`: for an answer (an apply may take long); a host that
        does not even accept the connection (dead, cut off) is given up on
        after `connect_timeout_s`, so nothing waits long on it."""
        self.address = listen
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, connect_timeout_s))
        if listen.startswith("https://"):
            if tls is None or tls.cert is None:
                raise ValueError(f"{listen}: an https agent needs tls=ClientTLS(ca, cert, key)")
            self.http = httpx.Client(base_url=listen, verify=client_context(tls), timeout=timeout)
            return
        where = parse_listen(listen)
        transport = httpx.HTTPTransport(uds=str(where.path)) if where.path is not None else None
        self.http = httpx.Client(base_url=where.base_url, transport=transport, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        ok: tuple[int, ...] = (200, 201, 204),
        timeout_s: float | None = None,
    ) -> Any:
        extra: dict[str, Any] = {} if timeout_s is None else {"timeout": timeout_s}
        response = self.http.request(method, path, json=body, **extra)
        if response.status_code not in ok:
            raise AgentError(response)
        return response.json() if response.content else None

    def health(self, timeout_s: float | None = None) -> Any:
        return self.request("GET", "/v1/health", timeout_s=timeout_s)

    def networks(self, observe: bool = True) -> list[dict[str, Any]]:
        path = "/v1/networks" if observe else "/v1/networks?observe=false"
        found: list[dict[str, Any]] = self.request("GET", path)["networks"]
        return found

    def ports(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.request("GET", "/v1/ports")["ports"]
        return found

    def appliances(self, observe: bool = True) -> list[dict[str, Any]]:
        path = "/v1/appliances" if observe else "/v1/appliances?observe=false"
        found: list[dict[str, Any]] = self.request("GET", path)["appliances"]
        return found

    def put_network(
        self,
        network_id: str,
        mtu: int = 1500,
        external: bool = False,
        segment: dict[str, Any] | None = None,
    ) -> Any:
        body: dict[str, Any] = {"mtu": mtu, "external": external}
        if segment is not None:
            body["segment"] = segment
        return self.request("PUT", f"/v1/networks/{network_id}", body)

    def delete_network(self, network_id: str) -> None:
        self.request("DELETE", f"/v1/networks/{network_id}")

    def put_port(self, port_id: str, spec: dict[str, Any]) -> Any:
        return self.request("PUT", f"/v1/ports/{port_id}", spec)

    def get_port(self, port_id: str) -> Any:
        return self.request("GET", f"/v1/ports/{port_id}")

    def delete_port(self, port_id: str) -> None:
        self.request("DELETE", f"/v1/ports/{port_id}")

    def put_security_group(self, group_id: str, spec: dict[str, Any]) -> Any:
        return self.request("PUT", f"/v1/security-groups/{group_id}", spec)

    def delete_security_group(self, group_id: str) -> None:
        self.request("DELETE", f"/v1/security-groups/{group_id}", ok=(204, 404))

    def security_groups(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.request("GET", "/v1/security-groups")["security_groups"]
        return found

    def put_address_set(self, set_id: str, spec: dict[str, Any]) -> Any:
        return self.request("PUT", f"/v1/address-sets/{set_id}", spec)

    def delete_address_set(self, set_id: str) -> None:
        self.request("DELETE", f"/v1/address-sets/{set_id}", ok=(204, 404))

    def address_sets(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.request("GET", "/v1/address-sets")["address_sets"]
        return found

    def put_appliance(self, appliance_id: str, config: dict[str, Any], epoch: int = 0) -> Any:
        return self.request("PUT", f"/v1/appliances/{appliance_id}?epoch={epoch}", config)

    def get_appliance(self, appliance_id: str) -> Any:
        return self.request("GET", f"/v1/appliances/{appliance_id}")

    def rendered(self, appliance_id: str) -> Any:
        return self.request("GET", f"/v1/appliances/{appliance_id}/rendered")

    def delete_appliance(self, appliance_id: str, epoch: int = 0) -> None:
        self.request("DELETE", f"/v1/appliances/{appliance_id}?epoch={epoch}")

    def demote_appliance(self, appliance_id: str, epoch: int = 0) -> None:
        """An HA member out of the election until its peer answers again."""
        self.request("PUT", f"/v1/appliances/{appliance_id}/demote?epoch={epoch}")

    def hold_appliance(self, appliance_id: str, held: bool, epoch: int = 0) -> None:
        """Hold (an operator debugs it: no repair on the agent's own) or release."""
        self.request(
            "PUT" if held else "DELETE", f"/v1/appliances/{appliance_id}/hold?epoch={epoch}"
        )
