"""The operator CLI, run as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from astara.appliance.schema import ApplianceConfig

ROOT = Path(__file__).resolve().parents[2]


def astara(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from astara.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_published_json_schema_matches_the_model() -> None:
    result = astara("appliance-schema")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed == ApplianceConfig.model_json_schema()
    published = json.loads((ROOT / "docs" / "appliance-config.schema.json").read_text())
    assert published == printed, (
        "regenerate: astara appliance-schema > docs/appliance-config.schema.json"
    )


def test_unreachable_agent_is_one_clear_line(tmp_path: Path) -> None:
    result = astara("agent", "health", "--agent", f"unix:{tmp_path}/nothing.sock")
    assert result.returncode == 1
    assert "cannot reach the agent" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
