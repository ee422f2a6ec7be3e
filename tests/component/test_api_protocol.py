"""The tenant API's HTTP protocol (`astara.api.http.protocol`): httptools,
with a request's head bounded at 16 KiB however it arrives; bodies and
keep-alive are untouched."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from astara.api.app import create_app
from astara.api.http.protocol import HEAD_LIMIT, BoundedHead
from astara.db.engine import make_engine, sqlite_url
from astara.db.migrate import upgrade
from astara.testing.net import wait_until


@pytest.fixture
def api(tmp_path: Path) -> Iterator[int]:
    """The API served by uvicorn with the protocol, in a thread: its port."""
    engine = make_engine(sqlite_url(tmp_path))
    upgrade(engine)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound before the server starts: no port to race for
    config = uvicorn.Config(create_app(engine), http=BoundedHead, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        wait_until(lambda: server.started, 30, 0.02, "the API serving")
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        engine.dispose()


def _exchange(port: int, *pieces: bytes) -> bytes:
    """Send `pieces` one write each, then read until the server closes or
    stays quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        for piece in pieces:
            try:
                connection.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # refused already: what it answered is still to read
        connection.settimeout(2)
        answer = b""
        while True:
            try:
                chunk = connection.recv(65536)
            except (TimeoutError, ConnectionResetError):
                return answer
            if not chunk:
                return answer
            answer += chunk


def _request(extra_header: bytes = b"", close: bool = True) -> bytes:
    return (
        b"GET / HTTP/1.1\r\nhost: astara\r\n"
        + extra_header
        + (b"connection: close\r\n" if close else b"")
        + b"\r\n"
    )


def test_a_head_under_the_limit_is_served(api: int) -> None:
    answer = _exchange(api, _request(b"x-big: " + b"a" * (HEAD_LIMIT - 1024) + b"\r\n"))
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_a_head_past_the_limit_is_refused_431_however_it_is_cut(api: int) -> None:
    """One endless header, sent in 1 KiB writes: refused once 16 KiB have
    come without the head's end, the connection closed."""
    start = b"GET / HTTP/1.1\r\nhost: astara\r\nx-endless: "
    pieces = [start] + [b"a" * 1024] * 64
    answer = _exchange(api, *pieces)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert answer.endswith(b"Request header fields too large")


def test_bodies_and_kept_alive_requests_are_not_counted_as_heads(api: int) -> None:
    """A 64 KiB body reaches the application (refused there, unauthenticated),
    and three requests on one connection are each answered."""
    body = b"{" + b" " * (64 * 1024) + b"}"
    post = (
        b"POST /v2.0/networks HTTP/1.1\r\nhost: astara\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )
    answer = _exchange(api, post, body[:30000], body[30000:], _request())
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 200 " in answer
    header = b"x-some: " + b"a" * (HEAD_LIMIT // 2) + b"\r\n"
    answer = _exchange(api, _request(header, False), _request(header, False), _request(header))
    assert answer.count(b"HTTP/1.1 200 ") == 3
