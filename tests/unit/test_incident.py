"""Incident reports (JSON and Markdown) from a real-shaped rollback, and the two hooks of a release, without an
engine: the judge's real verdicts, `grocker diff`'s real comparison, plugins registered as modules."""
from __future__ import annotations

import datetime
import json
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import pytest

from setuptools_grocker.deploy.analysis import Side, judge
from setuptools_grocker.deploy.incident import build, incident_paths, markdown, windows_of, write
from setuptools_grocker.deploy.ship import measured
from setuptools_grocker.errors import PluginError
from setuptools_grocker.image.diff import ImageDiff, compare
from setuptools_grocker.plugin import impl
from setuptools_grocker.plugin.manager import PluginManager

AT = datetime.datetime(2026, 12, 8, 1, 2, 3, tzinfo=datetime.timezone.utc)
STABLE = "127.0.0.1:5000/shop@sha256:" + "a" * 64
RELEASE = "127.0.0.1:5000/shop@sha256:" + "b" * 64


def ship_steps() -> list[dict[str, Any]]:
    """The ``steps`` of a ship report that failed at 25 % after one inconclusive window (real verdicts)."""
    few = judge(Side(8, 2, tuple(range(10, 18))), Side(30, 0, tuple(range(10, 40))), min_requests=15, alpha=0.01,
                latency_margin_ms=25)
    canary = Side(42, 8, tuple([12] * 30 + [14] * 4 + [250] * 8))
    stable = Side(126, 0, tuple([11] * 100 + [13] * 20 + [40] * 6))
    failed = judge(canary, stable, min_requests=15, alpha=0.01, latency_margin_ms=25)
    assert few.verdict == "inconclusive" and failed.verdict == "fail"
    return [{"share": 25, "verdict": "fail", "windows": [{**few.to_json(), "source": "edge"},
                                                         {**failed.to_json(), "source": "edge"}]}]


def real_report() -> dict[str, Any]:
    steps = ship_steps()
    diff = ImageDiff(compare({"shop": "1.4.0", "certifi": "2024.2.2", "six": "1.16.0"},
                             {"shop": "1.5.0", "certifi": "2024.2.2", "attrs": "23.2.0"},
                             {"certifi": "h1"}, {"certifi": "h2"}),
                     compare({"libc6": "2.36-9"}, {"libc6": "2.36-9+deb12u4"}), source="sbom")
    release = {"pinned": RELEASE, "version": "1.5.0", "provenance": {
        "link": "127.0.0.1:5000/shop:sha256-" + "b" * 64 + ".att", "source_commit": "c0ffee1",
        "internal": {"pricing": "beef002", "auth": "aaa0001"}}}
    went_back_to = {"pinned": STABLE, "version": "1.4.0", "provenance": {
        "link": "127.0.0.1:5000/shop:sha256-" + "a" * 64 + ".att", "source_commit": "c0ffee0",
        "internal": {"pricing": "beef001", "auth": "aaa0001", "legacy": "0ld0001"}}}
    logs = {"service": "shop-canary", "tasks": [
        {"task": "jofikezqf666",
         "lines": ["ERROR request 5: simulated failure", "ERROR request 10: simulated failure"]}]}
    timeline = [{"at": "2026-12-08T01:01:40.000+00:00", "event": "canary deployed", "service": "shop-canary"},
                {"at": "2026-12-08T01:01:41.000+00:00", "event": "canary share", "percent": 25, "weight": 33},
                {"at": "2026-12-08T01:02:02.000+00:00", "event": "canary removed", "seconds": 2.4}]
    return build(service="shop", trigger="canary at 25%", reason=steps[0]["windows"][-1]["reason"], release=release,
                 went_back_to=went_back_to, changes={**diff.to_json(), "lines": diff.lines()},
                 windows=windows_of(steps), logs=logs, timeline=timeline, verdict=steps[0]["windows"][-1], at=AT)


def test_the_json_names_both_releases_what_changed_and_the_figures() -> None:
    report = real_report()
    assert report["kind"] == "grocker-incident" and report["at"] == "2026-12-08T01:02:03+00:00"
    assert report["release"]["pinned"] == RELEASE and report["went_back_to"]["pinned"] == STABLE
    assert report["changes"]["changed"] == {"shop": {"from": "1.4.0", "to": "1.5.0"}}
    assert report["changes"]["added"] == {"attrs": "23.2.0"} and report["changes"]["removed"] == {"six": "1.16.0"}
    assert report["changes"]["rebuilt"] == {"certifi": "2024.2.2"}
    assert report["changes"]["debian"]["changed"] == {"libc6": {"from": "2.36-9", "to": "2.36-9+deb12u4"}}
    # The internal libraries whose commit differs between the provenances (auth did not change).
    assert report["internal_commits"] == [{"library": "legacy", "from": "0ld0001", "to": None},
                                          {"library": "pricing", "from": "beef001", "to": "beef002"}]
    assert [w["verdict"] for w in report["windows"]] == ["inconclusive", "fail"]
    canary = report["windows"][-1]["canary"]
    assert canary["requests"] == 42 and canary["errors"] == 8 and canary["error_rate"] == pytest.approx(0.1905)
    assert (canary["median_ms"], canary["p95_ms"], canary["p99_ms"]) == (12.0, 250.0, 250.0)
    assert report["windows"][-1]["stable"]["p95_ms"] == 13.0 and report["windows"][-1]["share"] == 25
    assert report["reason"].startswith("canary errors 19.0% vs stable 0.0%")
    json.dumps(report)  # JSON-ready as it is


def test_the_markdown_reads_top_down() -> None:
    text = markdown(real_report())
    assert text.startswith("# Incident: shop rolled back\n\n2026-12-08T01:02:03+00:00: the release "
                           f"`{RELEASE}` of **shop** was rolled back automatically (canary at 25%): canary errors")
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections == ["## Releases", "## What changed", "## Metrics", "## Last log lines of shop-canary",
                        "## Timeline"]
    assert f"- **rolled back**: `{RELEASE}` (version 1.5.0)" in text
    assert f"- **went back to**: `{STABLE}` (version 1.4.0)" in text
    assert "  - internal library pricing: commit `beef002`" in text and "source commit `c0ffee1`" in text
    for line in ("~ shop 1.4.0 -> 1.5.0", "+ attrs 23.2.0", "- six 1.16.0",
                 "* certifi 2024.2.2 (rebuilt: another wheel)",
                 "~ deb:libc6 2.36-9 -> 2.36-9+deb12u4", "- pricing: `beef001` -> `beef002`",
                 "- legacy: `0ld0001` -> `absent`"):
        assert line in text, line
    assert "| 25% | fail | canary | 42 | 8 | 19.0% | 12 | 250 | 250 |" in text  # 8/42, not the rounded 0.1905
    assert "| 25% | fail | stable | 126 | 0 | 0.0% | 11 | 13 | 40 |" in text
    assert "| 25% | inconclusive | canary | 8 | 2 | 25.0% |" in text
    assert "Deciding window: errors p = < 1e-06, latency p = " in text
    assert "Task `jofikezqf666`:\n\n```\nERROR request 5: simulated failure\n" in text
    assert "- 2026-12-08T01:02:02.000+00:00 canary removed seconds=2.4" in text
    assert "\n\n\n" not in text and text.endswith("\n")


def test_what_could_not_be_read_says_why() -> None:
    report = build(service="shop", trigger="drift", reason="p99 up", release={
        "pinned": RELEASE, "version": None, "provenance": {"error": "no provenance of it in its registry"}},
        went_back_to=None, changes={"error": "image x has no io.grocker.distributions label"}, windows=[],
        logs={"service": "shop", "error": "the Docker Engine stopped answering", "tasks": []}, timeline=[], at=AT)
    text = markdown(report)
    assert "provenance: not recorded (no provenance of it in its registry)" in text
    assert "- **went back to**: none" in text
    assert "Not known: image x has no io.grocker.distributions label." in text
    assert "No window was judged." in text and "Not read: the Docker Engine stopped answering." in text
    assert report["internal_commits"] == []


def test_both_files_are_written_in_the_incidents_directory(tmp_path: Path) -> None:
    paths = incident_paths(tmp_path / "state", "shop", AT)
    assert paths == {"json": tmp_path / "state" / "incidents" / "shop-20261208T010203Z.json",
                     "markdown": tmp_path / "state" / "incidents" / "shop-20261208T010203Z.md"}
    report = real_report()
    write(report, paths)
    assert json.loads(paths["json"].read_text()) == report
    assert paths["markdown"].read_text() == markdown(report)
    assert sorted(p.name for p in paths["json"].parent.iterdir()) == ["shop-20261208T010203Z.json",
                                                                     "shop-20261208T010203Z.md"]


# -- the hooks -----------------------------------------------------------------------------------------

@pytest.fixture
def plugins() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        sys.modules.pop(name, None)


def plugin(names: list[str], name: str, **hooks: Any) -> str:
    module = types.ModuleType(name)
    for hook, function in hooks.items():
        setattr(module, hook, impl(function))
    sys.modules[name] = module
    names.append(name)
    return name


def test_every_incident_plugin_is_called_and_a_failing_one_is_reported(plugins: list[str], tmp_path: Path) -> None:
    got: list[tuple[str, str]] = []

    def chat(report: Any, paths: Any) -> None:
        got.append(("chat", paths["markdown"].read_text().splitlines()[0]))

    def broken(report: Any, paths: Any) -> None:
        got.append(("ticket", report["service"]))
        raise ConnectionError("ticket system down")

    extra = (plugin(plugins, "incident_chat", grocker_incident=chat),
             plugin(plugins, "incident_ticket", grocker_incident=broken))
    report = real_report()
    paths = incident_paths(tmp_path, "shop", AT)
    write(report, paths)
    failures = PluginManager(extra=extra).grocker_incident(report, paths)
    # pluggy calls the later registered first: the ticket plugin raised, the chat plugin was still called.
    assert got == [("ticket", "shop"), ("chat", "# Incident: shop rolled back")]
    assert failures == [("incident_ticket", "ConnectionError: ticket system down")]


def test_a_metrics_plugin_replaces_the_edge_for_both_sides(plugins: list[str]) -> None:
    asked: list[tuple[str, float, float]] = []

    def monitoring(service: str, start: float, end: float) -> dict[str, Any] | None:
        asked.append((service, start, end))
        return {"shop-canary": {"requests": 60, "errors": 12, "times_ms": [20.4] * 60},
                "shop": {"requests": 180, "errors": 0, "times_ms": [20] * 180}}.get(service)

    def edge(start: float, end: float) -> tuple[Side, Side]:
        raise AssertionError("the edge was read although the plugin answered")

    pm = PluginManager(extra=(plugin(plugins, "monitoring", grocker_release_metrics=monitoring),))
    canary, stable, source = measured(pm, "shop-canary", "shop", 100.0, 104.0, edge)
    assert asked == [("shop-canary", 100.0, 104.0), ("shop", 100.0, 104.0)]
    assert canary == Side(60, 12, (20,) * 60) and stable == Side(180, 0, (20,) * 180)
    assert source == "plugin monitoring"
    assert judge(canary, stable, min_requests=50, alpha=0.01, latency_margin_ms=25).verdict == "fail"


def test_the_edge_counts_when_a_side_is_not_answered(plugins: list[str]) -> None:
    def canary_only(service: str, start: float, end: float) -> dict[str, Any] | None:
        return {"requests": 5, "errors": 0} if service.endswith("-canary") else None

    from_edge = (Side(3, 1, (9, 9, 9)), Side(9, 0, (8,) * 9))
    pm = PluginManager(extra=(plugin(plugins, "partial", grocker_release_metrics=canary_only),))
    assert measured(pm, "shop-canary", "shop", 0, 4, lambda a, b: from_edge) == (*from_edge, "edge")
    assert measured(None, "shop-canary", "shop", 0, 4, lambda a, b: from_edge) == (*from_edge, "edge")


def test_the_first_metrics_answer_wins_and_a_bad_one_names_its_plugin(plugins: list[str]) -> None:
    first = plugin(plugins, "first", grocker_release_metrics=lambda service, start, end: {"requests": 1, "errors": 0})
    second = plugin(plugins, "second", grocker_release_metrics=lambda service, start, end: {"requests": 2, "errors": 0})
    # The later registered is called first (pluggy's order); its answer is the one used.
    assert PluginManager(extra=(first, second)).grocker_release_metrics("shop", 0, 1) == (
        "second", {"requests": 2, "errors": 0})
    bad = plugin(plugins, "bad", grocker_release_metrics=lambda service, start, end: {"requests": 1, "errors": 3})
    with pytest.raises(PluginError, match="plugin 'bad' returned dict from grocker_release_metrics, expected a"):
        PluginManager(extra=(bad,)).grocker_release_metrics("shop", 0, 1)
