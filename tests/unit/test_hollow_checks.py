"""The hollow agents' record of how often the orchestrator reads each
appliance (what the 10,000-router benchmark reports): each appliance's
longest gap, counting the time before its first read and since its last."""

from __future__ import annotations

from astara.testing.hollow import Checks, percentile


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_appliance_keeps_its_own_longest_gap() -> None:
    clock = Clock()
    checks = Checks(clock)
    clock.now = 102.0
    checks.saw(["a", "b"])  # 2 s after the reset: the first gap of each
    clock.now = 110.0
    checks.saw(["a"])  # a: 8 s
    clock.now = 111.0
    checks.saw(["b"])  # b: 9 s
    clock.now = 113.0  # since the last read: a 3 s, b 2 s; c never read: 13 s
    report = checks.report(["a", "b", "c"])
    assert report["gaps_s"] == [8.0, 9.0, 13.0]
    assert report["longest_gap_s"] == 13.0
    assert report["unchecked"] == 1
    assert report["reads"] == 4
    assert report["gap_p50_s"] == 9.0


def test_a_reset_starts_every_gap_afresh() -> None:
    clock = Clock()
    checks = Checks(clock)
    clock.now = 150.0
    checks.saw(["a"])
    clock.now = 160.0
    checks.reset()
    clock.now = 161.0
    checks.saw(["a"])
    clock.now = 162.0
    assert checks.report(["a"])["gaps_s"] == [1.0]


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.5) == 50.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.99) == 0.0
