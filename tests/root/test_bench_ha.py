"""The HA benchmark's failover part in its quickest form (30 ms adverts, two
failovers of each, two connections each way): its JSON has the figures,
the baseline measured beside them and their ratio, with sane values, and
nothing is left behind. Figures are not judged here: that is the
benchmark's job."""

from __future__ import annotations

import pytest
from bench.ha import FailoverSizes, bench_failover
from bench.harness import Report, Settings

from astara.linux import netns

pytestmark = pytest.mark.root

FAILOVERS = 2


def test_the_failover_part_measures_astara_and_bare_keepalived_and_cleans_up() -> None:
    before = set(netns.names())
    report = Report()
    sizes = FailoverSizes(
        adverts_ms=(30,), failovers=FAILOVERS, streams_per_direction=2, calm_s=0.5
    )
    bench_failover(Settings(quick=True), report, sizes)
    [result] = report.results
    assert result["name"] == "ha.failover.advert_30ms"
    assert result["failovers"] == FAILOVERS and len(result["runs"]) == FAILOVERS
    # Each member died once: the active one, then the other.
    assert {run["killed"] for run in result["runs"]} == {"ha0-r", "ha1-r"}
    for side in ("failover_ms", "baseline_failover_ms"):
        spread = result[side]
        # 30 ms adverts: the peer takes over after about three of them.
        assert 0 < spread["min"] <= spread["median"] <= spread["max"] < 2000, side
    assert all(lost > 0 for lost in result["pings_lost"] + result["baseline_pings_lost"])
    assert result["ratio"] > 0 and result["pings_lost_ratio"] > 0
    assert result["master_down_ms"] == 90.2
    # The connections were open across both failovers and kept.
    assert result["connections_open"] == 4
    assert result["connections_kept"] == 4, result["connections_broken"]
    assert all(run["revived_as"] in ("standby", "active") for run in result["runs"])
    # What the member about to take over held, looked at before each kill.
    assert all("incomplete_neighbours" in run["standby_before"] for run in result["runs"])
    assert result["onto_incomplete_neighbour"] == len(result["onto_incomplete_neighbour_runs_ms"])
    assert isinstance(result["goal_met"], bool)
    # Everything under the benchmark's prefix (lead "h") is gone.
    assert not [n for n in set(netns.names()) - before if n.startswith("h")]
