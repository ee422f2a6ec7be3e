"""`astara.api.http.protocol.BoundedHead`, read by read: the real parser
(httptools) and uvicorn's protocol, fed exactly the reads each case needs
through a transport that keeps what is written."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from astara.api.http.protocol import BoundedHead


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        pass


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, answers 200 with how long it was."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Connection:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        config = uvicorn.Config(_app, http=BoundedHead, log_level="warning", lifespan="off")
        config.load()
        self.loop = loop
        self.transport = _Transport()
        self.protocol = BoundedHead(
            config=config, server_state=ServerState(), app_state={}, _loop=loop
        )
        self.protocol.connection_made(self.transport)

    def read(self, *pieces: bytes) -> bytes:
        """Each piece one read; what the server wrote meanwhile."""
        start = len(self.transport.written)
        for piece in pieces:
            if self.transport.closed:
                break
            self.protocol.data_received(piece)
            for _ in range(5):  # let the application answer
                self.loop.run_until_complete(asyncio.sleep(0))
        return self.transport.written[start:]


@pytest.fixture
def connection() -> Iterator[_Connection]:
    loop = asyncio.new_event_loop()
    made = _Connection(loop)
    try:
        yield made
    finally:
        made.protocol.connection_lost(None)
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


def _head(size: int, method: bytes = b"GET", extra: bytes = b"") -> bytes:
    """A request head of `size` bytes."""
    start = method + b" / HTTP/1.1\r\nhost: a\r\n" + extra + b"x-pad: "
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


def test_an_endless_head_is_refused_once_past_the_limit(connection: _Connection) -> None:
    answer = connection.read(b"GET / HTTP/1.1\r\nx-endless: ", *[b"a" * 1024] * 15)
    assert answer == b"" and not connection.transport.closed  # 15 KiB: still waiting
    answer = connection.read(b"a" * 1024, b"a" * 1024)
    assert answer.startswith(b"HTTP/1.1 431 ") and connection.transport.closed


def test_heads_under_the_limit_on_one_connection_each_start_the_count_afresh(
    connection: _Connection,
) -> None:
    """Three heads of 12 KiB, each in two reads: 36 KiB in all, none refused."""
    for _ in range(3):
        head = _head(12 * 1024)
        answer = connection.read(head[:8000], head[8000:])
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
    assert not connection.transport.closed


def test_a_body_is_progress_however_long(connection: _Connection) -> None:
    body = b"b" * (64 * 1024)
    head = b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: %d\r\n\r\n" % len(body)
    pieces = [body[n : n + 1024] for n in range(0, len(body), 1024)]
    answer = connection.read(head, *pieces)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"65536")


def test_endless_trailers_are_refused(connection: _Connection) -> None:
    """A chunked body's trailer section is a head of its own to the parser."""
    head = b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
    answer = connection.read(head, b"5\r\nhello\r\n0\r\nx-trailer: ", *[b"t" * 1024] * 20)
    assert b"HTTP/1.1 431 " in answer and connection.transport.closed


def test_the_head_after_a_body_in_the_same_read_is_bounded_too(connection: _Connection) -> None:
    """A read that ends one request and starts the next one's head is not
    counted; the next reads of that head are."""
    body = b"b" * 100
    first = b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\n" + body
    answer = connection.read(first + b"GET / HTTP/1.1\r\nx-endless: ", *[b"a" * 1024] * 20)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"HTTP/1.1 431 " in answer and connection.transport.closed
