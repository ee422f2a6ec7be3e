"""The tenant API's HTTP/1.1: uvicorn's httptools protocol (llhttp, in C),
with a bound on a request's head.

httptools hands a header to uvicorn only once it is whole, and keeps what
it has of it meanwhile without any limit: a client could send one endless
header and the worker would hold all of it, before authentication could
refuse anything. h11, which bounds a head at 16 KiB, parses in Python: a
GET cost a third more CPU through it. So the bytes a connection sends
while a request's head is incomplete are counted, and past `HEAD_LIMIT` the
request is answered 431 and the connection closed. A read is counted
when it was all one unfinished head; one that also held the end of the
previous request is not, so the bound is `HEAD_LIMIT` plus one read of the
transport (256 KiB at most), never the endless header."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

HEAD_LIMIT = 16 * 1024  # h11's default, which uvicorn used before

_TOO_LARGE = b"Request header fields too large"


class BoundedHead(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # a connection starts with a request's head
        self._head_bytes = 0  # of the unfinished head, in the reads counted
        self._heads = 0  # heads completed on this connection

    def data_received(self, data: bytes) -> None:
        in_head, heads = self._in_head, self._heads
        super().data_received(data)
        # Counted: a read that was all one unfinished head (it began in a
        # head, no head ended in it, and it ends in one).
        if in_head and self._in_head and self._heads == heads:
            self._head_bytes += len(data)
            if self._head_bytes > HEAD_LIMIT:
                self._refuse()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._heads += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # what comes next is the next request's head

    def _refuse(self) -> None:
        self.logger.warning("A request's head passed %d bytes: refused", HEAD_LIMIT)
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[431],
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: %d\r\n" % len(_TOO_LARGE),
                    b"connection: close\r\n\r\n",
                    _TOO_LARGE,
                ]
            )
        )
        self.transport.close()
