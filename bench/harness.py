"""What every benchmark needs: an agent and a lab under a unique prefix,
scratch namespaces for the baselines, timed commands, and the result records.

Everything a benchmark makes is named `<prefix>-...` (namespaces) or
`<prefix>...` (links), lives only inside namespaces it creates, and is removed
in a `finally`, however the benchmark ends. The root namespace's links,
routes and firewall are never touched.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astara.linux import cleanup, netns
from astara.linux.run import in_netns, run
from astara.testing.agent import AgentProcess, unique_prefix
from astara.testing.lab import Lab

Result = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    """Sizes of a run: `quick` trades precision for a run of about a minute."""

    quick: bool = False

    @property
    def repeats(self) -> int:
        return 1 if self.quick else 3

    @property
    def throughput_repeats(self) -> int:
        # Throughput on this kind of VM varies by about 10% from one run to
        # the next, bare veth included: more runs, and the median.
        return 1 if self.quick else 5

    @property
    def iperf_duration_s(self) -> int:
        return 1 if self.quick else 3

    @property
    def floating_ip_counts(self) -> tuple[int, ...]:
        return (1, 100, 1_000) if self.quick else (1, 100, 1_000, 10_000)

    @property
    def create_repeats(self) -> int:
        return 2 if self.quick else 5


@dataclass
class Report:
    """Collects results and prints each as one JSON line as it arrives."""

    results: list[Result] = field(default_factory=list)

    def emit(self, result: Result) -> None:
        self.results.append(result)
        print(json.dumps(result), flush=True)


def ratio(figure: float, baseline: float) -> float:
    return round(figure / baseline, 3) if baseline else float("nan")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def seconds(value: float) -> float:
    """Seconds rounded to the microsecond, for readable JSON."""
    return round(value, 6)


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the JSON results."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def timed(action: Callable[[], object]) -> float:
    """Wall time of `action` in seconds."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run_timed(
    argv: Sequence[str], netns_name: str | None = None, input_text: str | None = None
) -> float:
    """Wall time of one command (failing loudly), as a script would run it."""
    return timed(lambda: run(argv, netns=netns_name, input_text=input_text, timeout_s=120))


@contextmanager
def agent_lab(lead: str = "b") -> Iterator[Lab]:
    """A real `astara-agent` under a fresh prefix, and a lab on it. Everything
    under the prefix (the agent's objects and the scratch namespaces of the
    baselines, which share it) is removed on the way out."""
    with tempfile.TemporaryDirectory(prefix="astara-bench-") as work:
        process = AgentProcess(Path(work), unique_prefix(lead))
        try:
            client = process.start()
            yield Lab(client, process.prefix)
        finally:
            process.remove_everything()
            left = {k: v for k, v in cleanup.leftovers(process.prefix).items() if v}
            if left:
                log(f"left behind under {process.prefix}: {left}")


class Scratch:
    """Namespaces for hand-built baselines, under the lab's prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.made: list[str] = []

    def netns(self, name: str) -> str:
        """Create `<prefix>-<name>` with loopback up; returns its name."""
        full = f"{self.prefix}-{name}"
        run(["ip", "netns", "add", full])
        self.made.append(full)
        run(["ip", "-n", full, "link", "set", "lo", "up"])
        return full

    def remove(self, full: str) -> None:
        netns.delete(full)
        if full in self.made:
            self.made.remove(full)

    def remove_all(self) -> None:
        for full in reversed(list(self.made)):
            self.remove(full)

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *_: object) -> None:
        self.remove_all()


@contextmanager
def background(netns_name: str, argv: Sequence[str]) -> Iterator[subprocess.Popen[str]]:
    """A process in a namespace for the duration of the block, then stopped."""
    process = subprocess.Popen(
        in_netns(netns_name, argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
