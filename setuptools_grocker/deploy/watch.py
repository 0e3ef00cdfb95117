"""The drift watch: production judged, window after window, against its own baseline from before the release.

* **Baseline.** Before a canary starts, ``grocker ship`` reads the stable release's requests of the last
  ``watch.baseline`` seconds from the edge's request log (what the edge logged before the release, untouched by
  it). ``grocker watch NAME`` on a service without a baseline for its current release takes one the same way,
  from the current release's own log (it then watches for drift over time, not against the release before).
  The baseline keeps its request and error counts and, for the rank test, the total times of its last
  :data:`MAX_SAMPLES` requests.
* **Windows.** Every ``watch.window`` seconds, the requests NAME answered in the window are judged against the
  baseline with the canary's judge (:func:`setuptools_grocker.deploy.analysis.judge`: a one-sided proportions
  test of the 5xx rate, a one-sided Mann-Whitney U test of the times with a median margin; fewer than
  ``watch.min-requests`` is ``inconclusive`` and waits). ``watch.fail-windows`` failing windows in a row are a
  drift; a passing window resets the count, an inconclusive one leaves it.
* **Bake and watch.** After a promotion the windows run for ``watch.bake`` seconds (the bake window);
  ``grocker watch NAME`` runs them for ever, or for ``--windows N`` / ``--duration S``. What a drift does (a
  rollback by digest, or an alert for an irreversible release) is :class:`setuptools_grocker.deploy.ship.Shipper`'s.
* **State.** ``STATE_DIR/watch-NAME.json`` holds the release watched, its baseline, the windows judged and the
  count of failing ones in a row, rewritten atomically after each window: a restarted watch goes on from there.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from setuptools_grocker.config import Watch
from setuptools_grocker.deploy.analysis import Side, Verdict, judge
from setuptools_grocker.deploy.deployer import DeployOptions
from setuptools_grocker.deploy.edge import Edge, LoggedRequest

#: The baseline keeps the total times of its last MAX_SAMPLES requests (its counts are all of them).
MAX_SAMPLES = 10000
#: Windows kept in a report and in the state file (a permanent watch judges one a minute, for ever).
MAX_WINDOWS = 50
NAMES = ("production", "baseline")
#: The history status that marks a release irreversible (``grocker ship --irreversible``).
IRREVERSIBLE = "irreversible"


@dataclass
class WatchOptions:
    """One run of ``grocker watch NAME``."""

    name: str
    settings: Watch = Watch()
    #: The rollout settings of a rollback (timeouts, health checks, the edge's base image).
    deploy: DeployOptions | None = None
    drain: float = 5.0
    state_dir: Path = Path(".grocker")
    #: Stop after this many windows, or this many seconds; neither: run for ever.
    windows: int | None = None
    duration: float | None = None


@dataclass
class Streak:
    """Failing windows in a row (a pass resets it; inconclusive leaves it)."""

    needed: int
    failing: int = 0
    windows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, verdict: Verdict, start: float, end: float) -> bool:
        """Record one window's verdict; whether the drift is now established."""
        if verdict.verdict == "fail":
            self.failing += 1
        elif verdict.verdict == "pass":
            self.failing = 0
        self.windows.append(window_json(verdict, start, end))
        del self.windows[:-MAX_WINDOWS]
        return self.failing >= self.needed


def watch_file(state_dir: Path, name: str) -> Path:
    return state_dir / f"watch-{name}.json"


def side_of(requests: Sequence[LoggedRequest], service: str, start: float, end: float) -> Side:
    """``service``'s requests logged in [start, end): errors are 5xx or no answer; the last MAX_SAMPLES times."""
    mine = [r for r in requests if r.service == service and start <= r.at < end]
    return Side(len(mine), sum(1 for r in mine if r.status >= 500 or r.status < 0),
                tuple(r.total_ms for r in mine[-MAX_SAMPLES:]))


def side_json(side: Side) -> dict[str, Any]:
    return {**side.figures(), "times_ms": list(side.times_ms)}


def side_from_json(data: Mapping[str, Any]) -> Side | None:
    try:
        return Side(int(data["requests"]), int(data["errors"]), tuple(int(t) for t in data["times_ms"]))
    except (KeyError, TypeError, ValueError):
        return None


def window_json(verdict: Verdict, start: float, end: float) -> dict[str, Any]:
    """One window's verdict: ``production`` is the window's figures, ``baseline`` the baseline's."""
    return {"start": round(start, 3), "end": round(end, 3), "verdict": verdict.verdict, "reason": verdict.reason,
            "production": verdict.canary, "baseline": verdict.stable, "errors_p": verdict.errors_p,
            "latency_p": verdict.latency_p, "latency_method": verdict.latency_method}


def is_irreversible(records: Sequence[Mapping[str, Any]], pinned: str | None) -> bool:
    """Whether NAME's history marks the release ``pinned`` irreversible."""
    return any(r.get("status") == IRREVERSIBLE and r.get("pinned") == pinned for r in records)


def baseline_from_log(edge: Edge, service: str, seconds: float, now: float | None = None) -> Side:
    """``service``'s requests of the last ``seconds`` of the edge's log."""
    end = time.time() if now is None else now
    return side_of(edge.requests(since=int(end - seconds)), service, end - seconds, end)


def judge_windows(edge: Edge, service: str, baseline: Side, settings: Watch, streak: Streak, *,
                  windows: int | None = None, duration: float | None = None,
                  on_window: Callable[[dict[str, Any]], None] | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> Verdict | None:
    """Judge ``service``'s windows against ``baseline`` until a drift (its last failing verdict is returned),
    ``windows`` windows or ``duration`` seconds (None: no drift)."""
    deadline = None if duration is None else time.monotonic() + duration
    judged = 0
    while (windows is None or judged < windows) and (deadline is None or time.monotonic() < deadline):
        length = settings.window if deadline is None else min(settings.window, max(0.0, deadline - time.monotonic()))
        if length < settings.window / 2 and judged:
            break  # what is left of the bake is too short a window to judge
        start = time.time()
        sleep(length)
        end = time.time()
        current = side_of(edge.requests(since=int(start)), service, start, end)
        verdict = judge(current, baseline, min_requests=settings.min_requests, alpha=settings.alpha,
                        latency_margin_ms=settings.latency_margin_ms, names=NAMES)
        judged += 1
        drift = streak.add(verdict, start, end)
        if on_window is not None:
            on_window(streak.windows[-1])
        if drift:
            return verdict
    return None


__all__ = ["IRREVERSIBLE", "MAX_SAMPLES", "MAX_WINDOWS", "Streak", "WatchOptions", "baseline_from_log",
           "is_irreversible", "judge_windows", "side_from_json", "side_json", "side_of", "watch_file",
           "window_json"]
