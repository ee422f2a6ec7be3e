"""The HA members' role events: one thread reads every member's keepalived
FIFO and hands each change of role to `appliance.ha.Roles`.

keepalived writes one line per transition on the FIFO its config names
(`vrrp_notify_fifo`), in order; notify scripts would be forked once per
transition and may run out of order. The FIFO is opened read-write, as
keepalived opens it: with a writer always present (ourselves) it never
reads as closed, and a keepalived restarted meanwhile writes on the same
pipe. Lines written while no one read wait in the pipe; a burst is read at
once and only its last role is acted on (the links follow the state, not
the path to it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from astara.appliance.ha import HaRole, Roles, parse_event
from astara.appliance.render.ha import EVENTS_FIFO

log = logging.getLogger(__name__)


class RoleEvents:
    def __init__(self, roles: Roles, run_directory: Callable[[str], Path]) -> None:
        self.roles = roles
        self.run_directory = run_directory
        self._selector = selectors.DefaultSelector()
        self._open: dict[str, tuple[int, int]] = {}  # appliance id → (fd, FIFO inode)
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._partial: dict[str, str] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ha-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for appliance_id in list(self._open):
                self._close(appliance_id)
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def watch(self, appliance_id: str) -> None:
        """Read the member's FIFO (made here if keepalived has not made it
        yet; opened again if it is another file than the one read)."""
        directory = self.run_directory(appliance_id)
        path = directory / EVENTS_FIFO
        with self._lock:
            if not directory.is_dir():
                return
            with contextlib.suppress(FileExistsError):
                os.mkfifo(path, 0o600)
            inode = os.stat(path).st_ino
            known = self._open.get(appliance_id)
            if known is not None and known[1] == inode:
                return
            if known is not None:
                self._close(appliance_id)
            if not stat.S_ISFIFO(os.stat(path).st_mode):
                log.warning("HA member %s: %s is no FIFO", appliance_id, path)
                return
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            self._open[appliance_id] = (fd, inode)
            self._selector.register(fd, selectors.EVENT_READ, appliance_id)
        os.write(self._wake_w, b"x")  # whatever waits in it is read now

    def unwatch(self, appliance_id: str) -> None:
        with self._lock:
            self._close(appliance_id)

    def _close(self, appliance_id: str) -> None:
        known = self._open.pop(appliance_id, None)
        self._partial.pop(appliance_id, None)
        if known is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(known[0])
        os.close(known[0])

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=1.0):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                self._read(key.data, key.fd)

    def _read(self, appliance_id: str, fd: int) -> None:
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError:  # closed under us by `unwatch`
                return
            if not chunk:
                break
            chunks.append(chunk.decode(errors="replace"))
        text = self._partial.pop(appliance_id, "") + "".join(chunks)
        lines = text.split("\n")
        if lines[-1]:
            self._partial[appliance_id] = lines[-1]
        role: HaRole | None = None
        for line in lines[:-1]:
            role = parse_event(line) or role
        if role is None:
            return
        try:
            self.roles.transition(appliance_id, role)
        except Exception:  # the next event (or the watch's repair) tries again
            log.exception("HA member %s: becoming %s failed", appliance_id, role.value)
