"""Neutron quotas: defaults, per-project limits, enforcement, details."""

from __future__ import annotations

import threading
from typing import Any

from tests.component.conftest import Api, error, project


def project_id(admin: Api, name: str) -> str:
    projects = admin("GET", "/astara/v1/projects").json()["projects"]
    return str(next(p["id"] for p in projects if p["name"] == name))


def test_defaults_and_own_project(admin: Api) -> None:
    alice = project(admin, "alice")
    alice_id = project_id(admin, "alice")
    assert alice("GET", "/v2.0/quotas/project").json() == {"project": {"project_id": alice_id}}
    quota = alice("GET", f"/v2.0/quotas/{alice_id}").json()["quota"]
    assert quota["network"] == 100 and quota["port"] == 500 and quota["floatingip"] == 50
    assert alice("GET", f"/v2.0/quotas/{alice_id}/default").json()["quota"] == quota


def test_limits_are_per_project_and_enforced(admin: Api) -> None:
    alice, bob = project(admin, "alice"), project(admin, "bob")
    alice_id = project_id(admin, "alice")
    updated = admin("PUT", f"/v2.0/quotas/{alice_id}", {"quota": {"network": 2}})
    assert updated.json()["quota"]["network"] == 2
    alice.create_network(name="one")
    alice.create_network(name="two")
    status, kind, message = error(alice("POST", "/v2.0/networks", {"network": {"name": "three"}}))
    assert (status, kind, message) == (
        409,
        "OverQuota",
        "Quota exceeded for resources: ['network'].",
    )
    bob.create_network(name="bobs")  # bob's quota is his own
    usage = alice("GET", f"/v2.0/quotas/{alice_id}/details").json()["quota"]["network"]
    assert usage == {"limit": 2, "used": 2, "reserved": 0}
    listed = admin("GET", "/v2.0/quotas").json()["quotas"]
    assert [(q["project_id"], q["network"]) for q in listed] == [(alice_id, 2)]
    # Below current usage only with force; back to defaults on delete.
    too_low = admin("PUT", f"/v2.0/quotas/{alice_id}", {"quota": {"network": 1}})
    assert error(too_low)[0] == 400
    forced = admin("PUT", f"/v2.0/quotas/{alice_id}", {"quota": {"network": 1, "force": True}})
    assert forced.json()["quota"]["network"] == 1
    assert admin("DELETE", f"/v2.0/quotas/{alice_id}").status_code == 204
    assert alice("GET", f"/v2.0/quotas/{alice_id}").json()["quota"]["network"] == 100


def test_only_admins_change_quotas_and_projects_read_their_own(admin: Api) -> None:
    alice, _ = project(admin, "alice"), project(admin, "bob")
    alice_id, bob_id = project_id(admin, "alice"), project_id(admin, "bob")
    assert error(alice("PUT", f"/v2.0/quotas/{alice_id}", {"quota": {"network": 500}}))[0] == 403
    assert error(alice("GET", f"/v2.0/quotas/{bob_id}"))[0] == 403
    for bad in ({"network": "many"}, {"network": -2}, {"widgets": 3}):
        assert error(admin("PUT", f"/v2.0/quotas/{alice_id}", {"quota": bad}))[0] == 400


def test_concurrent_creates_never_pass_the_limit(admin: Api) -> None:
    """30 network creates at once against a limit of 5: exactly 5 exist afterwards,
    the other 25 are clean OverQuota answers."""
    tenant = project(admin, "busy")
    project_id = tenant("GET", "/v2.0/quotas/project").json()["project"]["project_id"]
    assert admin("PUT", f"/v2.0/quotas/{project_id}", {"quota": {"network": 5}}).status_code == 200
    start = threading.Barrier(30)
    results: list[Any] = []
    lock = threading.Lock()

    def create(n: int) -> None:
        start.wait(timeout=30)
        response = tenant("POST", "/v2.0/networks", {"network": {"name": f"n{n}"}})
        with lock:
            results.append(response)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(r.status_code for r in results) == [201] * 5 + [409] * 25
    assert {error(r)[1] for r in results if r.status_code == 409} == {"OverQuota"}
    assert len(tenant("GET", "/v2.0/networks").json()["networks"]) == 5


def test_the_tenant_alias_creation_refused_and_limits_as_text(admin: Api) -> None:
    alice = project(admin, "alice")
    alice_id = project_id(admin, "alice")
    assert alice("GET", "/v2.0/quotas/tenant").json() == {"tenant": {"tenant_id": alice_id}}
    assert admin("POST", "/v2.0/quotas", {"quota": {"network": 1}}).status_code == 501
    changed = admin("PUT", f"/v2.0/quotas/{alice_id}", {"quota": {"network": "20"}})
    assert changed.json()["quota"]["network"] == 20
    for bad in ("twenty", "²", "-2"):
        response = admin("PUT", f"/v2.0/quotas/{alice_id}", {"quota": {"network": bad}})
        assert error(response)[:2] == (400, "InvalidInput"), bad
    assert alice("GET", f"/v2.0/quotas/{alice_id}").json()["quota"]["network"] == 20


def test_what_astara_does_not_have_is_refused_not_ignored(admin: Api) -> None:
    """Quotas of resources Astara does not have would mean nothing, and no
    host is in an availability zone yet: both are refused, not stored."""
    alice_id = admin("GET", "/v2.0/quotas/project").json()["project"]["project_id"]
    for resource in ("subnetpool", "rbac_policy"):
        status, kind, message = error(
            admin("PUT", f"/v2.0/quotas/{alice_id}", {"quota": {resource: 5}})
        )
        assert (status, kind) == (400, "HTTPBadRequest") and resource in message
        assert resource not in admin("GET", f"/v2.0/quotas/{alice_id}").json()["quota"]
    hinted = admin(
        "POST", "/v2.0/networks", {"network": {"name": "n", "availability_zone_hints": ["nova"]}}
    )
    assert error(hinted) == (
        404,
        "AvailabilityZoneNotFound",
        "AvailabilityZone nova could not be found.",
    )
    assert admin("GET", "/v2.0/networks?name=n").json()["networks"] == []
    plain = admin(
        "POST", "/v2.0/networks", {"network": {"name": "n", "availability_zone_hints": []}}
    )
    assert plain.status_code == 201
    bad = admin(
        "POST", "/v2.0/networks", {"network": {"name": "m", "availability_zone_hints": "nova"}}
    )
    assert error(bad)[:2] == (400, "InvalidInput")
