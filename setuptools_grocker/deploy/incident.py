"""Incident reports: what an automatic rollback leaves for the team, as JSON (for machines and plugins) and
Markdown (for people), in ``STATE_DIR/incidents/NAME-<UTC time>.{json,md}``.

One report says:

* **the release** that was rolled back and **the one it went back to**, each pinned by digest, with its
  version and its provenance (where the statement is, the source commit, the internal libraries' commits),
  when the supply chain recorded one;
* **what changed** between them: ``grocker diff`` (:func:`setuptools_grocker.image.diff.diff_images`, from the
  SBOMs, else the distributions label): Python distributions added, removed, changed, rebuilt; Debian
  packages; and the internal libraries whose commit changed, from the two provenances;
* **the metrics** of both sides over every judged window (requests, errors, error rate, p50/p95/p99), as
  the judge saw them (:mod:`setuptools_grocker.deploy.analysis`);
* **the failing tasks' last log lines**, read before their service was removed;
* **the timeline** of the release.

Building the document never fails a rollback: a part that cannot be read (an image without SBOM or labels,
a provenance that was never recorded) says why in its place. :func:`build` is pure; :func:`collect` reads
the engine and the registry for it; :func:`write` writes both files.
"""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from setuptools_grocker.errors import GrockerError
from setuptools_grocker.fs import write_atomic
from setuptools_grocker.report import write_json_atomic

if TYPE_CHECKING:
    from setuptools_grocker.engine import Engine

KIND = "grocker-incident"
VERSION = 1
#: Log lines kept per task of the failing service.
LOG_LINES = 30
INCIDENTS = "incidents"

__all__ = ["INCIDENTS", "KIND", "LOG_LINES", "build", "collect", "incident_paths", "markdown", "provenance_of",
           "task_logs", "windows_of", "write"]


def _utc(at: datetime.datetime | None = None) -> datetime.datetime:
    return (at or datetime.datetime.now(datetime.timezone.utc)).astimezone(datetime.timezone.utc)


def incident_paths(state_dir: Path, service: str, at: datetime.datetime | None = None) -> dict[str, Path]:
    """``{"json": ..., "markdown": ...}``: ``STATE_DIR/incidents/SERVICE-YYYYMMDDTHHMMSSZ.json`` and ``.md``."""
    stem = state_dir.resolve() / INCIDENTS / f"{service}-{_utc(at).strftime('%Y%m%dT%H%M%SZ')}"
    return {"json": stem.with_suffix(".json"), "markdown": stem.with_suffix(".md")}


# -- the parts read from the engine and the registry ----------------------------------------------------

def provenance_of(engine: Engine, home: Path | None, pinned: str) -> dict[str, Any]:
    """Where the provenance of ``pinned`` is and the commits it records: ``{"link", "source_commit",
    "internal": {LIB: commit}}``; ``{"error": ...}`` when none is recorded (or it cannot be read)."""
    from setuptools_grocker.image.records import provenance_path
    from setuptools_grocker.image.supplychain import from_registry, read_provenance
    from setuptools_grocker.registry.attach import artifact_ref

    try:
        statement = read_provenance(engine, home or Path("/nonexistent"), pinned)
    except GrockerError as exc:
        return {"error": exc.message}
    if from_registry(pinned, "auto"):
        link = artifact_ref(pinned, pinned.rpartition("@")[2], "att") if "@sha256:" in pinned else pinned
    else:
        link = str(provenance_path(home or Path("."), engine.image_id(pinned) or pinned))
    dependencies = ((statement.get("predicate") or {}).get("buildDefinition") or {}).get("resolvedDependencies")
    found: dict[str, Any] = {"link": link, "source_commit": None, "internal": {}}
    for dependency in dependencies or []:
        commit = (dependency.get("digest") or {}).get("gitCommit")
        name = str(dependency.get("name", ""))
        if name == "source":
            found["source_commit"] = commit
        elif name.startswith("internal:"):
            found["internal"][name[len("internal:"):]] = commit
    return found


def _changes(engine: Engine, went_back_to: str, release: str) -> dict[str, Any]:
    """``grocker diff WENT_BACK_TO RELEASE`` as JSON, with its text lines; ``{"error"}`` when not readable."""
    from setuptools_grocker.image.diff import diff_images

    try:
        diff = diff_images(engine, went_back_to, release)
    except GrockerError as exc:
        return {"error": exc.message}
    return {**diff.to_json(), "lines": diff.lines()}


def _version(engine: Engine, pinned: str) -> str | None:
    from setuptools_grocker.engine import labels_of

    try:
        attrs = engine.image_attrs(pinned)
    except GrockerError:
        return None
    return labels_of(attrs).get("org.opencontainers.image.version") if attrs else None


def task_logs(engine: Engine, service: str, lines: int = LOG_LINES) -> dict[str, Any]:
    """The last ``lines`` log lines of each task of ``service``, grouped by task. Call it before the service
    is removed (the logs go with it)."""
    try:
        raw = engine.service_logs(service, tail=lines)
    except GrockerError as exc:
        return {"service": service, "error": exc.message, "tasks": []}
    tasks: dict[str, list[str]] = {}
    for task, line in raw:
        tasks.setdefault(task[:12], []).append(line)
    return {"service": service, "tasks": [{"task": task, "lines": text} for task, text in tasks.items()]}


def windows_of(steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every judged window of a ship report's ``steps``, with its share: the metrics of both sides."""
    out = []
    for step in steps:
        for window in step.get("windows", []):
            out.append({"share": step.get("share"), **{k: window.get(k) for k in
                                                        ("verdict", "reason", "canary", "stable", "errors_p",
                                                         "latency_p", "source")}})
    return out


def collect(engine: Engine, *, service: str, trigger: str, reason: str, release: str, went_back_to: str | None,
            windows: Sequence[Mapping[str, Any]], logs: Mapping[str, Any], timeline: Sequence[Mapping[str, Any]],
            cache_home: Path | None = None, verdict: Mapping[str, Any] | None = None,
            at: datetime.datetime | None = None, outcome: str = "rolled-back") -> dict[str, Any]:
    """The incident report of ``release`` rolled back to ``went_back_to`` (``outcome`` ``alert``: not rolled
    back, ``went_back_to`` None), read from the engine and registry."""
    def side(pinned: str) -> dict[str, Any]:
        return {"pinned": pinned, "version": _version(engine, pinned),
                "provenance": provenance_of(engine, cache_home, pinned)}

    changes = _changes(engine, went_back_to, release) if went_back_to else {"error": "no release to compare with"}
    return build(service=service, trigger=trigger, reason=reason, release=side(release),
                 went_back_to=side(went_back_to) if went_back_to else None, changes=changes, windows=windows,
                 logs=logs, timeline=timeline, verdict=verdict, at=at, outcome=outcome)


# -- the document ---------------------------------------------------------------------------------------

def build(*, service: str, trigger: str, reason: str, release: Mapping[str, Any],
          went_back_to: Mapping[str, Any] | None, changes: Mapping[str, Any], windows: Sequence[Mapping[str, Any]],
          logs: Mapping[str, Any], timeline: Sequence[Mapping[str, Any]], verdict: Mapping[str, Any] | None = None,
          at: datetime.datetime | None = None, outcome: str = "rolled-back") -> dict[str, Any]:
    """The incident document (JSON-ready) from its parts; ``internal_commits`` is derived from the two sides'
    provenances (the libraries whose commit differs, or that only one side has)."""
    before = ((went_back_to or {}).get("provenance") or {}).get("internal") or {}
    after = (release.get("provenance") or {}).get("internal") or {}
    commits = [{"library": lib, "from": before.get(lib), "to": after.get(lib)}
               for lib in sorted(set(before) | set(after)) if before.get(lib) != after.get(lib)]
    return {
        "kind": KIND, "version": VERSION, "at": _utc(at).isoformat(timespec="seconds"),
        "service": service, "outcome": outcome, "trigger": trigger, "reason": reason,
        "release": dict(release), "went_back_to": dict(went_back_to) if went_back_to else None,
        "changes": dict(changes), "internal_commits": commits,
        "verdict": dict(verdict) if verdict else None,
        "windows": [dict(w) for w in windows],
        "logs": dict(logs),
        "timeline": [dict(e) for e in timeline],
    }


def _cell(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}{suffix}"
    return f"{value}{suffix}"


def _rate(figures: Mapping[str, Any]) -> str:
    """From the counts when there are (the figures' ``error_rate`` is rounded to 4 digits)."""
    requests, errors = figures.get("requests"), figures.get("errors")
    if isinstance(requests, int) and isinstance(errors, int) and requests > 0:
        return f"{errors / requests:.1%}"
    rate = figures.get("error_rate")
    return f"{rate:.1%}" if isinstance(rate, (int, float)) else "-"


def _p(value: Any) -> str:
    """A p-value as the judge rounded it (6 digits): 0 means below 1e-6."""
    if not isinstance(value, (int, float)):
        return "-"
    return "< 1e-06" if value == 0 else f"{value:.2g}"


def _short(pinned: str | None) -> str:
    return pinned or "-"


def _side_lines(title: str, side: Mapping[str, Any] | None) -> list[str]:
    if not side:
        return [f"- **{title}**: none"]
    version = f" (version {side['version']})" if side.get("version") else ""
    lines = [f"- **{title}**: `{_short(side.get('pinned'))}`{version}"]
    provenance = side.get("provenance") or {}
    if provenance.get("error"):
        lines.append(f"  - provenance: not recorded ({provenance['error']})")
    elif provenance:
        lines.append(f"  - provenance: `{provenance.get('link')}`; source commit "
                     f"`{provenance.get('source_commit') or 'unknown'}`")
        for lib, commit in sorted((provenance.get("internal") or {}).items()):
            lines.append(f"  - internal library {lib}: commit `{commit or 'unknown'}`")
    return lines


def markdown(report: Mapping[str, Any]) -> str:
    """The report for people: summary, releases, what changed, metrics, logs, timeline."""
    release = report.get("release") or {}
    alert = report.get("outcome") == "alert"
    what = "drifted, not rolled back (alert)" if alert else "rolled back"
    lines = [f"# Incident: {report['service']} {what}", "",
             f"{report['at']}: the release `{_short(release.get('pinned'))}` of **{report['service']}** "
             f"{'was not rolled back' if alert else 'was rolled back automatically'} ({report['trigger']}): "
             f"{report['reason']}.", "",
             "## Releases", ""]
    lines += _side_lines("drifting" if alert else "rolled back", release)
    lines += _side_lines("went back to", report.get("went_back_to"))
    lines += ["", "## What changed", ""]
    changes = report.get("changes") or {}
    if changes.get("error"):
        lines.append(f"Not known: {changes['error']}.")
    else:
        lines.append(f"`grocker diff` from the release it went back to (source: {changes.get('source', '?')}):")
        lines += ["", "```", *changes.get("lines", []), "```"]
    commits = report.get("internal_commits") or []
    if commits:
        lines += ["", "Internal libraries whose commit changed:", ""]
        lines += [f"- {c['library']}: `{c['from'] or 'absent'}` -> `{c['to'] or 'absent'}`" for c in commits]
    lines += ["", "## Metrics", ""]
    windows = report.get("windows") or []
    if windows:
        lines += ["| share | window | side | requests | errors | error rate | p50 ms | p95 ms | p99 ms |",
                  "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
        for w in windows:
            for label in ("canary", "stable"):
                figures = w.get(label) or {}
                lines.append(f"| {_cell(w.get('share'), '%')} | {w.get('verdict') or '-'} | {label} | "
                             f"{_cell(figures.get('requests'))} | {_cell(figures.get('errors'))} | "
                             f"{_rate(figures)} | {_cell(figures.get('median_ms'))} | "
                             f"{_cell(figures.get('p95_ms'))} | {_cell(figures.get('p99_ms'))} |")
        verdict = report.get("verdict") or {}
        if verdict.get("errors_p") is not None or verdict.get("latency_p") is not None:
            lines += ["", f"Deciding window: errors p = {_p(verdict.get('errors_p'))}, latency p = "
                      f"{_p(verdict.get('latency_p'))} ({verdict.get('latency_method') or '-'} rank test)."]
    else:
        lines.append("No window was judged.")
    logs = report.get("logs") or {}
    lines += ["", f"## Last log lines of {logs.get('service', 'the failing tasks')}", ""]
    if logs.get("error"):
        lines.append(f"Not read: {logs['error']}.")
    elif not logs.get("tasks"):
        lines.append("No log line.")
    for task in logs.get("tasks") or []:
        lines += [f"Task `{task['task']}`:", "", "```", *task["lines"], "```", ""]
    lines += ["", "## Timeline", ""]
    lines += [f"- {e.get('at', '')} {e.get('event', '')}"
              + "".join(f" {k}={v}" for k, v in e.items() if k not in ("at", "event")) for e in report["timeline"]]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def write(report: Mapping[str, Any], paths: Mapping[str, Path]) -> None:
    """Both files, each written atomically (a reader sees a whole file or none)."""
    write_json_atomic(paths["json"], report)
    write_atomic(paths["markdown"], markdown(report))
