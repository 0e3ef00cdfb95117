"""The drift watch's pieces that need no engine: its keys, its options, the streak of failing windows, the
baseline's sides, the irreversible mark, and the judge's names for production against its baseline."""
from __future__ import annotations

from pathlib import Path

import pytest

from setuptools_grocker.cli import main
from setuptools_grocker.config import load_config
from setuptools_grocker.deploy.analysis import Side, judge
from setuptools_grocker.deploy.edge import LoggedRequest
from setuptools_grocker.deploy.watch import (
    MAX_SAMPLES,
    MAX_WINDOWS,
    NAMES,
    Streak,
    is_irreversible,
    side_from_json,
    side_json,
    side_of,
)
from setuptools_grocker.errors import ConfigError


def _request(at: float, service: str = "web", status: int = 200, ms: int = 5) -> LoggedRequest:
    return LoggedRequest(at=at, backend="to-8000", server=f"{service}-1", service=service, status=status,
                         total_ms=ms, response_ms=ms, retries=0, termination="----")


def test_watch_keys_in_the_project(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.grocker]\nirreversible = true\n\n[tool.grocker.watch]\nbake = 120\nwindow = 10\nfail-windows = 3\n")
    config = load_config(tmp_path, environ={"GROCKER_WATCH_ALPHA": "0.0001"})
    assert config.irreversible is True
    assert (config.watch.bake, config.watch.window, config.watch.fail_windows) == (120.0, 10.0, 3)
    assert config.watch.alpha == 0.0001 and config.watch.min_requests == 50 and config.watch.baseline == 600.0
    (tmp_path / "pyproject.toml").write_text("[tool.grocker.watch]\nbake = -1\n")
    with pytest.raises(ConfigError, match="must not be negative"):
        load_config(tmp_path, environ={})
    (tmp_path / "pyproject.toml").write_text("[tool.grocker.watch]\nwindows = 3\n")
    with pytest.raises(ConfigError, match="watch.window"):  # the closest valid key
        load_config(tmp_path, environ={})


@pytest.mark.parametrize(("args", "message"), [
    (["--window", "0"], "--window 0.0 is not positive"),
    (["--windows", "0"], "--windows 0 is not positive"),
    (["--duration", "-5"], "--duration -5.0 is not positive"),
])
def test_bad_watch_options(args: list[str], message: str, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["watch", "web", "--project", str(tmp_path), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 15
    assert len(err) == 1 and err[0].startswith("grocker: error: ") and message in err[0], err


def test_ship_bake_must_not_be_negative(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ship", "img:1", "--name", "web", "--project", str(tmp_path), "--bake", "-1"]) == 15
    assert "--bake -1.0 is negative" in capsys.readouterr().err


def test_a_drift_is_fail_windows_failing_windows_in_a_row() -> None:
    fail = judge(Side(50, 25, (5,) * 50), Side(500, 0, (5,) * 500), min_requests=10, alpha=0.001,
                 latency_margin_ms=50, names=NAMES)
    ok = judge(Side(50, 0, (5,) * 50), Side(500, 0, (5,) * 500), min_requests=10, alpha=0.001,
               latency_margin_ms=50, names=NAMES)
    few = judge(Side(3, 3, (5,) * 3), Side(500, 0, (5,) * 500), min_requests=10, alpha=0.001,
                latency_margin_ms=50, names=NAMES)
    assert fail.reason.startswith("production errors 50.0% vs baseline 0.0%")
    assert few.verdict == "inconclusive" and "(production 3, baseline 500)" in few.reason
    streak = Streak(needed=2)
    assert not streak.add(fail, 0, 1)
    assert not streak.add(ok, 1, 2)  # a pass resets the count
    assert not streak.add(fail, 2, 3)
    assert not streak.add(few, 3, 4)  # inconclusive waits: neither counts nor resets
    assert streak.add(fail, 4, 5)
    assert [w["verdict"] for w in streak.windows] == ["fail", "pass", "fail", "inconclusive", "fail"]
    assert streak.windows[-1]["production"]["errors"] == 25 and streak.windows[-1]["baseline"]["requests"] == 500
    for i in range(MAX_WINDOWS + 5):
        streak.add(ok, i, i + 1)
    assert len(streak.windows) == MAX_WINDOWS


def test_a_side_is_one_services_requests_of_the_window() -> None:
    logged = [_request(10.0), _request(10.5, status=502), _request(11.0, status=-1), _request(10.2, "web-canary"),
              _request(12.0), _request(9.9)]
    side = side_of(logged, "web", 10.0, 12.0)
    assert (side.requests, side.errors, side.times_ms) == (3, 2, (5, 5, 5))
    many = [_request(float(i), ms=i) for i in range(MAX_SAMPLES + 10)]
    big = side_of(many, "web", 0, MAX_SAMPLES + 10)
    assert big.requests == MAX_SAMPLES + 10 and len(big.times_ms) == MAX_SAMPLES and big.times_ms[0] == 10
    assert side_from_json(side_json(side)) == side
    assert side_from_json({"requests": 3}) is None


def test_irreversible_is_a_mark_of_one_release_in_the_history() -> None:
    records = [{"action": "deploy", "pinned": "r@sha256:a", "status": "deployed"},
               {"action": "ship", "pinned": "r@sha256:a", "status": "irreversible"},
               {"action": "deploy", "pinned": "r@sha256:b", "status": "deployed"}]
    assert is_irreversible(records, "r@sha256:a")
    assert not is_irreversible(records, "r@sha256:b")
