"""Why a reconcile step failed, as a value (pure: no I/O).

The reconciler turns what went wrong (the agent did not answer, answered
with an error, the config could not be made) into a `Failure`; the lifecycle
decides on its `kind`, never on its text. `str(failure)` is the readable
line operators see as a router's `last_error`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError


class FailureKind(StrEnum):
    UNREACHABLE = "agent_unreachable"  # no answer: nothing is known about the host
    REFUSED = "agent_refused"  # the agent answered with an error
    INVALID = "config_invalid"  # no valid appliance config (ours, or the agent's 422)
    MISSING_TOOL = "missing_tool"  # the host lacks a tool the appliance needs
    NO_CONFIG = "no_config"  # a push was asked for with nothing to push
    NO_HOST = "no_host"  # no live, undrained host can take the appliance


@dataclass(frozen=True)
class Failure:
    """One failure: its kind, what the other side said, the agent's HTTP
    status when it answered, and the tool it lacks (`MISSING_TOOL`)."""

    kind: FailureKind
    detail: str = ""
    status_code: int | None = None
    tool: str | None = None

    def __str__(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        match self.kind:
            case FailureKind.UNREACHABLE:
                return f"agent unreachable{detail}"
            case FailureKind.REFUSED:
                return f"agent refused ({self.status_code}){detail}"
            case FailureKind.INVALID:
                return f"invalid appliance config{detail}"
            case FailureKind.MISSING_TOOL:
                return f"missing tool on the agent's host: {self.tool}{detail}"
            case FailureKind.NO_CONFIG:
                return f"no config to push{detail}"
            case FailureKind.NO_HOST:
                return f"no host can take it (none is up and undrained){detail}"

    @property
    def agent_down(self) -> bool:
        """The agent did not answer, or there is none: not the appliance's fault."""
        return self.kind in (FailureKind.UNREACHABLE, FailureKind.NO_HOST)


def unreachable(detail: str) -> Failure:
    return Failure(FailureKind.UNREACHABLE, detail)


def no_host() -> Failure:
    return Failure(FailureKind.NO_HOST)


def config_invalid(error: ValidationError) -> Failure:
    """No valid config can be made (too many interfaces, say): each field's reason."""
    reasons = (f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
    return Failure(FailureKind.INVALID, "; ".join(reasons))


def from_agent(status_code: int | None, body: object) -> Failure:
    """The failure an agent's error answer means: a typed missing tool
    (`{"detail": {"kind": "missing_tool", "tool": …}}`), a rejected config
    (422), or any other refusal."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, dict) and detail.get("kind") == "missing_tool":
        tool = detail.get("tool")
        message = detail.get("message")
        return Failure(
            FailureKind.MISSING_TOOL,
            message if isinstance(message, str) else "",
            status_code,
            tool if isinstance(tool, str) else "?",
        )
    if status_code == 422:
        return Failure(FailureKind.INVALID, f"the agent rejected it: {detail}", status_code)
    if isinstance(detail, dict) and isinstance(detail.get("message"), str):
        # The agent's typed errors ({"kind", "message"}): the sentence, not the dict.
        return Failure(
            FailureKind.REFUSED, f"{detail.get('kind')}: {detail['message']}", status_code
        )
    return Failure(FailureKind.REFUSED, str(detail), status_code)
