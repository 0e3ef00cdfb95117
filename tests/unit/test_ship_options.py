"""`grocker ship`'s bad input: one line naming the problem and the fix, exit code 15, before any engine call."""
from __future__ import annotations

from pathlib import Path

import pytest

from setuptools_grocker.cli import main
from setuptools_grocker.config import load_config
from setuptools_grocker.errors import ConfigError


@pytest.mark.parametrize(("args", "message"), [
    (["--canary-steps", "5,25,50"], "canary.steps [5, 25, 50] in --canary-steps is not a rising list"),
    (["--canary-steps", "50,25,100"], "is not a rising list of percents ending at 100"),
    (["--canary-steps", "five"], "is not a rising list"),
    (["--canary-window", "0"], "--canary-window 0.0 is not positive"),
    (["--min-requests", "-3"], "--min-requests -3 is not positive"),
    (["--staging-env", "NOPE"], "--staging-env 'NOPE' is not KEY=VALUE"),
])
def test_bad_ship_options(args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["ship", "img:1", "--name", "web", "--project", str(tmp_path), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 15
    assert len(err) == 1 and err[0].startswith("grocker: error: ") and message in err[0], err


def test_canary_keys_in_the_project(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.grocker]\nfunctional-tests = "pytest tests/functional"\n\n'
        "[tool.grocker.canary]\nsteps = [10, 100]\nwindow = 5\nmin-requests = 20\n")
    config = load_config(tmp_path, environ={"GROCKER_CANARY_ALPHA": "0.05"})
    assert config.functional_tests == "pytest tests/functional"
    assert (config.canary.steps, config.canary.window, config.canary.min_requests) == ((10, 100), 5.0, 20)
    assert config.canary.alpha == 0.05 and config.canary.max_inconclusive == 3
    (tmp_path / "pyproject.toml").write_text("[tool.grocker.canary]\nsteps = [10, 50]\n")
    with pytest.raises(ConfigError, match="ending at 100"):
        load_config(tmp_path, environ={})
    (tmp_path / "pyproject.toml").write_text("[tool.grocker.canary]\nalpha = 2\n")
    with pytest.raises(ConfigError, match="not between 0 and 1"):
        load_config(tmp_path, environ={})
