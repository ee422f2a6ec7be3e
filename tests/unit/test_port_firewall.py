"""The port security renderer (pure): what a group's and a port's chains say."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from astara.model import port_firewall
from astara.model.fabric import PortSecurity, SecurityGroupSpec


def spec(*rules: dict[str, Any]) -> SecurityGroupSpec:
    return SecurityGroupSpec.model_validate({"rules": list(rules)})


def tcp(low: int, high: int, prefix: str | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "direction": "ingress",
        "ethertype": "IPv4",
        "protocol": 6,
        "port_range_min": low,
        "port_range_max": high,
    }
    return rule | ({"remote_prefix": prefix} if prefix else {})


def test_rules_of_one_shape_are_one_set_lookup_and_overlapping_ones_stay_rules() -> None:
    script = port_firewall.group(
        "g", spec(tcp(80, 80, "10.0.0.0/8"), tcp(80, 81, "10.0.0.0/8"), tcp(22, 22)), ()
    )
    batched = [line for line in script.splitlines() if "th dport {" in line]
    assert len(batched) == 1
    assert "10.0.0.0/8 . 6 . 80-80" in batched[0] and "0.0.0.0/0 . 6 . 22-22" in batched[0]
    assert any(
        line.endswith("th dport 80-81 ip saddr 10.0.0.0/8 accept") for line in script.splitlines()
    )


def test_a_rule_naming_a_set_the_host_lacks_is_left_out_until_it_comes() -> None:
    rule = {"direction": "ingress", "ethertype": "IPv4", "protocol": 1, "remote_set": "g-x"}
    assert "@s" not in port_firewall.group("g", spec(rule), ())
    assert f"@{port_firewall.set_name('g-x', 4)}" in port_firewall.group("g", spec(rule), {"g-x"})


def test_a_port_sends_only_from_its_own_addresses_and_takes_only_ip_and_arp() -> None:
    security = PortSecurity.model_validate(
        {"groups": ["g"], "allowed": [{"mac": "fa:16:3e:00:00:01", "ip": "10.0.0.5/32"}]}
    )
    script = port_firewall.port(7, "link7", security)
    assert "ether saddr != { fa:16:3e:00:00:01 } drop" in script
    assert "ip saddr != { 10.0.0.5/32 } drop" in script
    # Its link-local address (EUI-64 of the MAC), and neighbour advertisements for it only.
    assert "fe80::f816:3eff:fe00:1/128" in script and "nd-neighbor-advert @th,64,128" in script
    assert "add rule bridge astara_ports to_7 ether type != { ip, ip6, arp } drop" in script
    assert "jump g" in script and script.count(" drop\n") >= 2
    nothing = PortSecurity.model_validate({"groups": []})
    assert "add rule bridge astara_ports from_8 drop" in port_firewall.port(8, "link8", nothing)


keys = st.tuples(
    st.sampled_from(["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/32", "0.0.0.0/0", "192.0.2.0/24"]),
    st.sampled_from([6, 17]),
    st.integers(1, 100),
    st.integers(0, 20),
)


@given(st.lists(keys, max_size=30))
def test_what_is_batched_never_overlaps_and_nothing_is_lost(found: list[Any]) -> None:
    """The kernel refuses overlapping elements in one interval set: every
    rule is either in the set, disjoint from the rest of it, or a rule of
    its own."""
    rules = [
        tcp(low, low + span, prefix) | {"protocol": proto} for prefix, proto, low, span in found
    ]
    script = port_firewall.group("g", spec(*rules), ())
    batched = re.findall(r"(\S+) \. (\d+) \. (\d+)-(\d+)", script)
    boxes = [(ipaddress.ip_network(n), int(p), int(lo), int(hi)) for n, p, lo, hi in batched]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not (a[1] == b[1] and a[0].overlaps(b[0]) and a[2] <= b[3] and b[2] <= a[3])
    alone = [line for line in script.splitlines() if " th dport " in line and "{" not in line]
    assert len(boxes) + len(alone) == len({(p, pr, lo, lo + sp) for p, pr, lo, sp in found})
