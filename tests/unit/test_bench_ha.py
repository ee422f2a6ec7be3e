"""The HA benchmark's pure parts: a failover's figures from a pinger's
replies, the baseline's keepalived config (keepalived's own check) beside
Astara's instance, and the scale run's members (valid configs, distinct
addresses and MACs, virtual router ids unique per HA network)."""

from __future__ import annotations

from pathlib import Path

from bench.ha_failover import (
    Failover,
    Gap,
    gaps,
    judge,
    longest_send_gap,
    master_down_ms,
    summary,
)
from bench.ha_keepalived import keepalived_config
from bench.ha_scale import PAIRS_PER_HA_NETWORK, member_id, pair_configs, settled_pairs

from astara.appliance.render.ha import PRIORITY
from astara.appliance.schema import ApplianceConfig
from tests.unit.validators import run, scratch_netns


def replies_except(lost: set[int], count: int, interval_s: float = 0.01) -> dict[int, float]:
    """Each echo answered 1 ms after it was sent, but those in `lost`."""
    return {n: n * interval_s + 0.001 for n in range(count) if n not in lost}


def test_the_failover_is_the_longest_run_of_lost_echoes_from_reply_to_reply() -> None:
    replies = replies_except({*range(20, 30), 50}, 100)
    gap, others = judge(replies, 15, 100)
    assert gap == Gap(20, 29, replies[19], replies[30])
    assert gap.lost == 10 and round(gap.ms) == 110
    assert others == [Gap(50, 50, replies[49], replies[51])]
    # Every other echo of the same schedule, the worse phase: 5 of 10.
    assert gap.lost_every_other() == 5
    assert Gap(21, 29, 0.0, 0.1).lost_every_other() == 5  # 21, 23 … 29


def test_runs_before_the_window_or_still_open_at_its_end_do_not_count() -> None:
    replies = replies_except({*range(5, 8), *range(95, 100)}, 100)
    assert gaps(replies, 10, 100) == []
    # A run that began just before the window's first echo is the failover's.
    replies = replies_except(set(range(8, 14)), 100)
    assert [g.lost for g in gaps(replies, 10, 100)] == [6]
    assert judge(replies_except(set(), 100), 10, 100) == (None, [])


def test_the_summary_gives_the_spread_the_mean_and_the_pings_lost() -> None:
    runs = [
        Failover("a", Gap(10, 19, 0.0, 0.110), 0.0, 0.2, 0.5, "standby"),
        Failover("b", Gap(10, 16, 0.0, 0.080), 0.0, 0.2, 0.5, "standby"),
        Failover("a", Gap(10, 17, 0.0, 0.090), 0.0, 0.2, 0.5, "active", (Gap(40, 41, 0, 0.03),)),
    ]
    found = summary(runs)
    assert found["failover_ms"] == {"min": 80.0, "median": 90.0, "mean": 93.3, "max": 110.0}
    assert found["pings_lost"] == [10, 7, 8] and found["pings_lost_max"] == 10
    assert found["pings_lost_at_20ms_max"] == 5
    assert found["other_outages"] == 1 and found["revived_as_active"] == 1
    assert runs[2].as_dict()["other_outages"] == [{"failover_ms": 30.0, "pings_lost": 2}]


def test_a_pinger_that_stopped_sending_is_seen_in_its_longest_wait() -> None:
    sent = [n * 0.01 for n in range(50)] + [0.8 + n * 0.01 for n in range(50)]
    assert round(longest_send_gap(sent, 10, 100), 3) == 0.31
    assert round(longest_send_gap(sent, 60, 100), 3) == 0.01


def test_the_master_down_interval_is_three_adverts_and_the_skew() -> None:
    assert round(master_down_ms(100, 254), 1) == 300.8
    assert round(master_down_ms(30, 254), 1) == 90.2
    assert round(master_down_ms(100, 100), 1) == 360.9


def test_the_baseline_runs_astaras_instance_and_keepalived_accepts_it(tmp_path: Path) -> None:
    text = keepalived_config("ka", 30)
    for line in (
        "\tvrrp_version 3",
        "\tstate BACKUP",
        "\tnopreempt",
        f"\tpriority {PRIORITY}",
        "\tadvert_int 0.03",
        "\tunicast_src_ip 169.254.192.1",
        "\t\t169.254.192.2",
        "\t\t10.99.0.1/24 dev lan0",
    ):
        assert line in text.splitlines(), line
    (tmp_path / "ka.conf").write_text(text)
    with scratch_netns() as netns:
        for link in ("lan0", "ha0"):
            assert run(["ip", "-n", netns, "link", "add", link, "type", "veth"]).returncode == 0
        checked = run(
            ["ip", "netns", "exec", netns, "keepalived", "-t", "-f", str(tmp_path / "ka.conf")]
        )
    assert checked.returncode == 0, checked.stderr


def test_the_scale_runs_pairs_are_valid_members_with_addresses_of_their_own() -> None:
    seen_macs: set[str] = set()
    seen_ha: dict[str, set[str]] = {}
    seen_vrids: dict[str, set[int]] = {}
    for pair in (0, 1, PAIRS_PER_HA_NETWORK - 1, PAIRS_PER_HA_NETWORK, 499):
        first, second = (ApplianceConfig.model_validate(c) for c in pair_configs(pair))
        assert first.ha is not None and second.ha is not None
        # The same router: the same interfaces on the wire.
        assert first.on_the_wire() == second.on_the_wire()
        assert first.ha.peer_address == second.ha_address().ip  # type: ignore[union-attr]
        network = first.ha_interface().network_id  # type: ignore[union-attr]
        macs = {i.mac for i in first.interfaces} | {second.ha.interface_mac}
        assert not macs & seen_macs
        seen_macs |= macs
        addresses = {str(first.ha_address()), str(second.ha_address())}
        assert not addresses & seen_ha.setdefault(network, set())
        seen_ha[network] |= addresses
        assert first.ha.virtual_router_id not in seen_vrids.setdefault(network, set())
        seen_vrids[network].add(first.ha.virtual_router_id)
        assert not first.subnets and not first.dhcp_hosts  # no daemon but keepalived's
    assert len(seen_ha) == 2


def test_pairs_stand_settled_with_one_active_and_one_standby() -> None:
    roles = {
        member_id(0, 0): "active",
        member_id(0, 1): "standby",
        member_id(1, 0): "active",
        member_id(1, 1): "active",
        member_id(2, 0): "standby",
    }
    assert settled_pairs(roles, [0, 1, 2]) == {"settled": 1, "two_active": 1, "other": 1}
