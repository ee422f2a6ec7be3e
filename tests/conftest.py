"""Test tiers: unit (pure), component and root (real namespaces and packets).

The root tier needs root. In CI it must run: a non-root CI run is an error,
not a skip. Outside CI, a non-root developer run skips it and says why.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError("the root test tier must run in CI: run the suite as root")
    skip = pytest.mark.skip(reason="needs root to create namespaces; CI runs this tier as root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
