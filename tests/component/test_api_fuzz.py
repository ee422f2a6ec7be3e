"""Property-based fuzz of the tenant API: whatever a client sends — random
JSON, known attributes with random values, random query parameters — the
answer is a Neutron error or a success, never a 5xx."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astara.api import floatingips, networks, ports, routers, subnets
from tests.component.conftest import Api

RESOURCES = (
    networks.RESOURCE,
    subnets.RESOURCE,
    ports.RESOURCE,
    routers.RESOURCE,
    floatingips.RESOURCE,
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
    return resource.collection, body


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
    listing = admin("GET", f"/v2.0/{resource.collection}", params=params)
    assert listing.status_code in OK, (params, listing.text)
    for method in ("GET", "DELETE"):
        response = admin.client.request(
            method,
            f"/v2.0/{resource.collection}/{object_id or 'x'}",
            headers={"X-Auth-Token": admin.token},
        )
        assert response.status_code in OK, (method, object_id, response.text)
