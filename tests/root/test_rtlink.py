"""Links read over raw rtnetlink (`linux.rtlink`) are what pyroute2 reads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from astara.linux import netlink, rtlink
from astara.linux.run import run
from astara.testing.agent import unique_prefix

pytestmark = pytest.mark.root


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"{unique_prefix()}-rtlink"
    run(["ip", "netns", "add", name])
    try:
        for argv in (
            ["link", "add", "e0", "type", "veth", "peer", "name", "e1"],
            ["link", "add", "br0", "type", "bridge"],
            ["link", "set", "e1", "master", "br0"],
            ["link", "set", "e0", "up", "mtu", "1400", "address", "fa:16:3e:00:00:0e"],
            ["link", "set", "e1", "up"],
        ):
            run(["ip", "-n", name, *argv])
        yield name
    finally:
        run(["ip", "netns", "del", name])


def test_links_are_read_as_pyroute2_reads_them(namespace: str) -> None:
    with netlink.netns(namespace) as ns:
        expected = netlink.link_states(ns, ("e", "br", "lo"))
        bridge = netlink.link_index(ns, "br0")
    found = rtlink.links(namespace)
    assert set(found) == set(expected) == {"lo", "e0", "e1", "br0"}
    for name, state in expected.items():
        # Counters move between two reads (neighbour discovery): their keys do not.
        assert replace(found[name].state, counters={}) == replace(state, counters={})
        assert set(found[name].state.counters) == set(state.counters)
    assert found["e0"].state.mac == "fa:16:3e:00:00:0e" and found["e0"].state.mtu == 1400
    one = rtlink.link(namespace, "br0")
    assert one is not None and one.index == bridge
    assert found["e1"].state.master == bridge
    assert rtlink.link(namespace, "missing0") is None
    run(["ip", "-n", namespace, "link", "set", "e0", "down"])
    assert not rtlink.links(namespace)["e0"].state.up
