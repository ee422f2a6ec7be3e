"""IPv6 subnet modes from the tenant API to what the orchestrator asks for:
the router's appliance config (RA mode, DHCPv6, static hosts) and the agent's
spec for a bound workload port (DHCPv6 and/or SLAAC instead of an address)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from astara.appliance.schema import validate_semantics
from astara.db.models import Network, Port, PortBinding, Router
from astara.drivers import appliance as appliance_driver
from astara.drivers import router as driver
from astara.orchestrator.l2 import _port_spec
from tests.component.conftest import Api


def _subnet(api: Api, network_id: str, cidr: str, mode: str | None, version: int) -> str:
    body: dict[str, Any] = {"network_id": network_id, "ip_version": version, "cidr": cidr}
    if mode is not None:
        body.update(ipv6_ra_mode=mode, ipv6_address_mode=mode)
    response = api("POST", "/v2.0/subnets", {"subnet": body})
    assert response.status_code == 201, response.text
    subnet_id: str = response.json()["subnet"]["id"]
    return subnet_id


def _dual_stack(api: Api, mode: str) -> dict[str, Any]:
    """A network with an IPv4 subnet and an IPv6 one in `mode`, both on a
    router, and a workload port bound with DHCP."""
    network = api.create_network(name=f"net-{mode}")
    v4 = _subnet(api, network["id"], "10.0.0.0/24", None, 4)
    v6 = _subnet(api, network["id"], "2001:db8:7::/64", mode, 6)
    router = api("POST", "/v2.0/routers", {"router": {"name": "r"}}).json()["router"]
    # One router port with both subnets: the appliance has one interface per network.
    fixed_ips = [
        {"subnet_id": v4, "ip_address": "10.0.0.1"},
        {"subnet_id": v6, "ip_address": "2001:db8:7::1"},
    ]
    body = {"port": {"network_id": network["id"], "fixed_ips": fixed_ips}}
    response = api("POST", "/v2.0/ports", body)
    assert response.status_code == 201, response.text
    router_port = response.json()["port"]["id"]
    response = api(
        "PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"port_id": router_port}
    )
    assert response.status_code == 200, response.text
    response = api("POST", "/v2.0/ports", {"port": {"network_id": network["id"]}})
    assert response.status_code == 201, response.text
    port: dict[str, Any] = response.json()["port"]
    body = {"netns": "ast-w1", "dhcp": True}
    response = api("PUT", f"/astara/v1/ports/{port['id']}/binding", body)
    assert response.status_code == 200, response.text
    return {"router": router, "port": port, "v6_subnet": v6}


def _plan_and_spec(engine: Engine, router_id: str, port_id: str) -> tuple[Any, dict[str, Any]]:
    with Session(engine) as session:
        router = session.get(Router, router_id)
        assert router is not None
        plan = driver.plan(session, router)
        port = session.get(Port, port_id)
        assert port is not None
        binding = session.scalars(select(PortBinding).where(PortBinding.port_id == port_id)).one()
        network = session.get(Network, port.network_id)
        assert network is not None
        return plan.config, _port_spec(session, binding, port, network)


@pytest.mark.parametrize(
    ("mode", "enable_dhcp", "dhcpv6", "slaac", "v6_host"),
    [
        ("slaac", False, False, True, False),
        ("dhcpv6-stateless", True, True, True, False),
        ("dhcpv6-stateful", True, True, False, True),
    ],
)
def test_ipv6_modes_reach_the_appliance_and_the_workload(
    admin: Api,
    engine: Engine,
    mode: str,
    enable_dhcp: bool,
    dhcpv6: bool,
    slaac: bool,
    v6_host: bool,
) -> None:
    made = _dual_stack(admin, mode)
    config, spec = _plan_and_spec(engine, made["router"]["id"], made["port"]["id"])
    assert config is not None and validate_semantics(config) == []
    (v6,) = [s for s in config.subnets if s.cidr.version == 6]
    assert (v6.ipv6_ra_mode, v6.enable_dhcp) == (mode, enable_dhcp)

    port = made["port"]
    fixed = {a["subnet_id"]: a["ip_address"] for a in port["fixed_ips"]}
    hosts = [
        (str(h.ip_address), h.hostname) for h in config.dhcp_hosts if h.mac == port["mac_address"]
    ]
    v6_address = fixed[made["v6_subnet"]]
    v4_address = next(a for s, a in fixed.items() if s != made["v6_subnet"])
    expected = [(v4_address, appliance_driver.hostname(v4_address))]
    if v6_host:
        # The stateful lease is the address the API allocated to the port.
        expected.append((v6_address, appliance_driver.hostname(v6_address)))
    assert sorted(hosts) == sorted(expected)

    # The workload asks for IPv6 the mode's way, not for a static address.
    assert (spec["dhcp"], spec["dhcpv6"], spec["slaac"]) == (True, dhcpv6, slaac)
    assert spec["addresses"] == [] and spec["routes"] == []


def test_a_binding_without_dhcp_keeps_static_addresses(admin: Api, engine: Engine) -> None:
    made = _dual_stack(admin, "dhcpv6-stateful")
    port_id = made["port"]["id"]
    response = admin("PUT", f"/astara/v1/ports/{port_id}/binding", {"netns": "ast-w1"})
    assert response.status_code == 200, response.text
    _, spec = _plan_and_spec(engine, made["router"]["id"], port_id)
    assert (spec["dhcp"], spec["dhcpv6"], spec["slaac"]) == (False, False, False)
    assert sorted(a.split("/")[0] for a in spec["addresses"]) == sorted(
        a["ip_address"] for a in made["port"]["fixed_ips"]
    )
