"""The load balancer benchmark's tools, fast, in a scratch namespace: a
member haproxy, the hand-configured balancer in front of it, `wrk` with the
benchmark's summary script (keep-alive and not), and the prober that times
the first served request."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from bench.harness import Scratch, background
from bench.loadbalancer import (
    PROBE,
    WRK_SCRIPT,
    hand_config,
    haproxy,
    member_config,
    wrk,
)

from astara.linux import netns
from astara.testing.agent import unique_prefix

pytestmark = pytest.mark.root

VIP = "127.0.0.2"


def test_wrk_through_the_hand_configured_balancer_and_the_first_request_prober(
    tmp_path: Path,
) -> None:
    prefix = unique_prefix("l")
    (tmp_path / "member.cfg").write_text(member_config("m1"))
    (tmp_path / "hand.cfg").write_text(hand_config(VIP, {"m1": "127.0.0.1"}))
    script = tmp_path / "summary.lua"
    script.write_text(WRK_SCRIPT)
    with Scratch(prefix) as scratch:
        space = scratch.netns("lb")
        with (
            haproxy(space, tmp_path / "member.cfg", 8000),
            background(space, ["python3", "-c", PROBE, VIP, "80", "20"]) as prober,
        ):
            assert prober.stdout is not None
            assert prober.stdout.readline().strip() == "ready"
            started = time.time()
            with haproxy(space, tmp_path / "hand.cfg", 80):
                served, body = prober.stdout.readline().split()
                assert body == "m1" and started < float(served) < started + 10
                for keepalive in (True, False):
                    summary = wrk(space, f"http://{VIP}/", script, 1, keepalive)
                    assert summary["requests"] > 0 and summary["errors"] == 0
                    assert summary["requests_per_s"] > 0
                    assert 0 < summary["p50_us"] <= summary["p99_us"] <= summary["max_us"]
    assert not any(name.startswith(f"{prefix}-") for name in netns.names())
