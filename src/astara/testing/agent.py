"""Run a real `astara-agent` process for a test or benchmark, and remove
everything it made (even when the test fails)."""

from __future__ import annotations

import os
import secrets
import signal
import string
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from astara.agent.child import AgentChild
from astara.linux import cleanup


def unique_prefix(lead: str = "t") -> str:
    """A fresh 6-character prefix, so runs never collide with each other."""
    alphabet = string.ascii_lowercase + string.digits
    return lead + "".join(secrets.choice(alphabet) for _ in range(6 - len(lead)))


class AgentProcess(AgentChild):
    """`astara-agent` on a unix socket in `state_dir`, under a unique prefix."""

    def __init__(
        self,
        state_dir: Path,
        prefix: str | None = None,
        *,
        operators_group: str | None = None,
        env: dict[str, str] | None = None,
        netns: str | None = None,
        args: Sequence[str] = (),
    ) -> None:
        super().__init__(
            state_dir,
            prefix or unique_prefix(),
            operators_group=operators_group,
            env=env,
            netns=netns,
            args=args,
        )

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def remove_everything(self) -> dict[str, list[str]]:
        self.stop()
        return cleanup.remove_all(self.prefix)

    def __enter__(self) -> AgentProcess:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove_everything()
