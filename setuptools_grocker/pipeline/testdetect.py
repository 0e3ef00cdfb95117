"""Whether a workspace library has tests: from its pytest configuration and its layout.

A file named ``test_*.py`` is not enough: ``pkg/_incubating/attributes/test_attributes.py`` is a
module of the package, and pytest collects nothing from it (exit code 5). The decision follows
what pytest would be told to collect:

- the configuration pytest itself reads, first found of ``pytest.ini`` / ``.pytest.ini``,
  ``pyproject.toml`` (``[tool.pytest.ini_options]`` or ``[tool.pytest]``), ``tox.ini`` (``[pytest]``),
  ``setup.cfg`` (``[tool:pytest]``): its ``testpaths`` and ``python_files``
  (default ``test_*.py *_test.py``);
- with ``testpaths``: a file under one of them matching ``python_files`` is a test;
- without: a file matching ``python_files`` is a test when it sits in a test directory (``tests/``,
  ``test/``, ``testing/``, ``*_tests/``, ...) or outside the package source (not under ``src/``, not
  inside a directory holding an ``__init__.py``), as ``test_mymodule.py`` beside ``mymodule.py``;
- ``--doctest-modules`` in ``addopts`` makes every project count as having tests.

An explicit ``test-command`` always runs (the caller checks that). Whatever is decided here, a test
run that collects nothing (pytest's exit code 5) is reported as "no tests", never as a failure.
"""
from __future__ import annotations

import configparser
import fnmatch
import posixpath
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_PYTHON_FILES = ("test_*.py", "*_test.py")
_TEST_DIRS = ("test", "tests", "testing")
_TEST_DIR_GLOBS = ("test_*", "tests_*", "*_test", "*_tests", "*-tests", "*-test")


@dataclass(frozen=True)
class PytestSettings:
    """The part of a project's pytest configuration that says what is collected."""

    #: Where it was read from (``pyproject.toml [tool.pytest.ini_options]``), None without configuration.
    source: str | None = None
    testpaths: tuple[str, ...] = ()
    python_files: tuple[str, ...] = DEFAULT_PYTHON_FILES
    addopts: tuple[str, ...] = ()

    @property
    def doctest_modules(self) -> bool:
        return "--doctest-modules" in self.addopts


def _words(value: Any) -> tuple[str, ...]:
    """An ini "args" value (shell-like words) or a TOML list, as a tuple of strings."""
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    text = str(value)
    try:
        return tuple(shlex.split(text))
    except ValueError:  # an unbalanced quote: pytest would fail too; take the plain words
        return tuple(text.split())


def _settings(source: str, table: Any) -> PytestSettings:
    get = table.get
    python_files = _words(get("python_files", "")) or DEFAULT_PYTHON_FILES
    return PytestSettings(source=source, testpaths=_words(get("testpaths", "")), python_files=python_files,
                          addopts=_words(get("addopts", "")))


def _ini_section(path: Path, section: str) -> configparser.SectionProxy | None:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(encoding="utf-8", errors="replace"), source=str(path))
    except configparser.Error:
        return None
    return parser[section] if parser.has_section(section) else None


def pytest_settings(root: Path) -> PytestSettings:
    """The pytest configuration of the project at ``root``, found as pytest finds it (first file wins)."""
    for name in ("pytest.ini", ".pytest.ini"):
        path = root / name
        if path.is_file():  # used even without a [pytest] section, as pytest does
            section = _ini_section(path, "pytest")
            return _settings(f"{name} [pytest]", section if section is not None else {})
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            data = {}
        table = data.get("tool", {}).get("pytest")
        if isinstance(table, dict):
            options = table.get("ini_options")
            if isinstance(options, dict):
                return _settings("pyproject.toml [tool.pytest.ini_options]", options)
            return _settings("pyproject.toml [tool.pytest]", table)
    for name, section_name in (("tox.ini", "pytest"), ("setup.cfg", "tool:pytest")):
        path = root / name
        if path.is_file():
            section = _ini_section(path, section_name)
            if section is not None:
                return _settings(f"{name} [{section_name}]", section)
    return PytestSettings()


def _matches_python_files(path: str, patterns: Iterable[str]) -> bool:
    name = posixpath.basename(path)
    # pytest matches a pattern with a separator against the whole path, others against the name.
    return any(fnmatch.fnmatch(path if "/" in p else name, p) for p in patterns)


def _under(path: str, testpath: str) -> bool:
    prefix = posixpath.normpath(testpath.replace("\\", "/"))
    if prefix in (".", ""):
        return True
    if any(ch in prefix for ch in "*?["):  # testpaths may be globs (pytest 7+)
        parts = path.split("/")
        depth = prefix.count("/") + 1
        return fnmatch.fnmatch("/".join(parts[:depth]), prefix) and len(parts) >= depth
    return path == prefix or path.startswith(prefix + "/")


def _in_test_dir(path: str) -> bool:
    dirs = path.split("/")[:-1]
    return any(d.lower() in _TEST_DIRS or any(fnmatch.fnmatch(d.lower(), g) for g in _TEST_DIR_GLOBS)
               for d in dirs)


def _in_package_source(path: str, files: Collection[str]) -> bool:
    parts = path.split("/")
    if parts[0] == "src" and len(parts) > 1:
        return True
    return any("/".join(parts[:i] + ["__init__.py"]) in files for i in range(1, len(parts)))


def collected_test_files(root: Path, files: Iterable[str], settings: PytestSettings | None = None) -> list[str]:
    """The files of ``files`` (paths relative to ``root``, with ``/``) that pytest would collect as tests."""
    settings = settings or pytest_settings(root)
    paths = [f.replace("\\", "/") for f in files]
    present = set(paths)
    candidates = [p for p in paths if p.endswith(".py") and _matches_python_files(p, settings.python_files)]
    if settings.testpaths:
        return sorted(p for p in candidates if any(_under(p, t) for t in settings.testpaths))
    return sorted(p for p in candidates if _in_test_dir(p) or not _in_package_source(p, present))


def has_tests(root: Path, files: Iterable[str]) -> bool:
    """Whether the project at ``root`` has tests for pytest to collect (see the module's docstring)."""
    settings = pytest_settings(root)
    return settings.doctest_modules or bool(collected_test_files(root, files, settings))


__all__ = ["DEFAULT_PYTHON_FILES", "PytestSettings", "collected_test_files", "has_tests", "pytest_settings"]
