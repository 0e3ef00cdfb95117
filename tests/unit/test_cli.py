"""Frontend behaviour that needs no engine: errors are one line with a distinct exit code."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from setuptools_grocker.cli import main
from setuptools_grocker.errors import ConfigError, ProjectError


def test_not_a_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["build", str(tmp_path), "--report", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == ProjectError.exit_code
    assert err.count("\n") == 1 and "is not a Python project" in err and "grocker build DIR" in err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] is False and report["projects"][0]["status"] == "failed"


def test_unknown_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.grocker]\nsmoke-tests = 1\n')
    assert main(["build", str(tmp_path)]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert "unknown key 'smoke-tests'" in err and "did you mean 'smoke-test." in err


def test_unknown_key_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.grocker]\ncomands = {}\n')
    assert main(["build", str(tmp_path)]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert err == "grocker: error: unknown key 'comands' in " + str(tmp_path / "pyproject.toml") + \
        "; did you mean 'commands'?\n"


def test_invalid_tag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "setup.py").write_text("")
    assert main(["build", str(tmp_path), "--tag", "Bad:Tag+1"]) == ConfigError.exit_code
    assert "image reference 'Bad:Tag+1' is not valid" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("setuptools-grocker ")


def test_report_on_stdout_for_ci_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", str(tmp_path), "--report", "-"]) == ProjectError.exit_code
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["ok"] is False and "is not a Python project" in report["projects"][0]["error"]
    assert "grocker: error:" in captured.err
