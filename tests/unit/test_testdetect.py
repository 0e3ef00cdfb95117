"""Test detection from real project layouts and pytest configuration files on disk."""
from __future__ import annotations

from pathlib import Path

import pytest

from setuptools_grocker.pipeline.project import Source
from setuptools_grocker.pipeline.testdetect import collected_test_files, has_tests, pytest_settings
from setuptools_grocker.pipeline.workspace import load_workspace


def tree(root: Path, files: dict[str, str]) -> list[str]:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return sorted(files)


PYPROJECT = '[project]\nname = "lib"\nversion = "1.0"\n'
TEST = "def test_one():\n    assert True\n"


@pytest.mark.parametrize(("files", "expected"), [
    # The reported case: a source module named test_*.py inside the package (src layout).
    ({"src/opentelemetry/semconv/__init__.py": "",
      "src/opentelemetry/semconv/_incubating/__init__.py": "",
      "src/opentelemetry/semconv/_incubating/attributes/__init__.py": "",
      "src/opentelemetry/semconv/_incubating/attributes/test_attributes.py": "TEST_NAME = 'test.name'\n"}, []),
    # The same module in a flat layout: inside a package, not a test.
    ({"pkg/__init__.py": "", "pkg/_incubating/attributes/__init__.py": "",
      "pkg/_incubating/attributes/test_attributes.py": "X = 1\n"}, []),
    # ... even when the attributes directory has no __init__.py (an ancestor does).
    ({"pkg/__init__.py": "", "pkg/_incubating/attributes/test_attributes.py": "X = 1\n"}, []),
    ({"pkg/__init__.py": "", "tests/test_pkg.py": TEST}, ["tests/test_pkg.py"]),
    ({"pkg/__init__.py": "", "test/test_pkg.py": TEST}, ["test/test_pkg.py"]),
    ({"src/pkg/__init__.py": "", "tests/unit/test_pkg.py": TEST}, ["tests/unit/test_pkg.py"]),
    # Tests inside the package, in a tests directory.
    ({"pkg/__init__.py": "", "pkg/tests/__init__.py": "", "pkg/tests/test_a.py": TEST}, ["pkg/tests/test_a.py"]),
    ({"pkg/__init__.py": "", "pkg_tests/__init__.py": "", "pkg_tests/test_a.py": TEST}, ["pkg_tests/test_a.py"]),
    # A single-module project with its test beside it, outside any package.
    ({"mymod.py": "", "test_mymod.py": TEST}, ["test_mymod.py"]),
    ({"mymod.py": "", "mymod_test.py": TEST}, ["mymod_test.py"]),
    # A tests directory holding only helpers.
    ({"pkg/__init__.py": "", "tests/conftest.py": "", "tests/helpers.py": ""}, []),
    ({"pkg/__init__.py": "", "pkg/core.py": ""}, []),
])
def test_layouts(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    names = tree(tmp_path, {"pyproject.toml": PYPROJECT, **files})
    assert collected_test_files(tmp_path, names) == expected
    assert has_tests(tmp_path, names) is bool(expected)


@pytest.mark.parametrize(("config_file", "text", "source"), [
    ("pytest.ini", "[pytest]\ntestpaths = checks\npython_files = check_*.py\n", "pytest.ini [pytest]"),
    ("pyproject.toml", PYPROJECT + '[tool.pytest.ini_options]\ntestpaths = ["checks"]\n'
                                   'python_files = ["check_*.py"]\n', "pyproject.toml [tool.pytest.ini_options]"),
    ("pyproject.toml", PYPROJECT + '[tool.pytest]\ntestpaths = ["checks"]\npython_files = ["check_*.py"]\n',
     "pyproject.toml [tool.pytest]"),
    ("tox.ini", "[tox]\nenvlist = py311\n[pytest]\ntestpaths = checks\npython_files = check_*.py\n",
     "tox.ini [pytest]"),
    ("setup.cfg", "[metadata]\nname = lib\n[tool:pytest]\ntestpaths =\n    checks\npython_files = check_*.py\n",
     "setup.cfg [tool:pytest]"),
])
def test_configuration_files(tmp_path: Path, config_file: str, text: str, source: str) -> None:
    files = {"pyproject.toml": PYPROJECT, config_file: text, "pkg/__init__.py": "",
             "checks/check_pkg.py": TEST, "tests/test_ignored.py": TEST}
    names = tree(tmp_path, files)
    settings = pytest_settings(tmp_path)
    assert settings.source == source
    assert settings.testpaths == ("checks",) and settings.python_files == ("check_*.py",)
    # Only what the configuration points at: tests/test_ignored.py is outside testpaths.
    assert collected_test_files(tmp_path, names) == ["checks/check_pkg.py"]


def test_first_configuration_file_wins_as_in_pytest(tmp_path: Path) -> None:
    # An empty pytest.ini is still pytest's configuration: setup.cfg's [tool:pytest] is not read.
    names = tree(tmp_path, {"pyproject.toml": PYPROJECT, "pytest.ini": "",
                            "setup.cfg": "[tool:pytest]\ntestpaths = nowhere\n", "tests/test_a.py": TEST})
    assert pytest_settings(tmp_path).source == "pytest.ini [pytest]"
    assert collected_test_files(tmp_path, names) == ["tests/test_a.py"]
    # tox.ini without a [pytest] section is skipped.
    other = tmp_path / "other"
    other.mkdir()
    tree(other, {"tox.ini": "[tox]\nenvlist = py311\n"})
    assert pytest_settings(other).source is None


def test_testpaths_pointing_at_nothing_means_no_tests(tmp_path: Path) -> None:
    names = tree(tmp_path, {"pyproject.toml": PYPROJECT + '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n',
                            "pkg/__init__.py": "", "pkg/test_helpers.py": ""})
    assert not has_tests(tmp_path, names)


def test_testpaths_globs_and_inside_the_package(tmp_path: Path) -> None:
    names = tree(tmp_path, {"pyproject.toml": PYPROJECT + '[tool.pytest.ini_options]\ntestpaths = ["pkg*/checks"]\n',
                            "pkg/__init__.py": "", "pkg/checks/__init__.py": "", "pkg/checks/test_a.py": TEST,
                            "pkg/test_not_here.py": ""})
    assert collected_test_files(tmp_path, names) == ["pkg/checks/test_a.py"]


def test_python_files_default_and_string_values(tmp_path: Path) -> None:
    names = tree(tmp_path, {"pyproject.toml": PYPROJECT + '[tool.pytest.ini_options]\npython_files = "*_spec.py"\n',
                            "tests/a_spec.py": TEST, "tests/test_b.py": TEST})
    assert collected_test_files(tmp_path, names) == ["tests/a_spec.py"]


def test_doctest_modules_counts_as_tests(tmp_path: Path) -> None:
    names = tree(tmp_path, {"pyproject.toml": PYPROJECT + '[tool.pytest.ini_options]\naddopts = "--doctest-modules"\n',
                            "pkg/__init__.py": '"""\n>>> 1 + 1\n2\n"""\n'})
    assert collected_test_files(tmp_path, names) == []
    assert has_tests(tmp_path, names)


def test_broken_configuration_files_do_not_crash(tmp_path: Path) -> None:
    names = tree(tmp_path, {"pyproject.toml": "this is [not toml", "setup.cfg": "no section header\n",
                            "tests/test_a.py": TEST})
    assert pytest_settings(tmp_path).source is None
    assert has_tests(tmp_path, names)


def test_workspace_member_uses_detection(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.grocker.workspace]\nmembers = ["libs/*"]\n')
    for name, files in {
        "semconv": {"semconv/__init__.py": "", "semconv/_incubating/attributes/test_attributes.py": "X = 1\n"},
        "tested": {"tested/__init__.py": "", "tests/test_tested.py": TEST},
        "explicit": {"explicit/__init__.py": ""},
    }.items():
        root = tmp_path / "libs" / name
        extra = '[tool.grocker]\ntest-command = "python -c pass"\n' if name == "explicit" else ""
        tree(root, {"pyproject.toml": f'[project]\nname = "{name}"\nversion = "1.0"\n{extra}', **files})
    ws = load_workspace(tmp_path, environ={})
    assert not ws.members["semconv"].has_tests
    assert ws.members["tested"].has_tests
    assert ws.members["explicit"].has_tests
    # The files the workspace sees are those of its source scan.
    assert "semconv/_incubating/attributes/test_attributes.py" in Source.scan(tmp_path / "libs" / "semconv").files
