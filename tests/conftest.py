from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
    # Tests that stop the Docker Engine run last, so that no other test meets an engine
    # coming back; by marker, not by file name. The sort is stable: the rest keep their order.
    items.sort(key=lambda item: item.get_closest_marker("restarts_engine") is not None)
