"""``grocker gc``: remove what grocker made and no longer needs.

What can go (the rules are :func:`select_images` and :func:`select_caches`, pure; :func:`collect`
applies them to the engine and the cache home):

* **runtime images** without a tag: *superseded* (their record says ``built``: a later build
  took their tags) and *failed* (``failed``, or ``untested`` for longer than
  ``STALE_BUILD`` seconds: a build that was killed). An image with no record in this cache
  home (another user's or another cache home's; maybe a build in progress) goes only with
  ``--untracked``. A tagged image always stays: a tag is a user's name for it;
* **root and compiler images** (``grocker/root:*``, ``grocker/compiler:*``) that no kept image
  is built on (layers), that no record of a kept image names, and that no record of the last
  ``keep_days`` names (the next build would make them again, slowly);
* with ``--base-images``, the base images ``grocker bootstrap-base`` made that no kept image is
  built on;
* **caches** beyond ``--max-cache-size``, oldest first: pip and uv caches (one per trust scope), the
  blob cache, the wheelhouses of the projects the records name, the bytecode cache.

Never: an image without grocker's owner label (another tool's), an image a container uses
(running or stopped, a build's lease included), an image whose record names a release (its
document refers to it by digest). With ``project``, only that project's images and caches (its
records, its pip cache, its wheelhouses): nothing shared with other projects is considered.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from setuptools_grocker.engine import OWNER_LABEL, Engine, parse_engine_time
from setuptools_grocker.errors import ConfigError
from setuptools_grocker.image.recipes import CURRENT_SUFFIX
from setuptools_grocker.image.records import Record, load_all, parse_time, records_dir

__all__ = ["Candidate", "CacheEntry", "GcOptions", "GcResult", "Removal", "collect", "parse_size", "remove",
           "select_caches", "select_images"]

OWNER_VALUE = "setuptools-grocker"
BOOTSTRAP_LABEL = "io.grocker.bootstrap"
KEY_LABEL = "io.grocker.key"
_ORDER = ["runtime image", "untagged image", "compiler image", "root image", "base image"]
#: An ``untested`` image older than this (seconds) belongs to a build that did not finish.
STALE_BUILD = 3600.0

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in ``500M``, ``10G``, ``1.5GiB``, ``2048`` (units are powers of 1024)."""
    found = _SIZE.match(text)
    if not found:
        raise ConfigError(f"size {text!r} is not a number of bytes with an optional unit",
                          "write it like 500M, 10G or 1.5GiB (K, M, G, T: powers of 1024)")
    unit = found.group(2).lower()
    factor = 1024 ** (1 + "kmgt".index(unit)) if unit else 1
    return int(float(found.group(1)) * factor)


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


@dataclass(frozen=True)
class GcOptions:
    """What ``grocker gc`` may remove (see the module's docstring)."""

    max_cache_size: int | None = None
    base_images: bool = False
    untracked: bool = False
    #: Only the images and caches of the project (or workspace) in this directory.
    project: Path | None = None
    keep_days: float = 14.0


@dataclass(frozen=True)
class Candidate:
    """One image as gc sees it."""

    id: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]
    layers: tuple[str, ...]
    size: int
    #: When the engine made it (seconds since the epoch): real for root and compiler images,
    #: the epoch for runtime images (reproducible).
    created: float = 0.0

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Candidate:
        return cls(id=str(attrs["Id"]), tags=tuple(t for t in attrs.get("RepoTags") or () if t != "<none>:<none>"),
                   labels=dict((attrs.get("Config") or {}).get("Labels") or {}),
                   layers=tuple((attrs.get("RootFS") or {}).get("Layers") or ()),
                   size=int(attrs.get("UniqueSize", attrs.get("Size")) or 0),
                   created=parse_engine_time(str(attrs.get("Created") or "")) or 0.0)

    @property
    def kind(self) -> str:
        if KEY_LABEL in self.labels:
            return "runtime"
        if any(t.startswith("grocker/compiler:") for t in self.tags):
            return "compiler"
        if any(t.startswith("grocker/root:") for t in self.tags):
            return "root"
        if BOOTSTRAP_LABEL in self.labels:
            return "base"
        return "other"

    def built_on(self, other: Candidate) -> bool:
        return self.id != other.id and len(other.layers) <= len(self.layers) and \
            self.layers[:len(other.layers)] == other.layers and bool(other.layers)


@dataclass(frozen=True)
class Removal:
    """Something gc removes (or would, with ``--dry-run``)."""

    kind: str
    target: str
    reason: str
    size: int
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "name": self.name, "reason": self.reason,
                "bytes": self.size}


@dataclass(frozen=True)
class CacheEntry:
    """One removable unit of a cache: a pip cache scope, a blob, a wheelhouse entry."""

    kind: str
    path: Path
    size: int
    mtime: float


@dataclass
class GcResult:
    removals: list[Removal] = field(default_factory=list)
    #: What could not be removed, and why (the engine's answer).
    failed: list[tuple[Removal, str]] = field(default_factory=list)
    dry_run: bool = False

    @property
    def freed(self) -> int:
        failed = {id(r) for r, _ in self.failed}
        return sum(r.size for r in self.removals if id(r) not in failed)

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "bytes": self.freed, "removed": [r.to_json() for r in self.removals
                                                                         if all(r is not f for f, _ in self.failed)],
                "failed": [{**r.to_json(), "error": why} for r, why in self.failed]}


def _in_project(record: Record, project: Path) -> bool:
    where = str(project.resolve())
    return where in (record.project, record.workspace)


def select_images(images: Iterable[Candidate], records: Iterable[Record], in_use: Iterable[str],
                  options: GcOptions, now: float | None = None, released: Iterable[str] = ()) -> list[Removal]:
    """Which images to remove, in an order the engine accepts (runtime, untagged, compiler, root, base)."""
    now = time.time() if now is None else now
    grocker = [i for i in images if i.labels.get(OWNER_LABEL) == OWNER_VALUE]
    by_id = {r.image_id: r for r in records}
    busy = set(in_use)
    digests = set(released)
    busy |= {r.image_id for r in by_id.values() if r.digest and r.digest in digests}
    if options.project is not None:
        scope = {r.image_id for r in by_id.values() if _in_project(r, options.project)}
        grocker = [i for i in grocker if i.id in scope and i.kind == "runtime"]
    removals: list[Removal] = []
    kept: list[Candidate] = []
    for image in (i for i in grocker if i.kind == "runtime"):
        reason = _runtime_reason(image, by_id.get(image.id), busy, options, now)
        if reason:
            record = by_id.get(image.id)
            name = f"{record.name} {record.version}" if record and record.name else image.labels.get(
                "org.opencontainers.image.title", "")
            removals.append(Removal("runtime image", image.id, reason, image.size, name))
        else:
            kept.append(image)
    # The refreshed root builds use now (``grocker/root:<recipe key>-current``, refresh.py) stays, and so does
    # the recipe's root it is built on (the next refresh starts from it).
    kept += [i for i in grocker if i.kind == "root" and any(t.endswith(CURRENT_SUFFIX) for t in i.tags)]
    kept_ids = {i.id for i in kept}
    recent = {r.image_id for r in by_id.values() if now - r.last_used < options.keep_days * 86400}
    named = {n for r in by_id.values() if r.image_id in kept_ids or r.image_id in recent
             for n in (r.compiler_image, r.root_image, r.base_image) if n}
    for kind in ("compiler", "root", "base"):
        if kind == "base" and not options.base_images:
            break
        for image in (i for i in grocker if i.kind == kind):
            # Made in the last hour: a build (maybe another user's, with records elsewhere) is about to use it.
            fresh = now - image.created < STALE_BUILD
            if image.id in kept_ids:
                continue
            if fresh or image.id in busy or image.id in named or any(k.built_on(image) for k in kept):
                kept.append(image)
                continue
            removals.append(Removal(f"{kind} image", image.id, "no kept image uses it", image.size,
                                    ", ".join(image.tags)))
    if options.untracked:
        # Untagged images of grocker's recipes (a root or compiler image whose tag a concurrent build of the
        # same recipe took) that nothing is built on.
        for image in (i for i in grocker if i.kind == "other" and not i.tags):
            if image.id not in busy and now - image.created >= STALE_BUILD and \
                    not any(k.built_on(image) for k in kept):
                removals.append(Removal("untagged image", image.id, "untracked (no tag, no build record)",
                                        image.size))
    # Children before their parents: the engine refuses to remove an image another is built on.
    return sorted(removals, key=lambda r: _ORDER.index(r.kind))


def _runtime_reason(image: Candidate, record: Record | None, busy: set[str], options: GcOptions,
                    now: float) -> str | None:
    """Why a runtime image goes, or None when it stays."""
    if image.tags or image.id in busy:
        return None
    if record is None:
        return "untracked (no build record here)" if options.untracked else None
    if record.releases:
        return None
    if record.status == "failed":
        return "failed its smoke test"
    if record.status == "built":
        return "superseded (its tags moved to a newer build)"
    if now - parse_time(record.when) > STALE_BUILD:
        return "its build did not finish"
    return None  # a build in progress


def select_caches(entries: Sequence[CacheEntry], max_size: int) -> list[Removal]:
    """The oldest entries to remove so that what stays is at most ``max_size`` bytes."""
    total = sum(e.size for e in entries)
    removals = []
    for entry in sorted(entries, key=lambda e: e.mtime):
        if total <= max_size:
            break
        removals.append(Removal(entry.kind, str(entry.path), "cache over --max-cache-size", entry.size))
        total -= entry.size
    return removals


def _measure(path: Path) -> tuple[int, float]:
    """Bytes and newest modification time under ``path`` (a file or a directory)."""
    if path.is_file():
        st = path.stat()
        return st.st_size, st.st_mtime
    size, newest = 0, path.stat().st_mtime if path.exists() else 0.0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            size += st.st_size
            newest = max(newest, st.st_mtime)
    return size, newest


def cache_entries(home: Path, records: Iterable[Record], project: Path | None = None) -> list[CacheEntry]:
    """The removable units of grocker's caches (with ``project``: that project's own only)."""
    from setuptools_grocker.pipeline.caches import pip_cache_dir, uv_dir

    units: list[tuple[str, Path]] = []
    if project is None:
        units += [("pip cache", p) for p in sorted((home / "pip").glob("*")) if p.is_dir()]
        units += [("uv cache", p) for p in sorted((home / "uv").glob("*")) if p.is_dir()]
        units += [("blob", p) for p in sorted((home / "blobs").glob("*")) if p.is_file() and not p.name.startswith(".")]
        # Not the staging directories (".staging-*") of builds that are compiling right now.
        units += [("bytecode cache", p) for p in sorted((home / "bytecode").glob("*.tar"))
                  if not p.name.startswith(".")]
    else:
        units.append(("pip cache", pip_cache_dir({"GROCKER_CACHE_HOME": str(home)}, project)))
        units.append(("uv cache", uv_dir({"GROCKER_CACHE_HOME": str(home)}, project)))
    states = {Path(r.state_dir) for r in records if r.state_dir and (project is None or _in_project(r, project))}
    for state in sorted(states):
        units += [("wheelhouse", p) for p in sorted((state / "wheelhouse").glob("*"))
                  if p.is_dir() and not p.name.startswith(".")]
        units += [("wheelhouse", p) for p in sorted((state / "wheels").glob("*/*"))
                  if p.is_dir() and not p.name.startswith(".")]
        # A single project's are build-env/ID, a workspace member's build-env/MEMBER/ID.
        envs = [*(state / "build-env").glob("*"), *(state / "build-env").glob("*/*")]
        units += [("build environment", p) for p in sorted(envs) if (p / "ready").is_file()]
    entries = []
    for kind, path in units:
        if path.exists():
            size, mtime = _measure(path)
            entries.append(CacheEntry(kind, path, size, mtime))
    return entries


def released_digests(records: Iterable[Record]) -> set[str]:
    """The digests the release documents of the recorded workspaces name (``.grocker/releases/*.json``)."""
    digests: set[str] = set()
    for state in {Path(r.state_dir) for r in records if r.state_dir and r.workspace}:
        for path in sorted((state / "releases").glob("*.json")):
            try:
                document = json.loads(path.read_text())
                apps = document.get("applications") or {}
                digests |= {str(a["digest"]) for a in apps.values() if isinstance(a, dict) and a.get("digest")}
            except (OSError, ValueError, AttributeError):
                continue
    return digests


def remove_warm_containers(engine: Engine, project: Path | None = None, *, dry_run: bool = False) -> list[str]:
    """Remove the warm compile containers (pipeline/warm.py): all of them, or ``project``'s; their names.

    First: a warm container keeps its compiler image in use."""
    from setuptools_grocker.engine.ownership import WARM_SCOPE_LABEL
    from setuptools_grocker.pipeline.warm import scope_label

    names = []
    for c in engine.warm_containers():
        if project is not None and (c.get("Labels") or {}).get(WARM_SCOPE_LABEL) != scope_label(project):
            continue
        names.append(((c.get("Names") or [""])[0]).lstrip("/") or str(c["Id"])[:12])
        if not dry_run:
            engine.remove_container(str(c["Id"]))
    return names


def collect(engine: Engine, home: Path, options: GcOptions) -> list[Removal]:
    """What gc would remove now, images first (in removal order), then caches."""
    records = load_all(home)
    images = [Candidate.from_attrs(a) for a in engine.labelled_images(f"{OWNER_LABEL}={OWNER_VALUE}")]
    removals = select_images(images, records, engine.images_of_containers(), options,
                             released=released_digests(records))
    if options.max_cache_size is not None:
        removals += select_caches(cache_entries(home, records, options.project), options.max_cache_size)
    return removals


def remove(engine: Engine, removals: Sequence[Removal], *, dry_run: bool = False) -> GcResult:
    """Remove what :func:`collect` chose (nothing with ``dry_run``); the engine refuses what became used."""
    result = GcResult(removals=list(removals), dry_run=dry_run)
    if dry_run:
        return result
    for removal in removals:
        if removal.kind.endswith("image"):
            # A tagged image (root, compiler, base) by its tags: by ID the engine refuses one with several.
            why = None
            for ref in [t for t in removal.name.split(", ") if t] if removal.kind != "runtime image" else []:
                why = why or engine.remove_image(ref)
            if removal.kind == "runtime image" or (why is None and engine.image_id(removal.target)):
                why = engine.remove_image(removal.target)
            if why is not None:
                result.failed.append((removal, why))
            continue
        path = Path(removal.target)
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            result.failed.append((removal, str(exc)))
    return result


def listing(engine: Engine, home: Path) -> list[dict[str, Any]]:
    """``grocker images``: every recorded image, newest first, with what the engine says of it now."""
    rows = []
    for record in reversed(load_all(home)):
        attrs = engine.image_attrs(record.image_id)
        rows.append({**record.to_json(), "present": attrs is not None,
                     "current_tags": [t for t in (attrs or {}).get("RepoTags") or () if t != "<none>:<none>"],
                     "size": int((attrs or {}).get("Size") or 0) or None})
    return rows


def records_location(home: Path) -> Path:
    return records_dir(home)
