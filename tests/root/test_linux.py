"""The edge helpers against a real namespace: routes by diff, daemons by pid file."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from astara.linux import netlink, netns, routes
from astara.linux.process import Daemon, reap_adopted, reap_orphans
from astara.linux.run import in_netns, run
from astara.testing.agent import unique_prefix
from astara.testing.net import wait_until

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


def test_a_daemon_start_kills_strays_of_its_own_kind_first(namespace: str, tmp_path: Path) -> None:
    """An apply cut short can leave a daemon running whose pid file is gone;
    starting it again must not make two. Others in the namespace are left alone."""
    marker = str(tmp_path / "daemon.conf")
    # `sh -c 'sleep 300; :' MARKER`: a long-lived process with the marker as $0.
    stray = subprocess.Popen(in_netns(namespace, ["sh", "-c", "sleep 300; :", marker]))
    bystander = subprocess.Popen(in_netns(namespace, ["sleep", "301"]))
    try:
        wait_until(lambda: stray.pid in netns.pids(namespace), 10, 0.01, "the stray to run")
        daemon = Daemon(namespace, tmp_path / "daemon.pid", marker)
        launch = f"sh -c 'sleep 300; :' {marker} >/dev/null 2>&1 & echo $! > {daemon.pidfile}"
        pid = daemon.start(["sh", "-c", launch])
        # Killed: `sleep 300` ends no other way within the test. Its exit status
        # may already be collected by `start` (which reaps the strays it kills,
        # being their subreaper in the agent), so Popen can report 0 or -9.
        stray.wait(timeout=10)
        assert stray.pid not in netns.pids(namespace)
        assert daemon.strays() == [] and daemon.pid() == pid
        assert bystander.poll() is None
        daemon.stop()
        assert daemon.pid() is None
    finally:
        for process in (stray, bystander):
            process.kill()
            process.wait()


def test_reap_orphans_collects_dead_children_but_the_kept_ones() -> None:
    kept = subprocess.Popen(["true"])
    orphan = subprocess.Popen(["true"])

    def zombies() -> bool:
        return all(
            Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            for p in (kept, orphan)
        )

    wait_until(zombies, 10, 0.01, "both children to exit")
    assert reap_orphans({kept.pid}) >= 1
    assert not Path(f"/proc/{orphan.pid}").exists()
    assert Path(f"/proc/{kept.pid}").exists()  # still its owner's to collect
    assert kept.wait(timeout=5) == 0


def test_reapers_leave_a_command_that_run_waits_for_alone(tmp_path: Path) -> None:
    """A stale pid file (or a scan for orphans) can name a dead command that
    `run` has not collected yet, in another thread; reaping it would make
    subprocess report exit status 0 for a command that failed."""
    pids = tmp_path / "pids"
    # The command exits 3 at once; its background `sleep` keeps stdout open, so
    # `run` waits on the pipe while the command is a zombie, until we kill it.
    script = f"sleep 60 & echo $$ $! > {pids}; exit 3"
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(run, ["sh", "-c", script], check=False)
        try:
            wait_until(lambda: len(pids.read_text().split()) == 2 if pids.exists() else False)
            command = int(pids.read_text().split()[0])
            wait_until(lambda: _state(command) == "Z", 10, 0.01, "the command to exit")
            stale = Daemon("unused", tmp_path / "stale.pid", str(tmp_path / "daemon.conf"))
            stale.pidfile.write_text(f"{command}\n")
            assert stale.pid() is None
            reap_orphans(set())
            stale.stop()
            assert _state(command) == "Z"  # still run's to collect
        finally:
            if pids.exists() and len(pids.read_text().split()) == 2:
                os.kill(int(pids.read_text().split()[1]), signal.SIGKILL)
        assert result.result(timeout=30).returncode == 3


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


class _CountingHandle:
    """A real netlink handle that counts the link messages it hands back
    (each one decoded by pyroute2): the cost of a dump, without a clock."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.decoded = 0

    def link(self, command: str, **kwargs: Any) -> Any:
        found = list(self.handle.link(command, **kwargs))
        self.decoded += len(found)
        return found

    def get_links(self, *args: Any, **kwargs: Any) -> Any:
        found = list(self.handle.get_links(*args, **kwargs))
        self.decoded += len(found)
        return found

    def link_lookup(self, **kwargs: Any) -> Any:
        return self.handle.link_lookup(**kwargs)


def test_bridge_members_decode_only_the_members(namespace: str) -> None:
    """Finding one bridge's members must not decode every link of the
    namespace (the fabric holds one bridge per network and a veth end per
    appliance interface): the kernel filters the dump by master."""
    run(["ip", "-n", namespace, "link", "add", "br0", "type", "bridge"])
    run(["ip", "-n", namespace, "link", "add", "brother", "type", "bridge"])
    batch = "".join(f"link add a{i} type veth peer name b{i}\n" for i in range(60))
    run(["ip", "-n", namespace, "-batch", "-"], input_text=batch)
    for member in ("a1", "b7", "v1"):
        run(["ip", "-n", namespace, "link", "set", member, "master", "br0"])
    run(["ip", "-n", namespace, "link", "set", "a2", "master", "brother"])
    with netlink.netns(namespace) as handle:
        counting = _CountingHandle(handle)
        assert netlink.bridge_members(counting, "br0") == ["a1", "b7", "v1"]
        assert counting.decoded == 3  # not the 120-odd links beside them
        assert netlink.bridge_members(counting, "brother") == ["a2"]
        assert netlink.bridge_members(counting, "missing") == []


def test_reap_adopted_collects_other_sessions_dead_and_leaves_our_own() -> None:
    """What a daemon leaves us runs in a session of its own (it detached):
    collected. A dead child in our session is someone's Popen (or pyroute2's
    helper) to wait for: left alone, or its owner would get no exit status."""
    ours = subprocess.Popen(["sh", "-c", "exit 3"])
    adopted = subprocess.Popen(["true"], start_new_session=True)
    wait_until(
        lambda: _state(ours.pid) == "Z" and _state(adopted.pid) == "Z",
        10,
        0.01,
        "both children to exit",
    )
    assert reap_adopted() >= 1
    assert _state(adopted.pid) is None  # collected
    assert _state(ours.pid) == "Z"  # still its owner's
    assert ours.wait(timeout=5) == 3
    adopted.returncode = 0  # collected above: Popen must not wait for it again


def test_plain_netlink_requests_read_and_set_links_as_pyroute2_does(namespace: str) -> None:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with netlink.netns(namespace) as handle:
        assert isinstance(handle.requests, netlink.Requests)
        netlink.ensure_bridge(handle, "br9", 1400)
        netlink.enslave(handle, "v1", "br9", 1400)
        bridge = netlink.link_index(handle, "br9")
        assert bridge is not None and netlink.link_index(handle, "nope") is None
        assert netlink.link_state(handle, "nope") is None
        with IPRoute() as host:  # pyroute2's own decoding, for comparison
            assert netlink.link_state(host, "lo") is not None
        plain = netlink.link_state(handle, "v1")
        decoded = netlink._link_state(handle.link("get", ifname="v1")[0])
        assert plain is not None
        assert (plain.name, plain.mac, plain.mtu, plain.up, plain.master) == (
            decoded.name,
            decoded.mac,
            decoded.mtu,
            decoded.up,
            decoded.master,
        )
        assert (plain.mtu, plain.up, plain.master) == (1400, True, bridge)
        assert set(plain.counters) == set(decoded.counters)
        netlink.set_link(handle, "v1", master=0, state="down")
        released = netlink.link_state(handle, "v1")
        assert released is not None and released.master is None and not released.up
        with pytest.raises(NetlinkError):
            netlink.set_link(handle, "v1", mtu=10)  # below any veth's minimum
