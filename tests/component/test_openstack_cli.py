"""The real `openstack` CLI and openstacksdk against a live `astara serve`."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
from pathlib import Path

import openstack

from astara.testing.server import BIN, Server


def osc(server: Server, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(server.state_dir / "clouds.yaml")}
    auth = ["--os-token", token, "--os-endpoint", server.url] if token else ["--os-cloud", "astara"]
    return subprocess.run(
        [str(BIN / "openstack"), *auth, *args], capture_output=True, text=True, env=env, timeout=120
    )


def cli(server: Server, line: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    """`osc` with the command written as one line (its words split like a shell's)."""
    return osc(server, *shlex.split(line), token=token)


def value(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def new_project(server: Server, name: str) -> str:
    """A project made with `astara project create`; its token."""
    created = subprocess.run(
        [str(BIN / "astara"), "project", "create", name, "--state-dir", str(server.state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[-1]


def test_credentials_are_written_private(server: Server) -> None:
    for name in ("admin-token", "clouds.yaml"):
        assert (server.state_dir / name).stat().st_mode & 0o777 == 0o600


def test_openstack_cli_network_session_by_name_and_id(server: Server) -> None:
    network_id = value(
        osc(server, "network", "create", "--external", "public", "-f", "value", "-c", "id")
    )
    value(osc(server, "network", "create", "private", "--tag", "blue", "--tag", "web"))
    tagged = value(osc(server, "network", "list", "--tags", "blue", "-f", "value", "-c", "Name"))
    assert tagged == "private"
    value(osc(server, "network", "unset", "--tag", "web", "private"))
    shown = json.loads(value(osc(server, "network", "show", "private", "-f", "json")))
    assert shown["tags"] == ["blue"]
    listing = json.loads(value(osc(server, "network", "list", "-f", "json")))
    assert sorted(n["Name"] for n in listing) == ["private", "public"]
    shown = json.loads(value(osc(server, "network", "show", "public", "-f", "json")))
    assert shown["id"] == network_id and shown["router:external"] is True
    value(osc(server, "network", "set", "--name", "outside", network_id))
    assert (
        value(osc(server, "network", "show", network_id, "-f", "value", "-c", "name")) == "outside"
    )
    value(osc(server, "network", "delete", "outside", "private"))
    assert json.loads(value(osc(server, "network", "list", "-f", "json"))) == []
    missing = osc(server, "network", "show", "nope")
    assert missing.returncode != 0 and "No Network found for nope" in missing.stderr


def test_projects_are_isolated_through_the_real_clients(server: Server) -> None:
    alice = new_project(server, "alice")
    value(osc(server, "network", "create", "--external", "public"))
    value(osc(server, "network", "create", "admins-only"))
    value(osc(server, "network", "create", "alices", token=alice))
    seen = {
        n["Name"]
        for n in json.loads(value(osc(server, "network", "list", "-f", "json", token=alice)))
    }
    assert seen == {"alices", "public"}
    refused = osc(server, "network", "delete", "admins-only", token=alice)
    assert refused.returncode != 0

    # openstacksdk directly, as tools use it.
    conn = openstack.connection.Connection(
        auth_type="admin_token", auth={"endpoint": server.url, "token": alice}
    )
    assert {n.name for n in conn.network.networks()} == {"alices", "public"}
    assert conn.network.find_network("admins-only") is None


def test_everything_is_still_there_after_a_restart(server: Server) -> None:
    value(osc(server, "network", "create", "durable"))
    server.stop()
    server.start()
    assert (
        value(osc(server, "network", "show", "durable", "-f", "value", "-c", "name")) == "durable"
    )


def test_openstack_cli_router_session(server: Server) -> None:
    value(osc(server, "network", "create", "--external", "public"))
    value(
        osc(
            server,
            "subnet",
            "create",
            "--network",
            "public",
            "--subnet-range",
            "198.51.100.0/24",
            "pub",
        )
    )
    value(osc(server, "network", "create", "private"))
    gateway = value(
        osc(
            server,
            "subnet",
            "create",
            "--network",
            "private",
            "--subnet-range",
            "10.0.0.0/24",
            "priv",
            "-f",
            "value",
            "-c",
            "gateway_ip",
        )
    )
    assert gateway == "10.0.0.1"
    value(osc(server, "router", "create", "r1"))
    value(osc(server, "router", "set", "--external-gateway", "public", "r1"))
    value(osc(server, "router", "add", "subnet", "r1", "priv"))
    shown = json.loads(value(osc(server, "router", "show", "r1", "-f", "json")))
    assert shown["external_gateway_info"]["enable_snat"] is True
    assert [i["ip_address"] for i in shown["interfaces_info"]] == ["10.0.0.1"]
    value(osc(server, "router", "remove", "subnet", "r1", "priv"))
    value(osc(server, "router", "unset", "--external-gateway", "r1"))
    value(osc(server, "router", "delete", "r1"))
    assert json.loads(value(osc(server, "port", "list", "-f", "json"))) == []


def test_openstack_cli_tenant_session_with_ports_and_floating_ips(server: Server) -> None:
    """As a tenant: networks (v4 and v6), ports, a router, a floating IP
    associated and disassociated, each shown, listed, set and deleted."""
    value(osc(server, "network", "create", "--external", "public"))
    value(
        osc(
            server,
            "subnet",
            "create",
            "--network",
            "public",
            "--subnet-range",
            "198.51.100.0/24",
            "pub",
        )
    )
    created = subprocess.run(
        [str(BIN / "astara"), "project", "create", "tenant", "--state-dir", str(server.state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    token = created.stdout.strip().splitlines()[-1]

    def tenant(*args: str) -> str:
        return value(osc(server, *args, token=token))

    tenant("network", "create", "web")
    tenant("subnet", "create", "--network", "web", "--subnet-range", "10.0.0.0/24", "web-v4")
    tenant(
        "subnet",
        "create",
        "--network",
        "web",
        "--ip-version",
        "6",
        "--subnet-range",
        "2001:db8:1::/64",
        "--ipv6-ra-mode",
        "slaac",
        "--ipv6-address-mode",
        "slaac",
        "web-v6",
    )
    port = json.loads(tenant("port", "create", "--network", "web", "vm1", "-f", "json"))
    assert len(port["fixed_ips"]) == 2  # one IPv4 from the pool, one SLAAC address
    tenant("port", "set", "--name", "vm-one", "vm1")
    assert (
        tenant("port", "show", "vm-one", "-f", "value", "-c", "mac_address") == port["mac_address"]
    )

    tenant("router", "create", "r1")
    tenant("router", "set", "--external-gateway", "public", "r1")
    tenant("router", "add", "subnet", "r1", "web-v4")
    fip = json.loads(tenant("floating", "ip", "create", "public", "-f", "json"))
    tenant("floating", "ip", "set", "--port", "vm-one", fip["floating_ip_address"])
    shown = json.loads(tenant("floating", "ip", "show", fip["id"], "-f", "json"))
    assert shown["port_id"] == port["id"] and shown["fixed_ip_address"].startswith("10.0.0.")
    listed = json.loads(tenant("floating", "ip", "list", "-f", "json"))
    assert [f["Floating IP Address"] for f in listed] == [fip["floating_ip_address"]]
    tenant("floating", "ip", "unset", "--port", fip["floating_ip_address"])
    tenant("floating", "ip", "delete", fip["floating_ip_address"])

    tenant("router", "remove", "subnet", "r1", "web-v4")
    tenant("router", "delete", "r1")
    tenant("port", "delete", "vm-one")
    tenant("subnet", "delete", "web-v4", "web-v6")
    tenant("network", "delete", "web")
    # Only the shared external network is left in the tenant's view.
    assert [n["Name"] for n in json.loads(tenant("network", "list", "-f", "json"))] == ["public"]


def test_readme_tenant_api_walkthrough_runs(server: Server) -> None:
    """The README's `openstack` walkthrough, against this test's server."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## The tenant API with the `openstack` CLI", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if not line.startswith(("astara serve", "sleep"))]
    script = (
        "\n".join(lines)
        .replace("$PWD/.venv/bin", str(BIN))
        .replace("var/", f"{server.state_dir}/")
        .replace("http://127.0.0.1:9696", server.url)
        .replace("astara events", f"astara events --state-dir {server.state_dir}")
        .replace(
            "astara project create demo",
            f"astara project create demo --state-dir {server.state_dir}",
        )
    )
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    shown = json.loads(value(osc(server, "router", "show", "r1", "-f", "json")))
    assert [i["ip_address"] for i in shown["interfaces_info"]] == ["10.0.0.1"]
    assert shown["external_gateway_info"]["enable_snat"] is True


def test_events_follow_prints_new_events_as_they_commit(server: Server) -> None:
    env = {**server.env(), "ASTARA_STATE_DIR": str(server.state_dir), "COLUMNS": "200"}
    follower = subprocess.Popen(
        [str(BIN / "astara"), "events", "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = threading.Timer(60, follower.kill)  # never hang: the loop below ends then
    deadline.start()
    try:
        value(osc(server, "network", "create", "followed"))
        network_id = value(osc(server, "network", "show", "followed", "-f", "value", "-c", "id"))
        assert follower.stdout is not None
        seen = ""
        for line in follower.stdout:
            seen += line
            if network_id in seen:
                break
        assert network_id in seen and "network" in seen
    finally:
        deadline.cancel()
        follower.kill()
        follower.wait()


def _joined_host(server: Server, name: str, zone: str) -> str:
    """A host as a join records it (what `POST /v1/join` writes), in the
    running server's database."""
    import uuid
    from datetime import datetime

    from sqlalchemy.orm import Session

    from astara.db.engine import make_engine, sqlite_url
    from astara.db.models import Host

    host_id = str(uuid.uuid4())
    engine = make_engine(sqlite_url(server.state_dir.resolve()))
    try:
        with Session(engine) as session, session.begin():
            session.add(
                Host(
                    id=host_id,
                    name=name,
                    address="https://192.0.2.12:9698",
                    underlay_address="198.51.100.12",
                    physnets={"public": "eth1"},
                    availability_zone=zone,
                    alive=True,
                    last_heartbeat=datetime(2026, 11, 25, 12, 0),
                    cert_serial="12ab",
                    cert_not_after=datetime(2027, 11, 25, 12, 0),
                    created_at=datetime(2026, 11, 25, 12, 0),
                )
            )
    finally:
        engine.dispose()
    return host_id


def test_openstack_cli_agents_zones_and_provider_networks(server: Server) -> None:
    host_id = _joined_host(server, "h2", "az2")
    agents = json.loads(value(osc(server, "network", "agent", "list", "-f", "json")))
    assert [(a["ID"], a["Agent Type"], a["Host"], a["Binary"]) for a in agents] == [
        (host_id, "L3 agent", "h2", "astara-agent")
    ]
    assert agents[0]["Availability Zone"] == "az2" and agents[0]["Alive"] is True
    assert agents[0]["State"] is True
    shown = json.loads(value(osc(server, "network", "agent", "show", host_id, "-f", "json")))
    assert shown["host"] == "h2" and shown["configuration"]["physnets"] == {"public": "eth1"}
    value(osc(server, "network", "agent", "set", "--disable", host_id))
    assert value(
        osc(server, "network", "agent", "show", host_id, "-f", "value", "-c", "admin_state_up")
    ) in ("False", "DOWN")
    zones = json.loads(
        value(osc(server, "availability", "zone", "list", "--network", "-f", "json"))
    )
    assert {(z["Zone Name"], z["Zone Status"]) for z in zones} == {("az2", "not available")}
    created = json.loads(
        value(
            osc(
                server,
                "network",
                "create",
                "--external",
                "--provider-network-type",
                "flat",
                "--provider-physical-network",
                "public",
                "public",
                "-f",
                "json",
            )
        )
    )
    assert created["provider:network_type"] == "flat"
    assert created["provider:physical_network"] == "public"
    value(osc(server, "network", "create", "private"))
    shown = json.loads(value(osc(server, "network", "show", "private", "-f", "json")))
    assert shown["provider:network_type"] == "vxlan"
    assert 1 <= shown["provider:segmentation_id"] <= 65535 and shown["mtu"] == 1450
    vlan = osc(server, "network", "create", "--provider-network-type", "vlan", "v")
    assert vlan.returncode != 0 and "802.1Q" in vlan.stderr
    value(osc(server, "network", "agent", "delete", host_id))
    assert json.loads(value(osc(server, "network", "agent", "list", "-f", "json"))) == []


def test_openstack_cli_security_groups_rules_and_address_groups(server: Server) -> None:
    """`openstack security group …`, `security group rule …`, `address group …`
    and a port's groups and address pairs, as a tenant runs them; openstacksdk's
    security-group calls; another project sees none of it."""
    bob = new_project(server, "bob")
    listed = json.loads(value(cli(server, "security group list -f json")))
    assert [g["Name"] for g in listed] == ["default"]
    web = json.loads(value(cli(server, "security group create web --description front -f json")))
    assert web["name"] == "web" and web["stateful"] is True
    http_rule = (
        "security group rule create web --protocol tcp --dst-port 80:81 --remote-ip 10.0.0.0/8"
    )
    value(cli(server, http_rule))
    value(cli(server, "security group rule create web --protocol icmp"))
    value(
        cli(
            server,
            "security group rule create web "
            "--ethertype IPv6 --protocol ipv6-icmp --remote-group default",
        )
    )
    again = cli(server, http_rule)
    assert again.returncode != 0 and "already exists" in again.stderr
    rules = json.loads(value(cli(server, "security group rule list web -f json")))
    ranges = {(r["IP Protocol"], r["Port Range"], r["IP Range"]) for r in rules}
    assert ("tcp", "80:81", "10.0.0.0/8") in ranges and len(rules) == 5  # and the 2 egress
    value(cli(server, "security group set --name frontend web"))
    shown = json.loads(value(cli(server, "security group show frontend -f json")))
    assert shown["id"] == web["id"] and len(shown["rules"]) == 5

    offices = json.loads(
        value(
            cli(
                server,
                "address group create offices --address "
                "192.0.2.0/24 --address 198.51.100.7 -f json",
            )
        )
    )
    assert sorted(offices["addresses"]) == ["192.0.2.0/24", "198.51.100.7/32"]
    value(cli(server, "address group set offices --address 203.0.113.0/24"))
    value(cli(server, "address group unset offices --address 198.51.100.7/32"))
    shown = json.loads(value(cli(server, "address group show offices -f json")))
    assert sorted(shown["addresses"]) == ["192.0.2.0/24", "203.0.113.0/24"]
    value(
        cli(
            server,
            "security group rule create frontend "
            "--protocol tcp --dst-port 22 --remote-address-group offices",
        )
    )

    value(cli(server, "network create private"))
    value(cli(server, "subnet create --network private --subnet-range 10.5.0.0/24 private-v4"))
    port = json.loads(
        value(
            cli(
                server,
                "port create --network private --security-group "
                "frontend --allowed-address ip-address=10.5.0.200 vm1 -f json",
            )
        )
    )
    assert port["security_group_ids"] == [web["id"]]
    assert port["allowed_address_pairs"][0]["ip_address"] == "10.5.0.200"
    in_use = cli(server, "security group delete frontend")
    assert in_use.returncode != 0 and "in use" in in_use.stderr
    value(
        cli(server, "port set --no-security-group --disable-port-security --no-allowed-address vm1")
    )
    bare = json.loads(value(cli(server, "port show vm1 -f json")))
    assert bare["security_group_ids"] == [] and bare["port_security_enabled"] is False

    # openstacksdk, as tools use it; Bob sees none of the admin project's groups.
    conn = openstack.connection.Connection(
        auth_type="admin_token", auth={"endpoint": server.url, "token": bob}
    )
    assert [g.name for g in conn.network.security_groups()] == ["default"]
    assert conn.network.find_security_group("frontend") is None
    mine = conn.network.create_security_group(name="mine")
    made = conn.network.create_security_group_rule(
        security_group_id=mine.id,
        direction="ingress",
        protocol="udp",
        port_range_min=53,
        port_range_max=53,
    )
    assert (made.protocol, made.port_range_min) == ("udp", 53)
    assert {r.id for r in conn.network.security_group_rules(security_group_id=mine.id)} >= {made.id}
    seen = cli(server, "security group show mine")
    assert seen.returncode == 0  # the admin sees every project's groups
    hidden = osc(server, "security", "group", "show", web["id"], token=bob)
    assert hidden.returncode != 0
    conn.network.delete_security_group_rule(made.id)
    conn.network.delete_security_group(mine.id)
    value(cli(server, "port delete vm1"))
    value(cli(server, "security group delete frontend"))
    value(cli(server, "address group delete offices"))


def test_openstack_cli_firewall_groups_policies_and_rules(server: Server) -> None:
    """`openstack firewall group …`, `… policy …` and `… rule …` as a tenant
    runs them on a router interface; openstacksdk's FWaaS calls; another
    project sees none of it."""
    bob = new_project(server, "bob")
    listed = json.loads(value(cli(server, "firewall group list -f json")))
    assert [g["Name"] for g in listed] == ["default"]  # made on the first list
    web = json.loads(
        value(
            cli(
                server,
                "firewall group rule create web --protocol tcp --destination-port 80 "
                "--action allow -f json",
            )
        )
    )
    assert (web["Protocol"], web["Destination Port"], web["Action"]) == ("tcp", "80", "allow")
    value(cli(server, "firewall group rule create ssh --protocol TCP --destination-port 22:23"))
    value(
        cli(
            server, "firewall group rule create block --action deny --source-ip-address 10.9.0.0/16"
        )
    )
    rules = json.loads(value(cli(server, "firewall group rule list -f json")))
    summaries = {r["Name"]: r["Summary"] for r in rules}
    assert "TCP" in summaries["ssh"] and "22:23" in summaries["ssh"]

    value(
        cli(server, "firewall group policy create inbound --firewall-rule web --firewall-rule ssh")
    )
    value(cli(server, "firewall group policy add rule inbound block --insert-before ssh"))
    shown = json.loads(value(cli(server, "firewall group policy show inbound -f json")))
    ids = {r["Name"]: r["ID"] for r in rules}
    assert shown["Firewall Rules"] == [ids["web"], ids["block"], ids["ssh"]]
    value(cli(server, "firewall group policy remove rule inbound ssh"))
    value(cli(server, "firewall group policy add rule inbound ssh"))  # first, by default
    shown = json.loads(value(cli(server, "firewall group policy show inbound -f json")))
    assert shown["Firewall Rules"] == [ids["ssh"], ids["web"], ids["block"]]

    value(cli(server, "network create private"))
    value(cli(server, "subnet create --network private --subnet-range 10.6.0.0/24 private-v4"))
    value(cli(server, "router create r"))
    value(cli(server, "router add subnet r private-v4"))
    port_id = value(cli(server, "port list --device-owner network:router_interface -f value -c ID"))
    edge = f"firewall group create edge --ingress-firewall-policy inbound --port {port_id}"
    group = json.loads(value(cli(server, f"{edge} -f json")))
    assert group["Ports"] == [port_id] and group["Status"] in ("PENDING_CREATE", "ACTIVE")
    in_use = cli(server, "firewall group policy delete inbound")
    assert in_use.returncode != 0 and "is being used" in in_use.stderr
    taken = cli(server, f"firewall group create other --port {port_id}")
    assert taken.returncode != 0 and "already associated" in taken.stderr
    value(cli(server, "firewall group set edge --disable --egress-firewall-policy inbound"))
    shown = json.loads(value(cli(server, "firewall group show edge -f json")))
    assert shown["State"] is False
    assert shown["Egress Policy ID"] == shown["Ingress Policy ID"]
    value(cli(server, "firewall group unset edge --all-port --egress-firewall-policy"))
    shown = json.loads(value(cli(server, "firewall group show edge -f json")))
    assert shown["Ports"] == [] and shown["Status"] == "INACTIVE"

    # openstacksdk, as tools use it; Bob sees none of the admin project's objects.
    conn = openstack.connection.Connection(
        auth_type="admin_token", auth={"endpoint": server.url, "token": bob}
    )
    assert [g.name for g in conn.network.firewall_groups()] == ["default"]
    assert conn.network.find_firewall_policy("inbound") is None
    first = conn.network.create_firewall_rule(name="a", protocol="udp", action="allow")
    second = conn.network.create_firewall_rule(name="b", protocol="icmp")
    mine = conn.network.create_firewall_policy(name="mine", firewall_rules=[first.id])
    conn.network.insert_rule_into_policy(mine.id, second.id, insert_before=first.id)
    assert conn.network.get_firewall_policy(mine.id).firewall_rules == [second.id, first.id]
    conn.network.remove_rule_from_policy(mine.id, second.id)
    assert conn.network.get_firewall_policy(mine.id).firewall_rules == [first.id]
    inbound = shown["Ingress Policy ID"]
    hidden = osc(server, "firewall", "group", "policy", "show", inbound, token=bob)
    assert hidden.returncode != 0
    conn.network.delete_firewall_policy(mine.id)
    conn.network.delete_firewall_rule(first.id)
    conn.network.delete_firewall_rule(second.id)
    value(cli(server, "firewall group delete edge"))
    value(cli(server, "firewall group policy delete inbound"))
    value(cli(server, "firewall group rule delete web ssh block"))
