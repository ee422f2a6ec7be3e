"""One validation, two doors: whatever the tenant API accepts, the appliance
serves. Random sequences of Neutron calls — networks, subnets of every kind,
ports with chosen MACs and addresses, routers with gateways, interfaces,
extra routes and floating IPs — and then every router the API let be made
must plan into an appliance config that the schema, the semantic checks and
the real tools (`nft -c`, `dnsmasq --test`, `radvd --configtest`) accept: a
router never reaches ERROR over input the API let in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from astara.api.app import create_app
from astara.api.bootstrap import ensure_admin
from astara.appliance.checks import tool_checks
from astara.appliance.render import render
from astara.appliance.schema import validate_semantics
from astara.db.engine import make_engine, sqlite_url
from astara.db.migrate import upgrade
from astara.db.models import Router
from astara.drivers import dhcp as dhcp_driver
from astara.drivers import router as driver
from tests.component.conftest import NOW, Api
from tests.unit.validators import scratch_netns

pytestmark = pytest.mark.root  # nft -c talks to the kernel, in a scratch namespace

V4_CIDRS = [
    "10.0.0.0/24",
    "10.0.1.0/29",
    "10.0.2.0/30",
    "10.0.3.0/31",
    "10.0.4.4/32",
    "192.0.2.0/24",
    "224.0.0.0/24",
    "127.0.0.0/24",
    "169.254.0.0/24",
    "0.0.0.0/24",
    "10.0.0.0/16",
]
V6_CIDRS = [
    "2001:db8:1::/64",
    "2001:db8:2::/64",
    "2001:db8:3::/120",
    "2001:db8:4::/127",
    "fe80::/64",
    "ff02::/64",
    "::/64",
    "2001:db8::/48",
]
MODES = [None, "slaac", "dhcpv6-stateful", "dhcpv6-stateless"]
ADDRESSES = [
    "10.0.0.1",
    "10.0.0.5",
    "10.0.0.254",
    "10.0.1.1",
    "10.0.2.1",
    "10.0.3.0",
    "192.0.2.1",
    "198.51.100.1",
    "198.51.100.7",
    "224.0.0.5",
    "2001:db8:1::1",
    "2001:db8:1::",
    "2001:db8:2::5",
    "fe80::1",
    "::1",
]
MACS = [
    None,
    "fa:16:3e:00:00:01",
    "FA-16-3E-00-00-02",
    "01:00:5e:00:00:01",
    "33:33:00:00:00:01",
    "02:00:00:00:00:00",
    "fa:16:3e:00:00:01",
]
PREFIXES = ["0.0.0.0/0", "::/0", "10.0.0.0/24", "172.16.0.0/16", "2001:db8:9::/64", "10.9.0.0/24"]


def route() -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries(
        {"destination": st.sampled_from(PREFIXES), "nexthop": st.sampled_from(ADDRESSES)}
    )


def v4_body() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"ip_version": st.just(4), "cidr": st.sampled_from(V4_CIDRS)},
        optional={
            "gateway_ip": st.none() | st.sampled_from(ADDRESSES),
            "enable_dhcp": st.booleans(),
            "dns_nameservers": st.lists(st.sampled_from(ADDRESSES), max_size=3),
            "host_routes": st.lists(route(), max_size=2),
        },
    )


def subnet_body() -> st.SearchStrategy[dict[str, Any]]:
    v6 = st.fixed_dictionaries(
        {"ip_version": st.just(6), "cidr": st.sampled_from(V6_CIDRS)},
        optional={
            "gateway_ip": st.none() | st.sampled_from(ADDRESSES),
            "enable_dhcp": st.booleans(),
            "ipv6_ra_mode": st.sampled_from(MODES),
            "ipv6_address_mode": st.sampled_from(MODES),
            "dns_nameservers": st.lists(st.sampled_from(ADDRESSES), max_size=3),
            "host_routes": st.lists(route(), max_size=2),
        },
    )
    return v4_body() | v6


@st.composite
def firewall_rule(draw: st.DrawFn) -> dict[str, Any]:
    """A FWaaS rule body, mostly one the API takes (now and then one whose
    fields disagree, which it refuses)."""
    version = draw(st.sampled_from([4, 6]))
    addresses = (
        ["10.0.0.5", "192.0.2.0/24", "10.0.0.1/8"]
        if version == 4
        else ["2001:db8::/64", "2001:db8::1", "fd00::/8"]
    )
    protocol = draw(st.sampled_from([None, "tcp", "udp", "icmp", "ipv6-icmp", "sctp", "dccp"]))
    body: dict[str, Any] = {
        "action": draw(st.sampled_from(["allow", "deny", "reject"])),
        "ip_version": version,
        "protocol": protocol,
        "enabled": draw(st.booleans() | st.just(True)),
    }
    for side in ("source_ip_address", "destination_ip_address"):
        body[side] = draw(st.none() | st.sampled_from(addresses))
    if protocol in ("tcp", "udp") or draw(st.integers(0, 9)) == 0:
        body["destination_port"] = draw(st.none() | st.sampled_from(["80", "1000:2000", "0"]))
        body["source_port"] = draw(st.none() | st.sampled_from(["53", "1:65535"]))
    return body


FIREWALL = st.tuples(
    st.just("firewall"),
    st.integers(0, 2),
    st.lists(firewall_rule(), max_size=4),
    st.lists(firewall_rule(), max_size=2),
    st.booleans(),
)
# One step of a scenario: (what, arguments). Objects are named by index into
# what the scenario made so far, so steps can refer to earlier ones.
STEP = st.one_of(
    st.tuples(st.just("network"), st.booleans()),
    st.tuples(st.just("subnet"), st.integers(0, 3), subnet_body()),
    st.tuples(
        st.just("port"),
        st.integers(0, 3),
        st.sampled_from(MACS),
        st.none() | st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=2),
    ),
    st.tuples(st.just("router"), st.booleans()),
    st.tuples(st.just("gateway"), st.integers(0, 2), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("interface"), st.integers(0, 2), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("routes"), st.integers(0, 2), st.lists(route(), max_size=3)),
    st.tuples(st.just("floatingip"), st.integers(0, 3), st.integers(0, 5)),
    st.tuples(st.just("ungateway"), st.integers(0, 2)),
    st.tuples(st.just("uninterface"), st.integers(0, 2), st.integers(0, 5)),
    st.tuples(st.just("unport"), st.integers(0, 5)),
    st.tuples(st.just("router_state"), st.integers(0, 2), st.booleans()),
    FIREWALL,
)


@st.composite
def scenarios(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """A router between an external network and a tenant network, each with
    random subnets, random ports on the tenant network, interfaces to some of
    its subnets, random extra routes and floating IPs; then random steps."""
    steps: list[tuple[Any, ...]] = [("network", True), ("network", False)]
    # Each network's first subnet is an ordinary IPv4 one (with random
    # settings), so that most examples get as far as a running appliance; a
    # gateway needs an IPv4 address.
    external_subnets = 0
    for network, cidr in ((0, "198.51.100.0/24"), (1, "10.0.0.0/24")):
        first = draw(v4_body())
        extra = draw(st.integers(0, 2))
        steps.append(("subnet", network, {**first, "cidr": cidr}))
        steps += [("subnet", network, draw(subnet_body())) for _ in range(extra)]
        external_subnets = external_subnets or 1 + extra
    up = draw(st.sampled_from([True, True, True, False]))
    steps += [("router", up), ("gateway", 0, 0, draw(st.booleans()))]
    steps += [
        (
            "port",
            1,
            draw(st.sampled_from(MACS)),
            draw(st.none() | st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=2)),
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    # Interfaces to the tenant network's subnets (they come after the external ones).
    count = draw(st.integers(1, 3))
    steps += [("interface", 0, external_subnets + i, False) for i in range(count)]
    if draw(st.booleans()):
        steps.append(draw(FIREWALL))
    steps += draw(st.lists(STEP, max_size=8))
    return steps


# What the module's one project makes more of than its default quotas allow.
LIMITED = (
    "network",
    "subnet",
    "port",
    "router",
    "floatingip",
    "firewall_group",
    "firewall_policy",
    "firewall_rule",
)


class Scenario:
    """The objects one example made through the API, by kind."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.made: dict[str, list[dict[str, Any]]] = {
            k: [] for k in ("network", "subnet", "port", "router")
        }

    def pick(self, kind: str, index: int) -> dict[str, Any] | None:
        found = self.made[kind]
        return found[index % len(found)] if found else None

    def create(self, collection: str, member: str, body: dict[str, Any]) -> None:
        response = self.api("POST", f"/v2.0/{collection}", {member: body})
        note(f"POST {collection} {body} -> {response.status_code} {response.text[:300]}")
        assert response.status_code < 500, response.text
        if response.status_code == 201 and member in self.made:
            self.made[member].append(response.json()[member])

    def put(self, path: str, body: dict[str, Any]) -> None:
        response = self.api("PUT", path, body)
        note(f"PUT {path} {body} -> {response.status_code} {response.text[:300]}")
        assert response.status_code < 500, response.text

    def firewall(self, router_id: str, ingress: list[Any], egress: list[Any], up: bool) -> None:
        """A firewall group on the router's interfaces, with a policy each way."""
        query = {"device_id": router_id, "device_owner": "network:router_interface"}
        ports = [p["id"] for p in self.api("GET", "/v2.0/ports", params=query).json()["ports"]]
        policies = []
        for rules in (ingress, egress):
            ids = []
            for body in rules:
                made = self.api("POST", "/v2.0/fwaas/firewall_rules", {"firewall_rule": body})
                note(f"POST firewall rule {body} -> {made.status_code} {made.text[:200]}")
                assert made.status_code < 500, made.text
                if made.status_code == 201:
                    ids.append(made.json()["firewall_rule"]["id"])
            body = {"firewall_rules": ids}
            made = self.api("POST", "/v2.0/fwaas/firewall_policies", {"firewall_policy": body})
            assert made.status_code == 201, made.text
            policies.append(made.json()["firewall_policy"]["id"])
        body = {
            "ports": ports,
            "ingress_firewall_policy_id": policies[0],
            "egress_firewall_policy_id": policies[1] if egress else None,
            "admin_state_up": up,
        }
        self.create("fwaas/firewall_groups", "firewall_group", body)

    def run(self, step: tuple[Any, ...]) -> None:
        kind, *args = step
        if kind == "network":
            self.create("networks", "network", {"router:external": args[0]})
        elif kind == "subnet" and (network := self.pick("network", args[0])):
            self.create("subnets", "subnet", {"network_id": network["id"], **args[1]})
        elif kind == "port" and (network := self.pick("network", args[0])):
            body: dict[str, Any] = {"network_id": network["id"]}
            if args[1] is not None:
                body["mac_address"] = args[1]
                # An instance's port: the metadata service answers for it.
                body |= {"device_id": f"vm-{len(self.made['port'])}", "device_owner": "compute:x"}
            if args[2] is not None:
                body["fixed_ips"] = [{"ip_address": a} for a in args[2]]
            self.create("ports", "port", body)
        elif kind == "router":
            self.create("routers", "router", {"admin_state_up": args[0]})
        elif kind == "gateway" and (router := self.pick("router", args[0])):
            network = self.pick("network", args[1])
            info = {"network_id": network["id"], "enable_snat": args[2]} if network else {}
            self.put(f"/v2.0/routers/{router['id']}", {"router": {"external_gateway_info": info}})
        elif kind == "interface" and (router := self.pick("router", args[0])):
            by, target = (
                ("port", self.pick("port", args[1]))
                if args[2]
                else (
                    "subnet",
                    self.pick("subnet", args[1]),
                )
            )
            if target is not None:
                self.put(
                    f"/v2.0/routers/{router['id']}/add_router_interface",
                    {f"{by}_id": target["id"]},
                )
        elif kind == "routes" and (router := self.pick("router", args[0])):
            self.put(f"/v2.0/routers/{router['id']}", {"router": {"routes": args[1]}})
        elif kind == "ungateway" and (router := self.pick("router", args[0])):
            body = {"router": {"external_gateway_info": {}}}
            self.put(f"/v2.0/routers/{router['id']}", body)
        elif kind == "uninterface" and (router := self.pick("router", args[0])):
            if (target := self.pick("subnet", args[1])) is not None:
                self.put(
                    f"/v2.0/routers/{router['id']}/remove_router_interface",
                    {"subnet_id": target["id"]},
                )
        elif kind == "unport" and (port := self.pick("port", args[0])):
            response = self.api("DELETE", f"/v2.0/ports/{port['id']}")
            note(f"DELETE port -> {response.status_code}")
            assert response.status_code < 500, response.text
        elif kind == "router_state" and (router := self.pick("router", args[0])):
            self.put(f"/v2.0/routers/{router['id']}", {"router": {"admin_state_up": args[1]}})
        elif kind == "firewall" and (router := self.pick("router", args[0])):
            self.firewall(router["id"], args[1], args[2], args[3])
        elif kind == "floatingip":
            network = self.pick("network", args[0])
            port = self.pick("port", args[1])
            if network is not None:
                body = {"floating_network_id": network["id"]}
                if port is not None:
                    body["port_id"] = port["id"]
                self.create("floatingips", "floatingip", body)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    made = make_engine(sqlite_url(tmp_path_factory.mktemp("db")))
    upgrade(made)
    yield made
    made.dispose()


@pytest.fixture(scope="module")
def admin(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Api:
    token = ensure_admin(engine, tmp_path_factory.mktemp("state"), "http://testserver", NOW)
    api = Api(TestClient(create_app(engine)), token)
    own = api("GET", "/v2.0/quotas/project").json()["project"]["project_id"]
    limits = dict.fromkeys(LIMITED, -1)
    assert api("PUT", f"/v2.0/quotas/{own}", {"quota": limits}).status_code == 200
    return api


@pytest.fixture(scope="module")
def checker_netns() -> Iterator[str]:
    with scratch_netns() as name:
        yield name


@settings(
    max_examples=120,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenarios())
def test_every_router_the_api_accepts_is_served(
    admin: Api, engine: Engine, checker_netns: str, tmp_path: Path, steps: list[tuple[Any, ...]]
) -> None:
    scenario = Scenario(admin)
    for step in steps:
        scenario.run(step)
    ids = [r["id"] for r in scenario.made["router"]]
    with Session(engine) as session:
        plans = [
            driver.plan(session, r)
            for r in session.scalars(select(Router).where(Router.id.in_(ids)))
        ]
        # The networks' DHCP appliances, too (a schema refusal raises in plan).
        plans += [dhcp_driver.plan(session, n["id"]) for n in scenario.made["network"]]
        for plan in plans:
            if plan.config is None:
                event("no appliance")
                continue
            event(f"a {plan.config.kind} appliance, {len(plan.config.interfaces)} interfaces")
            note(plan.config.model_dump_json(indent=1))
            mtus = {network_id: need.mtu for network_id, need in plan.networks.items()}
            assert validate_semantics(plan.config, set(mtus), mtus) == []
            rendered = render(plan.config, tmp_path, mtus)
            assert tool_checks(rendered, checker_netns) == []
