"""Files Astara writes: atomically, so a crash leaves the old or the new text."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o644, durable: bool = True) -> None:
    """Write `text` to `path` through a temporary file renamed over it. The
    temporary file is created with `mode` (never wider), so a secret is never
    readable by others, not even between its creation and the rename.
    `durable`: flushed to disk before the rename (a power cut leaves the old
    or the new text); without, atomic for readers and for a crash of the
    writer only: for runtime files that describe the kernel's state, which a
    power cut takes away with them (tens of ms saved per file on a busy disk). One
    writer per path at a time (callers hold the appliance's lock, or write
    once at start): the temporary file's name is the path's own, so a crash
    leaves one stale file to replace, never a trail of them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.new")
    # Left by a writer that crashed: O_EXCL below must create a fresh inode
    # (an old one may have a wider mode or another owner).
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(descriptor, "w") as handle:
            # The umask may have narrowed `mode` at creation; set it exactly.
            os.fchmod(handle.fileno(), mode)
            handle.write(text)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


def make_readable_dir(path: Path) -> None:
    """Create `path` and its missing parents world-traversable (0755), for
    daemons that read their files after dropping privileges."""
    missing = []
    for parent in [path, *path.parents]:
        if parent.exists():
            break
        missing.append(parent)
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        os.chmod(folder, 0o755)
