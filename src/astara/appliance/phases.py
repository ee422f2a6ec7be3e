"""Where an apply's time goes, by phase, for the agent's metrics.

The agent's request handler opens a recording (`recording()`) in its thread;
the steps of an apply mark their phases (`phase("render")`). Outside a
recording, marking a phase costs a clock read and nothing is kept. Time is
read here only to be reported, never to decide anything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# The phases of a PUT of an appliance, in the order they run.
PHASES = (
    "parse",  # the body into a config (skipped for a body known byte for byte)
    "check",  # is it the config in force, standing as it was left? (cheap observation)
    "validate",  # semantics, then the real tools' checks (nft -c, dnsmasq --test, ...)
    "render",  # the config into nft, dnsmasq and radvd texts
    "observe",  # what the namespace holds, for the plan
    "plan",  # what to do (pure)
    "execute",  # doing it: netlink, nft -f, daemons
    "report",  # observing the result for the answer
)

_local = threading.local()


@contextmanager
def recording() -> Iterator[dict[str, float]]:
    """Collect the phases marked in this thread: phase → seconds."""
    spent: dict[str, float] = {}
    outer = getattr(_local, "spent", None)
    _local.spent = spent
    try:
        yield spent
    finally:
        _local.spent = outer


@contextmanager
def phase(name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        spent: dict[str, float] | None = getattr(_local, "spent", None)
        if spent is not None:
            spent[name] = spent.get(name, 0.0) + time.monotonic() - started
