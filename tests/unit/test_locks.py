"""The agent's shared/exclusive lock."""

from __future__ import annotations

import threading

from astara.agent.locks import SharedLock


def test_shared_holders_overlap_and_exclusive_waits_for_them() -> None:
    lock = SharedLock()
    inside = threading.Barrier(3)  # two shared holders and this test
    release = threading.Event()
    order: list[str] = []

    def shared(name: str) -> None:
        with lock.shared():
            inside.wait(timeout=10)  # both are inside at once
            release.wait(timeout=10)
            order.append(name)

    def exclusive() -> None:
        with lock.exclusive():
            order.append("exclusive")

    holders = [threading.Thread(target=shared, args=(n,)) for n in ("a", "b")]
    for thread in holders:
        thread.start()
    inside.wait(timeout=10)
    writer = threading.Thread(target=exclusive)
    writer.start()
    # Waiting on an event, not on a timeout: once the writer is queued it is
    # inside the lock's wait, and it has not run while the holders hold on.
    deadline = threading.Event()
    for _ in range(1000):
        if lock._waiting_exclusive:
            break
        deadline.wait(0.01)
    assert lock._waiting_exclusive and order == []  # the network change waits
    release.set()
    for thread in [*holders, writer]:
        thread.join(timeout=10)
    assert sorted(order[:2]) == ["a", "b"] and order[2] == "exclusive"


def test_a_waiting_exclusive_holder_goes_before_new_shared_ones() -> None:
    lock = SharedLock()
    order: list[str] = []
    first_in = threading.Event()
    release = threading.Event()

    def long_shared() -> None:
        with lock.shared():
            first_in.set()
            release.wait(timeout=10)

    def exclusive() -> None:
        with lock.exclusive():
            order.append("exclusive")

    def late_shared() -> None:
        with lock.shared():
            order.append("late shared")

    first = threading.Thread(target=long_shared)
    first.start()
    first_in.wait(timeout=10)
    writer = threading.Thread(target=exclusive)
    writer.start()
    while not lock._waiting_exclusive:  # the writer is queued
        threading.Event().wait(0.01)
    late = threading.Thread(target=late_shared)
    late.start()
    release.set()
    for thread in (first, writer, late):
        thread.join(timeout=10)
    assert order == ["exclusive", "late shared"]
