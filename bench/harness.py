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
from contextlib import contextmanager, suppress
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
    with agent_process(lead) as (_, lab):
        yield lab


@contextmanager
def agent_process(lead: str = "b") -> Iterator[tuple[AgentProcess, Lab]]:
    """`agent_lab`, with the agent's process too (its pid, its own teardown)."""
    with tempfile.TemporaryDirectory(prefix="astara-bench-") as work:
        process = AgentProcess(Path(work), unique_prefix(lead))
        try:
            client = process.start()
            yield process, Lab(client, process.prefix)
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


# --- memory per appliance: a cgroup of our own ----------------------------------------

CGROUP_MEMORY = Path("/sys/fs/cgroup/memory")


def own_memory_cgroup(pid: int | str = "self", root: Path = CGROUP_MEMORY) -> Path:
    """The cgroup v1 memory cgroup `pid` is in (from /proc/PID/cgroup)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return root / path.lstrip("/")
    raise RuntimeError(f"process {pid} is in no cgroup v1 memory cgroup")


def pss_bytes(pid: int) -> int:
    """A process's proportional set size (smaps_rollup), 0 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return "?"


@dataclass(frozen=True)
class MemoryReading:
    """A memory cgroup at one moment, in bytes. `usage` is everything charged
    to it (memory.usage_in_bytes: user pages and, on cgroup v1, kernel memory
    too); `kernel` is memory.kmem.usage_in_bytes (slab: namespaces, links,
    nftables objects, sockets, page tables of its processes); `rss` and
    `cache` come from memory.stat (anonymous memory, page cache and tmpfs);
    `pss`: each process's PSS (smaps_rollup), by pid."""

    usage: int
    kernel: int
    rss: int
    cache: int
    pss: dict[int, int]
    commands: dict[int, str]

    @property
    def user(self) -> int:
        return self.rss + self.cache

    def pss_except(self, pids: set[int]) -> int:
        return sum(v for pid, v in self.pss.items() if pid not in pids)


class MemoryCgroup:
    """A cgroup v1 memory cgroup of our own for the duration of a block, to
    measure what a set of processes (and everything they start, and the kernel
    memory their commands allocate) costs: the kernel charges an allocation to
    the memory cgroup of the process making it, and children start in their
    parent's. It is made under the cgroup this process is in (so whatever
    accounts for us still accounts for it), named `astara-bench-<name>`; on
    the way out every process still in it is moved back where it came from
    (or to the parent) and it is removed. Charges made inside stay with it
    until then, and a process's pages from before its move stay charged
    where they were (moving them, memory.move_charge_at_immigrate, is
    deprecated and refused by recent kernels): move a process in before it
    makes what is to be measured. What it frees and takes again afterwards
    is charged here, so the growth is an upper bound by a fixed amount."""

    def __init__(self, name: str, parent: Path | None = None) -> None:
        self.parent = parent if parent is not None else own_memory_cgroup()
        self.path = self.parent / f"astara-bench-{name}"
        self._origins: dict[int, Path] = {}

    @staticmethod
    def available(root: Path = CGROUP_MEMORY) -> bool:
        return (root / "memory.kmem.usage_in_bytes").exists()

    def create(self) -> MemoryCgroup:
        self.path.mkdir()
        return self

    def __enter__(self) -> MemoryCgroup:
        return self.create()

    def __exit__(self, *_: object) -> None:
        self.remove()

    def add(self, pid: int, *, with_children: bool = True) -> None:
        """Move `pid` (and, with `with_children`, its descendants living now)
        into the cgroup."""
        for each in [pid, *(descendants(pid) if with_children else [])]:
            try:
                self._origins.setdefault(each, own_memory_cgroup(each))
                (self.path / "cgroup.procs").write_text(f"{each}\n")
            except (FileNotFoundError, ProcessLookupError):
                continue  # gone meanwhile

    def pids(self) -> list[int]:
        return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]

    def _read(self, name: str) -> int:
        return int((self.path / name).read_text())

    def read(self) -> MemoryReading:
        stat = {}
        for line in (self.path / "memory.stat").read_text().splitlines():
            key, value = line.split()
            stat[key] = int(value)
        pids = self.pids()
        return MemoryReading(
            usage=self._read("memory.usage_in_bytes"),
            kernel=self._read("memory.kmem.usage_in_bytes"),
            rss=stat.get("rss", 0),
            cache=stat.get("cache", 0),
            pss={pid: pss_bytes(pid) for pid in pids},
            commands={pid: command_name(pid) for pid in pids},
        )

    def remove(self) -> None:
        """Every process back where it came from, then the cgroup removed
        (retried while a process is still exiting)."""
        if not self.path.exists():
            return
        deadline = time.monotonic() + 10
        while True:
            for pid in self.pids():
                target = self._origins.get(pid, self.parent)
                if not (target / "cgroup.procs").exists():
                    target = self.parent
                with suppress(FileNotFoundError, ProcessLookupError):
                    (target / "cgroup.procs").write_text(f"{pid}\n")
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def descendants(pid: int) -> list[int]:
    """Every living descendant of `pid` (from /proc/*/stat's parent field)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found
