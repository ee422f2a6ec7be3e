"""Which astara agents run on this host, and on what: read from /proc, so
that an offline cleanup refuses to pull objects from under a live agent."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunningAgent:
    pid: int
    prefix: str
    state_dir: Path  # the agent's own (for `astara serve`: STATE_DIR/agent)
    kind: str  # "astara-agent" or "astara serve"


def _option(argv: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` (the last one wins, as in typer)."""
    value = None
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(name + "="):
            value = arg[len(name) + 1 :]
    return value


def identify(argv: list[str], cwd: Path, environ: dict[str, str]) -> tuple[str, str, Path] | None:
    """(kind, prefix, agent state dir) if `argv` is an astara-agent or an
    `astara serve` (which runs one), with the options' environment fallbacks
    and defaults as those commands apply them; else None."""
    names = [os.path.basename(arg) for arg in argv]
    # The CLI's program: its console script, or `python -c "...astara.cli.main..."`.
    cli = next(
        (i for i, a in enumerate(argv) if names[i] == "astara" or "astara.cli.main" in a), None
    )
    if "astara.agent" in argv or "astara-agent" in names:
        kind = "astara-agent"
        state = _option(argv, "--state-dir") or environ.get("ASTARA_AGENT_STATE_DIR", "var/agent")
        state_dir = cwd / state
    elif cli is not None and argv[cli + 1 : cli + 2] == ["serve"]:
        kind = "astara serve"
        state = _option(argv, "--state-dir") or environ.get("ASTARA_STATE_DIR", "var")
        state_dir = cwd / state / "agent"
    else:
        return None
    prefix = _option(argv, "--prefix") or environ.get("ASTARA_PREFIX", "ast")
    return kind, prefix, Path(os.path.normpath(state_dir))


def running_agents() -> list[RunningAgent]:
    """Every live astara-agent and `astara serve` on this host (zombies aside)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = [a.decode() for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state in ("Z", "X") or not any("astara" in a for a in argv):
                continue
            cwd = Path(os.readlink(entry / "cwd"))
            environ = {}
            for pair in (entry / "environ").read_bytes().split(b"\0"):
                key, _, value = pair.decode(errors="replace").partition("=")
                environ[key] = value
        except (OSError, IndexError, UnicodeDecodeError):
            continue
        identity = identify(argv, cwd, environ)
        if identity is not None:
            kind, prefix, state_dir = identity
            found.append(RunningAgent(int(entry.name), prefix, state_dir, kind))
    return found
