"""The agent API against real namespaces: status codes, validation that
changes nothing, and the objects each call creates or removes."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from astara.appliance.checks import tool_checks
from astara.appliance.render import Rendered, render
from astara.appliance.render.dnsmasq import DnsmasqFiles
from astara.appliance.render.nftables import NftRuleset
from astara.appliance.schema import ApplianceConfig
from astara.linux import cleanup, netlink, netns
from astara.linux.run import run
from astara.naming import Names
from astara.testing.agent import AgentProcess
from astara.testing.lab import Lab
from astara.testing.net import wait_for_ping, wait_until
from tests.root.conftest import MAC, build_standard, router_config

pytestmark = pytest.mark.root


def test_health_reports_version_and_capacity(lab: Lab) -> None:
    health = lab.client.health()
    assert health["version"] == "0.1.0"
    assert health["prefix"] == lab.prefix
    assert health["capacity"]["cpus"] >= 1
    assert health["capacity"]["memory_total_bytes"] > 0
    assert health["counts"] == {"networks": 0, "ports": 0, "appliances": 0}


def test_network_is_a_bridge_with_its_mtu(lab: Lab, agent: AgentProcess) -> None:
    names = Names(agent.prefix)
    response = lab.client.http.put("/v1/networks/n1", json={"mtu": 1400})
    assert response.status_code == 201
    assert response.json()["present"] is True and response.json()["mtu"] == 1400
    with netlink.netns(names.fabric_netns) as ns:
        bridge = netlink.link_state(ns, names.bridge("n1"))
    assert bridge is not None and bridge.mtu == 1400 and bridge.up
    # Idempotent: the same PUT is 200 and changes nothing.
    assert lab.client.http.put("/v1/networks/n1", json={"mtu": 1400}).status_code == 200
    # Listed with what the host shows, or (cheaply) the stored specs alone.
    assert lab.client.networks()[0]["bridge"] == names.bridge("n1")
    local = {"type": "local", "vni": None, "physnet": None, "remotes": []}
    assert lab.client.networks(observe=False) == [
        {"id": "n1", "mtu": 1400, "external": False, "segment": local}
    ]
    assert lab.client.networks()[0]["segment_link"] is None
    assert lab.client.appliances(observe=False) == []

    # A workload plugged into it gets the network's MTU.
    lab.workload("w", "n1", MAC["w1"], addresses=("10.1.0.5/24",))
    with netlink.netns(lab.netns("w")) as ns:
        eth0 = netlink.link_state(ns, "eth0")
    assert eth0 is not None and eth0.mtu == 1400 and eth0.mac == MAC["w1"]

    # The MTU of a network in use cannot change under its attachments.
    response = lab.client.http.put("/v1/networks/n1", json={"mtu": 1500})
    assert response.status_code == 409 and "port w" in response.json()["detail"]
    response = lab.client.http.delete("/v1/networks/n1")
    assert response.status_code == 409
    lab.client.delete_port("w")
    assert lab.client.http.delete("/v1/networks/n1").status_code == 204
    # The last network gone, the fabric namespace goes too.
    assert not netns.exists(names.fabric_netns)
    assert lab.client.http.get("/v1/networks/n1").status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/v1/networks/n1", {"mtu": 100}, ["body", "mtu"]),
        ("/v1/networks/n1", {"mtu": 1500, "vlan": 3}, ["body", "vlan"]),
        ("/v1/networks/bad%20id", {"mtu": 1500}, ["path", "network_id"]),
        (
            "/v1/ports/p1",
            {"network_id": "n1", "mac": "01:00:5e:00:00:01", "netns": "x"},
            ["body", "mac"],
        ),
        (
            "/v1/ports/p1",
            {"network_id": "n1", "mac": MAC["w1"], "netns": "x", "ifname": "a" * 16},
            ["body", "ifname"],
        ),
        ("/v1/appliances/r1", {"interfaces": []}, ["body", "interfaces"]),
    ],
)
def test_malformed_requests_get_422_with_the_field(
    lab: Lab, path: str, body: dict[str, object], loc: list[str]
) -> None:
    response = lab.client.http.put(path, json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc
    assert lab.client.health()["counts"] == {"networks": 0, "ports": 0, "appliances": 0}


def test_unknown_objects_are_404(lab: Lab) -> None:
    for path in ("/v1/networks/x", "/v1/ports/x", "/v1/appliances/x", "/v1/appliances/x/rendered"):
        assert lab.client.http.get(path).status_code == 404
        if not path.endswith("rendered"):
            assert lab.client.http.delete(path).status_code == 404


def test_appliance_on_unknown_network_is_refused_and_creates_nothing(lab: Lab) -> None:
    lab.network("ext", external=True)
    response = lab.client.http.put("/v1/appliances/r1", json=router_config())
    assert response.status_code == 422
    locs = [e["loc"] for e in response.json()["detail"]]
    assert ["body", "interfaces", 1, "network_id"] in locs
    assert not netns.exists(lab.router_netns("r1"))
    assert lab.client.http.get("/v1/appliances/r1").status_code == 404


def test_port_validation_changes_nothing(lab: Lab) -> None:
    lab.network("n1")
    # Namespaces outside the agent's prefix are not the agent's to create.
    response = lab.client.http.put(
        "/v1/ports/p1", json={"network_id": "n1", "mac": MAC["w1"], "netns": "somebody-elses"}
    )
    assert response.status_code == 422
    assert not netns.exists("somebody-elses")
    response = lab.client.http.put(
        "/v1/ports/p1", json={"network_id": "nope", "mac": MAC["w1"], "netns": lab.netns("w")}
    )
    assert response.status_code == 422
    assert not netns.exists(lab.netns("w"))

    # Nor the fabric's or an appliance's namespace, nor odd names and ids.
    for netns_name in (f"{lab.prefix}-fabric", f"{lab.prefix}-appliance-r1"):
        body = {"network_id": "n1", "mac": MAC["w1"], "netns": netns_name}
        assert lab.client.http.put("/v1/ports/p1", json=body).status_code == 422
    for bad in (
        {"network_id": "../networks/n1"},
        {"ifname": "eth0.100"},
        {"ifname": "eth0\n"},
        {"netns": f"{lab.prefix}-a/b"},
        {"routes": [{"destination": "0.0.0.0/0", "nexthop": "10.9.9.9"}]},
    ):
        body = {"network_id": "n1", "mac": MAC["w1"], "netns": lab.netns("w"), **bad}
        response = lab.client.http.put("/v1/ports/p1", json=body)
        assert response.status_code == 422, (bad, response.text)
    assert not netns.exists(lab.netns("w"))
    assert lab.client.health()["counts"]["ports"] == 0

    # Two ports in one namespace; the second may not reuse the first's name.
    shared = lab.netns("shared")
    lab.workload("p1", "n1", MAC["w1"], addresses=("10.1.0.5/24",), netns=shared)
    response = lab.client.http.put(
        "/v1/ports/p2", json={"network_id": "n1", "mac": MAC["w2"], "netns": shared}
    )
    assert response.status_code == 409
    lab.client.put_port(
        "p2", {"network_id": "n1", "mac": MAC["w2"], "netns": shared, "ifname": "eth1"}
    )
    # The namespace lives while any port is in it, and goes with the last.
    lab.client.delete_port("p1")
    assert netns.exists(shared)
    lab.client.delete_port("p2")
    assert not netns.exists(shared)


def test_tool_checks_refuse_what_the_real_tools_refuse(agent: AgentProcess, tmp_path: Path) -> None:
    """Schema and semantics catch bad configs first; the real tools' checks
    are the last line, and their refusal is a field error, not a crash."""
    names = Names(agent.prefix)
    netns.create(names.fabric_netns)
    config = ApplianceConfig.model_validate(router_config())
    good = render(config, tmp_path)
    assert tool_checks(good, names.fabric_netns) == []
    broken = Rendered(
        nftables=NftRuleset(sets=(), chains="\tchain input { type filter hook nowhere; }\n"),
        dnsmasq=DnsmasqFiles(conf="dhcp-range=nonsense\n", hosts=""),
        radvd="interface x { AdvSendAdvert maybe; };\n",
    )
    errors = {error.loc: error for error in tool_checks(broken, names.fabric_netns)}
    assert set(errors) == {
        ("rendered", "nftables"),
        ("rendered", "dnsmasq.conf"),
        ("rendered", "radvd.conf"),
    }
    assert all(error.type == "tool_check" for error in errors.values())
    assert errors[("rendered", "nftables")].msg.startswith("nft -c: ")
    assert errors[("rendered", "dnsmasq.conf")].msg.startswith("dnsmasq --test: ")
    assert errors[("rendered", "radvd.conf")].msg.startswith("radvd --configtest: ")


def test_metrics_count_applies(lab: Lab) -> None:
    lab.network("ext", external=True)
    for network in ("n1", "n2", "n6"):
        lab.network(network)
    lab.router("r1", router_config())
    lab.router("r1", router_config())
    lab.client.http.put("/v1/appliances/r1", json={**router_config(), "kind": "toaster"})
    text = lab.client.http.get("/metrics").text
    assert 'astara_agent_appliance_applies_total{outcome="changed"} 1.0' in text
    assert 'astara_agent_appliance_applies_total{outcome="unchanged"} 1.0' in text


def test_agent_listens_on_tcp(tmp_path: Path) -> None:
    """`--listen tcp:HOST:PORT` serves the same API (loopback only here)."""
    import subprocess
    import sys

    import httpx

    from astara.agent.client import AgentClient
    from astara.testing.agent import unique_prefix
    from astara.testing.net import free_port, wait_until

    port = free_port()
    prefix = unique_prefix()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "astara.agent", "--listen", f"tcp:127.0.0.1:{port}"),
            *("--state-dir", str(tmp_path), "--prefix", prefix, "--log-level", "warning"),
        ],
    )
    try:
        with AgentClient(f"tcp:127.0.0.1:{port}") as client:

            def healthy() -> bool:
                try:
                    return bool(client.health()["prefix"] == prefix)
                except httpx.TransportError:
                    return False

            wait_until(healthy, 30, 0.1, "the agent on TCP")
            assert client.put_network("n1")["present"] is True
    finally:
        process.terminate()
        process.wait(10)
        cleanup.remove_all(prefix)


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("udp:1.2.3.4", "expected unix:PATH or tcp:HOST:PORT"),
        ("tcp:0.0.0.0:9697", "a TCP listener off loopback needs TLS"),
    ],
)
def test_bad_listen_address_is_a_clear_error(listen: str, message: str) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "astara.agent", "--listen", listen],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_port_with_a_new_mac_is_replugged_and_leases_again(lab: Lab) -> None:
    build_standard(lab)
    wait_until(lambda: "10.2.0.10/24" in lab.client.get_port("w2")["addresses"], what="lease")
    config = router_config()
    config["dhcp_hosts"][1]["mac"] = "fa:16:3e:00:03:11"
    config["dhcp_hosts"][1]["ip_address"] = "10.2.0.11"
    lab.router("r1", config)
    before = lab.client.get_port("w2")["dhcp_client"]["pid"]
    port = lab.client.put_port(
        "w2",
        {"network_id": "n2", "mac": "fa:16:3e:00:03:11", "netns": lab.netns("w2"), "dhcp": True},
    )
    assert port["dhcp_client"]["pid"] != before
    wait_until(lambda: "10.2.0.11/24" in lab.client.get_port("w2")["addresses"], what="new lease")
    wait_for_ping(lab.netns("w2"), "10.1.0.10")


def _children(pid: int) -> dict[int, tuple[str, str]]:
    """The direct children of `pid`: their states (R, S, Z, ...) and names."""
    found: dict[int, tuple[str, str]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                stat = Path(f"/proc/{child}/stat").read_text()
            except FileNotFoundError:
                continue  # collected meanwhile
            name = stat.split("(", 1)[1].rsplit(")", 1)[0]
            found[int(child)] = (stat.rsplit(")", 1)[1].split()[0], name)
    return found


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def test_no_zombie_and_no_daemon_left_after_many_appliances(lab: Lab, agent: AgentProcess) -> None:
    """Every child the agent starts is collected (dnsmasq's daemonizing
    parents included, which the agent adopts as subreaper), and a deleted
    appliance leaves no daemon behind."""
    assert agent.process is not None
    lab.network("ext", external=True)
    for network in ("n1", "n2", "n6"):
        lab.network(network)
    routers = [f"r{i}" for i in range(10)]
    for router in routers:
        observed = lab.router(router, router_config(floating_ips={}))
        assert observed["daemons"]["dnsmasq"]["running"], observed
    run_directory = f"/run/astara/{agent.prefix}/"
    assert len(_processes_mentioning(run_directory + "appliances/")) >= 10
    for router in routers:
        lab.client.delete_appliance(router)
    pid = agent.process.pid

    def zombies() -> dict[int, tuple[str, str]]:
        return {child: found for child, found in _children(pid).items() if found[0] == "Z"}

    # Some exit after their daemon is killed (radvd's helper): collected
    # within the reaper's round, not necessarily by the time DELETE answers.
    wait_until(lambda: not zombies(), 10, 0.1, "the agent to collect its dead children")
    assert _processes_mentioning(run_directory + "appliances/") == []


def test_a_ruleset_edited_by_hand_is_reported_and_repaired(lab: Lab) -> None:
    """With the cheap observation (the nft genid) in place, a rule added or
    deleted by hand inside the namespace is still drift, and the next PUT of
    the same config puts the table back."""
    lab.network("ext", external=True)
    for network in ("n1", "n2", "n6"):
        lab.network(network)
    lab.router("r1", router_config())
    namespace = lab.router_netns("r1")
    drift = "nftables table differs from the applied ruleset"
    assert lab.client.get_appliance("r1")["problems"] == []
    listing = run(["nft", "-a", "list", "table", "inet", "astara"], netns=namespace).stdout
    chain = re.findall(r"chain (\w+) \{", listing)[0]

    run(
        ["nft", "add", "rule", "inet", "astara", chain, "ip saddr 203.0.113.7 drop"],
        netns=namespace,
    )
    assert drift in lab.client.get_appliance("r1")["problems"]
    repaired = lab.router("r1", router_config())
    assert repaired["actions"] == ["nftables: table replaced"]
    assert lab.client.get_appliance("r1")["problems"] == []
    assert "203.0.113.7" not in run(["nft", "list", "ruleset"], netns=namespace).stdout

    rules = run(["nft", "-a", "list", "chain", "inet", "astara", chain], netns=namespace).stdout
    handle = re.findall(r"# handle (\d+)", rules)[-1]
    run(["nft", "delete", "rule", "inet", "astara", chain, "handle", handle], netns=namespace)
    assert drift in lab.client.get_appliance("r1")["problems"]
    assert lab.router("r1", router_config())["actions"] == ["nftables: table replaced"]
    assert lab.client.get_appliance("r1")["problems"] == []


def test_list_without_observing_gives_what_a_resync_compares(lab: Lab) -> None:
    """`?observe=false`: per appliance its id, epoch, generation and config
    hash, from the agent's records alone: a namespace removed behind the
    agent's back changes nothing in it (an observation would report it)."""
    lab.network("ext", external=True)
    for network in ("n1", "n2", "n6"):
        lab.network(network)
    lab.client.put_appliance("r1", router_config(), epoch=3)
    lab.client.put_appliance("r1", router_config(snat=False), epoch=3)
    lab.client.put_appliance("r2", router_config(floating_ips={}))
    observed = {a["id"]: a for a in lab.client.appliances()}
    # Held, so that the watch reports the deletion instead of repairing it
    # before the GET below looks (a repair takes milliseconds).
    lab.client.hold_appliance("r2", True)
    run(["ip", "netns", "del", lab.router_netns("r2")])
    recorded = lab.client.appliances(observe=False)
    assert [a["id"] for a in recorded] == ["r1", "r2"]
    for appliance in recorded:
        same = observed[appliance["id"]]
        assert {k: appliance[k] for k in ("epoch", "generation", "config_hash")} == {
            k: same[k] for k in ("epoch", "generation", "config_hash")
        }
        assert "problems" not in appliance and "interfaces" not in appliance
    assert [(a["epoch"], a["generation"]) for a in recorded] == [(3, 2), (0, 1)]
    assert "namespace" in " ".join(lab.client.get_appliance("r2")["problems"])


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed by prometheus-client's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_parse_and_hold_phases_states_rebuilds_and_failures(lab: Lab) -> None:
    lab.network("ext", external=True)
    for network in ("n1", "n2", "n6"):
        lab.network(network)
    lab.client.put_appliance("r1", router_config(), epoch=2)
    lab.client.put_appliance("r1", router_config(), epoch=2)  # unchanged
    lab.client.put_appliance("r2", router_config(floating_ips={}))
    assert lab.client.http.put("/v1/appliances/r1?epoch=1", json=router_config()).status_code == 409
    bad = {**router_config(), "kind": "toaster"}
    assert lab.client.http.put("/v1/appliances/r1?epoch=2", json=bad).status_code == 422
    lab.client.hold_appliance("r2", True)  # the watch must leave the rebuild to the PUT
    run(["ip", "netns", "del", lab.router_netns("r2")])
    assert lab.client.get_appliance("r2")["state"] == "degraded"
    rebuilt = lab.client.put_appliance("r2", router_config(floating_ips={}))  # releases the hold
    assert rebuilt["actions"][0].startswith("created namespace"), rebuilt["actions"]
    lab.client.get_appliance("r1")

    samples = _samples(lab.client.http.get("/metrics").text)
    phases = {
        dict(labels)["phase"]
        for (name, labels) in samples
        if name == "astara_agent_appliance_apply_phase_seconds_count"
    }
    expected = {"parse", "check", "validate", "render", "observe", "plan", "execute", "report"}
    assert expected <= phases
    assert samples[("astara_agent_appliances", (("state", "active"),))] == 2
    assert samples[("astara_agent_appliances", (("state", "degraded"),))] == 0
    assert samples[("astara_agent_appliance_rebuilds_total", ())] == 1
    assert samples[("astara_agent_failures_total", (("kind", "stale_epoch"),))] == 1
    assert samples[("astara_agent_failures_total", (("kind", "invalid"),))] == 1
