"""Membership and the ring on a real etcd and a real Redis (started by the
test, gone after): members see each other, share keys with exactly one
owner each, a member that leaves or goes silent is dropped and its keys
go to the others, a member out of touch owns nothing, and one dropped
while out of touch joins again and is told to take over afresh."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from astara.orchestrator.coordination import Coordinator, Ring, host_key
from astara.testing.coordination import CoordinationServer, EtcdServer, RedisServer
from astara.testing.net import wait_until

KEYS = [f"router-{n}" for n in range(200)] + [host_key(f"h{n}") for n in range(10)] + ["l2"]


@pytest.fixture(params=["etcd", "redis"])
def server(request: pytest.FixtureRequest) -> Iterator[CoordinationServer]:
    made: CoordinationServer = EtcdServer() if request.param == "etcd" else RedisServer()
    made.start()
    try:
        yield made
    finally:
        made.stop()


class Clock:
    """A monotonic clock the test moves (a pause, as the member sees it)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        import time

        return time.monotonic() + self.offset


def owners(members: list[Coordinator]) -> dict[str, list[str]]:
    return {key: [m.member for m in members if m.owns(key)] for key in KEYS}


def test_members_share_the_keys_and_take_over_from_one_gone(server: CoordinationServer) -> None:
    members = [
        Coordinator(server.url(), member=f"m{n}", membership_timeout_s=2).start() for n in range(3)
    ]
    changes: list[str] = []
    members[1].on_change = lambda: changes.append("m1")
    try:
        wait_until(
            lambda: all(m.members() == ("m0", "m1", "m2") for m in members), 10, 0.1, "all three"
        )
        shared = owners(members)
        assert all(len(owned) == 1 for owned in shared.values())
        assert {owned[0] for owned in shared.values()} == {"m0", "m1", "m2"}
        ring = Ring(["m0", "m1", "m2"])
        assert all(ring.owner(key) == owned[0] for key, owned in shared.items())

        # m2 leaves: the others see it and own its keys between them.
        members[2].stop()
        rest = members[:2]
        wait_until(lambda: all(m.members() == ("m0", "m1") for m in rest), 10, 0.1, "m2 gone")
        assert "m1" in changes
        after = owners(rest)
        assert all(len(owned) == 1 for owned in after.values())
        # Consistent hashing: what m0 and m1 owned stays theirs.
        assert all(after[key] == owned for key, owned in shared.items() if owned[0] != "m2")
    finally:
        for member in members[:2]:
            member.stop()


def test_a_silent_member_is_dropped_and_owns_nothing_until_it_joins_again(
    server: CoordinationServer,
) -> None:
    clock = Clock()
    quiet = Coordinator(server.url(), member="quiet", membership_timeout_s=2, monotonic=clock)
    loud = Coordinator(server.url(), member="loud", membership_timeout_s=2).start()
    quiet.start()
    taken_over: list[str] = []
    quiet.on_change = lambda: taken_over.append("change")
    try:
        wait_until(lambda: loud.members() == ("loud", "quiet"), 10, 0.1, "both")
        assert any(quiet.owns(key) for key in KEYS)
        # Its own clock says it has not confirmed for a while (a pause): it
        # owns nothing, though the ring still counts it.
        clock.offset += 1.5
        assert not any(quiet.owns(key) for key in KEYS)
        clock.offset -= 1.5
        # Silent past the timeout (its thread stopped: a pause), it is
        # dropped: the other owns everything.
        quiet._stop.set()
        assert quiet._thread is not None
        quiet._thread.join()
        wait_until(lambda: loud.members() == ("loud",), 15, 0.1, "the quiet one dropped")
        assert all(loud.owns(key) for key in KEYS)
        # Back, it finds itself dropped: it joins again and is told that
        # what it held may have been taken over (a change, though the
        # members it sees are the same as before).
        taken_over.clear()
        quiet.refresh()
        assert taken_over == ["change"]
        assert quiet.members() == ("loud", "quiet")
        wait_until(lambda: loud.members() == ("loud", "quiet"), 10, 0.1, "the quiet one back")
    finally:
        quiet.stop()
        loud.stop()


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from astara.cli.main import main; main()", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--role", "everything"], "expected all, api or orchestrator"),
        (["--role", "orchestrator", "--agent", "local"], "a local agent runs only with --role all"),
        (["--role", "api", "--coordination", "redis:///nowhere"], "only orchestrators coordinate"),
    ],
)
def test_serve_refuses_roles_that_do_not_fit(
    tmp_path: Path, args: list[str], complaint: str
) -> None:
    result = serve("--state-dir", str(tmp_path), *args)
    assert result.returncode == 2
    assert complaint in " ".join((result.stdout + result.stderr).split())
