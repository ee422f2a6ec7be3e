"""Netlink handles for one operation: opened on first use, one per namespace,
closed together at its end.

An apply first reads a namespace, then changes it, possibly after creating it:
both steps share the handles, so each namespace's is opened once (opening one
costs milliseconds, reusing it nothing), and never before the namespace exists.
"""

from __future__ import annotations

from contextlib import ExitStack
from types import TracebackType
from typing import Any

from astara.linux import netlink


class NetlinkHandles:
    def __init__(self) -> None:
        self._stack = ExitStack()
        self._open: dict[str, Any] = {}

    def __call__(self, netns: str) -> Any:
        """The handle in `netns` (which must exist)."""
        handle = self._open.get(netns)
        if handle is None:
            handle = self._stack.enter_context(netlink.netns(netns))
            self._open[netns] = handle
        return handle

    def __enter__(self) -> NetlinkHandles:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._open.clear()
        self._stack.close()
