"""The integration tests' fixtures: a tenant under test (`synced_tenant`), marked `integration`."""

from __future__ import annotations

import pytest
from synced_tenant import dag_file, frankli_target, frankli_url, make_tenant

__all__ = ["dag_file", "frankli_target", "frankli_url", "make_tenant"]  # fixtures of every test in this directory


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
