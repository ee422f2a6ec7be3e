"""The tenant API's HTTP/1.1: uvicorn's httptools protocol (llhttp, in C),
with a bound on what a connection may send without the parser getting
anywhere.

httptools hands a header to uvicorn only once it is whole, and keeps what
it has of it meanwhile without any limit: a client could send one endless
header (or chunked body trailer, or chunk extension) and the worker would
hold all of it, before authentication could refuse anything. h11, which
bounds those at 16 KiB, parses in Python: a GET cost a third more CPU
through it. So a read counts as progress when the parser completes a
request's head, passes body to the application or ends a request in it;
the bytes of the reads since the last progress are counted, and past
`HEAD_LIMIT` the connection is answered 431 and closed. A read that made
progress is not counted, and may also hold the start of an unfinished
head: the bound is `HEAD_LIMIT` plus one read of the transport (256 KiB at
most), never the endless header."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

HEAD_LIMIT = 16 * 1024  # h11's default, which uvicorn used before

_TOO_LARGE = b"Request header fields too large"


class BoundedHead(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._progress = 0  # the parser's steps on this connection (see the module)
        self._stalled = 0  # bytes read since the last step

    def data_received(self, data: bytes) -> None:
        progress = self._progress
        super().data_received(data)
        if self._progress != progress:
            self._stalled = 0
            return
        self._stalled += len(data)
        if self._stalled > HEAD_LIMIT:
            self._refuse()

    def on_headers_complete(self) -> None:
        self._progress += 1
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._progress += 1
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._progress += 1
        super().on_message_complete()

    def _refuse(self) -> None:
        if self.transport.is_closing():
            return  # refused already, as malformed say
        self.logger.warning("%d bytes without a request's head ending: refused", self._stalled)
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
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
        # (An answer being written is cut: nothing may interleave with it.)
        self.transport.close()
