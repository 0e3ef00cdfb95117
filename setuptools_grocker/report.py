"""The JSON report every build frontend can write (``--report FILE``).

Contract (extra keys are allowed, these stay)::

    {"generator": "setuptools-grocker VERSION", "ok": bool, "seconds": float,
     "projects": [{"name", "version", "kind", "status", "wheel", "image", "image_id", "digest",
                   "seconds", "depends_on", "error"}]}
"""
from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from setuptools_grocker import __version__
from setuptools_grocker.errors import GrockerError, from_os_error
from setuptools_grocker.fs import write_atomic
from setuptools_grocker.progress import redact

#: The first key of every JSON document grocker writes for people (reports, plans): the source scan
#: (pipeline/project.py) never counts a JSON file that starts with it as the project's source.
GENERATOR_KEY = "generator"
GENERATOR = f"setuptools-grocker {__version__}"


@dataclass
class ProjectResult:
    name: str
    version: str | None = None
    kind: str = "application"
    status: str = "failed"
    wheel: str | None = None
    image: str | None = None
    image_id: str | None = None
    digest: str | None = None
    seconds: float = 0.0
    depends_on: list[str] = field(default_factory=list)
    error: str | None = None
    # Extras beyond the contract.
    tags: list[str] = field(default_factory=list)
    distributions: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    containers_started: int = 0
    key: str | None = None
    size: int | None = None
    exit_code: int = 0
    reason: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    #: Bytes uploaded to the registry by the push (blobs it already had are not sent).
    pushed_bytes: int | None = None
    #: A workspace library's tests: "passed", "failed", "no tests" (the run collected none), "not found"
    #: (none detected, not run); None for an application or a library whose wheel was fetched.
    tests: str | None = None
    #: Seconds this run spent on the library's tests (their environment and command); None when they did not run.
    test_seconds: float | None = None
    #: How an application's compile got its dependency closure: "resolved", "reused" (copied from the
    #: previous compile, the project's metadata unchanged) or "locked" (as its pylock.toml pins it, no
    #: resolution); None when nothing was compiled.
    closure: str | None = None
    #: Where the root and compiler images came from: ``local`` (in the engine), ``pulled`` (the shared
    #: cache, ``build-cache``) or ``built``; empty when the build needed neither.
    base_images: dict[str, str] = field(default_factory=dict)

    def fail(self, exc: GrockerError) -> None:
        """Record a typed error as this project's failure."""
        self.status = "failed"
        self.error = exc.one_line()  # redacted: reports are kept and shown (Buildbot properties, logs)
        self.exit_code = exc.exit_code

    @contextmanager
    def failures_recorded(self, write: Callable[[str], None]) -> Iterator[None]:
        """Turn a typed error (or a full disk) raised inside into this project's failure; ``write`` its details.

        Any other exception is a bug and goes up.
        """
        try:
            yield
        except GrockerError as exc:
            self.fail(exc)
            if exc.details:
                write(exc.details)
        except OSError as exc:
            typed = from_os_error(exc)
            if typed is None:
                raise
            self.fail(typed)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["seconds"] = round(self.seconds, 3)
        data["stages"] = {k: round(v, 3) for k, v in self.stages.items()}
        return data


@dataclass
class Report:
    projects: list[ProjectResult] = field(default_factory=list)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    #: A failure of the run as a whole (e.g. the release), beside the projects' own.
    error: GrockerError | None = None

    @property
    def ok(self) -> bool:
        return (self.error is None and bool(self.projects)
                and all(p.status in ("built", "cached") for p in self.projects))

    def to_json(self) -> dict[str, Any]:
        """The report as written and printed; every string redacted (errors may quote URLs and output)."""
        return redacted({
            GENERATOR_KEY: GENERATOR,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "projects": [p.to_json() for p in self.projects],
            **({"error": self.error.one_line()} if self.error else {}),
            **self.extra,
        })

    def write(self, path: Path) -> None:
        """Write atomically, so a reader never sees half a report."""
        write_json_atomic(path, self.to_json())


def redacted(data: Any) -> Any:
    """``data`` with credentials redacted from every string in it."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {k: redacted(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redacted(v) for v in data]
    return data


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as indented JSON in ``path`` (its directory made), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def summary_table(report: Report) -> str:
    """A plain-text table for the end of a build."""
    rows = [("project", "version", "status", "seconds", "image")]
    for p in report.projects:
        what = p.error if p.status in ("failed", "skipped") else (p.image or (Path(p.wheel).name if p.wheel else ""))
        status = f"{p.status} ({p.reason})" if p.status == "cached" and p.reason else p.status
        rows.append((p.name, p.version or "-", status, f"{p.seconds:.1f}", what or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(widths[i]) if i < 4 else c for i, c in enumerate(r)) for r in rows]
    lines.append(f"{'ok' if report.ok else 'FAILED'} in {report.seconds:.1f}s")
    return "\n".join(lines)
