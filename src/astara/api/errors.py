"""Neutron's error bodies: `{"NeutronError": {"type", "message", "detail"}}`."""

from __future__ import annotations

from typing import Any


class NeutronError(Exception):
    def __init__(self, status: int, kind: str, message: str, detail: str = "") -> None:
        self.status = status
        self.kind = kind
        self.message = message
        self.detail = detail
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        return {"NeutronError": {"type": self.kind, "message": self.message, "detail": self.detail}}


def not_found(kind: str, message: str) -> NeutronError:
    return NeutronError(404, kind, message)
