"""The canary judge: canary against stable over the same window, from the edge's request log.

* **Errors**: a one-sided two-proportion z-test (pooled), H1 "the canary's 5xx rate is higher".
* **Latency**: a one-sided Mann-Whitney U rank test on the requests' total times, H1 "the canary's times are
  larger". scipy is not a dependency: this is a small implementation of its own. The exact null distribution
  (the coefficients of the Gaussian binomial ``[n1+n2, n1]_q``) is used when there are no ties and
  ``n1 * n2 <= EXACT_LIMIT``; otherwise the normal approximation with the tie correction and a continuity
  correction (what scipy's ``method="asymptotic"`` does). A latency failure also needs the canary's median to
  exceed the stable's by a margin, so that a significant but negligible difference does not roll back a release.
* **Minimum requests**: with fewer than ``min_requests`` on either side the verdict is ``inconclusive``:
  the step waits for another window rather than guesses.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

#: The exact distribution is computed in O(n1 * n2 * min(n1, n2)) integer steps: kept small.
EXACT_LIMIT = 2500


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def two_proportion_p(errors_a: int, n_a: int, errors_b: int, n_b: int) -> float:
    """One-sided p-value of H1 "the error rate of A is higher than B's" (pooled two-proportion z-test)."""
    if n_a <= 0 or n_b <= 0:
        return 1.0
    pooled = (errors_a + errors_b) / (n_a + n_b)
    if pooled in (0.0, 1.0):
        return 1.0  # no error at all (or only errors) on both sides: nothing tells them apart
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return normal_sf((errors_a / n_a - errors_b / n_b) / se)


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Mid-ranks (1-based) of ``values`` and the sizes of their groups of ties."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def _exact_counts(n1: int, n2: int) -> list[int]:
    """How many of the C(n1+n2, n1) arrangements give U = 0..n1*n2: the coefficients of the Gaussian binomial
    ``prod_{i=1..k} (1 - q^(m+i)) / (1 - q^i)`` with k = min(n1, n2), m = max(n1, n2)."""
    k, m = min(n1, n2), max(n1, n2)
    size = n1 * n2 + 1
    poly = [0] * size
    poly[0] = 1
    for i in range(1, k + 1):
        # times (1 - q^(m+i)), then divided by (1 - q^i) (exact: the result is a polynomial)
        for d in range(size - 1, m + i - 1, -1):
            poly[d] -= poly[d - m - i]
        for d in range(i, size):
            poly[d] += poly[d - i]
    return poly


def mann_whitney_greater(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, str]:
    """One-sided Mann-Whitney U test of H1 "values of ``a`` tend to be larger than ``b``'s".

    Returns (U of ``a``, p-value, method: ``exact`` or ``asymptotic``)."""
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0, "none"
    ranks, ties = _ranks([*a, *b])
    u = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    if all(t == 1 for t in ties) and n1 * n2 <= EXACT_LIMIT:
        counts = _exact_counts(n1, n2)
        at_least = sum(counts[math.ceil(u):])
        return u, at_least / math.comb(n1 + n2, n1), "exact"
    n = n1 + n2
    mean = n1 * n2 / 2
    variance = n1 * n2 / 12 * ((n + 1) - sum(t ** 3 - t for t in ties) / (n * (n - 1)))
    if variance <= 0:
        return u, 1.0, "asymptotic"
    z = (u - mean - 0.5) / math.sqrt(variance)
    return u, normal_sf(z), "asymptotic"


def median(values: Sequence[float]) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    mid = len(ordered) // 2
    return float(ordered[mid]) if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0 < q <= 100): a value that was observed, never interpolated."""
    ordered = sorted(values)
    if not ordered:
        return None
    return float(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)])


@dataclass(frozen=True)
class Side:
    """One service's requests in a window: how many, how many answered 5xx (or not at all), their times."""

    requests: int
    errors: int
    times_ms: tuple[int, ...]

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def figures(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "error_rate": round(self.error_rate, 4),
                "median_ms": median(self.times_ms), "p95_ms": percentile(self.times_ms, 95),
                "p99_ms": percentile(self.times_ms, 99)}


@dataclass(frozen=True)
class Verdict:
    """``pass``, ``fail`` or ``inconclusive``, why, and the figures behind it."""

    verdict: str
    reason: str
    canary: dict[str, Any]
    stable: dict[str, Any]
    errors_p: float | None = None
    latency_p: float | None = None
    latency_method: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def judge(canary: Side, stable: Side, *, min_requests: int, alpha: float, latency_margin_ms: float,
          names: tuple[str, str] = ("canary", "stable")) -> Verdict:
    """The verdict of one window; ``names`` name the two sides in the reason (the drift watch judges production
    against its baseline)."""
    c, s = canary.figures(), stable.figures()
    new, old = names
    if canary.requests < min_requests or stable.requests < min_requests:
        return Verdict("inconclusive", f"fewer than {min_requests} requests on a side "
                       f"({new} {canary.requests}, {old} {stable.requests})", c, s)
    errors_p = two_proportion_p(canary.errors, canary.requests, stable.errors, stable.requests)
    _, latency_p, method = mann_whitney_greater(canary.times_ms, stable.times_ms)
    ep, lp = round(errors_p, 6), round(latency_p, 6)
    if errors_p < alpha:
        return Verdict("fail", f"{new} errors {canary.error_rate:.1%} vs {old} {stable.error_rate:.1%} "
                       f"(p={errors_p:.2g} < {alpha})", c, s, ep, lp, method)
    slower = (median(canary.times_ms) or 0) - (median(stable.times_ms) or 0)
    if latency_p < alpha and slower > latency_margin_ms:
        return Verdict("fail", f"{new} slower: median +{slower:.0f} ms (p={latency_p:.2g} < {alpha})",
                       c, s, ep, lp, method)
    return Verdict("pass", "no significant difference in errors or latency", c, s, ep, lp, method)


__all__ = ["EXACT_LIMIT", "Side", "Verdict", "judge", "mann_whitney_greater", "median", "normal_sf", "percentile",
           "two_proportion_p"]
