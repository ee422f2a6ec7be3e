"""A load balancer appliance's haproxy config: rendered from the appliance
config's `loadbalancer` section, accepted by `haproxy -c` (work in progress,
issue 12)."""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any

import pytest
from pydantic import ValidationError

from astara.appliance.render.loadbalancer import render_loadbalancer
from astara.appliance.schema import ApplianceConfig, validate_semantics
from tests.unit.validators import assert_accepted, haproxy_check

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


def test_many_allowed_cidrs_render_lines_haproxy_reads_whole(tmp_path: Path) -> None:
    """A listener may allow any number of CIDRs (Octavia sets no bound);
    haproxy reads at most 64 words a line and refused one `acl` line of 100."""
    cidrs = [f"10.{n}.0.0/16" for n in range(100)]
    listener = {"id": "web", "protocol": "HTTP", "port": 80, "allowed_cidrs": cidrs}
    made = config(listeners=[listener])
    text = render_loadbalancer(made.loadbalancer, RUN)
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    assert_accepted(haproxy_check(path))
    acls = [line.split()[3:] for line in text.splitlines() if "acl allowed_cidr src" in line]
    assert [cidr for line in acls for cidr in line] == cidrs


def test_checks_haproxy_would_refuse_are_refused_by_the_schema(tmp_path: Path) -> None:
    """haproxy refuses a timer past 2^31 - 1 ms and a range of codes that goes
    down: the schema says so first, field by field."""
    monitor = {"type": "HTTP", "delay_s": 1, "timeout_s": 1, "rise": 1, "fall": 1}
    for wrong in ({"delay_s": 2_147_484}, {"timeout_s": 2_147_484}, {"expected_codes": "500-200"}):
        pool = {"id": "p", "protocol": "HTTP", "algorithm": "ROUND_ROBIN"}
        with pytest.raises(ValidationError) as refused:
            config(pools=[{**pool, "monitor": {**monitor, **wrong}}], listeners=[])
        assert refused.value.errors()[0]["loc"][-1] == next(iter(wrong))
    pool = {"id": "p", "protocol": "HTTP", "algorithm": "ROUND_ROBIN"}
    member = {"id": "m", "address": "10.0.0.21", "port": 80}
    edge = {**monitor, "delay_s": 2_147_483, "timeout_s": 2_147_483, "expected_codes": "200-200"}
    listener = {"id": "web", "protocol": "HTTP", "port": 80, "default_pool": "p"}
    made = config(pools=[{**pool, "members": [member], "monitor": edge}], listeners=[listener])
    path = tmp_path / "haproxy.cfg"
    path.write_text(render_loadbalancer(made.loadbalancer, RUN))
    assert_accepted(haproxy_check(path))
