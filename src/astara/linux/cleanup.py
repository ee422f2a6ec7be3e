"""Find and remove everything carrying a prefix: namespaces (and the processes
in them), per-namespace /etc files and the runtime directory. Used by `astara cleanup`-style repair
and by every test's teardown, so nothing outlives its owner."""

from __future__ import annotations

import shutil
from pathlib import Path

from astara.linux import netns

NETNS_ETC = Path("/etc/netns")
RUN_ROOT = Path("/run/astara")


def default_run_dir(prefix: str) -> Path:
    return RUN_ROOT / prefix


def leftovers(prefix: str) -> dict[str, list[str]]:
    """What exists now under `prefix` (namespaces and /etc/netns entries)."""
    marker = f"{prefix}-"
    etc = (
        sorted(p.name for p in NETNS_ETC.iterdir() if p.name.startswith(marker))
        if NETNS_ETC.is_dir()
        else []
    )
    return {
        "namespaces": [n for n in netns.names() if n.startswith(marker)],
        "etc_netns": etc,
        "run_dir": [str(default_run_dir(prefix))] if default_run_dir(prefix).exists() else [],
    }


def remove_all(prefix: str) -> dict[str, list[str]]:
    """Remove every namespace and /etc/netns entry under `prefix`; returns what was removed.
    The fabric namespace goes last, after the appliances and workloads plugged into it."""
    found = leftovers(prefix)
    fabric = f"{prefix}-fabric"
    for name in sorted(found["namespaces"], key=lambda n: n == fabric):
        netns.delete(name)
    for name in found["etc_netns"]:
        shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
    for folder in found["run_dir"]:
        shutil.rmtree(folder, ignore_errors=True)
    return found
