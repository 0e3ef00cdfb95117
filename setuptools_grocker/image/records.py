"""Build records: when, and from what, each runtime image was built.

An image keeps ``created`` = the epoch (its ID depends on its inputs only), so the engine cannot
say when it was built. Grocker writes one record per runtime image it assembles, at
``CACHE_HOME/records/<image id>.json``: when, the project's name, version and directory, the
cache key, the git revision, the tags it was given, its status and the IDs of the images it
was made from. ``grocker images`` lists them; ``grocker gc`` (:mod:`.gc`) decides with them.

Statuses: ``untested`` (assembled, smoke test not yet passed: a build in progress, or one that
was killed), ``built`` (smoke-tested and tagged) and ``failed`` (its smoke test or a later
stage failed; it was never tagged). A record is written atomically (``fs.py``); the last
writer wins, which is right for one image ID (same inputs, same image).
"""
from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from setuptools_grocker.fs import write_atomic

if TYPE_CHECKING:
    from setuptools_grocker.config import Config
    from setuptools_grocker.engine import Engine
    from setuptools_grocker.image.recipes import BaseImages

__all__ = ["Record", "find", "find_provenance", "load_all", "mark_released", "now", "provenance_path",
           "record_assembled", "records_dir", "save", "update"]

STATUSES = ("untested", "built", "failed")


def now() -> str:
    """The current time, UTC, as ISO 8601 with seconds (what records store)."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def parse_time(text: str) -> float:
    """Seconds since the epoch of a record's time (0 when unreadable)."""
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return 0.0


@dataclass
class Record:
    """What grocker knows of one runtime image it built."""

    image_id: str
    when: str
    status: str
    name: str | None = None
    version: str | None = None
    #: The project's directory, and its state directory (``.grocker``: state, wheelhouses).
    project: str | None = None
    state_dir: str | None = None
    #: The cache key the image was built for (``io.grocker.key``).
    key: str | None = None
    revision: str | None = None
    tags: list[str] = field(default_factory=list)
    base_image: str | None = None
    root_image: str | None = None
    compiler_image: str | None = None
    #: The registry digest it was pushed as, and the releases whose documents name that digest.
    digest: str | None = None
    releases: list[str] = field(default_factory=list)
    #: The last time a build used it (a cached build, or a retag).
    used: str | None = None
    #: The workspace it is a member of (its root), if any.
    workspace: str | None = None

    @property
    def last_used(self) -> float:
        return max(parse_time(self.when), parse_time(self.used or ""))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record | None:
        if not isinstance(data, dict) or not isinstance(data.get("image_id"), str):
            return None
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("when", "")
        values.setdefault("status", "untested")
        try:
            return cls(**values)
        except TypeError:
            return None


def records_dir(home: Path) -> Path:
    return home / "records"


def _path(home: Path, image_id: str) -> Path:
    return records_dir(home) / f"{image_id.split(':')[-1]}.json"


def provenance_path(home: Path, image_id: str) -> Path:
    """Where the provenance of ``image_id`` is kept (pipeline/provenance.py writes it, the push attaches it)."""
    return home / "provenance" / f"{image_id.split(':')[-1]}.json"


def find_provenance(home: Path, image_id: str) -> dict[str, Any] | None:
    """The provenance statement recorded for ``image_id`` in ``home``, or None."""
    try:
        data = json.loads(provenance_path(home, image_id).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def save(home: Path, record: Record) -> None:
    """Write ``record`` (atomically) as ``CACHE_HOME/records/<image id>.json``."""
    path = _path(home, record.image_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record.to_json(), indent=2) + "\n")


def find(home: Path, image_id: str) -> Record | None:
    try:
        return Record.from_json(json.loads(_path(home, image_id).read_text()))
    except (OSError, ValueError):
        return None


def update(home: Path, image_id: str, **changes: Any) -> Record | None:
    """Change fields of the record of ``image_id`` (tags are merged); None when there is none."""
    record = find(home, image_id)
    if record is None:
        return None
    for name, value in changes.items():
        if name == "tags":
            value = list(dict.fromkeys([*record.tags, *value]))
        setattr(record, name, value)
    save(home, record)
    return record


def load_all(home: Path) -> list[Record]:
    """Every readable record of ``home``, oldest first (unreadable files are skipped)."""
    found = []
    directory = records_dir(home)
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            record = Record.from_json(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
        if record is not None:
            found.append(record)
    return sorted(found, key=lambda r: parse_time(r.when))


def mark_released(home: Path, digests: Iterable[str | None], release: str) -> int:
    """Add ``release`` to the records of the images pushed as ``digests``; return how many."""
    wanted = {d for d in digests if d}
    marked = 0
    for record in load_all(home):
        if record.digest in wanted and release not in record.releases:
            record.releases.append(release)
            save(home, record)
            marked += 1
    return marked


def record_assembled(engine: Engine, home: Path, image_id: str, config: Config, *, images: BaseImages, key: str,
                     name: str | None, version: str | None, revision: str | None, state_dir: Path,
                     workspace: Path | None = None) -> None:
    """Record a runtime image just assembled (``untested``): a build of it is in progress."""
    previous = find(home, image_id)
    save(home, Record(
        image_id=image_id, when=now(), status="untested" if previous is None or previous.status != "built" else "built",
        name=name, version=version, project=str(config.project_dir), state_dir=str(state_dir), key=key,
        revision=revision, tags=previous.tags if previous else [], base_image=images.id_of(engine, config.base_image),
        root_image=images.id_of(engine, images.root), compiler_image=images.id_of(engine, images.compiler),
        digest=previous.digest if previous else None, releases=previous.releases if previous else [],
        workspace=str(workspace) if workspace else None))
