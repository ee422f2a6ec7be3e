"""Test tiers: unit (pure), component and root (real namespaces and packets).

The root tier needs root. In CI it must run: a non-root CI run is an error,
not a skip. Outside CI, a non-root developer run skips it and says why.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

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
