"""The load balancer benchmark's pure parts: the configs it gives haproxy
(accepted by `haproxy -c`), and the fully populated create taken apart into
the calls it falls back on while the API refuses the single call."""

from __future__ import annotations

from pathlib import Path

from bench.loadbalancer import full_body, hand_config, member_config, sequential_calls

from tests.unit.validators import assert_accepted, haproxy_check

MEMBERS = {"m1": "10.90.0.11", "m2": "10.90.0.12", "m3": "10.90.0.13"}


def test_the_members_and_the_hand_configured_balancer_are_configs_haproxy_accepts(
    tmp_path: Path,
) -> None:
    for name, text in (
        ("member", member_config("m1")),
        ("hand", hand_config("10.90.0.9", MEMBERS)),
    ):
        path = tmp_path / f"{name}.cfg"
        path.write_text(text)
        assert_accepted(haproxy_check(path))
    hand = hand_config("10.90.0.9", MEMBERS)
    assert "\tbind 10.90.0.9:80" in hand and "\tbalance roundrobin" in hand
    assert hand.count(" check inter 1s fall 3 rise 3") == 3


def test_the_fallback_makes_the_same_objects_one_call_each_parents_first() -> None:
    body = full_body("subnet-1", "10.90.0.200", MEMBERS, "lb0")
    nested = body["loadbalancer"]["listeners"][0]
    # Octavia's graph create: nested objects carry no parent ids.
    assert "loadbalancer_id" not in nested and "listener_id" not in nested["default_pool"]
    calls = sequential_calls(body)
    assert [member for _, member, _ in calls] == [
        "loadbalancer",
        "listener",
        "pool",
        "member",
        "member",
        "member",
        "healthmonitor",
    ]
    balancer = calls[0][2]
    assert "listeners" not in balancer and balancer["vip_address"] == "10.90.0.200"
    assert calls[1][2]["loadbalancer_id"] == "{lb}" and calls[2][2]["listener_id"] == "{listener}"
    assert "members" not in calls[2][2] and "healthmonitor" not in calls[2][2]
    assert {c[0] for c in calls[3:6]} == {"pools/{pool}/members"}
    assert sorted(c[2]["address"] for c in calls[3:6]) == sorted(MEMBERS.values())
    assert calls[6][2]["pool_id"] == "{pool}"
    assert calls[6][2]["type"] == "HTTP" and calls[6][2]["delay"] == 1
    # The body given is left as it was (it is reused by every run).
    assert body == full_body("subnet-1", "10.90.0.200", MEMBERS, "lb0")
