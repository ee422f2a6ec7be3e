"""Several API worker processes on one listening socket: `astara serve
--role api --workers N`.

One process serves the API on one core: its requests' Python (routing,
Neutron's checks, the ORM) is the bound, not the database. `--workers N`
runs N processes that accept on the same socket (bound once, by the first
process, and inherited): the kernel hands each connection to one of them.
Each worker has its own engine and connection pool on the same database;
every request is still one transaction, and what a write means for the
orchestrators reaches them through the outbox table, which they read
whichever process wrote it (`--role api` has no orchestrator to poke).

A worker is `python -m astara.api.workers --fd FD ...`, started by the first
process and ended with it (the kernel's parent-death signal).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from astara.api.settings import ApiSettings, parse_vni_range

PR_SET_PDEATHSIG = 1
DB_URL_ENV = "ASTARA_DB_URL"  # the URL may hold a password: not on the command line


def serve(app: Any, log_level: str, sock: socket.socket | None = None, **where: Any) -> None:
    """Serve the tenant API: on `sock`, or where `where` says (host, port),
    on uvloop's event loop rather than asyncio's (its loop and transports
    are C), HTTP parsed by httptools with a bound on a request's head
    (`astara.api.http.protocol`). (The agent keeps asyncio and its own h11
    protocols: it checks each TLS peer in them.)"""
    import uvicorn

    from astara.api.http.protocol import BoundedHead

    config = uvicorn.Config(app, log_level=log_level, http=BoundedHead, loop="uvloop", **where)
    server = uvicorn.Server(config)
    with _signals_stop(server):
        server.run(sockets=[sock] if sock is not None else None)


@contextlib.contextmanager
def _signals_stop(server: Any) -> Iterator[None]:
    """SIGINT and SIGTERM end the server gracefully, and then return here:
    the caller still stops what it started (orchestrator, coordination, the
    local agent) and exits 0. uvicorn handles both while it serves, then
    restores the handlers it found and raises the signal again "for the
    expected behaviour": with Python's own handlers that is a
    KeyboardInterrupt (exit 130) or, for SIGTERM, death before any cleanup.
    The handlers it finds are these, which only ask the server to stop: at
    once if the signal comes before it serves, and nothing more after.
    (Only the main thread may set handlers; a server elsewhere is left be.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():  # a second Ctrl-C now interrupts the cleanup
            signal.signal(sig, handler)


def listening_socket(host: str, port: int) -> socket.socket:
    """The API's socket, bound and listening, to share with the workers."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def start(
    sock: socket.socket,
    count: int,
    db_url: str,
    settings: ApiSettings,
    ca_hash: str | None,
    log_level: str,
) -> list[subprocess.Popen[bytes]]:
    """`count` worker processes serving on `sock`."""
    argv = [
        sys.executable,
        "-m",
        "astara.api.workers",
        "--fd",
        str(sock.fileno()),
        *settings_arguments(settings),
        "--log-level",
        log_level,
        "--parent",
        str(os.getpid()),
        *(["--ca-hash", ca_hash] if ca_hash else []),
    ]
    environment = {**os.environ, DB_URL_ENV: db_url}
    return [subprocess.Popen(argv, pass_fds=[sock.fileno()], env=environment) for _ in range(count)]


def settings_arguments(settings: ApiSettings) -> list[str]:
    """A worker's command-line arguments for `settings` (`settings_of` reads them)."""
    return [
        "--vni-range",
        f"{settings.vni_min}:{settings.vni_max}",
        "--path-mtu",
        str(settings.path_mtu),
        "--ha-default" if settings.ha_default else "--no-ha-default",
        "--ha-network-cidr",
        settings.ha_network_cidr,
    ]


def parser() -> argparse.ArgumentParser:
    parsing = argparse.ArgumentParser(prog="astara.api.workers")
    parsing.add_argument("--fd", type=int, required=True)
    parsing.add_argument("--vni-range", required=True)
    parsing.add_argument("--path-mtu", type=int, required=True)
    parsing.add_argument("--ha-default", action=argparse.BooleanOptionalAction, default=False)
    parsing.add_argument("--ha-network-cidr", required=True)
    parsing.add_argument("--ca-hash")
    parsing.add_argument("--log-level", default="info")
    parsing.add_argument("--parent", type=int, required=True)
    return parsing


def settings_of(args: argparse.Namespace) -> ApiSettings:
    """The settings a worker's arguments carry (`settings_arguments`)."""
    return ApiSettings(
        *parse_vni_range(args.vni_range),
        path_mtu=args.path_mtu,
        ha_default=args.ha_default,
        ha_network_cidr=args.ha_network_cidr,
    )


def stop(workers: Sequence[subprocess.Popen[bytes]], timeout_s: float = 10.0) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout_s)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _die_with(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the signal was asked for
        sys.exit(0)


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    _die_with(args.parent)

    import logging

    from astara.api.app import create_app
    from astara.db.engine import make_engine

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    settings = settings_of(args)
    app = create_app(make_engine(os.environ[DB_URL_ENV]), settings=settings, ca_hash=args.ca_hash)
    serve(app, args.log_level, socket.socket(fileno=args.fd))


if __name__ == "__main__":
    main()
