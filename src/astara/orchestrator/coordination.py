"""Several orchestrators: who acts on what.

Each orchestrator process is a member of one tooz group on etcd3 or Redis
(`astara serve --coordination URL`). A consistent hash ring over the
members assigns every work key to one of them: an appliance's key (its
owner places and reconciles it), a host's (`host_key`: its owner
heartbeats it and sweeps it) and `l2` (its owner runs the L2 pass). When
the membership changes, every member recomputes the ring and is told
(`on_change`: the orchestrator wakes what it now owns).

A member that has not confirmed its membership for half the membership
timeout owns nothing: the others drop it after the whole timeout, so it
stops before they start. That is a lease on a clock, and clocks and pauses
lie; what makes two members acting on one appliance harmless is the
appliance's epoch (see `Orchestrator`): a member takes an appliance over by
raising its epoch in the database, and the agent refuses whatever carries
an older one.

Without coordination (one process) there is no `Coordinator`: the
orchestrator owns everything and tooz is never imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

log = logging.getLogger(__name__)

GROUP = b"astara-orchestrators"
MEMBERSHIP_TIMEOUT_S = 10.0
PARTITIONS = 2**8  # ring points per member: an even share of keys at a few members


def host_key(name: str) -> str:
    """A host's key on the ring (apart from appliance ids, which are UUIDs)."""
    return f"host:{name}"


def member_name() -> str:
    """A name unique to this process: host name, pid and a random part (a
    restarted process, or a pid reused, is a new member)."""
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}-{secrets.token_hex(3)}"


class Ring:
    """The consistent hash ring of a set of members: which one owns a key."""

    def __init__(self, members: Iterable[str]) -> None:
        from tooz.hashring import HashRing

        self.members = tuple(sorted(set(members)))
        self._ring = HashRing(self.members, partitions=PARTITIONS) if self.members else None

    def owner(self, key: str) -> str | None:
        if self._ring is None:
            return None
        nodes = self._ring.get_nodes(key.encode())
        return str(next(iter(nodes)))


def with_timeout(url: str, membership_timeout_s: float) -> str:
    """The tooz URL with the membership timeout as its drivers take it
    (etcd: a lease's TTL in whole seconds; Redis: a key's expiry)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    whole = max(1, round(membership_timeout_s))
    query.setdefault("membership_timeout", str(whole))
    query.setdefault("timeout", str(max(whole, 5)))
    return urlunsplit(parts._replace(query=urlencode(query)))


class Coordinator:
    """This process's membership, kept alive on a thread, and the ring."""

    def __init__(
        self,
        url: str,
        *,
        member: str | None = None,
        membership_timeout_s: float = MEMBERSHIP_TIMEOUT_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if membership_timeout_s < 1:
            raise ValueError("the membership timeout must be at least 1 s")
        self.url = url
        self.shown_url = redacted(url)  # what logs show: never a password
        self.member = member or member_name()
        self.membership_timeout_s = float(round(membership_timeout_s))
        self.refresh_s = self.membership_timeout_s / 6
        self.monotonic = monotonic
        # Called on the coordination thread: `on_change` when the members
        # changed (or this one was dropped and joined again: what it held may
        # have been taken over); `on_resume` when it is confirmed again after
        # a lapse short of being dropped (what it skipped meanwhile).
        self.on_change: Callable[[], None] | None = None
        self.on_resume: Callable[[], None] | None = None
        self.changes = 0  # membership changes seen since start
        self._ring = Ring(())
        self._confirmed = float("-inf")  # when membership was last confirmed
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tooz: Any = None

    def start(self) -> Coordinator:
        from tooz import coordination

        self._tooz = coordination.get_coordinator(
            with_timeout(self.url, self.membership_timeout_s), self.member.encode()
        )
        self._tooz.start(start_heart=False)
        with contextlib.suppress(coordination.GroupAlreadyExist):
            self._tooz.create_group(GROUP).get()
        self._tooz.join_group(GROUP).get()
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="coordination", daemon=True)
        self._thread.start()
        log.info("member %s of %s: %s", self.member, self.shown_url, ", ".join(self.members()))
        return self

    def stop(self) -> None:
        """Leave the group (the others take over at once, not after the
        timeout) and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            self._ring, self._confirmed = Ring(()), float("-inf")
        if self._tooz is not None:
            try:
                self._tooz.leave_group(GROUP).get()
            except Exception as error:
                log.warning("leaving the group: %s", error)
            try:
                self._tooz.stop()
            except Exception as error:
                log.warning("stopping the coordination client: %s", error)

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
            except Exception as error:
                log.warning("coordination (%s): %s", self.shown_url, error)

    def refresh(self) -> None:
        """Heartbeat, read the members (joining again if dropped: after a
        pause, or the server's restart), and rebuild the ring if they changed."""
        from tooz import coordination

        started = self.monotonic()
        lapsed = not self.confirmed()
        rejoined = False
        self._tooz.heartbeat()
        try:
            members = {m.decode() for m in self._tooz.get_members(GROUP).get()}
        except coordination.GroupNotCreated:
            members = set()
        if self.member not in members:
            log.warning(
                "member %s: not in the group (paused or cut off?): joining again", self.member
            )
            with contextlib.suppress(coordination.GroupAlreadyExist):
                self._tooz.create_group(GROUP).get()
            with contextlib.suppress(coordination.MemberAlreadyExist):
                self._tooz.join_group(GROUP).get()
            members.add(self.member)
            rejoined = True  # maybe with the same members: others may have taken over meanwhile
        with self._lock:
            changed = set(self._ring.members) != members or rejoined
            if changed:
                self._ring = Ring(members)
                self.changes += 1
            # Confirmed as of when this round began: the others count from
            # our last heartbeat, which is no earlier than that.
            self._confirmed = started
        if changed:
            log.info("members now: %s", ", ".join(sorted(members)))
            if self.on_change is not None:
                self.on_change()
        elif lapsed and self.on_resume is not None:
            log.warning("member %s: confirmed again after a lapse", self.member)
            self.on_resume()

    def confirmed(self) -> bool:
        """Membership confirmed recently enough that nobody has taken over."""
        with self._lock:
            confirmed = self._confirmed
        return self.monotonic() - confirmed < self.membership_timeout_s / 2

    def owns(self, key: str) -> bool:
        if not self.confirmed():
            return False
        with self._lock:
            return self._ring.owner(key) == self.member

    def members(self) -> tuple[str, ...]:
        with self._lock:
            return self._ring.members

    def status(self) -> dict[str, Any]:
        return {
            "member": self.member,
            "members": list(self.members()),
            "confirmed": self.confirmed(),
            "membership_changes": self.changes,
            "membership_timeout_s": self.membership_timeout_s,
        }


def redacted(url: str) -> str:
    """The URL without the credentials it may carry (`redis://:PASSWORD@…`)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))
