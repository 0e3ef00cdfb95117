from __future__ import annotations

import gc
import warnings

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
    # Tests that stop the Docker Engine run last, so that no other test meets an engine
    # coming back; by marker, not by file name. The sort is stable: the rest keep their order.
    items.sort(key=lambda item: item.get_closest_marker("restarts_engine") is not None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Collect what the session left, and name it, before pytest's own final collection.

    A socket or file that a test leaks is a ResourceWarning, an error under ``filterwarnings = error``: it fails
    the test during which the garbage collector finds it. One that nothing collects before the session ends
    (an object in a reference cycle that outlived the last test) would instead fail the whole run after every
    test passed, naming no test (it happened twice, in runs where every test passed). It is collected here:
    each such warning is printed with where it was allocated when tracemalloc runs (PYTHONTRACEMALLOC=25), as
    a line to act on, not a failure of a run whose tests all passed.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(3):
            gc.collect()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for warning in caught:
        line = f"left at the end of the session: {warning.message}"
        if reporter is not None:
            reporter.write_line(line, yellow=True)
        else:
            print(line)
