"""Which workspace libraries have tests, and how a run that collects nothing is reported (issue 16, item 2).

A library whose only ``test_*.py`` is a source module (``_incubating/attributes/test_attributes.py``)
has no tests: it builds, its dependents build, and the report says so. A library whose test files
hold no tests runs pytest, which exits 5: reported as "no tests", not as a failure.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Run, grocker, python_project


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, run_id: str) -> tuple[Path, str, Run]:
    root = tmp_path_factory.mktemp("wstests")
    prefix = f"t{run_id[:5]}-"
    (root / "pyproject.toml").write_text('[tool.grocker.workspace]\nmembers = ["libs/*"]\n')
    semconv = python_project(root / "libs" / "semconv", f"{prefix}semconv",
                             modules={"__init__.py": 'NAME = "semconv"\n'})
    package = f"{prefix}semconv".replace("-", "_")
    attributes = semconv / "src" / package / "_incubating" / "attributes"
    attributes.mkdir(parents=True)
    (attributes.parent / "__init__.py").write_text("")
    (attributes / "__init__.py").write_text("")
    # A source module that only looks like a test.
    (attributes / "test_attributes.py").write_text('TEST_CASE_NAME = "test.case.name"\n')
    user = python_project(root / "libs" / "user", f"{prefix}user", deps=[f"{prefix}semconv"],
                          modules={"__init__.py": f"from {package}._incubating.attributes.test_attributes "
                                                  "import TEST_CASE_NAME\n"})
    # Test commands of real projects install their test requirements with pip first (the Pallets projects'
    # `pip install -r requirements/tests.txt`): the test environment has pip, also when uv made it.
    (user / "grocker.toml").write_text('test-command = "pip install -q pytest && pytest -q -p no:cacheprovider"\n')
    (user / "tests").mkdir()
    (user / "tests" / "test_user.py").write_text(
        f"import {prefix.replace('-', '_')}user as u\n\n\ndef test_name():\n"
        "    assert u.TEST_CASE_NAME == 'test.case.name'\n")
    empty = python_project(root / "libs" / "empty", f"{prefix}empty", deps=[f"{prefix}user"])
    (empty / "tests").mkdir()
    (empty / "tests" / "test_nothing_yet.py").write_text('"""Tests to come."""\n')
    run = grocker("workspace", "build", str(root), report=root / "report.json")
    return root, prefix, run


def test_source_module_named_like_a_test_is_not_a_test(built: tuple[Path, str, Run]) -> None:
    _, prefix, run = built
    assert run.code == 0, run.err[-4000:]
    assert run.report is not None
    projects = {p["name"]: p for p in run.report["projects"]}
    assert {n: p["status"] for n, p in projects.items()} == {
        f"{prefix}semconv": "built", f"{prefix}user": "built", f"{prefix}empty": "built"}
    # No test stage for semconv: nothing was detected, nothing ran.
    assert projects[f"{prefix}semconv"]["tests"] == "not found"
    assert "test" not in projects[f"{prefix}semconv"]["stages"] and "wheel" in projects[f"{prefix}semconv"]["stages"]
    assert projects[f"{prefix}user"]["tests"] == "passed"
    # The time of the tests (their environment and command) is reported; nothing ran for semconv.
    assert projects[f"{prefix}user"]["test_seconds"] > 0
    assert projects[f"{prefix}semconv"]["test_seconds"] is None
    # pytest ran and collected nothing (exit code 5): no tests, not a failure.
    assert projects[f"{prefix}empty"]["tests"] == "no tests"
    assert f"[{prefix}semconv] built in " in run.err and "no tests found" in run.err
    assert f"[{prefix}empty] built in " in run.err and "no tests collected" in run.err


def test_no_change_run_keeps_the_test_outcomes(built: tuple[Path, str, Run]) -> None:
    root, prefix, first = built
    assert first.code == 0, first.err[-4000:]
    again = grocker("workspace", "build", str(root), report=root / "again.json")
    assert again.code == 0, again.err[-4000:]
    assert again.report is not None
    projects = {p["name"]: p for p in again.report["projects"]}
    assert {p["status"] for p in projects.values()} == {"cached"}
    assert [projects[f"{prefix}{n}"]["tests"] for n in ("semconv", "user", "empty")] == [
        "not found", "passed", "no tests"]
    assert all(p["test_seconds"] is None for p in projects.values())  # cached: no test ran in this run
