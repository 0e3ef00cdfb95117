"""One project on disk: is it a Python project, which files are its source, what is its hash.

The source of a project is its version-controlled files when it lives in a git work tree
(tracked plus untracked-but-not-ignored), otherwise the files an sdist would take: every
file except VCS folders, caches, virtualenvs and build outputs. Build outputs never enter
the hash, so building does not invalidate the cache; neither does grocker's own output
(``.grocker/``, and any JSON file whose first key is the report's ``"generator":
"setuptools-grocker ..."``), nor what the project's ``.grockerignore`` (gitignore syntax)
names, in a git work tree or not.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pathspec
from packaging.utils import canonicalize_name

from setuptools_grocker.errors import GrockerError, ProjectError
from setuptools_grocker.fs import write_atomic

EXCLUDED_DIRS = {
    ".git", ".hg", ".svn", ".grocker", ".tox", ".nox", ".venv", "venv", "__pycache__", "build", "dist",
    ".pytest_cache", ".mypy_cache", ".ruff_cache", ".eggs", "node_modules",
}
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".egg-info", ".so.tmp")
#: The project's own ignore file: gitignore syntax, paths relative to the project root.
IGNORE_FILE = ".grockerignore"
# The start of a JSON document grocker wrote (report.GENERATOR_KEY first, see report.py).
_GENERATED = re.compile(rb'\A\s*\{\s*"generator"\s*:\s*"setuptools-grocker[ "]')


def check_python_project(path: Path) -> None:
    if not path.exists():
        raise ProjectError(f"{path} does not exist", "give the directory of a Python project")
    if not path.is_dir():
        raise ProjectError(f"{path} is not a directory", "give the directory of a Python project")
    if not ((path / "pyproject.toml").is_file() or (path / "setup.py").is_file()):
        raise ProjectError(
            f"{path} is not a Python project (no pyproject.toml or setup.py)",
            "run grocker in a project directory, or pass its path: grocker build DIR",
        )


def source_files(root: Path) -> list[str]:
    """Relative POSIX paths of the project's source files, sorted."""
    ignore = ignore_spec(root)
    files = _git_files(root)
    if files is None and (root / "PKG-INFO").is_file():
        # An unpacked sdist: its *.egg-info (SOURCES.txt) is source, setuptools needs it to
        # find package data when no VCS is there.
        found = [f for f in _walk_files(root, ignore, keep_egg_info=True)
                 if not f.endswith((".pyc", ".pyo")) and not f.startswith(".grocker/")
                 and "/__pycache__/" not in f"/{f}"]
        return sorted(f for f in found if not ignored(root, f, ignore))
    if files is None:
        files = _walk_files(root, ignore)
    return sorted(f for f in files if not _excluded(f) and not ignored(root, f, ignore))


def ignore_spec(root: Path) -> pathspec.PathSpec | None:
    """The patterns of ``root/.grockerignore`` (gitignore syntax), if there is one."""
    path = root / IGNORE_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"cannot read {path}: {exc}", f"make {IGNORE_FILE} a readable UTF-8 text file") from exc
    return pathspec.GitIgnoreSpec.from_lines(lines)


def ignored(root: Path, rel: str, spec: pathspec.PathSpec | None = None) -> bool:
    """Is ``rel`` (a file under ``root``) left out of the source: named by ``.grockerignore``, or grocker's output?"""
    if spec is not None and spec.match_file(rel):
        return True
    return rel.endswith(".json") and is_grocker_output(root / rel)


def is_grocker_output(path: Path) -> bool:
    """Is ``path`` a JSON document grocker wrote (a report, a plan): its first key is ``"generator"``?"""
    try:
        with path.open("rb") as fh:
            head = fh.read(256)
    except OSError:
        return False
    return _GENERATED.match(head.lstrip(b"\xef\xbb\xbf")) is not None


def _git_files(root: Path) -> list[str] | None:
    try:
        inside = subprocess.run(["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
                                capture_output=True, text=True, timeout=30)
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return None
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."],
            capture_output=True, timeout=60, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = [n for n in out.decode("utf-8", "surrogateescape").split("\0") if n]
    # Deleted-but-tracked files are listed by --cached; keep what exists.
    return [n for n in names if (root / n).is_file()]


def _walk_files(root: Path, ignore: pathspec.PathSpec | None = None, keep_egg_info: bool = False) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        # An ignored directory is not entered (as git does: a file inside cannot be re-included).
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS
                             and (keep_egg_info or not d.endswith(".egg-info"))
                             and not (ignore is not None and ignore.match_file((rel / d).as_posix() + "/")))
        for name in filenames:
            found.append((rel / name).as_posix())
    return found


def _excluded(rel: str) -> bool:
    parts = rel.split("/")
    return any(p in EXCLUDED_DIRS or p.endswith(".egg-info") for p in parts[:-1]) or rel.endswith(EXCLUDED_SUFFIXES)


def hash_files(root: Path, files: list[str]) -> str:
    """A hash of names, executable bits and contents of ``files`` under ``root``."""
    h = hashlib.sha256()
    for rel in files:
        path = root / rel
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        h.update(b"x" if os.access(path, os.X_OK) else b"-")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Source:
    """The files of one project and their hash."""

    root: Path
    files: tuple[str, ...]
    digest: str

    @classmethod
    def scan(cls, root: Path) -> Source:
        check_python_project(root)
        files = source_files(root)
        return cls(root, tuple(files), hash_files(root, files))


def git_revision(root: Path) -> str | None:
    """The commit of the work tree holding ``root`` (with ``-dirty`` when modified), if any."""
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=30)
        if rev.returncode != 0:
            return None
        # Untracked files one by one: a new directory holding only a report or ignored files is not a change.
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-z", "--untracked-files=all",
                                "--", "."], capture_output=True, text=True, timeout=60)
        # Our own state, reports, build outputs and what .grockerignore names do not make a tree dirty.
        # Porcelain paths are relative to the repository's top, .grockerignore's to the project.
        prefix = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-prefix"], capture_output=True,
                                text=True, timeout=30).stdout.strip()
        ignore = ignore_spec(root)
        changed = [entry[3:] for entry in dirty.stdout.split("\0") if len(entry) > 3]
        modified = [path for path in changed if not _excluded(path.rstrip("/") + "/x")
                    and not _ignored_change(root, path[len(prefix):] if path.startswith(prefix) else path, ignore)]
        return rev.stdout.strip() + ("-dirty" if modified else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _ignored_change(root: Path, rel: str, ignore: pathspec.PathSpec | None) -> bool:
    if rel.endswith("/"):  # a whole untracked directory
        return ignore is not None and ignore.match_file(rel)
    return ignored(root, rel, ignore)


def git_commit_time(root: Path) -> int | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%ct"], capture_output=True,
                             text=True, timeout=30)
        return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def static_metadata(root: Path) -> dict[str, Any] | None:
    """``[project]`` of pyproject.toml when name, version and dependencies are all static."""
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return None
    from setuptools_grocker.config import _load_toml

    project = _load_toml(pyproject).get("project")
    if not isinstance(project, dict) or "name" not in project:
        return None
    dynamic = set(project.get("dynamic", []))
    if dynamic & {"version", "dependencies", "optional-dependencies"}:
        return None
    return project


def project_label(root: Path) -> tuple[str, str | None]:
    """The name and version of a project as its files state them (no build backend runs), for messages:
    ``[project]`` of pyproject.toml, else ``[metadata]`` of setup.cfg, else the directory's name."""
    import configparser

    name, version = None, None
    try:
        project = static_metadata(root) or {}
    except GrockerError:
        project = {}
    if isinstance(project.get("name"), str):
        name = project["name"]
        version = project.get("version") if isinstance(project.get("version"), str) else None
    elif (root / "setup.cfg").is_file():
        parser = configparser.ConfigParser(interpolation=None)
        with contextlib.suppress(configparser.Error, OSError, UnicodeDecodeError):
            parser.read(root / "setup.cfg", encoding="utf-8")
            name = parser.get("metadata", "name", fallback=None)
            version = parser.get("metadata", "version", fallback=None)
    if version and ":" in version:  # attr: / file: are computed at build time
        version = None
    return (name or root.name), version


def describe_project(root: Path, name: str, version: str | None, base: Path | None = None) -> str:
    """``name version (directory)`` for messages about a failed project or member."""
    where = root
    if base is not None:
        with contextlib.suppress(ValueError):
            where = root.relative_to(base)
    return f"{name}{' ' + version if version else ''} ({where})"


def prepare_metadata(path: Path) -> dict[str, Any]:
    """PEP 517 metadata preparation, with the build backend of this interpreter when it has it."""
    import build.util

    errors = []
    for isolated in (False, True):
        try:
            msg = build.util.project_wheel_metadata(str(path), isolated=isolated)
            break
        except Exception as exc:  # the backend raises anything; we report it with the member named
            errors.append(exc)
    else:
        raise ProjectError(f"cannot prepare the metadata of {path}: {_last_line(errors[-1])}",
                           "check that `python -m build --wheel` works in that project")
    return metadata_fields(msg["Name"], msg["Version"], list(msg.get_all("Requires-Dist") or []),
                           list(msg.get_all("Provides-Extra") or []))


def metadata_fields(name: str, version: str, requires: list[str], extras: list[str]) -> dict[str, Any]:
    """Name, version, unconditional requirements and requirements per extra, from core metadata."""
    plain = [r for r in requires if "extra ==" not in r.replace("'", '"').replace('extra=="', 'extra == "')]
    optional: dict[str, list[str]] = {}
    for extra in extras:
        optional[canonicalize_name(extra)] = [r for r in requires if r not in plain
                                           and _marker_matches(r, canonicalize_name(extra))]
    return {"name": name, "version": version, "requires": plain, "optional": optional}


def _last_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _marker_matches(requirement: str, extra: str) -> bool:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(requirement)
    except InvalidRequirement:
        return False
    return req.marker is not None and req.marker.evaluate({"extra": extra})


SCM_BACKENDS = ("setuptools_scm", "setuptools-scm", "hatch-vcs", "hatch_vcs", "versioningit", "pdm-backend")


def uses_scm_version(root: Path) -> bool:
    """Does the project take its version from git through its build backend (setuptools-scm...)?"""
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or (root / "PKG-INFO").is_file():
        return False
    from setuptools_grocker.config import _load_toml

    requires = " ".join(_load_toml(pyproject).get("build-system", {}).get("requires", [])).lower()
    return any(b in requires for b in SCM_BACKENDS)


def scm_version(root: Path, digest: str, cache_dir: Path) -> str | None:
    """The version a VCS-versioning backend (setuptools-scm, hatch-vcs...) computes from git.

    The compile container gets a copy of the source without ``.git``, where such backends
    cannot find a version; the version computed here is passed as
    ``SETUPTOOLS_SCM_PRETEND_VERSION``. Cached by source hash and commit.
    """
    if not uses_scm_version(root):
        return None
    revision = git_revision(root)
    if revision is None:
        return None
    cached = cache_dir / f"scm-{digest[:16]}-{revision}.txt"
    if cached.is_file():
        return cached.read_text().strip() or None
    version = str(prepare_metadata(root)["version"])
    cached.parent.mkdir(parents=True, exist_ok=True)
    # Two builds of one cache root may compute it at once: each writes a file of its own.
    write_atomic(cached, version)
    return version


def source_date_epoch(project_dir: Path, environ: Mapping[str, str]) -> int:
    """SOURCE_DATE_EPOCH, else the time of the last commit, else 1980-01-01 (the zip epoch)."""
    raw = environ.get("SOURCE_DATE_EPOCH") or environ.get("GROCKER_SOURCE_DATE_EPOCH")
    return int(raw or git_commit_time(project_dir) or 315532800)
