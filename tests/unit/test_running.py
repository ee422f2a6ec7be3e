"""Which processes are astara agents, with what prefix and state dir: as the
agent and `astara serve` resolve their options, environment and defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from astara.agent.running import identify

CWD = Path("/srv/astara")


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (
            ["python", "-m", "astara.agent", "--state-dir", "/s/agent", "--prefix", "t1"],
            {},
            ("astara-agent", "t1", Path("/s/agent")),
        ),
        (
            ["/v/bin/python", "/v/bin/astara-agent"],
            {},
            ("astara-agent", "ast", CWD / "var/agent"),
        ),
        (
            ["/v/bin/python", "/v/bin/astara-agent", "--prefix=p2"],
            {"ASTARA_AGENT_STATE_DIR": "st"},
            ("astara-agent", "p2", CWD / "st"),
        ),
        (
            ["/v/bin/python", "/v/bin/astara", "serve", "--state-dir", "/x"],
            {"ASTARA_PREFIX": "q1"},
            ("astara serve", "q1", Path("/x/agent")),
        ),
        (
            ["python", "-c", "from astara.cli.main import main; main()", "serve"],
            {},
            ("astara serve", "ast", CWD / "var/agent"),
        ),
        # Not agents: other astara commands, even with a prefix named "serve".
        (["/v/bin/python", "/v/bin/astara", "agent", "health"], {}, None),
        (["/v/bin/python", "/v/bin/astara", "cleanup", "--prefix", "serve"], {}, None),
        (["sleep", "100"], {}, None),
    ],
)
def test_identify(
    argv: list[str], environ: dict[str, str], expected: tuple[str, str, Path] | None
) -> None:
    assert identify(argv, CWD, environ) == expected
