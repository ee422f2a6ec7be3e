"""The real tools' own checks of rendered texts, before anything changes.

Schema and semantics catch bad configs first; these are the last line: if
`nft -c`, `dnsmasq --test` or `radvd --configtest` refuses a text, the apply
is refused with a field error under `rendered`, and nothing changes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from astara.appliance.render import Rendered
from astara.appliance.schema import FieldError
from astara.linux import nft
from astara.linux.run import CommandError, run


def _refused(name: str, tool: str, message: str) -> FieldError:
    return FieldError(("rendered", name), f"{tool}: {message.strip()}", "tool_check")


def tool_checks(rendered: Rendered, netns: str) -> list[FieldError]:
    """Every refusal of every tool; `netns` is where `nft -c` talks to the kernel."""
    errors: list[FieldError] = []
    try:
        nft.check(rendered.nftables.text(), netns)
    except CommandError as error:
        errors.append(_refused("nftables", "nft -c", error.stderr))
    with tempfile.TemporaryDirectory(prefix="astara-check-") as scratch:
        checks = [
            ("dnsmasq.conf", rendered.dnsmasq.conf, ["dnsmasq", "--test", "--conf-file={}"]),
            ("radvd.conf", rendered.radvd, ["radvd", "--configtest", "-C", "{}"]),
        ]
        for name, text, argv in checks:
            if not text:
                continue
            path = Path(scratch) / name
            path.write_text(text)
            result = run([arg.format(path) for arg in argv], check=False)
            if result.returncode != 0:
                errors.append(_refused(name, " ".join(argv[:2]), result.stderr))
    return errors
