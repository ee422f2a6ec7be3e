"""An appliance's record (`appliance.record`): floating IP deltas go to a
journal of one line each, and reading the record back gives the config and
status of the last delta written, never a line that does not follow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from astara.appliance import record
from astara.appliance.floating import Change, Known, plan_change, read_body
from astara.appliance.record import ApplianceStatus
from astara.appliance.schema import ApplianceConfig, config_hash
from astara.linux.files import write_atomic
from tests.unit.configs import NETWORK_MTUS, representative


def document(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    config = representative()
    config["floating_ips"] = [{"floating_ip": f, "fixed_ip": x} for f, x in pairs]
    return config


PAIRS = [(f"203.0.113.{10 + n}", f"10.0.1.{5 + n}") for n in range(6)]


def change_of(known: Known, pairs: list[tuple[str, str]]) -> Change:
    body = read_body(json.dumps(document(pairs)).encode())
    assert body is not None
    change = plan_change(known, body, known_networks=set(NETWORK_MTUS), network_mtus=NETWORK_MTUS)
    assert change is not None
    return change


def start(directory: Path) -> tuple[Known, ApplianceStatus]:
    config = ApplianceConfig.model_validate(document(PAIRS))
    digest = config_hash(config)
    status = ApplianceStatus(digest, 1, 1.0)
    record.write_whole(directory, status, config.model_dump_json())
    return Known.of(config, digest), status


def delta(
    directory: Path, known: Known, status: ApplianceStatus, pairs: list[tuple[str, str]]
) -> tuple[Known, ApplianceStatus, bool]:
    change = change_of(known, pairs)
    after = ApplianceStatus(change.digest, status.generation + 1, status.applied_at)
    appended = record.append(directory, status, after, change.splice)
    return known.with_change(change), after, appended


def test_deltas_read_back_as_the_configs_they_made(tmp_path: Path) -> None:
    known, status = start(tmp_path)
    before = (tmp_path / record.CONFIG).read_bytes()
    steps = [
        [*PAIRS, ("203.0.113.99", "10.0.2.9")],  # added at the end
        [("203.0.113.98", "10.0.2.8"), *PAIRS, ("203.0.113.99", "10.0.2.9")],  # at the start
        PAIRS[:2] + PAIRS[3:] + [("203.0.113.99", "10.0.2.9")],  # removed in the middle
        [*PAIRS[:2], (PAIRS[3][0], "10.0.2.33"), *PAIRS[4:]],  # moved, and one removed
        [],  # every one removed
    ]
    for pairs in steps:
        known, status, appended = delta(tmp_path, known, status, pairs)
        assert appended
        config = record.read_config(tmp_path)
        assert config == ApplianceConfig.model_validate(document(pairs))
        assert config is not None and config_hash(config) == status.config_hash
        assert record.read_status(tmp_path) == status
    # Only the journal was written.
    assert (tmp_path / record.CONFIG).read_bytes() == before
    assert (tmp_path / record.JOURNAL).read_bytes().count(b"\n") == len(steps)


def test_a_full_journal_is_refused(tmp_path: Path) -> None:
    known, status = start(tmp_path)
    for n in range(record.JOURNAL_LINES):
        pairs = [*PAIRS, (f"203.0.113.{100 + n}", f"10.0.2.{100 + n}")]
        known, status, appended = delta(tmp_path, known, status, pairs)
        assert appended
    change = change_of(known, PAIRS)
    after = ApplianceStatus(change.digest, status.generation + 1, 2.0)
    assert not record.append(tmp_path, status, after, change.splice)
    # The caller then writes the record whole: the journal is gone.
    record.write_whole(tmp_path, after, json.dumps(document(PAIRS)))
    assert not (tmp_path / record.JOURNAL).exists()
    assert record.read_status(tmp_path) == after
    assert record.read_config(tmp_path) == ApplianceConfig.model_validate(document(PAIRS))


def test_a_torn_line_is_no_line(tmp_path: Path) -> None:
    known, status = start(tmp_path)
    first = [*PAIRS, ("203.0.113.99", "10.0.2.9")]
    known, status, _ = delta(tmp_path, known, status, first)
    journal = tmp_path / record.JOURNAL
    whole = journal.read_bytes()
    # A crash in the middle of the next line's write.
    second = change_of(known, PAIRS)
    after = ApplianceStatus(second.digest, status.generation + 1, 2.0)
    assert record.append(tmp_path, status, after, second.splice)
    journal.write_bytes(journal.read_bytes()[: len(whole) + 20])
    assert record.read_status(tmp_path) == status
    assert record.read_config(tmp_path) == ApplianceConfig.model_validate(document(first))
    # Nothing is appended after a torn line (it would swallow the next one).
    assert not record.append(tmp_path, status, after, second.splice)


def test_a_journal_left_by_a_cut_short_compaction_follows_nothing(tmp_path: Path) -> None:
    known, status = start(tmp_path)
    added = [*PAIRS, ("203.0.113.99", "10.0.2.9")]
    known, status, _ = delta(tmp_path, known, status, added)
    stale = (tmp_path / record.JOURNAL).read_bytes()
    # A full apply back to the first config (generation 3) wrote the files,
    # then crashed before removing the journal.
    config = ApplianceConfig.model_validate(document(PAIRS))
    whole = ApplianceStatus(config_hash(config), status.generation + 1, 3.0)
    record.write_whole(tmp_path, whole, config.model_dump_json())
    (tmp_path / record.JOURNAL).write_bytes(stale)
    assert record.read_status(tmp_path) == whole
    assert record.read_config(tmp_path) == config
    # The next delta replaces the stale journal, and is read back.
    known, status, appended = delta(tmp_path, Known.of(config, whole.config_hash), whole, added)
    assert appended
    assert record.read_status(tmp_path) == status
    assert record.read_config(tmp_path) == ApplianceConfig.model_validate(document(added))


def test_a_journal_indexes_only_the_config_it_was_written_against(tmp_path: Path) -> None:
    """A compaction writes config.json (the deltas folded in), then
    status.json: a crash between the two leaves the old status and a journal
    that still follows it. Its splices index the old list, not the new one:
    applied to it they would add an entry twice. The journal then follows
    nothing; the status is the one status.json has (the orchestrator sees
    a config hash that is not the one it pushed, and pushes again)."""
    known, status = start(tmp_path)
    base = status
    added = [*PAIRS, ("203.0.113.99", "10.0.2.9")]
    known, status, _ = delta(tmp_path, known, status, added)
    folded = ApplianceConfig.model_validate(document(added))
    assert record.read_config(tmp_path) == folded
    # The compaction's first write, then the crash.
    write_atomic(tmp_path / record.CONFIG, folded.model_dump_json())
    assert record.read_config(tmp_path) == folded  # not the new entry twice
    assert record.read_status(tmp_path) == base
