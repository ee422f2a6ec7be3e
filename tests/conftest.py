"""Test tiers: unit (pure), component and root (real namespaces and packets).

The root tier needs root. In CI it must run: a non-root CI run is an error,
not a skip. Outside CI, a non-root developer run skips it and says why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from astara.testing.postgres import PostgresServer, binaries

# Property tests: no per-example deadline (these machines are small and
# noisy), and in CI a fixed seed so a landing never depends on luck.
settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError("the root test tier must run in CI: run the suite as root")
    skip = pytest.mark.skip(reason="needs root to create namespaces; CI runs this tier as root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server per test process (unix socket only)."""
    if binaries() is None:
        if os.environ.get("CI"):
            raise RuntimeError("CI must run the PostgreSQL tier: `make test` installs postgresql")
        pytest.skip("PostgreSQL is not installed here (`make test` installs it)")
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()
