"""Cheap truth about an appliance's ruleset: the namespace's nft genid.

Every nftables commit in a namespace moves its generation id, whoever
commits. The agent remembers the genid read just before it listed the table
it had loaded (or verified); while the namespace's genid has not moved, the
table is still exactly that listing, so it need not be listed again. Once it
moved (a hand edit, another table, the agent's own next load), the table is
listed and compared in full, and the genid remembered again if it matched.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from astara.appliance.actions import RULESET_GENID, RULESET_LISTING, RULESET_LOADED
from astara.appliance.render.nftables import TABLE_FAMILY, TABLE_NAME
from astara.linux import nft
from astara.linux.files import write_atomic

Genid = tuple[int, int]  # (namespace cookie, nftables generation)


def read_genid(namespace: str) -> Genid | None:
    """The namespace's genid now; None if the kernel would not say (then
    everything is listed, as before genids)."""
    try:
        return nft.genid(namespace)
    except OSError:
        return None


def remembered_genid(run_directory: Path) -> Genid | None:
    try:
        cookie, generation = (run_directory / RULESET_GENID).read_text().split()
        return int(cookie), int(generation)
    except (OSError, ValueError):
        return None


def remember_genid(run_directory: Path, genid: Genid | None) -> None:
    """Remember `genid` as the one the saved listing is true for (None: forget)."""
    path = run_directory / RULESET_GENID
    if genid is None:
        path.unlink(missing_ok=True)
    else:
        write_atomic(path, f"{genid[0]} {genid[1]}\n")


def next_genid(genid: Genid) -> Genid:
    """The genid one commit after `genid`: the kernel adds one per
    committed transaction (skipping 0 when it wraps); one refused changes
    nothing."""
    generation = (genid[1] + 1) & 0xFFFFFFFF
    return genid[0], generation or 1


# What the saved listing becomes once elements were committed after it: no
# listing of nft's starts so, so it never equals a live one again, and the
# table is vouched for by its genid alone until the next full listing.
STALE_LISTING = "# element deltas were committed after this listing: vouched for by the genid\n"


def remember_own_commit(run_directory: Path, before: Genid, after: Genid | None) -> bool:
    """After the agent committed one transaction over the table it had left
    (genid `before`): remember `after` if it is the very next genid, so only
    that commit happened in between, and mark the saved listing stale. Else
    someone else committed too: forget the genid, so the next observation
    lists the table and finds it differs (a full apply repairs it). True if
    the genid was remembered."""
    path = run_directory / RULESET_LISTING
    if _read(path) != STALE_LISTING:
        _write_fast(path, STALE_LISTING)
    ours = after is not None and after == next_genid(before)
    if ours:
        assert after is not None
        # Without fsync: lost in a crash, the old genid no longer matches
        # the namespace's, and the next observation lists the table.
        _write_fast(run_directory / RULESET_GENID, f"{after[0]} {after[1]}\n")
    else:
        remember_genid(run_directory, None)
    return ours


def _write_fast(path: Path, text: str) -> None:
    """Overwritten in place, without fsync: after a crash the text may be
    lost or torn, which makes the next apply compare in full and replace
    the table. Its readers hold the appliance's lock, as its writer does,
    so none sees it half written. Not renamed over, nor truncated to
    nothing first: on ext4 either starts writing the file back at once
    (auto_da_alloc), about 1 ms each and up to 10 on a busy disk."""
    data = text.encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.pwrite(descriptor, data, 0)
        os.ftruncate(descriptor, len(data))
    finally:
        os.close(descriptor)


def save_ruleset_text(run_directory: Path, text: str) -> None:
    """What stands for the ruleset in force (`RULESET_LOADED`), after a
    commit of elements; without fsync (see `_write_fast`)."""
    _write_fast(run_directory / RULESET_LOADED, text)


def observe_table(namespace: str, run_directory: Path) -> tuple[str, str | None]:
    """(live, saved): the table as the kernel holds it ("" if missing) and
    the listing saved after the agent's last load. Listed only if the
    namespace's genid moved since it was remembered; a full listing equal
    to the saved one remembers the genid read before it."""
    saved = _read(run_directory / RULESET_LISTING)
    now = read_genid(namespace)
    if saved is not None and now is not None and now == remembered_genid(run_directory):
        return saved, saved
    live = nft.list_table(TABLE_FAMILY, TABLE_NAME, namespace)
    if saved is not None and live == saved and now is not None:
        remember_genid(run_directory, now)
    return live, saved


def _read(path: Path) -> str | None:
    with contextlib.suppress(FileNotFoundError):
        return path.read_text()
    return None
