"""A steady HTTP client load from a namespace, for tests that change a load
balancer under it: how many requests succeeded and failed, and when.

The clients are threads in one Python process inside the namespace (`ip
netns exec`), each sending GETs in a loop: with a new connection per request
(`keep_alive` False) or over one connection kept open and reopened after a
failure. Each request is recorded with its monotonic end time (the clock is
the host's, so the test's own `time.monotonic()` marks compare), so a test
can tell that requests flowed while a change was under way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field

from astara.linux.run import in_netns

_CLIENTS = r"""
import http.client, json, sys, threading, time
host, port, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
keep_alive, pause_s = sys.argv[4] == "1", float(sys.argv[5])
stop = threading.Event()
done, failed = [], []  # (time, answer) / (time, error, reused connection)
lock = threading.Lock()

def client():
    connection, reused = None, False
    while not stop.is_set():
        if connection is None:
            connection, reused = http.client.HTTPConnection(host, port, timeout=5), False
        try:
            headers = {} if keep_alive else {"Connection": "close"}
            connection.request("GET", "/", headers=headers)
            response = connection.getresponse()
            body = response.read().decode()
            if response.status != 200:
                raise OSError(f"status {response.status}")
            with lock:
                done.append((time.monotonic(), body))
            stop.wait(pause_s)
            if keep_alive and not response.will_close:
                reused = True
            else:
                connection.close()
                connection = None
        except Exception as error:
            with lock:
                failed.append((time.monotonic(), f"{type(error).__name__}: {error}", reused))
            connection.close()
            connection = None

threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
for thread in threads:
    thread.start()
print("started", flush=True)
sys.stdin.read()
stop.set()
for thread in threads:
    thread.join(10)
print(json.dumps({"done": done, "failed": failed}), flush=True)
"""


@dataclass
class LoadResult:
    done: list[tuple[float, str]] = field(default_factory=list)
    failed: list[tuple[float, str, bool]] = field(default_factory=list)

    def done_between(self, start: float, end: float) -> int:
        return sum(1 for at, _ in self.done if start <= at <= end)


class HttpLoad:
    """`clients` threads sending GETs to http://`host`:`port`/ from
    `netns` until `stop`, each waiting `pause_s` after an answer (a client
    that thinks between requests: its kept connection is idle meanwhile)."""

    def __init__(
        self,
        netns: str,
        host: str,
        port: int = 80,
        clients: int = 4,
        keep_alive: bool = False,
        pause_s: float = 0.0,
    ) -> None:
        argv = [sys.executable, "-c", _CLIENTS, host, str(port), str(clients)]
        self.process = subprocess.Popen(
            in_netns(netns, [*argv, "1" if keep_alive else "0", str(pause_s)]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "started":
            self.process.kill()
            raise RuntimeError(f"the load in {netns} did not start")
        self.result: LoadResult | None = None

    def stop(self) -> LoadResult:
        if self.result is None:
            output, _ = self.process.communicate("", timeout=60)
            found = json.loads(output)
            self.result = LoadResult(
                [(at, body) for at, body in found["done"]],
                [(at, error, reused) for at, error, reused in found["failed"]],
            )
        return self.result

    def __enter__(self) -> HttpLoad:
        return self

    def __exit__(self, *_: object) -> None:
        if self.result is None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
