"""The benchmarks' per-appliance memory figure: a memory cgroup of their own
(`bench.harness.MemoryCgroup`) charges what a process and its children make,
kernel memory included, and gives every process back when it goes."""

from __future__ import annotations

import subprocess

import pytest
from bench.harness import MemoryCgroup, own_memory_cgroup

from astara.linux import netns
from astara.testing.agent import unique_prefix

pytestmark = pytest.mark.root

NAMESPACES = 20


@pytest.mark.skipif(not MemoryCgroup.available(), reason="no cgroup v1 memory controller")
def test_namespaces_made_by_a_child_are_charged_to_the_cgroup_and_every_process_goes_back() -> None:
    prefix = unique_prefix("m")
    names = [f"{prefix}-{n}" for n in range(NAMESPACES)]
    # A shell that waits for a line, then makes the namespaces through `ip`
    # (a child of its own, started after the move), then waits again.
    script = (
        "read go; for n in " + " ".join(names) + '; do ip netns add "$n"; done; echo made; read end'
    )
    shell = subprocess.Popen(
        ["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert shell.stdin is not None and shell.stdout is not None
    origin = own_memory_cgroup(shell.pid)
    try:
        with MemoryCgroup(prefix) as cgroup:
            assert cgroup.path.parent == own_memory_cgroup()
            cgroup.add(shell.pid)
            assert cgroup.pids() == [shell.pid]
            before = cgroup.read()
            shell.stdin.write("go\n")
            shell.stdin.flush()
            assert shell.stdout.readline() == "made\n"
            after = cgroup.read()
            # A network namespace costs the kernel well over 20 KB (loopback,
            # its tables); it is charged here, not to the cgroup we are in.
            assert after.kernel - before.kernel > NAMESPACES * 20_000
            assert after.usage - before.usage >= after.kernel - before.kernel
            assert after.pss[shell.pid] > 0 and after.commands[shell.pid] == "sh"
            path = cgroup.path
        assert not path.exists()
        assert own_memory_cgroup(shell.pid) == origin
    finally:
        if shell.poll() is None:
            shell.stdin.write("end\n")
            shell.stdin.close()
            shell.wait(10)
        for name in names:
            netns.delete(name)
    assert not any(prefix in name for name in netns.names())
