"""Failovers measured the same way for an Astara HA router and for bare
keepalived (issue 13's figures): the figures from a pinger's replies (pure)
and the loop that kills the active member, waits for the takeover and for
the dead member's return, again and again.

A failover's figure is the longest run of unanswered echoes that follows
the kill: from the last reply before it to the first reply after it (ms),
and the echoes lost in between. At 10 ms pings it is known to ±10 ms.
"Lost at 20 ms" is what a pinger sending every 20 ms would have lost: every
other echo of the same schedule, the worse of the two phases. Any other run
of lost echoes in the window (the kill to the pair settled again and calm)
is an outage besides the failover, reported apart: the dead member's return
must not disturb the one that serves.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from astara.testing.failover import Pinger
from astara.testing.net import wait_until
from bench.harness import log


@dataclass(frozen=True)
class Gap:
    """A run of unanswered echoes: numbers `first` to `last`, between the
    replies of `first - 1` (at `before`) and `last + 1` (at `after`),
    monotonic seconds."""

    first: int
    last: int
    before: float
    after: float

    @property
    def lost(self) -> int:
        return self.last - self.first + 1

    @property
    def ms(self) -> float:
        return (self.after - self.before) * 1000

    def lost_every_other(self) -> int:
        """What a pinger at twice the interval, on the same schedule, lost:
        the worse of the two phases."""
        even = sum(1 for n in range(self.first, self.last + 1) if n % 2 == 0)
        return max(even, self.lost - even)


def gaps(replies: Mapping[int, float], first: int, end: int) -> list[Gap]:
    """The runs of unanswered echoes that reach into numbers [first, end),
    each between two answered ones (a run still open at `end` is not
    counted: the window closes only once the pings flow again)."""
    answered = sorted(n for n in replies if n < end)
    found = []
    for before, after in itertools.pairwise(answered):
        if after - before > 1 and after > first:
            found.append(Gap(before + 1, after - 1, replies[before], replies[after]))
    return found


def longest_send_gap(sent: Sequence[float], first: int, end: int) -> float:
    """The longest wait between two echoes sent among numbers [first, end),
    seconds: a pinger on schedule waits its interval; longer, and its
    process was not running (the figure of that window is not the
    network's alone)."""
    window = sent[max(first, 0) : end]
    return max((b - a for a, b in itertools.pairwise(window)), default=0.0)


@dataclass(frozen=True)
class Failover:
    """One failover: the gap that followed the kill, and what else."""

    killed: str
    gap: Gap | None  # None: no echo lost at all
    killed_at: float  # monotonic
    takeover_seen_s: float  # kill → the other member seen serving (polled)
    settled_s: float  # kill → the pair settled again (the dead one back)
    revived_as: str  # what the dead member came back as ("standby", or "active")
    others: tuple[Gap, ...] = ()
    send_gap_s: float = 0.0  # the pinger's longest wait between two sends
    standby: dict[str, Any] = field(default_factory=dict)  # `Pair.inspect` before the kill

    @property
    def ms(self) -> float:
        return self.gap.ms if self.gap is not None else 0.0

    @property
    def lost(self) -> int:
        return self.gap.lost if self.gap is not None else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "killed": self.killed,
            "failover_ms": round(self.ms, 1),
            "pings_lost": self.lost,
            "pings_lost_at_20ms": self.gap.lost_every_other() if self.gap else 0,
            "kill_to_first_reply_ms": (
                round((self.gap.after - self.killed_at) * 1000, 1) if self.gap else 0.0
            ),
            "takeover_seen_s": round(self.takeover_seen_s, 3),
            "settled_s": round(self.settled_s, 3),
            "revived_as": self.revived_as,
            "other_outages": [
                {"failover_ms": round(g.ms, 1), "pings_lost": g.lost} for g in self.others
            ],
            "pinger_longest_send_gap_ms": round(self.send_gap_s * 1000, 1),
            "standby_before": self.standby,
        }


def judge(replies: Mapping[int, float], first: int, end: int) -> tuple[Gap | None, list[Gap]]:
    """The failover's gap (the longest in the window) and the others."""
    found = gaps(replies, first, end)
    if not found:
        return None, []
    longest = max(found, key=lambda g: g.lost)
    return longest, [g for g in found if g is not longest]


def summary(runs: Sequence[Failover]) -> dict[str, Any]:
    """min / median / mean / max of the failovers (ms) and the pings lost."""
    ms = [r.ms for r in runs]
    lost = [r.lost for r in runs]
    at_20 = [r.gap.lost_every_other() if r.gap else 0 for r in runs]
    return {
        "failover_ms": {
            "min": round(min(ms), 1),
            "median": round(statistics.median(ms), 1),
            "mean": round(statistics.fmean(ms), 1),
            "max": round(max(ms), 1),
        },
        "runs_ms": [round(x, 1) for x in ms],
        "pings_lost": lost,
        "pings_lost_max": max(lost),
        "pings_lost_mean": round(statistics.fmean(lost), 1),
        "pings_lost_at_20ms_max": max(at_20),
        "other_outages": sum(len(r.others) for r in runs),
        "revived_as_active": sum(1 for r in runs if r.revived_as != "standby"),
        "pinger_longest_send_gap_ms": round(max(r.send_gap_s for r in runs) * 1000, 1),
    }


def master_down_ms(advert_interval_ms: int, priority: int) -> float:
    """VRRPv3's master-down interval: three adverts plus the skew,
    (256 - priority) / 256 of one (RFC 5798 §6.1)."""
    return 3 * advert_interval_ms + (256 - priority) * advert_interval_ms / 256


# --- the loop (the edge) -------------------------------------------------------------


class Pair(Protocol):
    """Two members of one router, as a failover sees them."""

    members: tuple[str, str]

    def active(self) -> str | None:
        """The member that serves now, if exactly one does."""

    def settled(self) -> tuple[str, str] | None:
        """(active, standby) once one of each stands; None meanwhile."""

    def kill(self, member: str) -> None:
        """The member's host dies: its daemons SIGKILLed, its links down, at once."""

    def revive(self, member: str) -> None:
        """What brings a dead member back (nothing where an agent repairs it)."""

    def inspect(self, member: str) -> dict[str, Any]:
        """What is worth knowing about the member about to take over, just
        before the kill (kept with the failover, to explain it)."""


@dataclass
class Loop:
    pair: Pair
    pinger: Pinger
    calm_s: float = 1.0
    takeover_timeout_s: float = 10.0
    settle_timeout_s: float = 60.0
    poll_s: float = 0.1  # not faster: polling must not load what is measured
    label: str = "failover"
    runs: list[Failover] = field(default_factory=list)

    def calm(self) -> None:
        """Until every echo of the last `calm_s` was answered."""
        interval = self.pinger.interval_s
        wanted = int(self.calm_s / interval * 0.8)

        def quiet() -> bool:
            horizon = time.monotonic() - 0.1  # a reply is due within 0.1 s
            sent, replies = self.pinger.sent, self.pinger.replies
            recent = 0
            for number in range(len(sent) - 1, -1, -1):
                if sent[number] >= horizon:
                    continue
                if sent[number] < horizon - self.calm_s:
                    break
                if number not in replies:
                    return False
                recent += 1
            return recent >= wanted

        wait_until(quiet, self.settle_timeout_s, 0.05, f"{self.label}: {self.calm_s} s of calm")

    def settled(self) -> tuple[str, str]:
        found = wait_until(
            self.pair.settled, self.settle_timeout_s, self.poll_s, f"{self.label}: a settled pair"
        )
        assert found is not None  # wait_until returns only something truthy
        return found

    def once(self) -> Failover:
        self.settled()
        self.calm()
        serving, standing_by = self.settled()
        facts = self.pair.inspect(standing_by)
        first = self.pinger.mark()
        killed_at = time.monotonic()
        self.pair.kill(serving)
        wait_until(
            lambda: self.pair.active() == standing_by,
            self.takeover_timeout_s,
            self.poll_s,
            f"{self.label}: {standing_by} to take over",
        )
        takeover_s = time.monotonic() - killed_at
        self.pair.revive(serving)
        now_active, _ = self.settled()
        settled_s = time.monotonic() - killed_at
        self.calm()
        end = self.pinger.mark()
        gap, others = judge(self.pinger.replies, first, end)
        run = Failover(
            killed=serving,
            gap=gap,
            killed_at=killed_at,
            takeover_seen_s=takeover_s,
            settled_s=settled_s,
            revived_as="active" if now_active == serving else "standby",
            others=tuple(others),
            send_gap_s=longest_send_gap(self.pinger.sent, first, end),
            standby=facts,
        )
        log(
            f"{self.label}: {serving} killed: {run.ms:.0f} ms, {run.lost} pings lost;"
            f" back as {run.revived_as} after {settled_s:.2f} s"
            + (f"; {len(others)} other outage(s)" if others else "")
            + (
                f"; the pinger waited {run.send_gap_s * 1000:.0f} ms between two sends"
                if run.send_gap_s > 3 * self.pinger.interval_s
                else ""
            )
        )
        self.runs.append(run)
        return run

    def repeat(self, count: int) -> list[Failover]:
        for _ in range(count):
            self.once()
        return self.runs
