"""Find and remove everything carrying a prefix: namespaces (and the processes
in them), per-namespace /etc files, the runtime directory, and the daemons
its appliances started (by their command line, which names a file in the
runtime directory: a daemon whose namespace was deleted under it runs on in
no namespace anyone can name). Used by `astara cleanup`-style repair and by
every test's teardown, so nothing outlives its owner."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import psutil

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
        "processes": [f"{p.pid}: {' '.join(p.info['cmdline'])}" for p in _daemons(prefix)],
    }


def _daemons(prefix: str) -> list[psutil.Process]:
    """The processes whose command line names a file under `prefix`'s
    runtime directory (the appliances' daemons: their config or pid file)."""
    marker = f"{default_run_dir(prefix)}/"
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in process.info.get("cmdline") or ()):
            found.append(process)
    return found


def remove_all(prefix: str) -> dict[str, list[str]]:
    """Remove every namespace and /etc/netns entry under `prefix`; returns what was removed.
    The fabric namespace goes last, after the appliances and workloads plugged into it."""
    found = leftovers(prefix)
    fabric = f"{prefix}-fabric"
    for name in sorted(found["namespaces"], key=lambda n: n == fabric):
        netns.delete(name)
    daemons = _daemons(prefix)  # what outlived its namespace
    for process in daemons:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(daemons, timeout=2)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    for name in found["etc_netns"]:
        shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
    for folder in found["run_dir"]:
        shutil.rmtree(folder, ignore_errors=True)
    return found
