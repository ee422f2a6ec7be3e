"""Property-based fuzz of the tenant API: whatever a client sends — random
JSON, known attributes with random values, random query parameters — the
answer is a Neutron error or a success, never a 5xx."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from astara.api import (
    address_groups,
    floatingips,
    networks,
    ports,
    routers,
    security_group_rules,
    security_groups,
    subnets,
)
from astara.api.app import create_app
from astara.db.engine import make_engine
from tests.component.conftest import Api

RESOURCES = (
    networks.RESOURCE,
    subnets.RESOURCE,
    ports.RESOURCE,
    routers.RESOURCE,
    floatingips.RESOURCE,
    security_groups.RESOURCE,
    security_group_rules.RESOURCE,
    address_groups.RESOURCE,
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.text(max_size=20),
    st.sampled_from(
        ["10.0.0.0/24", "2001:db8::/64", "10.0.0.5", "::1", "fa:16:3e:00:00:01", "True", "0"]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, Any]:
    resource = draw(st.sampled_from(RESOURCES))
    names = [a.name for a in resource.attributes]
    member = draw(
        st.dictionaries(st.sampled_from(names) | st.text(max_size=6), json_values, max_size=5)
    )
    body = draw(st.sampled_from([{resource.member: member}, member, [member], "x"]))
    return resource.url_path, body


# What fits in a URL as clients send it (they percent-encode the rest).
PRINTABLE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
FUZZ = settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
OK = {200, 201, 204, 400, 401, 403, 404, 405, 409}


@FUZZ
@given(bodies())
def test_random_creates_never_fail_on_the_server(admin: Api, case: tuple[str, Any]) -> None:
    collection, body = case
    response = admin("POST", f"/v2.0/{collection}", body)
    assert response.status_code in OK, (collection, body, response.text)
    if response.status_code == 201:
        member = next(iter(response.json().values()))
        update = admin("PUT", f"/v2.0/{collection}/{member['id']}", body)
        assert update.status_code in OK, (collection, body, update.text)


@FUZZ
@given(
    st.sampled_from(RESOURCES),
    st.lists(st.tuples(PRINTABLE, PRINTABLE), max_size=4),
    PRINTABLE,
)
def test_random_queries_and_ids_never_fail_on_the_server(
    admin: Api, resource: Any, params: list[tuple[str, str]], object_id: str
) -> None:
    listing = admin("GET", f"/v2.0/{resource.url_path}", params=params)
    assert listing.status_code in OK, (params, listing.text)
    for method in ("GET", "DELETE"):
        response = admin.client.request(
            method,
            f"/v2.0/{resource.url_path}/{object_id or 'x'}",
            headers={"X-Auth-Token": admin.token},
        )
        assert response.status_code in OK, (method, object_id, response.text)


def operations() -> list[tuple[str, str]]:
    """Every (method, path template) the app's OpenAPI document lists."""
    app = create_app(make_engine("sqlite://"))
    return sorted(
        (method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item
    )


OPERATIONS = operations()


def test_the_openapi_document_covers_every_collection_and_its_tags() -> None:
    paths = {path for _, path in OPERATIONS}
    for resource in RESOURCES:
        assert f"/v2.0/{resource.url_path}/{{object_id}}" in paths
        tags = f"/v2.0/{resource.url_path}/{{object_id}}/tags/{{tag}}"
        assert (tags in paths) == resource.taggable
    assert not security_group_rules.RESOURCE.taggable  # Neutron's rules have no tags
    for actions in ("routers", "address-groups"):
        assert ("PUT", f"/v2.0/{actions}/{{object_id}}/{{action}}") in OPERATIONS
    assert len(OPERATIONS) > 60


def seeds(admin: Api) -> dict[str, str]:
    """Real objects for path parameters to name, made once per test: an external
    network, a tenant network and subnet, a port, a router and a floating IP."""
    found: dict[str, str] | None = getattr(admin, "seeds", None)
    if found is not None:
        return found

    def made(collection: str, member: str, **fields: Any) -> str:
        response = admin("POST", f"/v2.0/{collection}", {member: fields})
        assert response.status_code == 201, response.text
        created: str = response.json()[member]["id"]
        return created

    public = made("networks", "network", **{"router:external": True})
    made("subnets", "subnet", network_id=public, cidr="203.0.113.0/24", ip_version=4)
    network = made("networks", "network")
    subnet = made("subnets", "subnet", network_id=network, cidr="10.0.0.0/24", ip_version=4)
    found = {
        "network": network,
        "subnet": subnet,
        "port": made("ports", "port", network_id=network),
        "router": made("routers", "router", external_gateway_info={"network_id": public}),
        "floatingip": made("floatingips", "floatingip", floating_network_id=public),
        "security_group": made("security-groups", "security_group", name="web"),
        "address_group": made("address-groups", "address_group", addresses=["10.1.0.0/24"]),
        "project": "admin",
    }
    found["security_group_rule"] = made(
        "security-group-rules",
        "security_group_rule",
        security_group_id=found["security_group"],
        direction="ingress",
        protocol="tcp",
        port_range_min=22,
        port_range_max=22,
    )
    admin.seeds = found  # type: ignore[attr-defined]
    return found


SEGMENT = PRINTABLE.filter(lambda p: "/" not in p and p not in (".", ".."))
SEEDED = st.sampled_from(
    [
        "network",
        "subnet",
        "port",
        "router",
        "floatingip",
        "security_group",
        "security_group_rule",
        "address_group",
        "project",
        "add_router_interface",
        "add_addresses",
        "remove_addresses",
    ]
)


@FUZZ
@given(
    st.sampled_from(OPERATIONS),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3) | json_values,
    st.lists(SEGMENT | SEEDED.map(lambda k: "@" + k), min_size=3),
    st.lists(st.tuples(PRINTABLE, PRINTABLE), max_size=3),
)
def test_every_operation_in_the_openapi_document_survives_random_input(
    admin: Api,
    operation: tuple[str, str],
    body: Any,
    values: list[str],
    params: list[tuple[str, str]],
) -> None:
    """Each documented route, its path parameters filled with random text, a
    random JSON body and random query parameters: never a 5xx."""
    method, template = operation
    known = seeds(admin)
    path = template
    for value in values:
        if "{" not in path:
            break
        if value.startswith("@"):  # a real object (or an action name)
            value = known.get(value[1:], value[1:])
        start, end = path.index("{"), path.index("}")
        path = path[:start] + quote(value or "x", safe="") + path[end + 1 :]
    response = admin(method, path, None if method in ("GET", "DELETE") else body, params=params)
    event(f"status {response.status_code}")
    assert response.status_code < 500, (method, path, body, params, response.text)
