"""`GET /astara/v1/events`: `since` and `limit` are bounded and checked
(after authentication) with a clear 400, never a database overflow's 500."""

from __future__ import annotations

import pytest

from tests.component.conftest import Api, error

MAX_SEQUENCE = 2**63 - 1


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("since=-315269958703787404165120", "since"),  # the reported 500
        ("since=-1", "since"),
        (f"since={MAX_SEQUENCE + 1}", "since"),
        ("since=315269958703787404165120", "since"),
        ("since=abc", "since"),
        ("since=1.5", "since"),
        ("since=", "since"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-5", "limit"),
        ("limit=ten", "limit"),
    ],
)
def test_out_of_range_or_malformed_parameters_are_a_clear_400(
    admin: Api, query: str, name: str
) -> None:
    status, kind, message = error(admin("GET", f"/astara/v1/events?{query}"))
    assert (status, kind) == (400, "HTTPBadRequest")
    assert message.startswith(f"Invalid input for {name}. Reason: ")


def test_the_bounds_themselves_are_accepted(admin: Api) -> None:
    for name in ("one", "two", "three"):
        admin.create_network(name=name)
    everything = admin("GET", "/astara/v1/events?since=0&limit=1000")
    assert everything.status_code == 200
    sequences = [e["sequence"] for e in everything.json()["events"]]
    assert len(sequences) >= 3
    one = admin("GET", "/astara/v1/events?since=0&limit=1").json()["events"]
    assert [e["sequence"] for e in one] == sequences[:1]
    assert admin("GET", f"/astara/v1/events?since={MAX_SEQUENCE}").json() == {"events": []}
    after = admin("GET", f"/astara/v1/events?since={sequences[0]}").json()["events"]
    assert [e["sequence"] for e in after] == sequences[1:]


def test_bad_parameters_from_an_anonymous_caller_are_a_401_not_a_400(admin: Api) -> None:
    response = admin.client.get("/astara/v1/events?since=-315269958703787404165120&limit=0")
    assert error(response)[:2] == (401, "HTTPUnauthorized")
