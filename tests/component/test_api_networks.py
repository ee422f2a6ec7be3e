"""The tenant API in-process against a real SQLite database: Neutron's
networks, its errors, multi-tenancy, queries and the outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from astara.api.app import create_app
from astara.db.engine import session_factory
from astara.db.models import Network, Port
from tests.component.conftest import NOW, Api, error, project


def test_version_document_needs_no_token(admin: Api) -> None:
    response = admin.client.get("/")
    assert response.json() == {
        "versions": [
            {
                "id": "v2.0",
                "status": "CURRENT",
                "links": [{"rel": "self", "href": "http://testserver/v2.0/"}],
            }
        ]
    }


@pytest.mark.parametrize(
    "headers", [{}, {"X-Auth-Token": "notused"}, {"Authorization": "Basic !!"}]
)
def test_without_a_valid_credential_everything_else_is_401(
    admin: Api, headers: dict[str, str]
) -> None:
    response = admin.client.get("/v2.0/networks", headers=headers)
    assert error(response)[:2] == (401, "HTTPUnauthorized")


def test_http_basic_with_project_name_and_token(admin: Api) -> None:
    demo = project(admin, "demo")
    assert admin.client.get("/v2.0/networks", auth=("demo", demo.token)).status_code == 200
    assert admin.client.get("/v2.0/networks", auth=("other", demo.token)).status_code == 401


def test_network_lifecycle(admin: Api) -> None:
    created = admin.create_network(name="net1", description="first")
    # A tenant network is VXLAN: the default path MTU of 1500 less its 50 bytes.
    assert created["status"] == "ACTIVE" and created["mtu"] == 1450
    assert created["project_id"] == created["tenant_id"]
    assert created["revision_number"] == 1 and created["subnets"] == []
    assert created["created_at"].endswith("Z")
    shown = admin("GET", f"/v2.0/networks/{created['id']}").json()["network"]
    assert shown == created
    updated = admin("PUT", f"/v2.0/networks/{created['id']}", {"network": {"name": "renamed"}})
    assert updated.json()["network"]["name"] == "renamed"
    assert updated.json()["network"]["revision_number"] == 2
    assert admin("DELETE", f"/v2.0/networks/{created['id']}").status_code == 204
    assert error(admin("GET", f"/v2.0/networks/{created['id']}"))[:2] == (404, "NetworkNotFound")


def test_name_lookup_misses_are_404_so_clients_fall_back_to_filters(admin: Api) -> None:
    admin.create_network(name="net1")
    assert admin("GET", "/v2.0/networks/net1").status_code == 404
    found = admin("GET", "/v2.0/networks", params={"name": "net1"}).json()["networks"]
    assert [n["name"] for n in found] == ["net1"]


@pytest.mark.parametrize(
    ("body", "status", "kind", "message"),
    [
        ("[", 400, "HTTPBadRequest", "Body contains invalid data"),
        ({"netwerk": {}}, 400, "HTTPBadRequest", "Unable to find 'network' in request body"),
        (
            {"network": {"colour": "red"}},
            400,
            "HTTPBadRequest",
            "Unrecognized attribute(s) 'colour'",
        ),
        (
            {"network": {"status": "DOWN"}},
            400,
            "HTTPBadRequest",
            "Attribute 'status' not allowed in POST",
        ),
        (
            {"network": {"admin_state_up": "maybe"}},
            400,
            "InvalidInput",
            "Invalid input for admin_state_up. Reason: 'maybe' cannot be converted to boolean.",
        ),
        (
            {"network": {"name": 7}},
            400,
            "InvalidInput",
            "Invalid input for name. Reason: '7' is not a valid string.",
        ),
        (
            {"network": {"project_id": "a", "tenant_id": "b"}},
            400,
            "HTTPBadRequest",
            "'project_id' and 'tenant_id' do not match",
        ),
    ],
)
def test_bad_bodies_get_neutron_errors_and_change_nothing(
    admin: Api, body: Any, status: int, kind: str, message: str
) -> None:
    raw = body if isinstance(body, str) else None
    response = admin.client.post(
        "/v2.0/networks",
        content=raw,
        json=None if raw else body,
        headers={"X-Auth-Token": admin.token, "Content-Type": "application/json"},
    )
    assert error(response) == (status, kind, message)
    assert admin("GET", "/v2.0/networks").json() == {"networks": []}


def test_read_only_attributes_cannot_be_updated(admin: Api) -> None:
    network = admin.create_network(name="n")
    response = admin("PUT", f"/v2.0/networks/{network['id']}", {"network": {"status": "DOWN"}})
    assert error(response) == (400, "HTTPBadRequest", "Cannot update read-only attribute status")


def test_projects_see_only_their_own_plus_shared_and_external(admin: Api) -> None:
    alice, bob = project(admin, "alice"), project(admin, "bob")
    private = alice.create_network(name="alice-net")
    public = admin.create_network(name="public", **{"router:external": True})
    shared = admin.create_network(name="shared", shared=True)

    seen_by_bob = {n["name"] for n in bob("GET", "/v2.0/networks").json()["networks"]}
    assert seen_by_bob == {"public", "shared"}
    for method, body in (("GET", None), ("PUT", {"network": {"name": "x"}}), ("DELETE", None)):
        assert bob(method, f"/v2.0/networks/{private['id']}", body).status_code == 404
    # Visible is not writable: others' shared and external networks stay theirs,
    # and what can be seen but not changed is forbidden, not hidden (§5.2).
    for network in (public, shared):
        for method, body in (("PUT", {"network": {"name": "x"}}), ("DELETE", None)):
            response = bob(method, f"/v2.0/networks/{network['id']}", body)
            assert error(response)[:2] == (403, "PolicyNotAuthorized")
        response = bob("PUT", f"/v2.0/networks/{network['id']}/tags/mine")
        assert error(response)[:2] == (403, "PolicyNotAuthorized")
        assert admin("GET", f"/v2.0/networks/{network['id']}").json()["network"]["name"] in (
            "public",
            "shared",
        )
    assert {n["name"] for n in admin("GET", "/v2.0/networks").json()["networks"]} == {
        "alice-net",
        "public",
        "shared",
    }


def test_admin_only_attributes_and_acting_for_a_project(admin: Api) -> None:
    alice = project(admin, "alice")
    response = alice("POST", "/v2.0/networks", {"network": {"router:external": True}})
    assert error(response)[:2] == (403, "PolicyNotAuthorized")
    alice_id = next(
        p["id"]
        for p in admin("GET", "/astara/v1/projects").json()["projects"]
        if p["name"] == "alice"
    )
    for_alice = admin.create_network(name="made-for-alice", project_id=alice_id)
    assert for_alice["tenant_id"] == alice_id
    assert [n["id"] for n in alice("GET", "/v2.0/networks").json()["networks"]] == [for_alice["id"]]
    response = alice("POST", "/v2.0/networks", {"network": {"project_id": "someone-else"}})
    assert (
        error(response)[0] == 400 and "other than the authenticated project" in error(response)[2]
    )


def test_filters_fields_sorting_and_pagination(admin: Api) -> None:
    ids = {name: admin.create_network(name=name)["id"] for name in ("c", "a", "b", "d")}
    listed = admin("GET", "/v2.0/networks", params=[("name", "a"), ("name", "b")]).json()[
        "networks"
    ]
    assert sorted(n["name"] for n in listed) == ["a", "b"]
    only = admin("GET", "/v2.0/networks", params=[("fields", "id"), ("fields", "name")]).json()
    assert all(set(n) == {"id", "name"} for n in only["networks"])
    shown = admin("GET", f"/v2.0/networks/{ids['a']}", params={"fields": "tenant_id"}).json()
    assert set(shown["network"]) == {"tenant_id", "project_id"}
    ordered = admin("GET", "/v2.0/networks", params={"sort_key": "name", "sort_dir": "desc"}).json()
    assert [n["name"] for n in ordered["networks"]] == ["d", "c", "b", "a"]

    pages, params = [], {"limit": "3", "sort_key": "name", "sort_dir": "asc"}
    page = admin("GET", "/v2.0/networks", params=params).json()
    pages.append([n["name"] for n in page["networks"]])
    following = next(link["href"] for link in page["networks_links"] if link["rel"] == "next")
    assert "sort_key=name" in following
    page = admin("GET", following.replace("http://testserver", "")).json()
    pages.append([n["name"] for n in page["networks"]])
    assert pages == [["a", "b", "c"], ["d"]]

    for params, message in (
        ({"colour": "red"}, "['colour'] is invalid attribute for filtering"),
        ({"sort_key": "name"}, "The number of sort_keys and sort_dirs must be same"),
        (
            {"sort_key": "colour", "sort_dir": "asc"},
            "['colour'] is invalid attribute for sort_keys",
        ),
        ({"limit": "-1"}, "Limit must be an integer 0 or greater and not '-1'"),
    ):
        assert error(admin("GET", "/v2.0/networks", params=params)) == (
            400,
            "HTTPBadRequest",
            message,
        )


def test_network_with_ports_is_in_use(admin: Api, engine: Engine) -> None:
    network = admin.create_network(name="busy")
    with session_factory(engine).begin() as session:
        session.add(
            Port(
                id="port-1",
                project_id=network["project_id"],
                network_id=network["id"],
                mac_address="fa:16:3e:00:00:01",
                created_at=NOW,
                updated_at=NOW,
            )
        )
    status, kind, message = error(admin("DELETE", f"/v2.0/networks/{network['id']}"))
    assert (status, kind) == (409, "NetworkInUse")
    assert "There are one or more ports still in use on the network" in message


def test_every_write_is_an_event_and_the_database_outlives_the_app(
    admin: Api, engine: Engine
) -> None:
    network = admin.create_network(name="n")
    admin("PUT", f"/v2.0/networks/{network['id']}", {"network": {"name": "m"}})
    admin("DELETE", f"/v2.0/networks/{network['id']}")
    admin.create_network(name="kept")
    events = admin("GET", "/astara/v1/events").json()["events"]
    assert [(e["resource_type"], e["action"]) for e in events] == [
        ("network", "create"),
        ("network", "update"),
        ("network", "delete"),
        ("network", "create"),
    ]
    later = admin("GET", "/astara/v1/events", params={"since": events[1]["sequence"]}).json()[
        "events"
    ]
    assert [e["sequence"] for e in later] == [e["sequence"] for e in events[2:]]

    restarted = Api(TestClient(create_app(engine)), admin.token)
    assert [n["name"] for n in restarted("GET", "/v2.0/networks").json()["networks"]] == ["kept"]
    with session_factory(engine)() as session:
        assert session.query(Network).count() == 1


def test_extensions_list_only_what_is_implemented(admin: Api) -> None:
    listed = admin("GET", "/v2.0/extensions").json()["extensions"]
    aliases = {e["alias"] for e in listed}
    assert {
        "external-net",
        "net-mtu",
        "router",
        "ext-gw-mode",
        "extraroute",
        "pagination",
    } <= aliases
    assert {
        "security-group",
        "port-security",
        "allowed-address-pairs",
        "address-group",
        "fwaas_v2",
        "security-groups-rules-belongs-to-default-sg",
        "port-security-groups-filtering",
    } <= aliases
    # Not implemented, so not advertised: clients change behaviour on what they find.
    assert not {"external-gateway-multihoming", "fwaas", "dns-integration"} & aliases
    one = admin("GET", "/v2.0/extensions/net-mtu").json()["extension"]
    assert one == next(e for e in listed if e["alias"] == "net-mtu")
    assert admin("GET", "/v2.0/extensions/dns-integration").status_code == 404


def test_project_administration_needs_an_admin_token(admin: Api) -> None:
    alice = project(admin, "alice")
    assert error(alice("GET", "/astara/v1/projects"))[:2] == (403, "Forbidden")
    assert error(admin("POST", "/astara/v1/projects", {"name": "alice"}))[:2] == (
        409,
        "ProjectExists",
    )
    assert error(admin("POST", "/astara/v1/projects", {"name": "no spaces"}))[0] == 400
    assert error(admin("DELETE", "/astara/v1/projects/admin"))[:2] == (409, "ProjectInUse")
    assert admin("DELETE", "/astara/v1/projects/alice").status_code == 204
    assert alice("GET", "/v2.0/networks").status_code == 401  # its token died with it


def test_a_project_that_owns_anything_cannot_be_deleted(admin: Api) -> None:
    """Not only networks: a router alone keeps its project; once it is gone, the
    project goes with its quota overrides."""
    bob = project(admin, "bob")
    project_id = bob("GET", "/v2.0/quotas/project").json()["project"]["project_id"]
    router = bob("POST", "/v2.0/routers", {"router": {"name": "r"}}).json()["router"]
    assert admin("PUT", f"/v2.0/quotas/{project_id}", {"quota": {"router": 3}}).status_code == 200
    status, kind, message = error(admin("DELETE", "/astara/v1/projects/bob"))
    assert (status, kind, message) == (409, "ProjectInUse", "Project bob still owns 1 router(s).")
    assert bob("DELETE", f"/v2.0/routers/{router['id']}").status_code == 204
    assert admin("DELETE", "/astara/v1/projects/bob").status_code == 204
    assert admin("GET", "/v2.0/quotas").json()["quotas"] == []


def test_bulk_create_is_all_or_nothing(admin: Api) -> None:
    created = admin("POST", "/v2.0/networks", {"networks": [{"name": "one"}, {"name": "two"}]})
    assert created.status_code == 201
    assert [n["name"] for n in created.json()["networks"]] == ["one", "two"]
    # The second member is bad: neither is created.
    status, kind, _ = error(
        admin("POST", "/v2.0/networks", {"networks": [{"name": "three"}, {"status": "DOWN"}]})
    )
    assert (status, kind) == (400, "HTTPBadRequest")
    assert error(admin("POST", "/v2.0/networks", {"networks": []}))[0] == 400
    assert error(admin("POST", "/v2.0/networks", {"networks": {"name": "x"}}))[0] == 400
    names = sorted(n["name"] for n in admin("GET", "/v2.0/networks").json()["networks"])
    assert names == ["one", "two"]


def test_bulk_create_counts_against_the_quota_as_a_whole(admin: Api) -> None:
    tenant = project(admin, "small")
    project_id = tenant("GET", "/v2.0/quotas/project").json()["project"]["project_id"]
    admin("PUT", f"/v2.0/quotas/{project_id}", {"quota": {"network": 2}})
    body = {"networks": [{"name": f"n{i}"} for i in range(3)]}
    assert error(tenant("POST", "/v2.0/networks", body))[:2] == (409, "OverQuota")
    assert tenant("GET", "/v2.0/networks").json()["networks"] == []


def test_if_match_constrains_updates_and_deletes_to_a_revision(admin: Api) -> None:
    network = admin.create_network(name="net")
    path = f"/v2.0/networks/{network['id']}"
    current = network["revision_number"]
    stale = {"If-Match": f"revision_number={current + 5}"}
    status, kind, message = error(admin("PUT", path, {"network": {"name": "x"}}, headers=stale))
    assert (status, kind) == (412, "HTTPPreconditionFailed")
    assert message == f"Constrained to {current + 5}, but current revision is {current}"
    assert error(admin("DELETE", path, headers=stale))[0] == 412
    assert error(admin("DELETE", path, headers={"If-Match": "etag-ish"}))[0] == 400
    fresh = {"If-Match": f"revision_number={current}"}
    updated = admin("PUT", path, {"network": {"name": "y"}}, headers=fresh).json()["network"]
    assert updated["name"] == "y" and updated["revision_number"] > current
    assert admin("GET", path).json()["network"]["name"] == "y"
    fresh = {"If-Match": f"revision_number={updated['revision_number']}"}
    assert admin("DELETE", path, headers=fresh).status_code == 204


def test_a_trailing_json_suffix_is_ignored(admin: Api) -> None:
    network = admin.create_network(name="suffixed")
    assert (
        admin("GET", f"/v2.0/networks/{network['id']}.json").json()["network"]["id"]
        == (network["id"])
    )
    assert [n["name"] for n in admin("GET", "/v2.0/networks.json").json()["networks"]] == [
        "suffixed"
    ]


def test_tags_are_set_listed_filtered_and_bump_the_revision(admin: Api) -> None:
    red = admin.create_network(name="red")
    blue = admin.create_network(name="blue")
    tags = f"/v2.0/networks/{red['id']}/tags"
    assert admin("PUT", tags, {"tags": ["prod", "web"]}).json() == {"tags": ["prod", "web"]}
    assert admin("PUT", f"/v2.0/networks/{blue['id']}/tags/prod").status_code == 201
    assert admin("PUT", f"/v2.0/networks/{blue['id']}/tags/prod").status_code == 201  # again
    assert admin("GET", f"{tags}/web").status_code == 204
    assert error(admin("GET", f"{tags}/db"))[:2] == (404, "TagNotFound")
    shown = admin("GET", f"/v2.0/networks/{red['id']}").json()["network"]
    assert shown["tags"] == ["prod", "web"] and shown["revision_number"] > red["revision_number"]

    def names(query: str) -> list[str]:
        listed = admin("GET", f"/v2.0/networks?{query}").json()["networks"]
        return sorted(n["name"] for n in listed)

    assert names("tags=prod") == ["blue", "red"]
    assert names("tags=prod,web") == ["red"]
    assert names("tags-any=web,db") == ["red"]
    assert names("not-tags=prod,web") == ["blue"]
    assert names("not-tags-any=web") == ["blue"]
    assert admin("DELETE", f"{tags}/web").status_code == 204
    assert error(admin("DELETE", f"{tags}/web"))[:2] == (404, "TagNotFound")
    assert admin("DELETE", tags).status_code == 204
    assert admin("GET", tags).json() == {"tags": []}
    # Bad tags change nothing; tags are not a body attribute; others' resources are 404.
    admin("PUT", tags, {"tags": ["keep"]})
    for bad in (["a,b"], [""], [7], ["x" * 256], [f"t{i}" for i in range(51)], ["a\x00"]):
        assert error(admin("PUT", tags, {"tags": bad}))[0] == 400
    assert error(admin("PUT", f"{tags}/a%00"))[0] == 400
    assert admin("GET", tags).json() == {"tags": ["keep"]}
    status, _, message = error(admin("POST", "/v2.0/networks", {"network": {"tags": ["x"]}}))
    assert (status, message) == (400, "Attribute 'tags' not allowed in POST")
    alice = project(admin, "alice")
    assert error(alice("PUT", f"{tags}/mine"))[0] == 404
    assert error(alice("GET", tags))[0] == 404


def test_external_and_shared_cannot_be_withdrawn_while_in_use(admin: Api) -> None:
    alice = project(admin, "alice")
    public = admin.create_network(name="public", **{"router:external": True})
    admin(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": public["id"], "ip_version": 4, "cidr": "198.51.100.0/24"}},
    )
    router = alice(
        "POST",
        "/v2.0/routers",
        {"router": {"name": "r", "external_gateway_info": {"network_id": public["id"]}}},
    ).json()["router"]
    response = admin(
        "PUT", f"/v2.0/networks/{public['id']}", {"network": {"router:external": False}}
    )
    assert error(response)[:2] == (409, "ExternalNetworkInUse")
    assert "existing gateway ports" in error(response)[2]

    shared = admin.create_network(name="shared", shared=True)
    admin(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": shared["id"], "ip_version": 4, "cidr": "10.9.0.0/24"}},
    )
    theirs = alice("POST", "/v2.0/ports", {"port": {"network_id": shared["id"]}}).json()["port"]
    response = admin("PUT", f"/v2.0/networks/{shared['id']}", {"network": {"shared": False}})
    assert error(response)[:2] == (409, "InvalidSharedSetting")
    shown = [admin("GET", f"/v2.0/networks/{n['id']}").json()["network"] for n in (public, shared)]
    assert shown[0]["router:external"] and shown[1]["shared"]  # nothing changed

    # Once nobody else uses them, both may be withdrawn.
    alice("PUT", f"/v2.0/routers/{router['id']}", {"router": {"external_gateway_info": {}}})
    alice("DELETE", f"/v2.0/ports/{theirs['id']}")
    response = admin(
        "PUT", f"/v2.0/networks/{public['id']}", {"network": {"router:external": False}}
    )
    assert response.status_code == 200, response.text
    response = admin("PUT", f"/v2.0/networks/{shared['id']}", {"network": {"shared": False}})
    assert response.status_code == 200, response.text


def test_changed_since_lists_what_changed_at_or_after(admin: Api, engine: Engine) -> None:
    old, new = admin.create_network(name="old"), admin.create_network(name="new")
    with session_factory(engine).begin() as session:
        row = session.get(Network, old["id"])
        assert row is not None
        row.updated_at = datetime(2026, 1, 1, 12, 0)
    since = "/v2.0/networks?changed_since="
    names = {n["name"] for n in admin("GET", since + new["updated_at"]).json()["networks"]}
    assert names == {"new"}
    names = {n["name"] for n in admin("GET", since + "2026-01-01T12:00:00Z").json()["networks"]}
    assert names == {"old", "new"}
    assert error(admin("GET", since + "yesterday"))[:2] == (400, "HTTPBadRequest")
