"""Octavia's errors: a WSME fault body, `{"faultcode", "faultstring",
"debuginfo"}` (`Client` below 500, `Server` from 500), with Octavia's
exception messages (octavia/common/exceptions.py)."""

from __future__ import annotations

from typing import Any


class OctaviaError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        return {
            "faultcode": "Client" if self.status < 500 else "Server",
            "faultstring": self.message,
            "debuginfo": None,
        }


def not_found(resource: str, object_id: str) -> OctaviaError:
    """`Load Balancer <id> not found.` and the like."""
    return OctaviaError(404, f"{resource} {object_id} not found.")


def validation(detail: str) -> OctaviaError:
    return OctaviaError(400, f"Validation failure: {detail}")


def invalid_option(value: object, option: str) -> OctaviaError:
    return OctaviaError(400, f"{value} is not a valid option for {option}")


def immutable(resource: str, object_id: str) -> OctaviaError:
    """A change while the object (or its load balancer) is PENDING_*."""
    return OctaviaError(409, f"{resource} {object_id} is immutable and cannot be updated.")


def pending(state: str, load_balancer_id: str) -> OctaviaError:
    """`LBPendingStateError`: the load balancer itself changed while pending."""
    return OctaviaError(409, f"Invalid state {state} of loadbalancer resource {load_balancer_id}")


def forbidden() -> OctaviaError:
    return OctaviaError(403, "Policy does not allow this request to be performed.")


def quota(resource: str) -> OctaviaError:
    return OctaviaError(403, f"Quota has been met for resources: {resource}")
