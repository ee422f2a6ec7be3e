"""Neutron lists in SQL (issue 10, test 4): filters, sorting and pagination
give what a straightforward in-Python reference gives over the same random
rows, on SQLite and PostgreSQL, and a list costs a bounded number of SQL
statements however many rows it returns."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, event, select, text
from sqlalchemy.orm import Session

from astara.api import floatingips, networks, ports, subnets
from astara.api.app import create_app
from astara.api.attributes import Resource, readable
from astara.api.auth import Caller, TokenCache
from astara.api.bootstrap import ensure_admin
from astara.api.query import Query, parse_query, run_query
from astara.db.engine import make_engine, session_factory
from astara.db.migrate import upgrade
from astara.db.models import (
    ApplianceState,
    FloatingIp,
    Host,
    IpAllocation,
    Network,
    Port,
    PortBinding,
    Router,
    RouterPort,
    Subnet,
)
from astara.testing.postgres import PostgresServer
from tests.component.conftest import NOW, Api

OTHER = "another-project"
# Names JSON must escape (a quote, a backslash, control characters) and one
# it must not (U+2028), for the lists whose JSON the database writes.
NAMES = ["", "a", "b", "B", "é", "a b", 'q"\\\x01\n\u2028']
TAGS = ["red", "green", "blue"]
TIMES = [NOW - timedelta(days=1), NOW, NOW + timedelta(seconds=1)]


# --- random rows, written directly -----------------------------------------------------------

network_rows = st.lists(
    st.fixed_dictionaries(
        {
            "owner": st.integers(0, 2),
            "name": st.sampled_from(NAMES),
            "shared": st.booleans(),
            "external": st.booleans(),
            "admin_state_up": st.booleans(),
            "mtu": st.sampled_from([1450, 1500]),
            "tags": st.lists(st.sampled_from(TAGS), unique=True, max_size=2),
            "updated_at": st.sampled_from(TIMES),
            "subnets": st.lists(
                st.fixed_dictionaries(
                    {
                        "own": st.booleans(),
                        "name": st.sampled_from(NAMES),
                        "gateway": st.booleans(),
                        "enable_dhcp": st.booleans(),
                    }
                ),
                max_size=2,
            ),
        }
    ),
    min_size=1,
    max_size=4,
)
port_rows = st.lists(
    st.fixed_dictionaries(
        {
            "network": st.integers(0, 3),
            "owner": st.integers(0, 3),
            "name": st.sampled_from(NAMES),
            "device_id": st.sampled_from(["", "d1", "d2"]),
            "admin_state_up": st.booleans(),
            "status": st.sampled_from(["DOWN", "ACTIVE"]),
            "tags": st.lists(st.sampled_from(TAGS), unique=True, max_size=2),
            "revision_number": st.integers(1, 3),
            "addresses": st.integers(0, 2),
            "binding": st.sampled_from([None, "", "h1"]),
        }
    ),
    max_size=10,
)
floating_rows = st.lists(
    st.fixed_dictionaries(
        {
            "owner": st.integers(0, 3),
            "network": st.integers(0, 3),
            "port": st.integers(0, 9),
            "fixed": st.booleans(),
            "description": st.sampled_from(NAMES),
            "status": st.sampled_from(["DOWN", "ACTIVE"]),
            "tags": st.lists(st.sampled_from(TAGS), unique=True, max_size=2),
            "revision_number": st.integers(1, 3),
            "updated_at": st.sampled_from(TIMES),
        }
    ),
    max_size=5,
)


def write_rows(
    engine: Engine, owners: list[str], network_specs: list[Any], port_specs: list[Any]
) -> None:
    """The rows as the API would have made them (owners[3] is the server's "")."""
    with session_factory(engine).begin() as session:
        made: list[tuple[Network, list[Subnet]]] = []
        for n, spec in enumerate(network_specs):
            network = Network(
                id=str(uuid.uuid4()),
                project_id=owners[spec["owner"]],
                name=spec["name"],
                shared=spec["shared"],
                external=spec["external"],
                admin_state_up=spec["admin_state_up"],
                mtu=spec["mtu"],
                tags=spec["tags"],
                created_at=NOW,
                updated_at=spec["updated_at"],
                segmentation_id=n + 1,
            )
            session.add(network)
            found = []
            for s, subnet_spec in enumerate(spec["subnets"]):
                subnet = Subnet(
                    id=str(uuid.uuid4()),
                    project_id=network.project_id if subnet_spec["own"] else OTHER,
                    network_id=network.id,
                    name=subnet_spec["name"],
                    ip_version=4,
                    cidr=f"10.{n}.{s}.0/24",
                    gateway_ip=f"10.{n}.{s}.1" if subnet_spec["gateway"] else None,
                    enable_dhcp=subnet_spec["enable_dhcp"],
                    created_at=NOW + timedelta(seconds=s),
                    updated_at=NOW,
                )
                session.add(subnet)
                found.append(subnet)
            made.append((network, found))
        session.flush()
        for index, spec in enumerate(port_specs):
            network, network_subnets = made[spec["network"] % len(made)]
            port = Port(
                id=str(uuid.uuid4()),
                project_id=owners[spec["owner"]],
                network_id=network.id,
                name=spec["name"],
                mac_address=f"fa:16:3e:00:00:{index:02x}",
                device_id=spec["device_id"],
                admin_state_up=spec["admin_state_up"],
                status=spec["status"],
                tags=spec["tags"],
                revision_number=spec["revision_number"],
                created_at=NOW,
                updated_at=NOW,
            )
            held = network_subnets[: spec["addresses"]]
            port.fixed_ips = [
                IpAllocation(
                    subnet_id=subnet.id,
                    network_id=network.id,
                    ip_address=subnet.cidr.replace("0/24", str(10 + index)),
                    # Shown in position order, here not the addresses' own.
                    position=len(held) - 1 - position,
                )
                for position, subnet in enumerate(held)
            ]
            session.add(port)
            if spec["binding"] is not None:
                session.add(
                    PortBinding(
                        port_id=port.id,
                        netns="ns",
                        ifname="eth0",
                        created_at=NOW,
                        host=spec["binding"] or None,
                    )
                )


def write_floating_ips(engine: Engine, owners: list[str], specs: list[Any]) -> None:
    """Floating IPs on the networks and ports `write_rows` made (none without ports)."""
    with session_factory(engine).begin() as session:
        found_networks = list(session.scalars(select(Network).order_by(Network.segmentation_id)))
        found_ports = list(session.scalars(select(Port).order_by(Port.mac_address)))
        if not found_ports:
            return
        associated = set()  # one floating IP per fixed IP and network
        for index, spec in enumerate(specs):
            port = found_ports[spec["port"] % len(found_ports)]
            network = found_networks[spec["network"] % len(found_networks)]
            fixed = port.fixed_ips[0].ip_address if spec["fixed"] and port.fixed_ips else None
            if (port.id, network.id) in associated:
                fixed = None
            elif fixed is not None:
                associated.add((port.id, network.id))
            session.add(
                FloatingIp(
                    id=str(uuid.uuid4()),
                    project_id=owners[spec["owner"]],
                    description=spec["description"],
                    floating_network_id=network.id,
                    floating_ip_address=f"172.16.0.{index + 1}",
                    floating_port_id=port.id,
                    fixed_port_id=port.id if fixed else None,
                    fixed_ip_address=fixed,
                    status=spec["status"],
                    tags=spec["tags"],
                    revision_number=spec["revision_number"],
                    created_at=NOW,
                    updated_at=spec["updated_at"],
                )
            )


def clear_rows(engine: Engine) -> None:
    with session_factory(engine).begin() as session:
        for model in (
            PortBinding,
            FloatingIp,
            RouterPort,
            Router,
            ApplianceState,
            Host,
            IpAllocation,
            Port,
            Subnet,
            Network,
        ):
            session.execute(delete(model))


# --- the reference: every row, the single-row views and visibility, `run_query` ---------


def reference(
    engine: Engine, resource: Resource, caller: Caller, query: Query, url: str
) -> dict[str, Any]:
    with session_factory(engine)() as session:
        items = [
            readable(resource, v, caller.is_admin)
            for v in _visible_views(session, caller)[resource.collection]
        ]
    sorts = list(query.sorts)
    if sorts and not any(key == "id" for key, _ in sorts):
        sorts.append(("id", True))  # the order of ties is the id's (documented)
    return run_query(resource, items, Query(**{**query.__dict__, "sorts": sorts}), url)


def _visible_views(session: Session, caller: Caller) -> dict[str, list[dict[str, Any]]]:
    owners = {n.id: n for n in session.scalars(select(Network))}
    return {
        "networks": [networks.view(n) for n in owners.values() if networks.visible(n, caller)],
        "subnets": [
            subnets.view(s) for s in session.scalars(select(Subnet)) if subnets.visible(s, caller)
        ],
        "ports": [
            ports.view(p)
            for p in session.scalars(select(Port))
            if ports.visible(p, owners.get(p.network_id), caller)
        ],
        "floatingips": [
            floatingips.view(f)
            for f in session.scalars(select(FloatingIp))
            if caller.is_admin or f.project_id == caller.project_id
        ],
    }


# --- random queries ------------------------------------------------------------------------

SORTABLE = {
    "ports": [
        "name",
        "device_id",
        "admin_state_up",
        "status",
        "network_id",
        "mac_address",
        "tenant_id",
        "revision_number",
        "created_at",
        "id",
    ],
    "networks": [
        "name",
        "shared",
        "router:external",
        "mtu",
        "admin_state_up",
        "updated_at",
        "project_id",
    ],
    "subnets": [
        "name",
        "gateway_ip",
        "cidr",
        "enable_dhcp",
        "network_id",
        "ipv6_ra_mode",
        "subnetpool_id",
    ],
    "floatingips": [
        "floating_ip_address",
        "fixed_ip_address",
        "port_id",
        "status",
        "floating_network_id",
        "revision_number",
        "updated_at",
        "description",
    ],
}
FILTERS = {
    "ports": {
        "name": NAMES,
        "device_id": ["d1", "d2", "nothing"],
        "admin_state_up": ["true", "False", "1"],
        "status": ["DOWN", "ACTIVE"],
        "revision_number": ["1", "2"],
        "binding:host_id": ["h1", ""],
        "fixed_ips": ["subnet_id=none", "ip_address=10.0.0.10", "ip_address=10.1.0.11"],
    },
    "networks": {
        "name": NAMES,
        "shared": ["true", "false"],
        "router:external": ["True", "0"],
        "mtu": ["1450"],
        "provider:network_type": ["vxlan", "flat"],
    },
    "subnets": {
        "name": NAMES,
        "enable_dhcp": ["true", "false"],
        "gateway_ip": ["10.0.0.1", "10.1.1.1"],
        "cidr": ["10.0.0.0/24", "10.1.0.0/24"],
        "subnetpool_id": ["x"],
    },
    "floatingips": {
        "status": ["DOWN", "ACTIVE"],
        "floating_ip_address": ["172.16.0.1", "172.16.0.2"],
        "fixed_ip_address": ["10.0.0.10", "10.1.0.11"],
        "description": NAMES,
        "revision_number": ["1", "3"],
    },
}
COMMON = {
    "tags": ["red", "red,green"],
    "tags-any": ["blue", "red,blue"],
    "not-tags": ["green"],
    "not-tags-any": ["red,green"],
    "changed_since": ["2026-11-25T12:00:00Z", "2026-11-25T11:59:59.5"],
}


@st.composite
def list_queries(draw: st.DrawFn, collection: str) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    choices = {**FILTERS[collection], **COMMON}
    for key in draw(st.lists(st.sampled_from(sorted(choices)), unique=True, max_size=2)):
        for value in draw(st.lists(st.sampled_from(choices[key]), min_size=1, max_size=2)):
            params.append((key, value))
    for key in draw(st.lists(st.sampled_from(SORTABLE[collection]), unique=True, max_size=2)):
        params += [("sort_key", key), ("sort_dir", draw(st.sampled_from(["asc", "desc"])))]
    limit = draw(st.sampled_from([0, 0, 1, 2, 3]))
    if limit:
        params.append(("limit", str(limit)))
        if draw(st.booleans()):
            params.append(("page_reverse", "True"))
    return params


RESOURCES = {
    "ports": ports.RESOURCE,
    "networks": networks.RESOURCE,
    "subnets": subnets.RESOURCE,
    "floatingips": floatingips.RESOURCE,
}


def compare(
    engine: Engine, api: Api, caller: Caller, collection: str, params: list[tuple[str, str]]
) -> None:
    """One request and, when paginated, the walk to the end along the links."""
    resource = RESOURCES[collection]
    path: str | None = f"/v2.0/{collection}?{urlencode(params)}"
    walked: list[dict[str, Any]] = []
    seen = 0
    while path is not None:
        response = api("GET", path)
        url = f"http://testserver{path}"
        query = parse_query(resource, _params(url))
        expected = reference(engine, resource, caller, query, url)
        assert response.status_code == 200, response.text
        body = response.json()
        if not query.sorts and not query.limit:  # no order asked for: any order
            body[collection].sort(key=lambda item: item["id"])
            expected[collection].sort(key=lambda item: item["id"])
        assert body == expected, (path, body, expected)
        walked += body[collection]
        rel = "previous" if query.page_reverse else "next"
        links = [link["href"] for link in body.get(f"{collection}_links", []) if link["rel"] == rel]
        path = links[0].removeprefix("http://testserver") if links else None
        seen += 1
        assert seen < 40, "pagination does not end"
    first = parse_query(resource, params)
    if first.limit and not first.page_reverse:
        # Walked to the end, the pages are the whole list, each row once, in order.
        whole = Query(**{**first.__dict__, "limit": 0, "marker": None})
        url = f"http://testserver/v2.0/{collection}"
        full = reference(engine, resource, caller, whole, url)[collection]
        if not first.sorts:
            full.sort(key=lambda item: item["id"])
        assert [item["id"] for item in walked] == [item["id"] for item in full]


def _params(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    networks_=network_rows,
    ports_=port_rows,
    floating_=floating_rows,
    queries=st.lists(
        st.sampled_from(sorted(RESOURCES)).flatmap(
            lambda c: st.tuples(st.just(c), list_queries(c))
        ),
        min_size=1,
        max_size=4,
    ),
    who=st.sampled_from(["admin", "p1", "p2"]),
)
def test_lists_give_what_the_in_python_reference_gives(
    admin: Api,
    engine: Engine,
    callers: dict[str, tuple[Api, Caller]],
    networks_: list[Any],
    ports_: list[Any],
    floating_: list[Any],
    queries: list[Any],
    who: str,
) -> None:
    api, caller = callers[who]
    owners = [callers["p1"][1].project_id, callers["p2"][1].project_id, OTHER, ""]
    try:
        write_rows(engine, owners, networks_, ports_)
        write_floating_ips(engine, owners, floating_)
        for collection, params in queries:
            compare(engine, api, caller, collection, params)
    finally:
        clear_rows(engine)


@pytest.fixture
def admin(engine: Engine, tmp_path: Path) -> Api:
    """Every request authenticated against the database (no token cache),
    so that a list's statements are the same from the first request on."""
    token = ensure_admin(engine, tmp_path, "http://testserver", NOW)
    return Api(TestClient(create_app(engine, tokens=TokenCache(ttl_s=0))), token)


@pytest.fixture
def callers(admin: Api) -> dict[str, tuple[Api, Caller]]:
    found = {"admin": (admin, Caller("admin", "admin", True))}
    for name in ("p1", "p2"):
        response = admin("POST", "/astara/v1/projects", {"name": name})
        assert response.status_code == 201, response.text
        api = Api(admin.client, response.json()["token"])
        found[name] = (api, Caller(response.json()["project"]["id"], name, False))
    return found


# --- statements per list ----------------------------------------------------------------------


@contextmanager
def counted(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def write_many(engine: Engine, project_id: str, count: int) -> None:
    """`count` of each: networks with a subnet, ports with a fixed IP and a
    binding on the local host, routers with a gateway port and a
    placed appliance, floating IPs."""
    with session_factory(engine).begin() as session:
        session.add(
            Host(id=str(uuid.uuid4()), name="local", address="unix:/run/a.sock", created_at=NOW)
        )
        session.add(
            Host(
                id=str(uuid.uuid4()),
                name="h1",
                address="https://h1:1",
                availability_zone="zone-1",
                created_at=NOW,
            )
        )
        for index in range(count):
            standard = {"project_id": project_id, "created_at": NOW, "updated_at": NOW}
            network = Network(
                id=str(uuid.uuid4()), segmentation_id=index + 1, external=True, **standard
            )
            subnet = Subnet(
                id=str(uuid.uuid4()),
                network_id=network.id,
                ip_version=4,
                cidr=f"10.{index}.0.0/24",
                **standard,
            )
            port = Port(
                id=str(uuid.uuid4()),
                network_id=network.id,
                mac_address=f"fa:16:3e:00:00:{index:02x}",
                **standard,
            )
            port.fixed_ips = [
                IpAllocation(
                    subnet_id=subnet.id, network_id=network.id, ip_address=f"10.{index}.0.5"
                )
            ]
            router = Router(id=str(uuid.uuid4()), gateway_port_id=port.id, **standard)
            session.add_all([network, subnet])
            session.flush()
            session.add(port)
            session.flush()
            session.add(router)
            session.flush()
            session.add_all(
                [
                    PortBinding(
                        port_id=port.id,
                        netns="ns",
                        ifname="eth0",
                        created_at=NOW,
                        host=None,  # on the local host: its name is one more statement
                    ),
                    RouterPort(
                        router_id=router.id, port_id=port.id, port_type="network:router_gateway"
                    ),
                    ApplianceState(
                        appliance_id=router.id,
                        project_id=project_id,
                        state="ACTIVE",
                        host="h1",
                        updated_at=NOW,
                    ),
                    FloatingIp(
                        id=str(uuid.uuid4()),
                        floating_network_id=network.id,
                        floating_ip_address=f"10.{index}.0.9",
                        floating_port_id=port.id,
                        router_id=router.id,
                        **standard,
                    ),
                ]
            )


LISTS = [
    "/v2.0/ports",
    "/v2.0/networks",
    "/v2.0/subnets",
    "/v2.0/routers",
    "/v2.0/floatingips",
    "/v2.0/ports?limit=3&sort_key=name&sort_dir=desc&device_id=",
    "/v2.0/ports?fixed_ips=subnet_id=x&tags=a",
]


def test_a_list_costs_the_same_statements_for_5_rows_and_for_50(
    admin: Api, engine: Engine, callers: dict[str, tuple[Api, Caller]]
) -> None:
    for who in ("admin", "p1"):
        api, caller = callers[who]
        project_id = caller.project_id if who == "p1" else callers["p1"][1].project_id
        costs: dict[int, list[int]] = {}
        for count in (5, 50):
            write_many(engine, project_id, count)
            costs[count] = []
            for path in LISTS:
                with counted(engine) as statements:
                    response = api("GET", path)
                assert response.status_code == 200, response.text
                if "?" not in path:
                    assert len(response.json()[path.rsplit("/", 1)[1]]) == count
                costs[count].append(len(statements))
            clear_rows(engine)
        assert costs[5] == costs[50], (who, costs)
        # Authentication, the rows, and one per relation the views show.
        assert max(costs[50]) <= 6, (who, costs)


def test_port_and_network_lists_are_one_statement_on_postgresql(
    admin: Api, engine: Engine, callers: dict[str, tuple[Api, Caller]]
) -> None:
    """On PostgreSQL the ports, their fixed IPs and the local host's name
    come in one statement (the fixed IPs as JSON the database writes), and
    the networks with their subnets' ids: as cheap in statements as a
    floating IP list, which reads one table."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite lists ports and their fixed IPs in two statements")
    write_many(engine, callers["p1"][1].project_id, 5)
    for who in ("admin", "p1"):
        api, _ = callers[who]
        costs = {}
        for collection in ("ports", "networks", "floatingips"):
            with counted(engine) as statements:
                response = api("GET", f"/v2.0/{collection}")
            assert response.status_code == 200, response.text
            assert len(response.json()[collection]) == 5
            costs[collection] = statements
        assert len(costs["ports"]) == len(costs["floatingips"]), (who, costs["ports"])
        assert len(costs["networks"]) == len(costs["floatingips"]), (who, costs["networks"])


def test_lists_are_byte_for_byte_what_the_views_encode(
    admin: Api, engine: Engine, callers: dict[str, tuple[Api, Caller]]
) -> None:
    """The body is the views encoded by orjson, byte for byte, on both
    backends (on PostgreSQL, partly JSON the database wrote): names to
    escape, several fixed IPs out of address order, ports not plugged,
    plugged on a named host and on the local host, tags."""
    with session_factory(engine).begin() as session:
        session.add(
            Host(id=str(uuid.uuid4()), name="local é", address="unix:/run/a.sock", created_at=NOW)
        )
    p1 = callers["p1"][1].project_id
    networks_ = [
        {
            "owner": 0,
            "name": name,
            "shared": False,
            "external": False,
            "admin_state_up": True,
            "mtu": 1450,
            "tags": [],
            "updated_at": NOW,
            "subnets": [
                {"own": True, "name": "", "gateway": True, "enable_dhcp": False},
                {"own": False, "name": "", "gateway": False, "enable_dhcp": True},
            ],
        }
        for name in ("a", NAMES[-1])
    ]
    ports_ = [
        {
            "network": index % 2,
            "owner": index % 4,
            "name": NAMES[index % len(NAMES)],
            "device_id": "d1",
            "admin_state_up": index % 3 == 0,
            "status": "DOWN",
            # Sorted by code point ("Z" before "blue", "é" last), not by a locale.
            "tags": [*TAGS, "Z", "é"][: index % 6],
            "revision_number": 1 + index,
            "addresses": index % 3,
            "binding": [None, "", "h1"][index % 3],
        }
        for index in range(12)
    ]
    owners = [p1, callers["p2"][1].project_id, OTHER, ""]
    write_rows(engine, owners, networks_, ports_)
    floating_ = [
        {
            "owner": index % 2,
            "network": index,
            "port": index,
            "fixed": index % 3 != 0,
            "description": NAMES[-1 - index % len(NAMES)],
            "status": "ACTIVE",
            "tags": TAGS[: index % 3],
            "revision_number": 1,
            "updated_at": NOW,
        }
        for index in range(6)
    ]
    write_floating_ips(engine, owners, floating_)
    lists = [
        ("ports", "revision_number"),
        ("floatingips", "floating_ip_address"),
        ("networks", "name"),
    ]
    for collection, key in lists:
        resource = RESOURCES[collection]
        path = f"/v2.0/{collection}?sort_key={key}&sort_dir=desc"
        for who in ("admin", "p1"):
            api, caller = callers[who]
            response = api("GET", path)
            assert response.status_code == 200, response.text
            url = f"http://testserver{path}"
            query = parse_query(resource, _params(url))
            expected = reference(engine, resource, caller, query, url)
            assert len(expected[collection]) >= 2
            assert response.content == orjson.dumps(expected), (collection, who)


def test_names_sort_by_code_point_whatever_the_databases_collation(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """On a PostgreSQL database whose default collation is ICU's en-US
    (which orders "a" before "B"), a list sorted by name still comes in code
    point order, as on SQLite and as Python compares, and its pages follow
    one another from their markers."""
    engine = make_engine(postgres.create_database(icu_locale="en-US"))
    try:
        upgrade(engine)
        with engine.connect() as connection:
            # The database's own order is not the code points' (else this proves nothing).
            words = connection.execute(
                text("SELECT w FROM (VALUES ('b'), ('B'), ('a')) AS v(w) ORDER BY w")
            ).scalars()
            assert list(words) == ["a", "b", "B"]
        token = ensure_admin(engine, tmp_path, "http://testserver", NOW)
        api = Api(TestClient(create_app(engine)), token)
        names = ["b", "B", "a", "A", "_x", "Z", "ä", "aa"]
        for name in names:
            assert api("POST", "/v2.0/networks", {"network": {"name": name}}).status_code == 201
        response = api("GET", "/v2.0/networks?sort_key=name&sort_dir=asc")
        assert response.status_code == 200, response.text
        listed = response.json()["networks"]
        assert [n["name"] for n in listed] == sorted(names)
        paged: list[str] = []
        marker = ""
        while True:
            page = api("GET", f"/v2.0/networks?sort_key=name&sort_dir=asc&limit=3{marker}").json()[
                "networks"
            ]
            if not page:
                break
            paged += [n["name"] for n in page]
            marker = f"&marker={page[-1]['id']}"
        assert paged == sorted(names)
    finally:
        engine.dispose()
