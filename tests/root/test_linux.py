"""The edge helpers against a real namespace: routes by diff, daemons by pid file."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from astara.linux import netns, routes
from astara.linux.run import run
from astara.testing.agent import unique_prefix

pytestmark = pytest.mark.root


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"{unique_prefix()}-linux"
    netns.create(name)
    try:
        run(["ip", "-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        run(["ip", "-n", name, "link", "set", "v0", "up"])
        run(["ip", "-n", name, "addr", "add", "10.0.0.1/24", "dev", "v0"])
        run(["ip", "-n", name, "-6", "addr", "add", "2001:db8::1/64", "dev", "v0", "nodad"])
        yield name
    finally:
        netns.delete(name)
    assert not netns.exists(name)


def via(destination: str, nexthop: str) -> routes.Route:
    return routes.Route.via(ipaddress.ip_network(destination), ipaddress.ip_address(nexthop))


def test_routes_sync_by_diff_and_leave_others_alone(namespace: str) -> None:
    wanted = [
        via("0.0.0.0/0", "10.0.0.254"),
        via("::/0", "2001:db8::fe"),
        via("192.168.0.0/16", "10.0.0.9"),
    ]
    assert routes.sync(namespace, "main", wanted) == (3, 0)
    assert routes.sync(namespace, "main", wanted) == (0, 0)
    assert sorted(routes.current(namespace, "main")) == sorted(wanted)
    # A new next hop replaces the route in place; a dropped route goes.
    moved = [via("0.0.0.0/0", "10.0.0.253"), via("::/0", "2001:db8::fe")]
    assert routes.sync(namespace, "main", moved) == (1, 2)
    listing = run(["ip", "-n", namespace, "route"]).stdout
    assert "default via 10.0.0.253" in listing and "192.168.0.0/16" not in listing
    # The kernel's own connected route was never Astara's to touch.
    assert "10.0.0.0/24 dev v0 proto kernel" in listing


def test_local_routes_answer_for_floating_ips(namespace: str) -> None:
    floating = [
        routes.Route.local(ipaddress.ip_address(f"198.51.100.{i}"), "v0") for i in range(1, 201)
    ]
    assert routes.sync(namespace, "local", floating) == (200, 0)
    assert routes.sync(namespace, "local", floating) == (0, 0)
    assert routes.sync(namespace, "local", floating[:10]) == (0, 190)
    local = run(["ip", "-n", namespace, "route", "show", "table", "local"]).stdout
    assert "local 198.51.100.10 dev v0 proto static" in local
    assert "198.51.100.11 " not in local
    # The kernel's local routes for the namespace's own addresses stay.
    assert "local 10.0.0.1 dev v0 proto kernel" in local
