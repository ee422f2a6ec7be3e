"""The simulated multi-host lab (astara.testing.hosts) that the end-to-end
tests and benchmarks of many hosts stand on: real packets over its underlay
and provider bridges, cut and killed hosts, and nothing left behind, in the
root namespace least of all."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from astara.linux import netns
from astara.linux.run import run
from astara.testing.hosts import (
    CONTROLLER_ADDRESS,
    OUTSIDE,
    OUTSIDE_V6,
    MultiHostLab,
    netns_client,
    root_links,
    run_cli,
)
from astara.testing.net import never_pings, ping, wait_for_ping, wait_until

pytestmark = pytest.mark.root


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def assert_gone(lab: MultiHostLab) -> None:
    assert lab.leftovers() == {"namespaces": [], "root_links": [], "processes": []}
    listed = run(["ip", "netns", "list"]).stdout
    assert lab.prefix not in listed
    assert not [link for link in root_links() if link.startswith(lab.prefix)]


@pytest.fixture(scope="module")
def lab() -> Iterator[MultiHostLab]:
    with MultiHostLab(hosts=3) as made:
        yield made
    assert_gone(made)


def test_hosts_and_controller_reach_each_other_over_the_underlay(lab: MultiHostLab) -> None:
    h1, h2, h3 = (lab.host(n) for n in ("h1", "h2", "h3"))
    assert [h.underlay_address for h in (h1, h2, h3)] == ["192.0.2.11", "192.0.2.12", "192.0.2.13"]
    assert len({h.agent_prefix for h in (h1, h2, h3)}) == 3
    wait_for_ping(h1.netns, h2.underlay_address, timeout_s=10)
    assert ping(h2.netns, h3.underlay_address)
    assert ping(h3.netns, CONTROLLER_ADDRESS)
    assert ping(lab.controller_netns, h1.underlay_address)
    # The underlay and the provider network are separate wires.
    assert never_pings(lab.outside_netns, h1.underlay_address, attempts=1)


def test_the_outside_is_reached_through_a_hosts_uplink(lab: MultiHostLab) -> None:
    """What an agent does with a physnet: take the uplink into another
    namespace. Given an address there, it reaches the outside (v4 and v6)."""
    host = lab.host("h2")
    probe = lab.netns_name("probe")
    netns.create(probe)
    try:
        run(["ip", "-n", host.netns, "link", "set", host.uplink_ifname, "netns", probe])
        uplink = host.uplink_ifname
        run(["ip", "-n", probe, "addr", "add", "198.51.100.99/24", "dev", uplink])
        run(["ip", "-n", probe, "addr", "add", "2001:db8:ff::99/64", "dev", uplink, "nodad"])
        run(["ip", "-n", probe, "link", "set", host.uplink_ifname, "up"])
        wait_for_ping(probe, OUTSIDE, timeout_s=10)
        wait_for_ping(probe, OUTSIDE_V6, timeout_s=10)
        # The host's underlay is not on that wire.
        assert never_pings(probe, "192.0.2.1", attempts=1)
        run(["ip", "-n", probe, "link", "set", host.uplink_ifname, "netns", host.netns])
    finally:
        netns.delete(probe)
    links = run(["ip", "-n", host.netns, "-o", "link", "show"]).stdout
    assert host.uplink_ifname in links


def test_cutting_the_underlay_stops_its_packets_and_restoring_brings_them_back(
    lab: MultiHostLab,
) -> None:
    h1, h3 = lab.host("h1"), lab.host("h3")
    wait_for_ping(h1.netns, h3.underlay_address, timeout_s=10)
    lab.cut_underlay("h3")
    try:
        assert never_pings(h1.netns, h3.underlay_address, attempts=2)
        assert never_pings(h3.netns, CONTROLLER_ADDRESS, attempts=1)
    finally:
        lab.restore_underlay("h3")
    wait_for_ping(h1.netns, h3.underlay_address, timeout_s=10)
    wait_for_ping(h3.netns, CONTROLLER_ADDRESS, timeout_s=10)


def test_netns_client_calls_a_server_in_the_controller_namespace(
    lab: MultiHostLab, tmp_path: Path
) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "hello.txt").write_text("hello from the controller\n")
    log = tmp_path / "http.log"
    www = str(tmp_path / "www")
    argv = [sys.executable, "-u", "-m", "http.server", "8080", "--bind", CONTROLLER_ADDRESS]
    server = lab.spawn(lab.controller_netns, [*argv, "--directory", www], log)
    wait_until(
        lambda: ":8080 " in run(["ss", "-Htln"], netns=lab.controller_netns).stdout,
        10,
        0.05,
        "http.server listening",
    )
    # From the root namespace, through a thread in h1: the server sees h1.
    with netns_client(lab.host("h1").netns, f"http://{CONTROLLER_ADDRESS}:8080") as client:
        response = client.get("/hello.txt", timeout=5)
        assert response.status_code == 200
        assert response.text == "hello from the controller\n"
        assert client.get("/missing", timeout=5).status_code == 404
    with netns_client(lab.controller_netns, f"http://{CONTROLLER_ADDRESS}:8080") as client:
        assert client.get("/hello.txt", timeout=5).status_code == 200
    assert wait_until(lambda: "192.0.2.11 - -" in log.read_text(), 5, 0.05, "h1 in the log")
    # And a program run inside a namespace gets there too (as the CLIs will).
    fetched = run_cli(
        lab.host("h2").netns,
        [
            sys.executable,
            "-c",
            "import urllib.request as u, sys; "
            "sys.stdout.write(u.urlopen(sys.argv[1], timeout=5).read().decode())",
            f"http://{CONTROLLER_ADDRESS}:8080/hello.txt",
        ],
    )
    assert fetched.stdout == "hello from the controller\n"
    assert "192.0.2.12 - -" in log.read_text()
    assert lab.stop(server) == -15  # SIGTERM to its process group


def test_netns_client_refuses_a_namespace_that_does_not_exist(lab: MultiHostLab) -> None:
    with pytest.raises(OSError, match="cannot enter"):
        netns_client(lab.netns_name("nonexistent"), "http://192.0.2.1")
    assert lab.netns_name("nonexistent") not in netns.names()


def test_a_killed_host_leaves_nothing_and_a_closed_lab_leaves_nothing(tmp_path: Path) -> None:
    with MultiHostLab(hosts=2) as lab:
        h1, h2 = lab.host("h1"), lab.host("h2")
        # Something spawned in the host, and a "daemon" in one of its agent's
        # namespaces that the lab did not start.
        sleeper = lab.spawn(h1.netns, ["sleep", "1000"], tmp_path / "sleep.log")
        appliance = f"{h1.agent_prefix}-appliance-r1"
        netns.create(appliance)
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", appliance, "sleep", "1000"], start_new_session=True
        )
        wait_until(lambda: daemon.pid in netns.pids(appliance), 5, 0.05, "the daemon")
        wait_for_ping(lab.controller_netns, h1.underlay_address, timeout_s=10)

        lab.kill_host("h1")

        names = run(["ip", "netns", "list"]).stdout
        assert h1.netns not in names and h1.agent_prefix not in names
        assert not alive(sleeper.pid) and not alive(daemon.pid)
        daemon.wait(5)
        assert never_pings(lab.controller_netns, h1.underlay_address, attempts=1)
        assert ping(lab.controller_netns, h2.underlay_address)

        lab.revive_host("h1")
        wait_for_ping(lab.controller_netns, h1.underlay_address, timeout_s=10)
        assert lab.dead == set()
        assert lab.leftovers()["namespaces"]  # still up until the block ends
    assert_gone(lab)


def test_the_lab_is_removed_on_keyboard_interrupt(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), MultiHostLab(hosts=1) as lab:
        sleeper = lab.spawn(lab.host("h1").netns, ["sleep", "1000"], tmp_path / "sleep.log")
        netns.create(f"{lab.host('h1').agent_prefix}-fabric")
        raise KeyboardInterrupt
    assert not alive(sleeper.pid)
    assert_gone(lab)
