"""What a failover does to traffic, measured from inside the lab's
namespaces (tests and benchmarks of HA routers).

`Pinger` sends an ICMP echo on an absolute schedule (every 10 ms: `ping -i
0.01` on these machines sends every 17 ms or so) and records each reply;
its `outages` are the gaps between consecutive replies longer than a few
intervals (last reply before → first reply after), and `lost` the echoes
never answered. `Stream` is one established TCP connection between two
namespaces, one side writing a numbered line every 10 ms, the other
checking that every number arrives once and in order: a reset, an end of
file or a number skipped is a broken stream, and `longest_gap_s` the
longest wait between two arrivals. Sockets are made inside the namespaces
(`nssocket`) and used from threads of the test process: no helper process.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from types import TracebackType

from astara.linux.garp import checksum
from astara.linux.nssocket import socket_in

ECHO_REQUEST, ECHO_REPLY = 8, 0


@dataclass(frozen=True)
class Outage:
    last_reply_before: float  # monotonic seconds
    first_reply_after: float
    lost: int  # echoes sent in between

    @property
    def seconds(self) -> float:
        return self.first_reply_after - self.last_reply_before


class Pinger:
    """Echoes to `address` every `interval_s` from `netns`, until stopped."""

    def __init__(self, netns: str, address: str, interval_s: float = 0.01) -> None:
        self.address, self.interval_s = address, interval_s
        self.sock, _ = socket_in(netns, socket.SOCK_RAW, socket.IPPROTO_ICMP, socket.AF_INET)
        self.ident = (os.getpid() ^ id(self)) & 0xFFFF
        self.sent: list[float] = []  # by sequence number
        self.replies: dict[int, float] = {}  # sequence → when its reply came
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pinger", daemon=True)

    def start(self) -> Pinger:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def __enter__(self) -> Pinger:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        due = time.monotonic()
        payload = b"astara-failover!"
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= due:
                sequence = len(self.sent) & 0xFFFF
                header = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, self.ident, sequence)
                header = struct.pack(
                    "!BBHHH",
                    ECHO_REQUEST,
                    0,
                    checksum(header + payload),
                    self.ident,
                    sequence,
                )
                self.sent.append(now)
                with contextlib.suppress(OSError):  # unreachable for a moment
                    self.sock.sendto(header + payload, (self.address, 0))
                due += self.interval_s
                if due < now:  # fell behind (a slow machine): no burst
                    due = now + self.interval_s
            ready, _, _ = select.select([self.sock], [], [], max(0.0, due - time.monotonic()))
            if ready:
                packet = self.sock.recv(2048)
                offset = (packet[0] & 0x0F) * 4
                kind, _, _, ident, sequence = struct.unpack("!BBHHH", packet[offset : offset + 8])
                if kind == ECHO_REPLY and ident == self.ident:
                    # Sequence numbers wrap at 65536 (11 minutes at 10 ms).
                    base = (len(self.sent) - 1) & ~0xFFFF
                    number = base + sequence
                    if number >= len(self.sent):
                        number -= 0x10000
                    self.replies.setdefault(number, time.monotonic())

    def mark(self) -> int:
        """The number of echoes sent so far: a point to count from."""
        return len(self.sent)

    def lost(self, since: int = 0, settle_s: float = 0.2) -> int:
        """Echoes sent after `since` (and more than `settle_s` ago) never answered."""
        horizon = time.monotonic() - settle_s
        return sum(
            1
            for number, at in enumerate(self.sent)
            if number >= since and at < horizon and number not in self.replies
        )

    def outages(self, since: int = 0, longer_than: int = 3) -> list[Outage]:
        """Runs of more than `longer_than` echoes unanswered, after `since`."""
        found = []
        answered = sorted(n for n in self.replies if n >= since)
        for before, after in itertools.pairwise(answered):
            if after - before - 1 > longer_than:
                found.append(Outage(self.replies[before], self.replies[after], after - before - 1))
        return found


class Stream:
    """A TCP connection from `client_netns` to `address`:`port`, served by a
    listener in `server_netns` (bound to every address there). `pusher`:
    which side writes ("client" or "server")."""

    def __init__(
        self,
        server_netns: str,
        client_netns: str,
        address: str,
        port: int,
        pusher: str = "server",
        source: str | None = None,
    ) -> None:
        self.errors: list[str] = []
        self.received = 0  # numbers read in order
        self.longest_gap_s = 0.0
        self._stop = threading.Event()
        listener, _ = socket_in(server_netns, socket.SOCK_STREAM, 0, socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", port))
        listener.listen(1)
        client, _ = socket_in(client_netns, socket.SOCK_STREAM, 0, socket.AF_INET)
        if source is not None:
            client.bind((source, 0))
        client.settimeout(10)
        try:
            client.connect((address, port))
            listener.settimeout(10)
            served, _ = listener.accept()
        finally:
            listener.close()
        client.settimeout(None)
        served.settimeout(None)
        self.sockets = (client, served)
        writer, reader = (served, client) if pusher == "server" else (client, served)
        self._threads = [
            threading.Thread(target=self._write, args=(writer,), daemon=True),
            threading.Thread(target=self._read, args=(reader,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _write(self, sock: socket.socket) -> None:
        number = 0
        while not self._stop.wait(0.01):
            try:
                sock.sendall(b"%d\n" % number)
            except OSError as error:
                if not self._stop.is_set():
                    self.errors.append(f"writing: {error}")
                return
            number += 1

    def _read(self, sock: socket.socket) -> None:
        pending = b""
        last = time.monotonic()
        while not self._stop.is_set():
            try:
                chunk = sock.recv(65536)
            except OSError as error:
                if not self._stop.is_set():
                    self.errors.append(f"reading: {error}")
                return
            if not chunk:
                if not self._stop.is_set():
                    self.errors.append("the connection was closed")
                return
            now = time.monotonic()
            self.longest_gap_s = max(self.longest_gap_s, now - last)
            last = now
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if int(line) != self.received:
                    self.errors.append(f"got {int(line)} after {self.received - 1}")
                    self.received = int(line)
                self.received += 1

    @property
    def broken(self) -> bool:
        return bool(self.errors)

    def close(self) -> None:
        self._stop.set()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
