"""An agent's repair on its own, as the appliance's history says it."""

from __future__ import annotations

from datetime import datetime

from astara.orchestrator.reconciler import repair_event


def test_a_repair_reads_as_what_was_wrong_and_what_was_done() -> None:
    repair = {
        "outcome": "repaired",
        "problems": ["loadbalancer is not running"],
        "at": 1_796_400_000.75,
        "actions": ["loadbalancer started"],
        "error": None,
    }
    assert repair_event(repair) == (
        datetime(2026, 12, 4, 16, 0),
        "agent repaired it on its own: loadbalancer is not running: loadbalancer started",
    )


def test_a_failed_repair_says_its_error_and_a_held_one_nothing() -> None:
    failed = {"outcome": "failed", "problems": [], "at": 0, "actions": [], "error": "no room"}
    assert repair_event(failed) == (
        datetime(1970, 1, 1),
        "agent's repair failed: drift: no action (no room)",
    )
    assert repair_event({**failed, "outcome": "held"}) is None
