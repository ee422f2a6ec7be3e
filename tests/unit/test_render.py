"""Rendered configs: golden files, each also accepted by the real tool.

Regenerate the goldens after an intended change with

    ASTARA_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_render.py

and review the diff; the validator tests then judge the new files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any

import pytest
from pydantic import ValidationError

from astara.appliance.render import MetadataProxy, Rendered, render
from astara.appliance.render.dnsmasq import render_dnsmasq
from astara.appliance.render.nftables import render_nftables
from astara.appliance.render.radvd import render_radvd
from astara.appliance.schema import ApplianceConfig, validate_semantics
from astara.naming import appliance_interface
from tests.unit import configs
from tests.unit.configs import (
    NET_A_MAC,
    NET_B_MAC,
    NETWORK_MTUS,
    STATE_DIR,
    dhcp_config,
    representative,
    representative_config,
)
from tests.unit.validators import (
    assert_accepted,
    dnsmasq_hosts_test,
    dnsmasq_test,
    haproxy_check,
    nft,
    nft_ok,
    radvd_configtest,
    scratch_netns,
)

GOLDEN_DIR = Path(__file__).parent / "golden"
GOLDEN_NAMES = ["nftables.nft", "dnsmasq.conf", "dnsmasq.hosts", "radvd.conf", "haproxy.cfg"]
# The representative router on a host that serves metadata.
METADATA = MetadataProxy(PurePath("/run/astara/ast/metadata/proxy.sock"), "router-1")
UPDATE_GOLDEN = os.environ.get("ASTARA_UPDATE_GOLDEN") == "1"

Doc = dict[str, Any]


def rendered_representative() -> Rendered:
    return render(representative_config(), STATE_DIR, NETWORK_MTUS, METADATA)


def config_from(mutate: Callable[[Doc], None]) -> ApplianceConfig:
    doc = representative()
    mutate(doc)
    return ApplianceConfig.model_validate(doc)


def chain_lines(text: str, chain: str) -> list[str]:
    """The statements of one chain in a rendered ruleset, without indentation."""
    match = re.search(rf"^\tchain {chain} \{{\n(.*?)^\t\}}", text, re.M | re.S)
    assert match, f"no chain {chain} in\n{text}"
    return [line.strip() for line in match.group(1).splitlines()]


def nft_check(text: str, scratch: Path) -> None:
    """`nft -c -f` in a fresh namespace of our own; fails the test if refused."""
    path = scratch / "ruleset.nft"
    path.write_text(text)
    with scratch_netns() as netns:
        nft_ok(netns, "-c", "-f", str(path))
        # A check changes nothing.
        assert nft_ok(netns, "list", "ruleset") == ""


# --- goldens -----------------------------------------------------------------------------


def test_rendered_files_are_the_golden_ones() -> None:
    texts = rendered_representative().texts()
    # A router runs no load balancer and, unless HA, no keepalived or
    # conntrackd (tests/unit/test_render_ha.py): their files are there, empty.
    others = ["loadbalancer.cfg", "keepalived.conf", "conntrackd.conf"]
    assert sorted(texts) == sorted([*GOLDEN_NAMES, *others])
    assert [texts[name] for name in others] == ["", "", ""]


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_render_matches_golden(name: str) -> None:
    text = rendered_representative().texts()[name]
    path = GOLDEN_DIR / name
    if UPDATE_GOLDEN:
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden {path}: run with ASTARA_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), (
        f"{name} differs from {path}; if intended, regenerate with ASTARA_UPDATE_GOLDEN=1"
    )


def test_goldens_are_not_empty() -> None:
    # The representative config uses every renderer: an empty golden would
    # make its validator test vacuous.
    for name in GOLDEN_NAMES:
        assert (GOLDEN_DIR / name).read_text().strip(), name


@pytest.mark.root
def test_nftables_golden_passes_nft_check() -> None:
    with scratch_netns() as netns:
        nft_ok(netns, "-c", "-f", str(GOLDEN_DIR / "nftables.nft"))


def test_dnsmasq_conf_golden_passes_dnsmasq_test() -> None:
    assert_accepted(dnsmasq_test(GOLDEN_DIR / "dnsmasq.conf"))


def test_dnsmasq_hosts_golden_passes_dnsmasq_test(tmp_path: Path) -> None:
    assert_accepted(
        dnsmasq_hosts_test(GOLDEN_DIR / "dnsmasq.hosts", GOLDEN_DIR / "dnsmasq.conf", tmp_path)
    )


def test_radvd_golden_passes_radvd_configtest() -> None:
    assert_accepted(radvd_configtest(GOLDEN_DIR / "radvd.conf"))


def test_haproxy_golden_passes_haproxy_check() -> None:
    assert_accepted(haproxy_check(GOLDEN_DIR / "haproxy.cfg"))


def test_haproxy_check_refuses_a_broken_config(tmp_path: Path) -> None:
    broken = tmp_path / "haproxy.cfg"
    broken.write_text((GOLDEN_DIR / "haproxy.cfg").read_text().replace("mode http", "mode htp"))
    assert haproxy_check(broken).returncode != 0


def test_the_metadata_proxy_speaks_for_its_appliance_only() -> None:
    """Whatever a workload sends under the names the agent trusts or signs
    with is dropped before haproxy sets its own; no host serving metadata,
    no proxy."""
    text = rendered_representative().haproxy
    lines = [line.strip() for line in text.splitlines()]
    sets = lines.index("http-request set-header X-Forwarded-For %[src]")
    for name in ("X-Astara-Appliance-ID", "X-Forwarded-For", "X-Instance-ID", "X-Tenant-ID"):
        assert lines.index(f"http-request del-header {name}") < sets
    assert "http-request set-header X-Astara-Appliance-ID router-1" in lines
    assert "server agent unix@/run/astara/ast/metadata/proxy.sock" in lines
    assert render(representative_config(), STATE_DIR, NETWORK_MTUS).haproxy == ""


# --- a network's DHCP appliance: its own goldens, judged by the same tools ----------------

DHCP_GOLDEN_NAMES = ["dhcp.nftables.nft", "dhcp.dnsmasq.conf", "dhcp.dnsmasq.hosts"]


@pytest.mark.parametrize("name", DHCP_GOLDEN_NAMES)
def test_dhcp_appliance_render_matches_golden(name: str) -> None:
    texts = render(dhcp_config(), STATE_DIR, NETWORK_MTUS).texts()
    text = texts[name.removeprefix("dhcp.")]
    path = GOLDEN_DIR / name
    if UPDATE_GOLDEN:
        path.write_text(text)
    assert path.exists(), f"no golden {path}: run with ASTARA_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{name} differs from {path}"
    assert texts["radvd.conf"] == "", "nothing to advertise: no router"


@pytest.mark.root
def test_dhcp_appliance_nftables_golden_passes_nft_check() -> None:
    with scratch_netns() as netns:
        nft_ok(netns, "-c", "-f", str(GOLDEN_DIR / "dhcp.nftables.nft"))


def test_dhcp_appliance_dnsmasq_goldens_pass_dnsmasq_test(tmp_path: Path) -> None:
    conf, hosts = GOLDEN_DIR / "dhcp.dnsmasq.conf", GOLDEN_DIR / "dhcp.dnsmasq.hosts"
    assert_accepted(dnsmasq_test(conf))
    assert_accepted(dnsmasq_hosts_test(hosts, conf, tmp_path))


def test_a_dhcp_appliance_forwards_nothing() -> None:
    text = render_nftables(dhcp_config()).text()
    assert chain_lines(text, "forward") == [
        "type filter hook forward priority filter; policy drop;"
    ]
    # It still serves: the input chain accepts DHCP on its interface.
    assert "drop" not in " ".join(chain_lines(text, "input"))


def test_a_router_without_forwarding_drops_every_forwarded_packet() -> None:
    text = render_nftables(config_from(lambda doc: doc.update(forwarding=False))).text()
    assert chain_lines(text, "forward") == [
        "type filter hook forward priority filter; policy drop;"
    ]
    # Forwarding on (the default) is the router's ruleset, unchanged.
    forwarding = render_nftables(representative_config()).text()
    assert "policy accept;" in chain_lines(forwarding, "forward")[0]


def test_a_router_without_forwarding_is_advertised_as_no_default_router(tmp_path: Path) -> None:
    """Administratively down, a router still announces its prefixes (hosts keep
    their addresses) but with router lifetime 0: hosts route nothing through it."""
    down = render_radvd(config_from(lambda doc: doc.update(forwarding=False)))
    assert down and down.count("AdvDefaultLifetime 0;") == down.count("interface ")
    assert "AdvDefaultLifetime" not in render_radvd(representative_config())
    conf = tmp_path / "radvd.conf"
    conf.write_text(down)
    assert_accepted(radvd_configtest(conf))


# The same validators refuse a broken file: the checks above are not vacuous.


@pytest.mark.root
def test_nft_check_refuses_a_rule_on_a_missing_map(tmp_path: Path) -> None:
    broken = tmp_path / "broken.nft"
    text = (GOLDEN_DIR / "nftables.nft").read_text()
    broken.write_text(text.replace("map @floating_dnat", "map @floating_dnat_typo"))
    with scratch_netns() as netns:
        result = nft(netns, "-c", "-f", str(broken))
    assert result.returncode != 0
    assert "floating_dnat_typo" in result.stderr


def test_dnsmasq_test_refuses_an_unknown_option(tmp_path: Path) -> None:
    broken = tmp_path / "dnsmasq.conf"
    text = (GOLDEN_DIR / "dnsmasq.conf").read_text()
    broken.write_text(text.replace("option:router", "option:routre", 1))
    assert dnsmasq_test(broken).returncode != 0


def test_dnsmasq_hosts_check_refuses_a_bad_hostname(tmp_path: Path) -> None:
    hosts = tmp_path / "dnsmasq.hosts"
    hosts.write_text(
        (GOLDEN_DIR / "dnsmasq.hosts").read_text() + "fa:16:3e:10:00:09,10.0.1.9,web 9\n"
    )
    assert dnsmasq_hosts_test(hosts, GOLDEN_DIR / "dnsmasq.conf", tmp_path).returncode != 0


def test_radvd_configtest_refuses_a_bad_value(tmp_path: Path) -> None:
    broken = tmp_path / "radvd.conf"
    broken.write_text(
        (GOLDEN_DIR / "radvd.conf").read_text().replace("AdvSendAdvert on", "AdvSendAdvert perhaps")
    )
    assert radvd_configtest(broken).returncode != 0


# --- nftables ----------------------------------------------------------------------------


def _snat_disabled(doc: Doc) -> None:
    doc["snat"]["enabled"] = False


def _snat_explicit(doc: Doc) -> None:
    doc["interfaces"][0]["addresses"].append("203.0.113.3/24")
    doc["snat"]["address"] = "203.0.113.3"


def _internal_only(doc: Doc) -> None:
    del doc["interfaces"][0]
    doc["snat"]["enabled"] = False
    doc["floating_ips"] = []
    doc["routes"] = []


def _nested_internal_prefixes(doc: Doc) -> None:
    doc["interfaces"][2]["addresses"] += ["10.0.2.130/25", "10.0.3.1/24"]


def _no_floating_ips(doc: Doc) -> None:
    doc["floating_ips"] = []


def _firewalls(doc: Doc) -> None:
    """One group with every kind of rule on net A, one set down on net B."""
    doc["firewalls"] = [
        {
            "id": "11111111-1111-1111-1111-111111111111",
            "interfaces": [configs.NET_A_MAC],
            "ingress": [
                {
                    "action": "allow",
                    "ip_version": 4,
                    "protocol": "tcp",
                    "source": "192.0.2.0/24",
                    "destination_ports": {"min": 80, "max": 80},
                },
                {
                    "action": "reject",
                    "ip_version": 4,
                    "protocol": "udp",
                    "destination": "10.0.1.5/32",
                    "source_ports": {"min": 1000, "max": 2000},
                },
                {"action": "allow", "ip_version": 6, "protocol": "icmp"},
                {"action": "deny", "ip_version": 6, "source": "2001:db8::/32"},
                {"action": "allow", "ip_version": 4, "protocol": "sctp"},
            ],
            "egress": [{"action": "allow", "ip_version": 4}],
        },
        {
            "id": "22222222-2222-2222-2222-222222222222",
            "interfaces": [configs.NET_B_MAC],
            "enabled": False,
        },
    ]


RULESET_VARIANTS: dict[str, Callable[[Doc], None]] = {
    "firewalls": _firewalls,
    "forwarding off": lambda doc: doc.update(forwarding=False),
    "SNAT disabled": _snat_disabled,
    "SNAT explicit address": _snat_explicit,
    "no external interface": _internal_only,
    "nested internal prefixes": _nested_internal_prefixes,
    "no floating IPs": _no_floating_ips,
}


@pytest.mark.root
@pytest.mark.parametrize("variant", list(RULESET_VARIANTS))
def test_ruleset_variants_pass_nft_check(variant: str, tmp_path: Path) -> None:
    nft_check(render_nftables(config_from(RULESET_VARIANTS[variant])).text(), tmp_path)


def test_snat_rule_uses_the_external_address() -> None:
    text = render_nftables(representative_config()).text()
    assert 'oifname "extfa163e000001" ip saddr @internal_v4 snat ip to 203.0.113.2' in (
        chain_lines(text, "postrouting")
    )


def test_no_snat_rule_when_snat_is_disabled() -> None:
    text = render_nftables(config_from(_snat_disabled)).text()
    assert chain_lines(text, "postrouting") == [
        "type nat hook postrouting priority srcnat; policy accept;",
        # Floating IPs still leave with their own address, and hairpin
        # traffic to them is still translated.
        'oifname "extfa163e000001" snat ip to ip saddr map @floating_snat',
        'iifname != "extfa163e000001" oifname != "extfa163e000001" ct status dnat masquerade',
    ]


def test_snat_with_an_explicit_address() -> None:
    postrouting = chain_lines(render_nftables(config_from(_snat_explicit)).text(), "postrouting")
    assert 'oifname "extfa163e000001" ip saddr @internal_v4 snat ip to 203.0.113.3' in postrouting
    assert not any("203.0.113.2" in line for line in postrouting)


# Instances' metadata requests, from internal interfaces only, go to the proxy.
METADATA_REDIRECT = (
    'iifname { "intfa163e000101", "intfa163e000201" }'
    " ip daddr 169.254.169.254 tcp dport 80 redirect to :9697"
)


def test_no_external_rules_without_an_external_interface() -> None:
    text = render_nftables(config_from(_internal_only)).text()
    assert chain_lines(text, "prerouting") == [
        "type nat hook prerouting priority dstnat; policy accept;",
        METADATA_REDIRECT,
    ]
    assert chain_lines(text, "postrouting") == [
        "type nat hook postrouting priority srcnat; policy accept;"
    ]
    assert chain_lines(text, "forward") == [
        "type filter hook forward priority filter; policy accept;",
        "ct state invalid drop",
        "ct state established,related accept",
    ]
    assert chain_lines(text, "input") == [
        "type filter hook input priority filter; policy accept;",
        "ct state established,related accept",
    ]
    assert "extfa163e" not in text


def test_external_traffic_is_accepted_only_to_floating_ips() -> None:
    text = render_nftables(representative_config()).text()
    assert chain_lines(text, "prerouting")[1:] == [
        METADATA_REDIRECT,
        "dnat ip to ip daddr map @floating_dnat",
    ]
    assert chain_lines(text, "forward")[3:] == [
        'iifname "extfa163e000001" meta nfproto ipv4 ct status dnat accept',
        'iifname "extfa163e000001" meta nfproto ipv4 drop',
    ]
    assert chain_lines(text, "input")[2:] == [
        'iifname "extfa163e000001" meta l4proto { icmp, ipv6-icmp } accept',
        'iifname "extfa163e000001" drop',
    ]


def test_internal_prefixes_are_merged_for_the_interval_set() -> None:
    # nft refuses overlapping intervals in one set (see the nft check of this variant).
    sets = {s.name: s for s in render_nftables(config_from(_nested_internal_prefixes)).sets}
    assert sets["internal_v4"].elements == ("10.0.1.0/24", "10.0.2.0/23")


def test_no_floating_ips_leaves_the_maps_empty_but_declared() -> None:
    ruleset = render_nftables(config_from(_no_floating_ips))
    sets = {s.name: s for s in ruleset.sets}
    assert sets["floating_dnat"].elements == sets["floating_snat"].elements == ()
    # The rules keep referring to the maps, so a first floating IP is an element change.
    assert ruleset.structure == render_nftables(representative_config()).structure


def test_only_internal_ipv4_prefixes_are_internal() -> None:
    def with_management(doc: Doc) -> None:
        doc["interfaces"].append(
            {
                "mac": "fa:16:3e:00:03:01",
                "network_id": "mgmt",
                "role": "management",
                "addresses": ["192.0.2.10/24"],
            }
        )

    sets = {s.name: s for s in render_nftables(config_from(with_management)).sets}
    assert sets["internal_v4"].elements == ("10.0.1.0/24", "10.0.2.0/24")


def test_floating_ip_maps_go_both_ways() -> None:
    sets = {s.name: s for s in render_nftables(representative_config()).sets}
    assert sets["floating_dnat"].elements == (
        "203.0.113.10 : 10.0.1.5",
        "203.0.113.11 : 10.0.2.7",
    )
    assert sets["floating_snat"].elements == (
        "10.0.1.5 : 203.0.113.10",
        "10.0.2.7 : 203.0.113.11",
    )


# --- dnsmasq -----------------------------------------------------------------------------


def test_no_dnsmasq_without_dhcp_subnets() -> None:
    def no_dhcp(doc: Doc) -> None:
        for subnet in doc["subnets"]:
            subnet["enable_dhcp"] = False
        doc["dhcp_hosts"] = []

    files = render_dnsmasq(config_from(no_dhcp), STATE_DIR)
    assert (files.conf, files.hosts, files.enabled) == ("", "", False)


def test_no_dnsmasq_without_subnets() -> None:
    def no_subnets(doc: Doc) -> None:
        doc["subnets"] = []
        doc["dhcp_hosts"] = []

    rendered = render(config_from(no_subnets), STATE_DIR, NETWORK_MTUS)
    assert rendered.dnsmasq.conf == rendered.dnsmasq.hosts == rendered.radvd == ""
    assert not rendered.dnsmasq.enabled


def test_dnsmasq_runs_with_dhcp_subnets_only() -> None:
    assert render_dnsmasq(representative_config(), STATE_DIR).enabled


def test_dnsmasq_files_live_in_the_state_dir() -> None:
    conf = render_dnsmasq(representative_config(), STATE_DIR).conf.splitlines()
    for key, file_name in [
        ("pid-file", "dnsmasq.pid"),
        ("dhcp-hostsfile", "dnsmasq.hosts"),
        ("log-facility", "dnsmasq.log"),
    ]:
        assert f"{key}={STATE_DIR / file_name}" in conf


@pytest.mark.parametrize(
    ("gateway_ip", "host_routes", "expected"),
    [
        pytest.param("10.0.1.1", [], None, id="no-host-routes-no-option"),
        pytest.param(
            "10.0.1.1",
            [{"destination": "172.16.0.0/16", "nexthop": "10.0.1.254"}],
            "172.16.0.0/16,10.0.1.254,0.0.0.0/0,10.0.1.1",
            id="default-route-travels-with-host-routes",
        ),
        pytest.param(
            "10.0.1.1",
            [
                {"destination": "172.16.0.0/16", "nexthop": "10.0.1.254"},
                {"destination": "0.0.0.0/0", "nexthop": "10.0.1.253"},
            ],
            "172.16.0.0/16,10.0.1.254,0.0.0.0/0,10.0.1.253",
            id="explicit-default-route-kept-alone",
        ),
        pytest.param(
            None,
            [{"destination": "172.16.0.0/16", "nexthop": "10.0.1.254"}],
            "172.16.0.0/16,10.0.1.254",
            id="no-gateway-no-default-route",
        ),
    ],
)
def test_classless_static_routes(
    gateway_ip: str | None, host_routes: list[Doc], expected: str | None, tmp_path: Path
) -> None:
    def routes(doc: Doc) -> None:
        doc["subnets"][0]["gateway_ip"] = gateway_ip
        doc["subnets"][0]["host_routes"] = host_routes

    conf = render_dnsmasq(config_from(routes), STATE_DIR).conf
    options = [
        line.removeprefix("dhcp-option=tag:subnet0,option:classless-static-route,")
        for line in conf.splitlines()
        if line.startswith("dhcp-option=tag:subnet0,option:classless-static-route,")
    ]
    assert options == ([] if expected is None else [expected])
    (tmp_path / "dnsmasq.conf").write_text(conf)
    assert_accepted(dnsmasq_test(tmp_path / "dnsmasq.conf"))


def test_no_router_and_no_dns_are_sent_empty(tmp_path: Path) -> None:
    def bare(doc: Doc) -> None:
        doc["subnets"][1].update(gateway_ip=None, dns_nameservers=[], host_routes=[])

    conf = render_dnsmasq(config_from(bare), STATE_DIR).conf
    lines = [line for line in conf.splitlines() if "tag:subnet1" in line]
    # An option without a value tells dnsmasq to send none, not its own address.
    assert lines == [
        "dhcp-option=tag:subnet1,option:mtu,1400",  # the interface's own MTU
        "dhcp-option=tag:subnet1,option:router",
        "dhcp-option=tag:subnet1,option:dns-server",
    ]
    (tmp_path / "dnsmasq.conf").write_text(conf)
    assert_accepted(dnsmasq_test(tmp_path / "dnsmasq.conf"))


def test_dnsmasq_serves_only_interfaces_with_dhcp() -> None:
    def only_net_b(doc: Doc) -> None:
        doc["subnets"][0]["enable_dhcp"] = False
        doc["dhcp_hosts"] = [h for h in doc["dhcp_hosts"] if h["ip_address"].startswith("10.0.2.")]

    conf = render_dnsmasq(config_from(only_net_b), STATE_DIR).conf.splitlines()
    assert [line for line in conf if line.startswith("interface=")] == ["interface=intfa163e000201"]
    assert [line for line in conf if line.startswith("dhcp-range=")] == [
        "dhcp-range=set:subnet0,10.0.2.0,static,255.255.255.0,3600s"
    ]


# --- radvd -------------------------------------------------------------------------------


def test_no_radvd_without_slaac_subnets() -> None:
    config = config_from(lambda doc: doc["subnets"][2].update(ipv6_ra_mode=None))
    assert render_radvd(config, NETWORK_MTUS) == ""
    # DHCP still runs: one does not depend on the other.
    assert render_dnsmasq(config, STATE_DIR).enabled


def _slaac_on_net_b(doc: Doc) -> None:
    doc["interfaces"][2]["addresses"].append("2001:db8:2::1/64")
    doc["subnets"].append(
        {"cidr": "2001:db8:2::/64", "interface_mac": NET_B_MAC, "ipv6_ra_mode": "slaac"}
    )


def test_radvd_link_mtu_prefers_the_interface_mtu() -> None:
    text = render_radvd(config_from(_slaac_on_net_b), NETWORK_MTUS)
    blocks = dict(re.findall(r"^interface (\S+) \{\n(.*?)^\};", text, re.M | re.S))
    assert set(blocks) == {"intfa163e000101", "intfa163e000201"}
    assert "\tAdvLinkMTU 1450;" in blocks["intfa163e000101"].splitlines()  # the network's
    assert "\tAdvLinkMTU 1400;" in blocks["intfa163e000201"].splitlines()  # the interface's


def test_radvd_without_a_known_mtu_advertises_none() -> None:
    assert "AdvLinkMTU" not in render_radvd(representative_config(), None)


def test_radvd_advertises_every_dns_server(tmp_path: Path) -> None:
    # radvd takes at most three addresses in one RDNSS section.
    servers = [f"2001:db8::5{n}" for n in range(5)]

    def many_servers(doc: Doc) -> None:
        doc["subnets"][2]["dns_nameservers"] = servers

    text = render_radvd(config_from(many_servers), NETWORK_MTUS)
    advertised = [
        address
        for line in text.splitlines()
        if line.strip().startswith("RDNSS ")
        for address in line.split()[1:-1]
    ]
    assert advertised == servers
    (tmp_path / "radvd.conf").write_text(text)
    assert_accepted(radvd_configtest(tmp_path / "radvd.conf"))


def test_radvd_two_prefixes_on_one_interface(tmp_path: Path) -> None:
    def second_prefix(doc: Doc) -> None:
        doc["interfaces"][1]["addresses"].append("2001:db8:11::1/64")
        doc["subnets"].append(
            {
                "cidr": "2001:db8:11::/64",
                "interface_mac": NET_A_MAC,
                "ipv6_ra_mode": "slaac",
                "dns_nameservers": ["2001:db8::53", "2001:db8::54"],
            }
        )

    text = render_radvd(config_from(second_prefix), NETWORK_MTUS)
    assert text.count("interface intfa163e000101 {") == 1
    assert re.findall(r"prefix (\S+) \{", text) == ["2001:db8:1::/64", "2001:db8:11::/64"]
    # A server two subnets share is advertised once.
    assert "\tRDNSS 2001:db8::53 2001:db8::54 {" in text.splitlines()
    (tmp_path / "radvd.conf").write_text(text)
    assert_accepted(radvd_configtest(tmp_path / "radvd.conf"))


def test_management_interfaces_never_forward() -> None:
    def with_management(doc: Doc) -> None:
        doc["interfaces"].append(
            {
                "mac": "fa:16:3e:00:09:01",
                "network_id": "mgmt",
                "role": "management",
                "addresses": ["192.168.99.1/24"],
            }
        )

    forward = chain_lines(render_nftables(config_from(with_management)).text(), "forward")
    drops = ['iifname { "mgtfa163e000901" } drop', 'oifname { "mgtfa163e000901" } drop']
    # Before the established-flows accept, so no flow crosses it either way.
    established = forward.index("ct state established,related accept")
    assert all(forward.index(rule) < established for rule in drops)


def test_dhcp_hands_out_the_network_mtu(tmp_path: Path) -> None:
    conf = render_dnsmasq(config_from(lambda doc: None), STATE_DIR, {"net-a": 1450}).conf
    assert "dhcp-option=tag:subnet0,option:mtu,1450" in conf.splitlines()


# --- DHCPv6 ------------------------------------------------------------------------------

NET_C_MAC = "fa:16:3e:00:03:01"
DHCPV6_GOLDEN_DIR = GOLDEN_DIR / "dhcpv6"
DHCPV6_GOLDEN_NAMES = ["dnsmasq.conf", "dnsmasq.hosts", "radvd.conf"]


def _all_ipv6_modes(doc: Doc) -> None:
    """net-a: dual-stack, IPv6 stateless; net-b: dual-stack, IPv6 stateful
    (one dual-stack host, one IPv6-only host); net-c: IPv6 SLAAC."""
    doc["subnets"][2].update(ipv6_ra_mode="dhcpv6-stateless", enable_dhcp=True)
    doc["interfaces"][2]["addresses"].append("2001:db8:2::1/64")
    doc["interfaces"].append(
        {
            "mac": NET_C_MAC,
            "network_id": "net-c",
            "role": "internal",
            "addresses": ["2001:db8:3::1/64"],
        }
    )
    doc["subnets"] += [
        {
            "cidr": "2001:db8:2::/64",
            "interface_mac": NET_B_MAC,
            "ipv6_ra_mode": "dhcpv6-stateful",
            "enable_dhcp": True,
            "dns_nameservers": ["2001:db8::53", "2001:db8::54"],
            "lease_time_s": 3600,
        },
        {
            "cidr": "2001:db8:3::/64",
            "interface_mac": NET_C_MAC,
            "ipv6_ra_mode": "slaac",
            "dns_nameservers": ["2001:db8::55"],
        },
    ]
    doc["dhcp_hosts"] += [
        {"mac": "fa:16:3e:20:00:07", "ip_address": "2001:db8:2::7", "hostname": "db-1"},
        {"mac": "fa:16:3e:20:00:08", "ip_address": "2001:db8:2::8", "hostname": "db-2"},
    ]


def rendered_dhcpv6() -> Rendered:
    return render(config_from(_all_ipv6_modes), STATE_DIR, {**NETWORK_MTUS, "net-c": 1500})


@pytest.mark.parametrize("name", DHCPV6_GOLDEN_NAMES)
def test_dhcpv6_render_matches_golden(name: str) -> None:
    text = rendered_dhcpv6().texts()[name]
    path = DHCPV6_GOLDEN_DIR / name
    if UPDATE_GOLDEN:
        DHCPV6_GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden {path}: run with ASTARA_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), (
        f"{name} differs from {path}; if intended, regenerate with ASTARA_UPDATE_GOLDEN=1"
    )


def test_dhcpv6_dnsmasq_golden_passes_dnsmasq_test(tmp_path: Path) -> None:
    assert_accepted(dnsmasq_test(DHCPV6_GOLDEN_DIR / "dnsmasq.conf"))
    assert_accepted(
        dnsmasq_hosts_test(
            DHCPV6_GOLDEN_DIR / "dnsmasq.hosts", DHCPV6_GOLDEN_DIR / "dnsmasq.conf", tmp_path
        )
    )


def test_dhcpv6_radvd_golden_passes_radvd_configtest() -> None:
    assert_accepted(radvd_configtest(DHCPV6_GOLDEN_DIR / "radvd.conf"))


def test_dnsmasq_test_refuses_a_dhcpv6_range_dnsmasq_cannot_serve(tmp_path: Path) -> None:
    # Why the schema wants a prefix of at least /64 for DHCPv6.
    broken = tmp_path / "dnsmasq.conf"
    text = (DHCPV6_GOLDEN_DIR / "dnsmasq.conf").read_text()
    broken.write_text(text.replace("2001:db8:2::,static,64", "2001:db8:2::,static,56"))
    assert dnsmasq_test(broken).returncode != 0


def _radvd_blocks(text: str) -> dict[str, list[str]]:
    blocks = re.findall(r"^interface (\S+) \{\n(.*?)^\};", text, re.M | re.S)
    return {name: [line.strip() for line in body.splitlines()] for name, body in blocks}


def test_radvd_flags_follow_each_interface_mode() -> None:
    blocks = _radvd_blocks(rendered_dhcpv6().radvd)
    stateless, stateful, slaac = (
        blocks["intfa163e000101"],
        blocks["intfa163e000201"],
        blocks["intfa163e000301"],
    )
    assert "AdvOtherConfigFlag on;" in stateless and "AdvManagedFlag on;" not in stateless
    assert "AdvManagedFlag on;" in stateful and "AdvOtherConfigFlag on;" not in stateful
    assert not any(line.startswith(("AdvManagedFlag", "AdvOtherConfigFlag")) for line in slaac)
    # Hosts form their own address except on the stateful subnet.
    assert "AdvAutonomous on;" in stateless and "AdvAutonomous on;" in slaac
    assert "AdvAutonomous off;" in stateful and "AdvAutonomous on;" not in stateful
    # DNS servers: by RDNSS for SLAAC, by DHCPv6 for the DHCPv6 modes.
    assert [line for line in slaac if line.startswith("RDNSS")] == ["RDNSS 2001:db8::55 {"]
    assert not any(line.startswith("RDNSS") for line in stateless + stateful)


def test_dnsmasq_serves_dhcpv6_without_sending_router_advertisements() -> None:
    conf = rendered_dhcpv6().dnsmasq.conf.splitlines()
    ranges = [line for line in conf if line.startswith("dhcp-range=")]
    assert ranges == [
        "dhcp-range=set:subnet0,10.0.1.0,static,255.255.255.0,86400s",
        "dhcp-range=set:subnet1,10.0.2.0,static,255.255.255.0,3600s",
        "dhcp-range=set:subnet2,2001:db8:1::,static,64,86400s",
        "dhcp-range=set:subnet3,2001:db8:2::,static,64,3600s",
    ]
    # radvd is the one RA sender.
    assert not any("enable-ra" in line or "ra-" in line for line in conf)
    assert "dhcp-option=tag:subnet2,option6:dns-server,[2001:db8::53]" in conf
    assert "dhcp-option=tag:subnet3,option6:dns-server,[2001:db8::53],[2001:db8::54]" in conf
    # SLAAC subnets are radvd's alone: net-c's interface is not served.
    assert "interface=intfa163e000301" not in conf


def test_dhcpv6_hosts_are_one_line_per_mac() -> None:
    assert rendered_dhcpv6().dnsmasq.hosts.splitlines() == [
        "fa:16:3e:10:00:05,10.0.1.5,web-1",
        "fa:16:3e:10:00:06,10.0.1.6",
        "fa:16:3e:20:00:07,10.0.2.7,[2001:db8:2::7],db-1",
        "fa:16:3e:20:00:08,[2001:db8:2::8],db-2",
    ]


def test_dhcpv6_without_dns_servers_sends_none(tmp_path: Path) -> None:
    def no_dns(doc: Doc) -> None:
        _all_ipv6_modes(doc)
        doc["subnets"][2]["dns_nameservers"] = []

    conf = render_dnsmasq(config_from(no_dns), STATE_DIR).conf
    assert "dhcp-option=tag:subnet2,option6:dns-server" in conf.splitlines()
    (tmp_path / "dnsmasq.conf").write_text(conf)
    assert_accepted(dnsmasq_test(tmp_path / "dnsmasq.conf"))


def test_firewall_groups_filter_their_interfaces_in_order() -> None:
    text = render_nftables(config_from(_firewalls)).text()
    forward = chain_lines(text, "forward")
    net_a = appliance_interface("internal", configs.NET_A_MAC)
    net_b = appliance_interface("internal", configs.NET_B_MAC)
    jumps = [
        f'oifname "{net_a}" jump firewall0_ingress',
        f'iifname "{net_a}" jump firewall0_egress',
        f'oifname "{net_b}" jump firewall1_ingress',
        f'iifname "{net_b}" jump firewall1_egress',
    ]
    # Before established flows are let by: a group set down stops those too.
    at = forward.index(jumps[0])
    assert forward[at : at + 4] == jumps
    assert at < forward.index("ct state established,related accept")
    assert chain_lines(text, "firewall0_ingress") == [
        "ct state established,related return",
        "meta nfproto ipv4 meta l4proto tcp ip saddr 192.0.2.0/24 th dport 80 return",
        "meta nfproto ipv4 meta l4proto udp ip daddr 10.0.1.5/32 th sport 1000-2000 reject",
        "meta nfproto ipv6 meta l4proto ipv6-icmp return",
        "meta nfproto ipv6 ip6 saddr 2001:db8::/32 drop",
        "meta nfproto ipv4 meta l4proto sctp return",
        "drop",
    ]
    assert chain_lines(text, "firewall0_egress") == [
        "ct state established,related return",
        "meta nfproto ipv4 return",
        "drop",
    ]
    assert chain_lines(text, "firewall1_ingress") == ["drop"]
    assert chain_lines(text, "firewall1_egress") == ["drop"]


def test_a_firewall_is_refused_on_what_is_not_an_internal_interface() -> None:
    def external(doc: Doc) -> None:
        _firewalls(doc)
        doc["firewalls"][1]["interfaces"] = [configs.EXTERNAL_MAC, configs.NET_A_MAC]
        doc["firewalls"][0]["ingress"][0]["source"] = "2001:db8::/64"
        doc["firewalls"][0]["egress"] = [
            {
                "action": "allow",
                "ip_version": 4,
                "protocol": "icmp",
                "source_ports": {"min": 1, "max": 2},
            }
        ]

    errors = {(e.loc, e.msg) for e in validate_semantics(config_from(external))}
    assert errors == {
        (
            ("firewalls", 1, "interfaces", 0),
            f"no internal interface has MAC {configs.EXTERNAL_MAC}",
        ),
        (
            ("firewalls", 1, "interfaces", 1),
            f"interface {configs.NET_A_MAC} is in another firewall",
        ),
        (
            ("firewalls", 0, "ingress", 0),
            "Invalid input - IP addresses do not agree with IP Version.",
        ),
        (
            ("firewalls", 0, "egress", 0),
            "Source, destination port are not allowed when protocol is set to ICMP.",
        ),
    }


def test_metadata_hosts_are_on_internal_subnets_each_once() -> None:
    def hosts(doc: Doc) -> None:
        doc["metadata_hosts"] = [
            {"ip_address": address, "instance_id": instance, "project_id": "p1"}
            for address, instance in (
                ("10.0.1.5", "vm-1"),
                ("10.0.1.5", "vm-2"),
                ("203.0.113.50", "vm-3"),
            )
        ]

    errors = {(e.loc, e.msg) for e in validate_semantics(config_from(hosts))}
    assert errors == {
        (("metadata_hosts", 1, "ip_address"), "duplicate address 10.0.1.5"),
        (("metadata_hosts", 2, "ip_address"), "203.0.113.50 is in no internal subnet"),
    }

    def unsafe(doc: Doc) -> None:
        doc["metadata_hosts"] = [
            {"ip_address": "10.0.1.5", "instance_id": "vm 1\r\nX-Tenant-ID: x", "project_id": "p"}
        ]

    with pytest.raises(ValidationError, match="printable ASCII"):
        config_from(unsafe)
