"""nftables: check and load rulesets with the real `nft`."""

from __future__ import annotations

from astara.linux.run import run


def check(text: str, netns: str) -> None:
    """Raise CommandError if `nft -c` refuses the ruleset (nothing changes)."""
    run(["nft", "-c", "-f", "-"], netns=netns, input_text=text)


def load(text: str, netns: str) -> None:
    """Apply the ruleset in one transaction: all of it or none of it."""
    run(["nft", "-f", "-"], netns=netns, input_text=text)


def list_table(family: str, table: str, netns: str) -> str:
    result = run(["nft", "list", "table", family, table], netns=netns, check=False)
    return result.stdout if result.returncode == 0 else ""
