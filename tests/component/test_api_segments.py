"""Networks' L2 segments (Neutron's provider extension) and MTUs, through
the real app against a real database."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from astara.api.app import create_app
from astara.api.bootstrap import ensure_admin
from astara.api.segments import ensure_segments
from astara.api.settings import ApiSettings, parse_vni_range
from astara.db.engine import session_factory
from astara.db.models import Network
from tests.component.conftest import NOW, Api, error, project

PROVIDER = ("provider:network_type", "provider:physical_network", "provider:segmentation_id")


def _api(engine: Engine, tmp_path: Path, settings: ApiSettings) -> Api:
    token = ensure_admin(engine, tmp_path, "http://testserver", NOW)
    return Api(TestClient(create_app(engine, settings=settings)), token)


def _create(api: Api, **fields: Any) -> Any:
    return api("POST", "/v2.0/networks", {"network": {"name": "n", **fields}})


def test_admins_see_the_segment_others_do_not(admin: Api) -> None:
    alice = project(admin, "alice")
    network = alice.create_network(name="mine")
    assert not set(PROVIDER) & set(network)
    assert not set(PROVIDER) & set(
        alice("GET", f"/v2.0/networks/{network['id']}").json()["network"]
    )
    assert not set(PROVIDER) & set(alice("GET", "/v2.0/networks").json()["networks"][0])
    shown = admin("GET", f"/v2.0/networks/{network['id']}").json()["network"]
    assert shown["provider:network_type"] == "vxlan"
    assert shown["provider:physical_network"] is None
    assert 1 <= shown["provider:segmentation_id"] <= 65535
    assert shown["mtu"] == 1450
    # A filter on what the caller cannot read matches nothing.
    assert alice("GET", "/v2.0/networks?provider:network_type=vxlan").json()["networks"] == []
    listed = admin("GET", "/v2.0/networks?provider:network_type=vxlan").json()["networks"]
    assert [n["id"] for n in listed] == [network["id"]]
    by_vni = admin(
        "GET", f"/v2.0/networks?provider:segmentation_id={shown['provider:segmentation_id']}"
    )
    assert [n["id"] for n in by_vni.json()["networks"]] == [network["id"]]
    assert admin("GET", "/v2.0/networks?provider:network_type=flat").json()["networks"] == []


def test_only_admins_choose_a_segment_and_nobody_changes_it(admin: Api) -> None:
    alice = project(admin, "alice")
    for name, value in zip(PROVIDER, ("vxlan", "public", 7), strict=True):
        assert error(_create(alice, **{name: value})) == (
            403,
            "PolicyNotAuthorized",
            f"(rule:create_network:{name}) is disallowed by policy",
        )
    mine = alice.create_network(name="mine")
    refused = alice("PUT", f"/v2.0/networks/{mine['id']}", {"network": {PROVIDER[2]: 9}})
    assert error(refused)[:2] == (403, "PolicyNotAuthorized")
    refused = admin("PUT", f"/v2.0/networks/{mine['id']}", {"network": {PROVIDER[2]: 9}})
    assert error(refused) == (
        400,
        "InvalidInput",
        "Invalid input for operation: Plugin does not support updating provider attributes.",
    )


def test_admin_vxlan_with_a_vni_and_flat_on_a_physnet(admin: Api) -> None:
    chosen = _create(admin, **{PROVIDER[0]: "vxlan", PROVIDER[2]: 16777215})
    assert chosen.status_code == 201, chosen.text
    assert chosen.json()["network"][PROVIDER[2]] == 16777215
    taken = _create(admin, **{PROVIDER[0]: "vxlan", PROVIDER[2]: 16777215})
    assert error(taken) == (
        409,
        "TunnelIdInUse",
        "Unable to create the network. The tunnel ID 16777215 is in use.",
    )
    flat = _create(admin, **{PROVIDER[0]: "flat", PROVIDER[1]: "public", "router:external": True})
    assert flat.status_code == 201, flat.text
    shown = flat.json()["network"]
    assert (shown[PROVIDER[0]], shown[PROVIDER[1]], shown[PROVIDER[2]]) == ("flat", "public", None)
    assert shown["mtu"] == 1500  # no encapsulation
    assert error(_create(admin, **{PROVIDER[0]: "flat", PROVIDER[1]: "public"})) == (
        409,
        "FlatNetworkInUse",
        "Unable to create the flat network. Physical network public is in use.",
    )
    # Once the network is gone, its physnet and VNI are free again.
    assert admin("DELETE", f"/v2.0/networks/{shown['id']}").status_code == 204
    assert _create(admin, **{PROVIDER[0]: "flat", PROVIDER[1]: "public"}).status_code == 201


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({PROVIDER[0]: "vlan", PROVIDER[1]: "public", PROVIDER[2]: 10}, "no 802.1Q VLAN devices"),
        ({PROVIDER[0]: "local"}, "network_type value 'local' not supported"),
        ({PROVIDER[0]: "gre"}, "network_type value 'gre' not supported"),
        ({PROVIDER[0]: "geneve"}, "network_type value 'geneve' not supported"),
        ({PROVIDER[0]: "bogus"}, "network_type value 'bogus' not supported"),
        ({PROVIDER[0]: "flat"}, "physical_network required for flat provider network"),
        ({PROVIDER[0]: "flat", PROVIDER[1]: "p", PROVIDER[2]: 3}, "prohibited for flat"),
        ({PROVIDER[0]: "vxlan", PROVIDER[1]: "p"}, "physical_network specified for vxlan"),
        ({PROVIDER[0]: "vxlan", PROVIDER[2]: 0}, "0 is not a valid VXLAN VNI"),
        ({PROVIDER[0]: "vxlan", PROVIDER[2]: 2**24}, "is not a valid VXLAN VNI"),
        ({PROVIDER[2]: 5}, "network_type required"),
    ],
)
def test_segments_astara_cannot_make_are_refused(
    admin: Api, fields: dict[str, Any], reason: str
) -> None:
    status, kind, message = error(_create(admin, **fields))
    assert (status, kind) == (400, "InvalidInput") and reason in message, message
    assert admin("GET", "/v2.0/networks").json()["networks"] == []


def test_vnis_are_unique_and_a_full_range_is_503(engine: Engine, tmp_path: Path) -> None:
    api = _api(engine, tmp_path, ApiSettings(vni_min=100, vni_max=103))
    with ThreadPoolExecutor(4) as pool:
        created = list(pool.map(lambda i: _create(api, name=f"n{i}"), range(4)))
    assert [c.status_code for c in created] == [201] * 4, [c.text for c in created]
    vnis = sorted(c.json()["network"][PROVIDER[2]] for c in created)
    assert vnis == [100, 101, 102, 103]
    assert error(_create(api)) == (
        503,
        "NoNetworkAvailable",
        "Unable to create the network. No tenant network is available for allocation.",
    )
    # An admin's VNI outside the range still works; a freed one is given again.
    assert _create(api, **{PROVIDER[0]: "vxlan", PROVIDER[2]: 5000}).status_code == 201
    gone = created[0].json()["network"]
    assert api("DELETE", f"/v2.0/networks/{gone['id']}").status_code == 204
    assert _create(api).json()["network"][PROVIDER[2]] == gone[PROVIDER[2]]


def test_a_range_wider_than_the_draw_is_filled_to_its_last_vni(
    engine: Engine, tmp_path: Path
) -> None:
    """VNIs are drawn at random and checked in one query; when every draw is
    taken (a nearly full range), an exact scan still finds the last ones."""
    api = _api(engine, tmp_path, ApiSettings(vni_min=100, vni_max=169))
    with ThreadPoolExecutor(4) as pool:
        created = list(pool.map(lambda i: _create(api, name=f"n{i}"), range(70)))
    assert [c.status_code for c in created] == [201] * 70, [c.text for c in created]
    vnis = sorted(c.json()["network"][PROVIDER[2]] for c in created)
    assert vnis == list(range(100, 170))
    assert error(_create(api))[:2] == (503, "NoNetworkAvailable")


def test_mtu_follows_the_path_mtu_and_stays_under_it(engine: Engine, tmp_path: Path) -> None:
    api = _api(engine, tmp_path, ApiSettings(path_mtu=9000))
    assert _create(api).json()["network"]["mtu"] == 8950
    flat = _create(api, **{PROVIDER[0]: "flat", PROVIDER[1]: "p"}).json()["network"]
    assert flat["mtu"] == 9000
    assert error(_create(api, mtu=8951)) == (
        400,
        "InvalidInput",
        "Invalid input for operation: Requested MTU is too big, maximum is 8950.",
    )
    assert error(_create(api, mtu=67))[:2] == (400, "InvalidInput")
    smaller = _create(api, mtu=1400).json()["network"]
    assert smaller["mtu"] == 1400
    path = f"/v2.0/networks/{smaller['id']}"
    assert api("PUT", path, {"network": {"mtu": 8950}}).json()["network"]["mtu"] == 8950
    assert error(api("PUT", path, {"network": {"mtu": 9000}}))[:2] == (400, "InvalidInput")
    v6 = {"network_id": smaller["id"], "ip_version": 6, "cidr": "2001:db8::/64"}
    assert api("POST", "/v2.0/subnets", {"subnet": v6}).status_code == 201
    assert error(api("PUT", path, {"network": {"mtu": 1200}}))[:2] == (400, "InvalidInput")


def test_ensure_segments_gives_old_networks_vnis_once(engine: Engine) -> None:
    settings = ApiSettings(vni_min=10, vni_max=20)
    sessions = session_factory(engine)
    when = datetime(2026, 1, 1)
    with sessions.begin() as session:
        for name in ("a", "b"):
            session.add(
                Network(
                    id=str(uuid.uuid4()),
                    project_id="p",
                    name=name,
                    created_at=when,
                    updated_at=when,
                    network_type="vxlan",
                    segmentation_id=None,
                    mtu=1500,
                )
            )
        session.add(
            Network(
                id=str(uuid.uuid4()),
                project_id="p",
                name="given",
                created_at=when,
                updated_at=when,
                network_type="vxlan",
                segmentation_id=10,
                mtu=1450,
            )
        )
    with sessions.begin() as session:
        assert len(ensure_segments(session, settings)) == 2
    with sessions.begin() as session:
        assert ensure_segments(session, settings) == []  # idempotent
        found = {n.name: n for n in session.scalars(select(Network))}
        assert found["given"].segmentation_id == 10
        assert {found["a"].segmentation_id, found["b"].segmentation_id} <= set(range(11, 21))
        assert found["a"].segmentation_id != found["b"].segmentation_id
        assert found["a"].mtu == found["b"].mtu == 1450


def test_settings_refuse_nonsense() -> None:
    assert parse_vni_range("1:65535") == (1, 65535)
    for text in ("1-5", "x:5", "5"):
        with pytest.raises(ValueError, match="MIN:MAX"):
            parse_vni_range(text)
    for low, high in ((0, 5), (5, 4), (1, 2**24)):
        with pytest.raises(ValueError, match="VNI range"):
            ApiSettings(vni_min=low, vni_max=high)
    with pytest.raises(ValueError, match="path MTU"):
        ApiSettings(path_mtu=100)
