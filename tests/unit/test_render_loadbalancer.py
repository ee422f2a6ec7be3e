"""A load balancer appliance's haproxy config: rendered from the appliance
config's `loadbalancer` section, accepted by `haproxy -c`, its L7 values
read by haproxy as they are."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
from pathlib import Path, PurePath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from astara.appliance.render.loadbalancer import quoted, render_loadbalancer
from astara.appliance.render.nftables import render_nftables
from astara.appliance.schema import ApplianceConfig, validate_semantics
from astara.model import l7_rules
from astara.naming import appliance_interface
from tests.unit.test_render import chain_lines, nft_check
from tests.unit.validators import assert_accepted, haproxy_check, run_ok, scratch_netns

RUN = PurePath("/run/astara/ast/appliances/lb-1")
VIP_MAC = "fa:16:3e:00:0b:01"


def config(**section: Any) -> ApplianceConfig:
    member = {"address": "10.0.0.21", "port": 8080}
    doc = {
        "kind": "loadbalancer",
        "forwarding": False,
        "interfaces": [
            {"mac": VIP_MAC, "network_id": "net", "role": "internal", "addresses": ["10.0.0.5/24"]}
        ],
        "routes": [{"destination": "0.0.0.0/0", "nexthop": "10.0.0.1"}],
        "loadbalancer": {
            "vip": "10.0.0.5",
            "listeners": [
                {
                    "id": "web",
                    "protocol": "HTTP",
                    "port": 80,
                    "connection_limit": 100,
                    "default_pool": "rr",
                    "insert_headers": ["X-Forwarded-For", "X-Forwarded-Proto"],
                    "allowed_cidrs": ["10.0.0.0/8"],
                },
                {"id": "tls", "protocol": "HTTPS", "port": 443, "default_pool": "src"},
            ],
            "pools": [
                {
                    "id": "rr",
                    "protocol": "HTTP",
                    "algorithm": "ROUND_ROBIN",
                    "persistence": "HTTP_COOKIE",
                    "members": [
                        {"id": "m1", **member},
                        {"id": "m2", **member, "address": "10.0.0.22", "backup": True},
                        {"id": "m3", **member, "address": "10.0.0.23", "enabled": False},
                    ],
                    "monitor": {
                        "type": "HTTP",
                        "delay_s": 3,
                        "timeout_s": 1,
                        "rise": 2,
                        "fall": 3,
                        "http_method": "GET",
                        "url_path": "/health",
                        "expected_codes": "200-204",
                    },
                },
                {
                    "id": "src",
                    "protocol": "HTTPS",
                    "algorithm": "SOURCE_IP",
                    "persistence": "SOURCE_IP",
                    "members": [{"id": "m4", **member, "port": 8443}],
                    "monitor": {"type": "TCP", "delay_s": 5, "timeout_s": 2, "rise": 1, "fall": 2},
                },
                {
                    "id": "app",
                    "protocol": "HTTP",
                    "algorithm": "LEAST_CONNECTIONS",
                    "persistence": "APP_COOKIE",
                    "cookie_name": "JSESSIONID",
                },
            ],
            **section,
        },
    }
    return ApplianceConfig.model_validate(doc)


def test_a_load_balancer_renders_what_haproxy_accepts(tmp_path: Path) -> None:
    made = config()
    assert validate_semantics(made) == []
    text = render_loadbalancer(made.loadbalancer, RUN)
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    assert_accepted(haproxy_check(path))
    lines = [line.strip() for line in text.splitlines()]
    assert "bind 10.0.0.5:80" in lines and "maxconn 100" in lines
    assert "tcp-request connection reject unless allowed_cidr" in lines
    assert "http-check expect status 200-204" in lines
    assert "cookie SRV insert indirect nocache" in lines
    assert "server m1 10.0.0.21:8080 weight 1 check inter 3s fall 3 rise 2 cookie m1" in lines
    assert any(line.endswith("backup") and line.startswith("server m2") for line in lines)
    assert any(line.endswith("disabled") and line.startswith("server m3") for line in lines)
    assert "stick on src" in lines and "stick match req.cook(JSESSIONID)" in lines


def test_what_a_load_balancer_section_may_not_say() -> None:
    wrong = config(
        vip="10.0.0.9",
        listeners=[
            {"id": "a", "protocol": "HTTP", "port": 80, "default_pool": "nope"},
            {"id": "b", "protocol": "TCP", "port": 80, "insert_headers": ["X-Forwarded-For"]},
            {"id": "c", "protocol": "HTTP", "port": 81, "default_pool": "tcp"},
        ],
        pools=[{"id": "tcp", "protocol": "TCP", "algorithm": "ROUND_ROBIN"}],
    )
    errors = {(e.loc, e.msg) for e in validate_semantics(wrong)}
    assert errors == {
        (("loadbalancer", "vip"), "10.0.0.9 is no address of the appliance"),
        (("loadbalancer", "listeners", 0, "default_pool"), "no pool nope"),
        (("loadbalancer", "listeners", 1, "port"), "port 80 is taken"),
        (
            ("loadbalancer", "listeners", 1, "insert_headers"),
            "headers are inserted by HTTP listeners only",
        ),
        (
            ("loadbalancer", "listeners", 2, "default_pool"),
            "a HTTP listener cannot use a TCP pool",
        ),
    }


def _rule(rule_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": rule_id, "type": "PATH", "compare_type": "STARTS_WITH", "value": "/", **fields}


L7POLICIES = [
    {
        "id": "to-url",
        "action": "REDIRECT_TO_URL",
        "redirect_url": "https://a.example/#x",
        "redirect_http_code": 301,
        "rules": [_rule("r1", value="/old")],
    },
    {"id": "to-api", "action": "REDIRECT_TO_POOL", "redirect_pool": "app", "rules": [
        _rule("r2", value="/api"),
        _rule("r3", type="HOST_NAME", compare_type="ENDS_WITH", value=".example"),
    ]},
    {"id": "deny", "action": "REJECT", "rules": [
        _rule("r4", type="HEADER", key="X-Deny", compare_type="EQUAL_TO", value="yes"),
        _rule("r5", type="COOKIE", key="sid", compare_type="CONTAINS", value="a'b", invert=True),
        _rule("r6", type="FILE_TYPE", compare_type="EQUAL_TO", value="exe"),
        _rule("r7", compare_type="REGEX", value="^/a b#c$d\\.e$"),
    ]},
    {
        "id": "prefix",
        "action": "REDIRECT_PREFIX",
        "redirect_prefix": "http://b.example",
        "redirect_http_code": 308,
        "rules": [_rule("r8", compare_type="ENDS_WITH", value=".php")],
    },
]  # fmt: skip


def test_l7_policies_render_as_octavias_grouped_as_haproxy_runs_them(tmp_path: Path) -> None:
    made = config()
    section = made.model_dump(mode="json")["loadbalancer"]
    section["listeners"][0]["l7policies"] = L7POLICIES
    made = config(listeners=section["listeners"])
    assert validate_semantics(made) == []
    text = render_loadbalancer(made.loadbalancer, RUN)
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    checked = haproxy_check(path)
    assert_accepted(checked)
    assert "processed before" not in checked.stderr  # no warning about the order
    frontend = text.split("frontend web\n")[1].split("frontend ")[0]
    lines = [line.strip() for line in frontend.splitlines()]
    l7 = [
        line
        for line in lines
        if line.split()[0] in ("acl", "http-request", "redirect", "use_backend")
        and "allowed_cidr" not in line
    ]
    assert l7 == [
        "acl r1 path -m beg -- '/old'",
        "acl r2 path -m beg -- '/api'",
        "acl r3 req.hdr(host) -i -m end -- '.example'",
        "acl r4 req.hdr('X-Deny') -m str -- 'yes'",
        "acl r5 req.cook('sid') -m sub -- 'a'\\''b'",
        "acl r6 path_end -- 'exe'",
        "acl r7 path -m reg -- '^/a b#c$d\\.e$'",
        "acl r8 path -m end -- '.php'",
        "http-request deny if r4 !r5 r6 r7",
        "redirect code 301 location 'https://a.example/#x' if r1",
        "redirect code 308 prefix 'http://b.example' if r8",
        "use_backend app if r2 r3",
    ]
    assert lines.index("use_backend app if r2 r3") < lines.index("default_backend rr")
    # The pool only a policy uses is a backend, in HTTP mode.
    assert "backend app\n\tmode http\n" in text


def test_what_an_l7_policy_may_not_say() -> None:
    section = config().model_dump(mode="json")["loadbalancer"]
    listeners = section["listeners"]
    listeners[0]["l7policies"] = [
        {"id": "p", "action": "REDIRECT_TO_POOL", "redirect_pool": "src", "rules": [_rule("r")]},
        {"id": "p", "action": "REDIRECT_TO_POOL", "redirect_pool": "nope", "rules": [_rule("r")]},
    ]
    listeners[1]["l7policies"] = [{"id": "q", "action": "REJECT", "rules": [_rule("s")]}]
    errors = {(e.loc, e.msg) for e in validate_semantics(config(listeners=listeners))}
    policies = ("loadbalancer", "listeners", 0, "l7policies")
    assert errors == {
        ((*policies, 0, "redirect_pool"), "a HTTP listener cannot use a HTTPS pool"),
        ((*policies, 1, "id"), "duplicate L7 policy p"),
        ((*policies, 1, "rules", 0), "duplicate L7 rule r"),
        ((*policies, 1, "redirect_pool"), "no pool nope"),
        (
            ("loadbalancer", "listeners", 1, "l7policies", 0),
            "L7 policies are for HTTP listeners only",
        ),
    }
    for wrong in (
        {"action": "REJECT", "redirect_url": "http://a.example"},
        {"action": "REDIRECT_TO_URL", "redirect_url": "http://a.example"},  # no code
        {"action": "REDIRECT_TO_URL", "redirect_url": "http://a b", "redirect_http_code": 302},
        {"action": "REJECT", "rules": []},
        {"action": "REJECT", "rules": [_rule("r", type="HEADER")]},  # no key
        {"action": "REJECT", "rules": [_rule("r", key="X-A")]},  # a key on a PATH rule
        {"action": "REJECT", "rules": [_rule("r", type="FILE_TYPE")]},
        {"action": "REJECT", "rules": [_rule("r", compare_type="REGEX", value="(")]},
        {"action": "REJECT", "rules": [_rule("r", value="a\nb")]},
        {"action": "REJECT", "rules": [_rule("r", type="HEADER", key="a'b", value="1")]},
    ):
        listeners[0]["l7policies"] = [{"id": "p", "rules": [_rule("r")], **wrong}]
        with pytest.raises(ValidationError):
            config(listeners=listeners)


# Regular expressions Python compiles and haproxy's PCRE2 refuses (or reads
# otherwise): the rule keeps them out.
PYTHON_ONLY = ["\\u00e9", "\\U0001f600", "\\N{BULLET}", "(?a)x", "(?u:x)", "[[:nope:]]", "[[.a.]]"]
BOTH = [
    "^/api/v[0-9]+/", "(?i)^/Admin", "(?P<id>[0-9]+)-(?P=id)", "(?:a|bc)+$", "[[:alpha:]]+",
    "a{2,3}?", "(?<=/)x(?=/)", "\\d\\w\\s\\b", "a b#c$d'e\"f\\.g", "[^]a]", "(?#comment)x",
    "\\\\u", "-x",
]  # fmt: skip


def test_regexes_the_rule_lets_in_are_the_ones_haproxy_compiles(tmp_path: Path) -> None:
    def checked(regex: str) -> bool:
        path = tmp_path / "regex.cfg"
        path.write_text(
            "defaults\n\tmode http\n\ttimeout client 1s\n\ttimeout server 1s\n"
            "\ttimeout connect 1s\nfrontend f\n\tbind 127.0.0.1:8080\n"
            f"\tacl a path -m reg -- {quoted(regex)}\n\thttp-request deny if a\n"
        )
        return haproxy_check(path).returncode == 0

    for regex in BOTH:
        assert l7_rules.regex_problem(regex) is None, regex
        assert checked(regex), regex
    for regex in PYTHON_ONLY:
        assert l7_rules.regex_problem(regex) is not None, regex
    assert not any(checked(r) for r in PYTHON_ONLY[:-2])  # PCRE2's own refusals


_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\t"), min_size=1)


@settings(max_examples=25, deadline=None)
@given(values=st.lists(_VALUES, min_size=1, max_size=8))
def test_haproxy_takes_a_quoted_value_as_it_is(values: list[str]) -> None:
    """Whatever printable ASCII a rule holds (quotes, `#`, `$`, `\\`,
    spaces, tabs), haproxy's ACL has exactly that pattern (its stats
    socket's `show acl` says so)."""
    with scratch_netns() as netns, tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch)
        acls = "".join(f"\tacl a{i} path -m str -- {quoted(v)}\n" for i, v in enumerate(values))
        (run_dir / "haproxy.cfg").write_text(
            f"global\n\tstats socket {run_dir}/stats.sock mode 600 level admin\n"
            "defaults\n\tmode http\n\ttimeout client 1s\n\ttimeout server 1s\n"
            "\ttimeout connect 1s\nfrontend f\n\tbind 127.0.0.1:8080\n"
            f"{acls}\thttp-request deny if {' || '.join(f'a{i}' for i in range(len(values)))}\n"
        )
        run_ok(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"])
        run_ok(["ip", "netns", "exec", netns, "haproxy", "-D", "-p", f"{run_dir}/pid",
                "-f", f"{run_dir}/haproxy.cfg"])  # fmt: skip
        try:
            for index, value in enumerate(values):
                shown = _stats(run_dir / "stats.sock", f"show acl #{index}")
                assert shown.split(" ", 1)[1].rstrip("\n") == value, shown
        finally:
            os.kill(int((run_dir / "pid").read_text()), signal.SIGTERM)


def _stats(path: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(5)
        connection.connect(str(path))
        connection.sendall(command.encode() + b"\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer.decode().split("\n\n")[0]


def test_the_vip_admits_only_what_its_groups_allow(tmp_path: Path) -> None:
    rules = [
        {
            "ethertype": "IPv4",
            "protocol": 6,
            "port_range_min": 80,
            "port_range_max": 80,
            "remote_prefix": "10.0.0.0/8",
        },
        {"ethertype": "IPv4", "protocol": 6, "port_range_min": 443, "port_range_max": 443},
        {"ethertype": "IPv6", "protocol": 58},
    ]
    text = render_nftables(config(vip_security=rules)).text()
    vip = appliance_interface("internal", VIP_MAC)
    assert f'iifname "{vip}" jump vip_ingress' in chain_lines(text, "input")
    assert chain_lines(text, "vip_ingress") == [
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept",
        "meta nfproto ipv4 ip saddr 10.0.0.0/8 meta l4proto 6 th dport 80 accept",
        "meta nfproto ipv4 meta l4proto 6 th dport 443 accept",
        "meta nfproto ipv6 meta l4proto 58 accept",
        "drop",
    ]
    nft_check(text, tmp_path)
    # Stateful groups: replies pass as tracked connections. Stateless ones
    # (the load balancer's own): nothing is tracked (no NAT chains either).
    assert "ct state established,related accept" in chain_lines(text, "input")
    stateless = render_nftables(config(vip_security=rules, vip_stateful=False)).text()
    assert " ct " not in stateless and "nat hook" not in stateless
    assert chain_lines(stateless, "vip_ingress") == chain_lines(text, "vip_ingress")
    nft_check(stateless, tmp_path)
    # No groups (port security off): nothing filtered; a group without rules: all dropped.
    assert "vip_ingress" not in render_nftables(config()).text()
    closed = render_nftables(config(vip_security=[])).text()
    assert chain_lines(closed, "vip_ingress")[-1:] == ["drop"]
    with pytest.raises(ValueError, match="is not IPv6"):
        config(vip_security=[{"ethertype": "IPv6", "remote_prefix": "10.0.0.0/8"}])


def test_the_vip_is_reached_through_its_own_interface_only(tmp_path: Path) -> None:
    """A member-side interface (a port on a member subnet) is no way to the
    listeners: what is addressed to the VIP and enters there is dropped."""
    made = config()
    doc = made.model_dump(mode="json")
    doc["interfaces"].append(
        {
            "mac": "fa:16:3e:00:0b:02",
            "network_id": "members",
            "role": "internal",
            "addresses": ["10.9.0.5/24"],
        }
    )
    text = render_nftables(ApplianceConfig.model_validate(doc)).text()
    member_side = appliance_interface("internal", "fa:16:3e:00:0b:02")
    assert f'iifname {{ "{member_side}" }} ip daddr 10.0.0.5 drop' in chain_lines(text, "input")
    nft_check(text, tmp_path)
    assert "daddr 10.0.0.5 drop" not in render_nftables(made).text()  # the VIP's alone: none
