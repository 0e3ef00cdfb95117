"""The canary judge's statistics (known values) and the release controller's state file."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from setuptools_grocker.deploy.analysis import (
    Side,
    _exact_counts,
    judge,
    mann_whitney_greater,
    median,
    normal_sf,
    two_proportion_p,
)
from setuptools_grocker.deploy.edge import LoggedRequest
from setuptools_grocker.deploy.ship import read_state, sides, state_file, weights_for, write_state


def brute_force_p(a: list[float], b: list[float]) -> float:
    """P(U >= U_observed) over every way of labelling the pooled values (no ties)."""
    pooled = sorted([*a, *b])
    observed = sum(1 for x in a for y in b if x > y)
    hits = total = 0
    for chosen in itertools.combinations(range(len(pooled)), len(a)):
        left = [pooled[i] for i in chosen]
        right = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        total += 1
        hits += sum(1 for x in left for y in right if x > y) >= observed
    return hits / total


def test_normal_tail_known_values() -> None:
    assert normal_sf(0) == pytest.approx(0.5)
    assert normal_sf(1.959964) == pytest.approx(0.025, rel=1e-4)
    assert normal_sf(2.326348) == pytest.approx(0.01, rel=1e-4)


def test_two_proportions_one_sided() -> None:
    # 20/100 against 5/100: pooled 0.125, z = 0.15 / sqrt(0.125 * 0.875 * 0.02) = 3.2071.
    assert two_proportion_p(20, 100, 5, 100) == pytest.approx(normal_sf(3.2071), rel=1e-3)
    assert two_proportion_p(20, 100, 5, 100) == pytest.approx(6.70e-4, rel=0.01)
    assert two_proportion_p(5, 100, 5, 100) == pytest.approx(0.5)
    assert two_proportion_p(5, 100, 20, 100) > 0.99  # one-sided: a better canary never fails
    assert two_proportion_p(0, 50, 0, 50) == 1.0
    assert two_proportion_p(3, 0, 0, 10) == 1.0


def test_mann_whitney_exact_distribution() -> None:
    assert _exact_counts(3, 3) == [1, 1, 2, 3, 3, 3, 3, 2, 1, 1]
    assert sum(_exact_counts(4, 6)) == math.comb(10, 4)
    assert mann_whitney_greater([4, 5, 6], [1, 2, 3]) == (9.0, pytest.approx(1 / 20), "exact")
    assert mann_whitney_greater([1, 2, 3], [4, 5, 6])[1] == pytest.approx(1.0)
    # U = 9 of 12; P(U >= 9) = (3 + 2 + 1 + 1) / 35
    assert mann_whitney_greater([3, 5, 7], [1, 2, 4, 6])[:2] == (9.0, pytest.approx(7 / 35))
    for a, b in (([3, 8, 11, 12], [1, 2, 5, 9, 10]), ([0.5, 7, 9], [1, 2, 3, 4, 6, 8])):
        assert mann_whitney_greater(a, b)[1] == pytest.approx(brute_force_p(a, b))


def test_mann_whitney_asymptotic_with_ties_and_large_samples() -> None:
    a = [float(i) + 0.5 for i in range(10, 70)]
    b = [float(i) for i in range(60)]
    u, p, method = mann_whitney_greater(a, b)
    assert method == "asymptotic" and u == sum(1 for x in a for y in b if x > y)
    counts = _exact_counts(60, 60)
    exact = sum(counts[int(u):]) / math.comb(120, 60)
    assert p == pytest.approx(exact, abs=0.003)
    # Ties: the tie-corrected normal approximation; identical samples are no evidence.
    u, p, method = mann_whitney_greater([5] * 10 + [6] * 10, [5] * 10 + [6] * 10)
    assert (u, method) == (200.0, "asymptotic") and p == pytest.approx(0.5, abs=0.1)
    assert mann_whitney_greater([9] * 30, [1] * 30)[1] < 1e-10
    assert mann_whitney_greater([], [1])[1] == 1.0


def test_judge_verdicts() -> None:
    def side(requests: int, errors: int, ms: int) -> Side:
        return Side(requests, errors, tuple(ms + i % 7 for i in range(requests)))

    kwargs = {"min_requests": 20, "alpha": 0.01, "latency_margin_ms": 25.0}
    few = judge(side(10, 5, 3), side(200, 0, 3), **kwargs)
    assert few.verdict == "inconclusive" and "canary 10" in few.reason
    bad = judge(side(50, 10, 3), side(200, 0, 3), **kwargs)
    assert bad.verdict == "fail" and "canary errors 20.0%" in bad.reason and bad.errors_p is not None
    assert bad.canary["error_rate"] == 0.2 and bad.stable["requests"] == 200
    slow = judge(side(50, 0, 300), side(200, 0, 3), **kwargs)
    assert slow.verdict == "fail" and "slower" in slow.reason and slow.latency_method == "asymptotic"
    # Significantly slower by a few ms only: within the margin, a pass.
    assert judge(side(50, 0, 10), side(200, 0, 3), **kwargs).verdict == "pass"
    good = judge(side(50, 1, 3), side(200, 4, 3), **kwargs)
    assert good.verdict == "pass" and json.loads(json.dumps(good.to_json()))["verdict"] == "pass"
    assert median([3, 1, 2]) == 2 and median([1, 2, 3, 4]) == 2.5 and median([]) is None


def test_weights_give_the_canary_its_share() -> None:
    assert weights_for(5) == (100, 5)
    assert weights_for(25) == (100, 33)
    assert weights_for(50) == (100, 100)
    assert weights_for(90) == (100, 256)  # capped at HAProxy's maximum
    assert weights_for(100) == (0, 100)


def test_sides_split_the_log_by_service_and_window() -> None:
    def logged(at: float, service: str, status: int) -> LoggedRequest:
        return LoggedRequest(at, "to-8000", f"{service}-1", service, status, 4, 3, 0, "----")

    log = [logged(9.5, "web-canary", 500), logged(10, "web-canary", 500), logged(11, "web-canary", 200),
           logged(12, "web", 200), logged(13, "web", 503), logged(14, "web", -1), logged(20, "web", 200)]
    canary, stable = sides(log, "web-canary", "web", 10, 20)
    assert (canary.requests, canary.errors) == (2, 1)
    assert (stable.requests, stable.errors, stable.times_ms) == (3, 2, (4, 4, 4))


def test_state_file_is_written_atomically_and_unknown_state_is_not_final(tmp_path: Path) -> None:
    path = state_file(tmp_path / "state", "web")
    assert path.name == "ship-web.json" and read_state(path) is None
    write_state(path, {"phase": "canary", "share": 5})
    write_state(path, {"phase": "canary", "share": 25})
    assert read_state(path) == {"phase": "canary", "share": 25}
    assert [p.name for p in path.parent.iterdir()] == ["ship-web.json"]  # no temporary file left
    path.write_text('{"phase": "can')  # a torn or foreign file
    assert read_state(path) == {"phase": "unknown"}
    path.write_text("[1, 2]")
    assert read_state(path) == {"phase": "unknown"}
