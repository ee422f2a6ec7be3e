"""The local agent as a supervised child: restarted when it dies, whatever
goes wrong on the way."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest

from astara.testing.agent import AgentProcess
from astara.testing.net import wait_until

pytestmark = pytest.mark.root


def test_a_failed_restart_is_tried_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An OSError while starting the agent again (EMFILE, a full disk) must not
    end the supervision: once the cause is gone, the agent runs again."""
    caplog.set_level(logging.WARNING, logger="astara.agent.child")
    child = AgentProcess(tmp_path)
    child.die_with_parent = True  # as `astara serve` runs it
    log_file = tmp_path / "agent.log"
    try:
        child.start()
        assert child.process is not None and child.client is not None
        first = child.process.pid
        child.supervise(interval_s=0.05)
        # Its log a directory: the next start fails with IsADirectoryError.
        log_file.rename(tmp_path / "agent.log.1")
        log_file.mkdir()
        os.kill(first, signal.SIGKILL)

        def attempts() -> int:
            return sum("starting it again" in r.message for r in caplog.records)

        wait_until(lambda: attempts() >= 2, 30, 0.05, "a second attempt after a failed one")
        log_file.rmdir()

        def restarted() -> bool:
            process = child.process
            return process is not None and process.pid != first and process.poll() is None

        wait_until(restarted, 30, 0.05, "the agent to be started again")
        wait_until(lambda: _healthy(child), 30, 0.05, "the restarted agent to answer")
        process = child.process
        assert process is not None and child.pid_file.read_text() == str(process.pid)
    finally:
        if log_file.is_dir():
            log_file.rmdir()
        child.remove_everything()


def _healthy(child: AgentProcess) -> bool:
    try:
        assert child.client is not None
        child.client.health()
    except Exception:
        return False
    return True
