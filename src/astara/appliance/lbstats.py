"""A load balancer's health as its haproxy sees it: `show stat` on the
appliance's stats socket (root only), read into Octavia's operating
statuses (octavia/amphorae/backends/health_daemon: the same mapping).

- A member is ONLINE while its checks pass (haproxy's `UP`, also `UP 1/3`
  on its way down), ERROR when they fail (`DOWN`), OFFLINE when set down
  (`MAINT`), NO_MONITOR without a check, DRAINING when draining.
- A pool is ERROR when none of its members is ONLINE (and it has some with
  checks), DEGRADED when some are not, else ONLINE.
- A listener is ONLINE while its frontend is `OPEN`.

Each listener's counters come from its frontend's row as they are (Octavia's
names: `bin` bytes_in, `bout` bytes_out, `scur` active_connections, `stot`
total_connections, `ereq` request_errors); they start at zero with each
haproxy process (each reload starts one), so the orchestrator accumulates
them, knowing a new process by the pid that answers `show info`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from astara.appliance.lbreload import ask, parse_show_info_pid

_MEMBER = {"UP": "ONLINE", "DOWN": "ERROR", "MAINT": "OFFLINE", "DRAIN": "DRAINING"}
COUNTERS = {
    "bin": "bytes_in",
    "bout": "bytes_out",
    "scur": "active_connections",
    "stot": "total_connections",
    "ereq": "request_errors",
}


def member_status(haproxy: str) -> str:
    """Octavia's operating status of a server whose haproxy status is `haproxy`."""
    if haproxy == "no check":
        return "NO_MONITOR"
    word = haproxy.split(" ")[0]
    if word.startswith("NOLB"):
        return "DRAINING"
    return _MEMBER.get(word, "ERROR")


def read_stat(path: Path, timeout_s: float = 2.0) -> list[dict[str, str]] | None:
    """The rows of `show stat` (one per frontend, backend and server); None
    if haproxy does not answer (not running, or reloading): nothing known."""
    answer = ask(path, "show stat", timeout_s)
    if answer is None:
        return None
    return list(csv.DictReader(answer.lstrip("# ").splitlines()))


def serving_process(path: Path, timeout_s: float = 2.0) -> int | None:
    """The pid of the haproxy process that answers on the stats socket (its
    worker): a new one means its counters began again."""
    answer = ask(path, "show info", timeout_s)
    return parse_show_info_pid(answer) if answer is not None else None


def health(rows: list[dict[str, str]] | None, process: int | None = None) -> dict[str, Any] | None:
    """Operating statuses by object id: listeners (frontends), pools
    (backends, from their members), members (servers); the counters, and
    the process they are of (None: not known); None: nothing known."""
    if rows is None:
        return None
    listeners: dict[str, str] = {}
    counters: dict[str, dict[str, int]] = {}
    members: dict[str, str] = {}
    by_pool: dict[str, list[str]] = {}
    for row in rows:
        proxy, name, status = row.get("pxname", ""), row.get("svname", ""), row.get("status", "")
        if name == "FRONTEND":
            listeners[proxy] = "ONLINE" if status == "OPEN" else "OFFLINE"
            counters[proxy] = {name: _count(row.get(key)) for key, name in COUNTERS.items()}
        elif name != "BACKEND":
            members[name] = member_status(status)
            by_pool.setdefault(proxy, []).append(members[name])
    pools = {}
    for pool, found in by_pool.items():
        checked = [s for s in found if s in ("ONLINE", "ERROR", "DRAINING")]
        if not checked:
            pools[pool] = "ONLINE"
        elif "ONLINE" not in checked:
            pools[pool] = "ERROR"
        elif "ERROR" in checked:
            pools[pool] = "DEGRADED"
        else:
            pools[pool] = "ONLINE"
    return {
        "listeners": listeners,
        "pools": pools,
        "members": members,
        "counters": counters,
        "process": process,
    }


def _count(text: str | None) -> int:
    try:
        return max(int(text or 0), 0)
    except ValueError:
        return 0
