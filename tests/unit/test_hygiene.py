"""Promises about the code itself: what reads the environment, what the CLI still accepts."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import setuptools_grocker
from setuptools_grocker.cli import main, make_parser
from setuptools_grocker.errors import WorkspaceError
from setuptools_grocker.progress import Progress

ROOT = Path(setuptools_grocker.__file__).parent.parent
PACKAGES = [ROOT / "setuptools_grocker", ROOT / "buildbot_grocker"]
#: The frontends read the process environment and pass it in; resources/ run inside containers.
ALLOWED = {"setuptools_grocker/cli.py", "setuptools_grocker/command.py"}


def environment_reads(path: Path) -> list[int]:
    """Lines that reach the process environment: ``os.environ``, ``os.getenv``, ``from os import environ``."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb") \
                and isinstance(node.value, ast.Name) and node.value.id == "os":
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os" \
                and any(a.name in ("environ", "getenv") for a in node.names):
            lines.append(node.lineno)
    return lines


def test_only_the_frontends_read_the_process_environment() -> None:
    found = {}
    for package in PACKAGES:
        for path in package.rglob("*.py"):
            rel = path.relative_to(package.parent).as_posix()
            if rel in ALLOWED or rel.startswith("setuptools_grocker/resources/"):
                continue
            if environment_reads(path):
                found[rel] = environment_reads(path)
    assert found == {}, "pass environ in from the frontend instead"


def test_colour_follows_the_environment_the_frontend_passed() -> None:
    primary, secondary = os.openpty()  # a real terminal: colour is only ever used on one
    try:
        with open(secondary, "w", closefd=False) as tty:
            assert Progress(stream=tty, environ={}).color is True
            assert Progress(stream=tty, environ={"NO_COLOR": ""}).color is False
            assert Progress(stream=tty).color is False  # no environment passed: no guess from os.environ
    finally:
        os.close(primary)
        os.close(secondary)


def test_keep_going_is_accepted_hidden_and_deprecated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # --jobs 0 stops the build before any workspace or engine is needed.
    assert main(["workspace", "build", str(tmp_path), "--keep-going", "--jobs", "0"]) == WorkspaceError.exit_code
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("--keep-going is deprecated and does nothing (going on after a failure is the default); "
                           "drop it")
    assert err[1:] == ["grocker: error: --jobs 0 is not a positive number; use --jobs 1 or more"]
    with pytest.raises(SystemExit):
        make_parser().parse_args(["workspace", "build", "--help"])
    assert "--keep-going" not in capsys.readouterr().out


def test_the_test_that_restarts_the_engine_is_collected_last_whatever_the_order() -> None:
    """By marker, not by file name: given first on the command line, it still runs after the others."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "tests/integration/test_engine_stopped.py", "tests/integration/test_layers.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    assert len(ids) > 1 and ids[-1].startswith("tests/integration/test_engine_stopped.py::"), ids
    assert not any(p.name.startswith("test_zz") for p in (ROOT / "tests").rglob("test_*.py"))
