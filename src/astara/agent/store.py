"""The agent's desired state on disk: one JSON document per object.

Writes are atomic (write, fsync, rename) so a crash leaves the old or the new
document, never half of one. The agent reloads this on start and resumes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from astara.linux.files import write_atomic

# What an agent keeps in its state dir: networks and ports (this store),
# appliances (their configs and statuses, appliance/apply.py), the highest
# epoch seen per appliance id and whether it has fenced itself (this store).
STATE_KINDS = ("networks", "ports", "appliances", "epochs", "fence")


def remove_state(state_dir: Path) -> list[str]:
    """Remove an agent's stored state from `state_dir`; what was removed."""
    removed = []
    for kind in STATE_KINDS:
        folder = state_dir / kind
        if folder.is_dir():
            shutil.rmtree(folder)
            removed.append(str(folder))
    return removed


class JsonStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, kind: str, object_id: str) -> Path:
        return self.root / kind / f"{object_id}.json"

    def get(self, kind: str, object_id: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self._path(kind, object_id).read_text())
        except FileNotFoundError:
            return None
        return data

    def put(self, kind: str, object_id: str, document: dict[str, Any]) -> None:
        write_atomic(
            self._path(kind, object_id), json.dumps(document, indent=2, sort_keys=True) + "\n"
        )

    def delete(self, kind: str, object_id: str) -> None:
        self._path(kind, object_id).unlink(missing_ok=True)

    def ids(self, kind: str) -> list[str]:
        folder = self.root / kind
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.json"))
