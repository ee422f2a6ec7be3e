"""Files are born with their final mode: a secret is never readable by
others, not even between its creation and its rename into place.

The mode a file is *created* with is seen by tracing the real `openat`
system calls of a subprocess (strace), not by looking at the final file:
a chmod just before the rename leaves the same final mode."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from astara.linux.files import write_atomic

OPENAT = re.compile(
    r'openat\(AT_FDCWD, "(?P<path>[^"]+)", (?P<flags>[A-Z_|]+)(?:, (?P<mode>0\d+))?\)'
)


def _creations(script: str, tmp_path: Path) -> dict[str, tuple[set[str], int]]:
    """Run `script` in a Python subprocess under strace (umask 022, as a
    service would have); every file it opened with O_CREAT under `tmp_path`,
    with its flags and creation mode."""
    trace = tmp_path / "strace.out"
    subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=openat",
            "-o",
            str(trace),
            sys.executable,
            "-c",
            "import os; os.umask(0o022)\n" + textwrap.dedent(script),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    created: dict[str, tuple[set[str], int]] = {}
    for line in trace.read_text().splitlines():
        match = OPENAT.search(line)
        if match is None or not match["path"].startswith(str(tmp_path)):
            continue
        flags = set(match["flags"].split("|"))
        if "O_CREAT" in flags:
            created[Path(match["path"]).name] = (flags, int(match["mode"], 8))
    return created


def test_write_atomic_creates_its_temporary_file_with_the_final_mode(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    created = _creations(
        f"""
        from pathlib import Path
        from astara.linux.files import write_atomic
        write_atomic(Path({str(target)!r}), "s3cret\\n", mode=0o600)
        """,
        tmp_path,
    )
    flags, mode = created[".secret.new"]
    assert {"O_CREAT", "O_EXCL"} <= flags
    assert mode == 0o600
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == "s3cret\n"


def test_admin_credentials_are_created_0600(tmp_path: Path) -> None:
    created = _creations(
        f"""
        from datetime import datetime, timezone
        from pathlib import Path
        from astara.api.bootstrap import ensure_admin
        from astara.db.engine import make_engine, sqlite_url
        from astara.db.migrate import upgrade
        state = Path({str(tmp_path)!r})
        engine = make_engine(sqlite_url(state))
        upgrade(engine)
        ensure_admin(engine, state, "http://127.0.0.1:9696", datetime.now(timezone.utc))
        """,
        tmp_path,
    )
    for name in ("admin-token", "clouds.yaml"):
        flags, mode = created[f".{name}.new"]
        assert {"O_CREAT", "O_EXCL"} <= flags and mode == 0o600, name
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


@pytest.mark.parametrize("umask", [0o077, 0o000])
def test_write_atomic_gives_exactly_the_mode_asked_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    previous = os.umask(umask)
    try:
        write_atomic(tmp_path / "f", "x", mode=0o644)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644


def test_write_atomic_replaces_a_stale_temporary_file(tmp_path: Path) -> None:
    stale = tmp_path / ".f.new"
    stale.write_text("left by a crash")
    stale.chmod(0o666)
    write_atomic(tmp_path / "f", "new", mode=0o600)
    assert (tmp_path / "f").read_text() == "new"
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o600
    assert not stale.exists()
