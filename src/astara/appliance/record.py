"""An appliance's record on disk: the config in force and its status, with a
journal of floating IP deltas between whole writes (the edge: files).

A full apply writes `config.json` and `status.json` whole, durably (write,
fsync, rename). A floating IP delta changes one entry of a config that may
hold 10,000 (600 KB): rewriting both files with fsync costs about 10 ms
each here, against about 1 ms to append one line to `journal.jsonl` and
flush it (fdatasync). So a delta appends a line: which window of the
floating IPs it replaced by which entries, and the status after it. Every
`JOURNAL_LINES` lines, the record is written whole again (compacted) and
the journal removed.

Each line names the record it follows (the generation and config hash
before it); reading applies lines only as long as each follows the record
so far. A journal left by a compaction that crashed before removing it
follows nothing (its first line names an older record), and a line torn
by a crash is no line (it has no newline): neither is applied. Each line
also names the `config.json` (inode, time, size) whose list its splice
indexes: one written whole since (a crash between `config.json` and
`status.json`) makes the journal follow nothing. A delta is
answered only after its line is on disk, so after a crash the agent comes
back with the last config it acknowledged.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astara.appliance.schema import ApplianceConfig, FloatingIp, FloatingPair
from astara.linux.files import write_atomic

log = logging.getLogger(__name__)

CONFIG = "config.json"
STATUS = "status.json"
JOURNAL = "journal.jsonl"
# Lines in the journal before the record is written whole again: the
# whole write costs about 20 ms at 10,000 floating IPs, once per this many
# deltas; reading the journal back costs a parse of each line.
JOURNAL_LINES = 64


@dataclass
class ApplianceStatus:
    config_hash: str | None = None
    generation: int = 0
    applied_at: float | None = None
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "config_hash": self.config_hash,
            "generation": self.generation,
            "applied_at": self.applied_at,
            "last_error": self.last_error,
        }


@dataclass(frozen=True)
class Splice:
    """A delta's change of the floating IPs: entries [start, end) replaced
    by `window`, in order."""

    start: int
    end: int
    window: tuple[FloatingPair, ...]


@dataclass(frozen=True)
class _Line:
    base: tuple[int, str | None]  # (generation, config hash) it follows
    config: tuple[int, int, int]  # the identity of the config.json its splice indexes
    status: ApplianceStatus
    splice: Splice


def read_status(directory: Path) -> ApplianceStatus:
    """The status: `status.json`'s, then each journal line's in turn."""
    status = _base_status(directory)
    lines, _ = _journal(directory, status)
    return lines[-1].status if lines else status


def read_config(directory: Path) -> ApplianceConfig | None:
    """The config in force: `config.json`'s, with the journal's splices."""
    try:
        text = (directory / CONFIG).read_text()
    except FileNotFoundError:
        return None
    config = ApplianceConfig.model_validate_json(text)
    lines, _ = _journal(directory, _base_status(directory))
    if not lines:
        return config
    entries = list(config.floating_ips)
    for line in lines:
        splice = line.splice
        window = [
            FloatingIp.model_validate({"floating_ip": f, "fixed_ip": x}) for f, x in splice.window
        ]
        entries[splice.start : splice.end] = window
    return config.model_copy(update={"floating_ips": entries})


Version = tuple[tuple[int, int, int], tuple[int, int, int], int]


def version(directory: Path) -> Version | None:
    """What changes whenever the record does (each file's inode, time and
    size; the journal's length), or None if there is no config."""
    try:
        config = _identity(directory / CONFIG)
    except FileNotFoundError:
        return None
    try:
        status = _identity(directory / STATUS)
    except FileNotFoundError:
        status = (0, 0, 0)
    try:
        journal = os.stat(directory / JOURNAL).st_size
    except FileNotFoundError:
        journal = -1
    return config, status, journal


def _identity(path: Path) -> tuple[int, int, int]:
    found = os.stat(path)
    return found.st_ino, found.st_mtime_ns, found.st_size


def write_whole(directory: Path, status: ApplianceStatus, config_text: str | None) -> None:
    """The record written whole (`config_text`: the config's new text, or
    None if only the status changed) and the journal removed, in an order
    that leaves a record after a crash at any point: a journal that
    outlives the files follows no record any more."""
    if config_text is not None:
        write_atomic(directory / CONFIG, config_text)
    write_atomic(directory / STATUS, json.dumps(status.as_dict()))
    (directory / JOURNAL).unlink(missing_ok=True)


def append(
    directory: Path, before: ApplianceStatus, after: ApplianceStatus, splice: Splice
) -> bool:
    """One delta's line, on disk when this returns (fdatasync; the
    directory too when the journal is new). False, and nothing written,
    if the journal is full (`JOURNAL_LINES`) or does not end at `before`:
    the caller writes the record whole."""
    base = _base_status(directory)
    lines, whole = _journal(directory, base)
    last = lines[-1].status if lines else base
    if (last.generation, last.config_hash) != (before.generation, before.config_hash):
        return False
    if len(lines) >= JOURNAL_LINES or (lines and not whole):
        return False  # full, or a torn line would swallow the next one
    path = directory / JOURNAL
    if not lines:
        path.unlink(missing_ok=True)  # left by a compaction cut short: follows nothing
    line = {
        "base": [before.generation, before.config_hash],
        "config": list(_identity(directory / CONFIG)),
        "status": after.as_dict(),
        "start": splice.start,
        "end": splice.end,
        "window": [list(pair) for pair in splice.window],
    }
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(descriptor, json.dumps(line, separators=(",", ":")).encode() + b"\n")
        os.fdatasync(descriptor)
    finally:
        os.close(descriptor)
    if not lines:
        _sync_directory(directory)  # the journal's name, made now
    return True


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _base_status(directory: Path) -> ApplianceStatus:
    try:
        return ApplianceStatus(**json.loads((directory / STATUS).read_text()))
    except FileNotFoundError:
        return ApplianceStatus()


def _journal(directory: Path, status: ApplianceStatus) -> tuple[list[_Line], bool]:
    """The journal's lines that follow `status` one after the other, and
    whether they are the whole journal (nothing after them: no line torn,
    none left over)."""
    try:
        data = (directory / JOURNAL).read_bytes()
    except FileNotFoundError:
        return [], True
    lines: list[_Line] = []
    at = (status.generation, status.config_hash)
    try:
        config = _identity(directory / CONFIG)
    except FileNotFoundError:
        return [], not data
    raws = data.split(b"\n")
    for raw in raws[:-1]:  # what follows the last newline is torn
        try:
            line = _parse(raw)
        except (ValueError, TypeError, KeyError):
            log.warning("%s: a journal line that cannot be read ends it", directory)
            break
        if line.base != at or line.config != config:
            # (A config.json written whole after the line, and a crash
            # before status.json followed: its splices index another list.)
            if lines:
                log.warning("%s: a journal line that does not follow ends it", directory)
            break
        lines.append(line)
        at = (line.status.generation, line.status.config_hash)
    return lines, len(lines) == len(raws) - 1 and not raws[-1]


def _parse(raw: bytes) -> _Line:
    document = json.loads(raw)
    generation, config_hash = document["base"]
    inode, mtime, size = document["config"]
    window = tuple((str(f), str(x)) for f, x in document["window"])
    return _Line(
        (int(generation), config_hash),
        (int(inode), int(mtime), int(size)),
        ApplianceStatus(**document["status"]),
        Splice(int(document["start"]), int(document["end"]), window),
    )
