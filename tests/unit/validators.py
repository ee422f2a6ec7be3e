"""The real tools that judge rendered configs, run from the unit tests.

`nft` talks to the kernel even with `-c`, so it runs in a scratch network
namespace that the test creates under a unique `tu` name and always deletes.
dnsmasq and radvd only parse their files and need no namespace.
"""

from __future__ import annotations

import json
import secrets
import string
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NETNS_PREFIX = "tu"
_ALPHABET = string.ascii_lowercase + string.digits
_NETNS_DIR = Path("/run/netns")


def run(argv: Sequence[str], input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), input=input_text, capture_output=True, text=True, timeout=60, check=False
    )


def run_ok(argv: Sequence[str], input_text: str | None = None) -> str:
    """Run a command; fail the test with its output unless it exits 0."""
    result = run(argv, input_text)
    assert result.returncode == 0, (
        f"{' '.join(argv)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


@contextmanager
def scratch_netns() -> Iterator[str]:
    """A fresh, empty network namespace named `tu` + 4 random characters,
    deleted when the block ends, however it ends."""
    for _ in range(20):
        name = NETNS_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(4))
        result = run(["ip", "netns", "add", name])
        if result.returncode == 0:
            break
        # Another test (or run) holds this name: draw again. Anything else is real.
        assert "File exists" in result.stderr, f"ip netns add {name}: {result.stderr.strip()}"
    else:
        raise AssertionError("no free scratch namespace name after 20 draws")
    try:
        yield name
    finally:
        run_ok(["ip", "netns", "delete", name])
        assert not (_NETNS_DIR / name).exists(), f"namespace {name} outlived its test"


def nft(netns: str, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return run(["ip", "netns", "exec", netns, "nft", *args], input_text)


def nft_ok(netns: str, *args: str, input_text: str | None = None) -> str:
    return run_ok(["ip", "netns", "exec", netns, "nft", *args], input_text)


def nft_table_json(netns: str, family: str, table: str) -> list[dict[str, Any]]:
    """`nft -j list table`, as the list of objects it holds."""
    listing = json.loads(nft_ok(netns, "-j", "list", "table", family, table))
    return [obj for obj in listing["nftables"] if "metainfo" not in obj]


def dnsmasq_test(conf: Path) -> subprocess.CompletedProcess[str]:
    return run(["dnsmasq", "--test", f"--conf-file={conf}"])


def dnsmasq_hosts_test(hosts: Path, conf: Path, scratch: Path) -> subprocess.CompletedProcess[str]:
    """dnsmasq reads its dhcp-hostsfile only when it starts serving, never
    under --test; each line has the syntax of a `dhcp-host=` option, so check
    them as options, next to the config that points at the file."""
    lines = [f"conf-file={conf}"] if conf.read_text() else ["port=0"]
    lines += [f"dhcp-host={line}" for line in hosts.read_text().splitlines()]
    wrapper = scratch / "hosts-as-options.conf"
    wrapper.write_text("\n".join(lines) + "\n")
    return dnsmasq_test(wrapper)


def assert_accepted(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"refused:\n{result.stdout}{result.stderr}"


def haproxy_check(conf: Path) -> subprocess.CompletedProcess[str]:
    return run(["haproxy", "-c", "-f", str(conf)])


def radvd_configtest(conf: Path) -> subprocess.CompletedProcess[str]:
    return run(["radvd", "--configtest", "-C", str(conf)])
