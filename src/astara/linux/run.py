"""Running commands, optionally inside a network namespace.

The one place (with `netlink`) where Astara touches the host. Every command
runs with a timeout and its failure carries the command and its stderr.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence


class CommandError(RuntimeError):
    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"{' '.join(argv)} exited {returncode}: {stderr.strip() or stdout.strip()}"
        )


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def run(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    input_text: str | None = None,
    check: bool = True,
    timeout_s: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    full = in_netns(netns, argv)
    result = subprocess.run(
        full,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if check and result.returncode != 0:
        raise CommandError(full, result.returncode, result.stdout, result.stderr)
    return result
