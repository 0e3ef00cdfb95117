"""The workspace's lock: one PEP 751 ``pylock.toml`` at the workspace root for the applications' shared
third-party set.

``grocker lock ROOT`` resolves each application's closure (its internal libraries given as the wheels a
workspace build makes) with uv, as ``grocker lock`` does for one application, and :func:`render_workspace_lock`
merges them: one ``[[packages]]`` entry per third-party package, in one version for the whole workspace, with
``[packages.tool.grocker] used-by`` naming the applications whose closure holds it, and one
``[tool.grocker.applications.NAME]`` table per application with its ``inputs`` digest (what decides its
closure, as in a single project's lock) and ``from-source`` (its internal libraries).

One version per package: when two applications' resolutions pick different versions of a package, the
orchestration (``wsbuild.lock_workspace``) resolves the others again with the lowest of those versions pinned
(:func:`conflict_pins`), so that the set is a joint resolution whenever one exists; when that fails too,
:func:`render_workspace_lock` refuses with a :class:`LockError` naming the package, the applications and the
versions (:func:`conflicts`).

A workspace build takes an application's closure from its subset of the lock (:meth:`WorkspaceLock.subset`:
the packages it uses, markers applied by the driver), with no resolution; the subset's digest is part of the
application's key, so that a change to another application's packages does not rebuild it.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from setuptools_grocker.errors import LockError
from setuptools_grocker.fs import write_atomic
from setuptools_grocker.pipeline.lock import (
    LOCK_FILE,
    Lock,
    LockedPackage,
    block_name,
    load_document,
    lock_bytes,
    parse_packages,
    split_blocks,
    strip_credentials,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Resolution", "WorkspaceLock", "conflict_pins", "conflicts", "read_workspace_lock",
           "render_workspace_lock", "workspace_fix", "write_workspace_lock"]

_MARKER = re.compile(r"^marker\s*=.*$", re.MULTILINE)


def workspace_fix(root: Path) -> str:
    """The hint of a stale or missing workspace lock."""
    return f"run `grocker lock {root}` (and commit the new pylock.toml), or build the workspace with --upgrade"


@dataclass(frozen=True)
class Resolution:
    """One application's closure as uv resolved it (``mode="lock"`` compile): uv's ``pylock.toml`` text, the
    inputs' digest and the names of the wheels built in that compile (the application's and its libraries')."""

    application: str
    text: str
    inputs: str
    built: tuple[str, ...]

    def third_party(self) -> dict[str, tuple[str, str]]:
        """``{name: (version, block)}`` of the packages uv locked that were not built in the compile."""
        _, blocks = split_blocks(strip_credentials(self.text))
        skip = {canonicalize_name(n) for n in self.built}
        found: dict[str, tuple[str, str]] = {}
        for block in blocks:
            name = block_name(block)
            if name is None:
                raise LockError(f"uv wrote a package without a name in the lock of {self.application}", "report it")
            if name not in skip:
                version = tomllib.loads(block.replace("[[packages]]", "", 1)).get("version")
                found[name] = (str(version), block)
        return found

    def from_source(self) -> list[str]:
        own = canonicalize_name(self.application)
        return sorted({canonicalize_name(n) for n in self.built} - {own})


def conflicts(resolutions: Mapping[str, Resolution]) -> dict[str, dict[str, str]]:
    """``{package: {application: version}}`` of the packages locked in more than one version."""
    seen: dict[str, dict[str, str]] = {}
    for app, res in resolutions.items():
        for name, (version, _) in res.third_party().items():
            seen.setdefault(name, {})[app] = version
    return {n: dict(sorted(v.items())) for n, v in sorted(seen.items()) if len(set(v.values())) > 1}


def _order(version: str) -> tuple[int, Any]:
    try:
        return (0, Version(version))
    except InvalidVersion:
        return (1, version)


def conflict_pins(found: Mapping[str, Mapping[str, str]]) -> list[str]:
    """``name==version`` for each conflicting package: the lowest version an application was resolved to (an
    upper bound somewhere chose it; the others may accept it)."""
    return [f"{name}=={min(versions.values(), key=_order)}" for name, versions in sorted(found.items())]


def conflict_error(found: Mapping[str, Mapping[str, str]], root: Path) -> LockError:
    name, versions = next(iter(sorted(found.items())))
    which = ", ".join(f"{app} {name} {v}" for app, v in versions.items())
    more = f" (and {len(found) - 1} more package(s))" if len(found) > 1 else ""
    return LockError(f"the applications of {root} need different versions of {name}: {which}{more}; one shared "
                     "set cannot be resolved", "align their requirements (or give them one constraints file), "
                     "then run `grocker lock` again")


def _marker_of(block: str) -> str | None:
    marker = tomllib.loads(block.replace("[[packages]]", "", 1)).get("marker")
    return str(marker) if marker is not None else None


def _merged_marker(markers: Sequence[str | None]) -> str | None:
    if any(m is None for m in markers):
        return None
    distinct = sorted({m for m in markers if m is not None})
    return distinct[0] if len(distinct) == 1 else " or ".join(f"({m})" for m in distinct)


def render_workspace_lock(resolutions: Mapping[str, Resolution], root: Path) -> str:
    """The workspace lock's text from each application's resolution (LockError on a version conflict)."""
    if not resolutions:
        raise LockError(f"{root} has no application to lock", "a workspace lock pins its applications' closures")
    found = conflicts(resolutions)
    if found:
        raise conflict_error(found, root)
    apps = sorted(resolutions)
    header, _ = split_blocks(strip_credentials(resolutions[apps[0]].text))
    blocks: dict[str, str] = {}
    used: dict[str, set[str]] = {}
    markers: dict[str, list[str | None]] = {}
    for app in apps:
        for name, (_, block) in resolutions[app].third_party().items():
            blocks.setdefault(name, block)
            used.setdefault(name, set()).add(app)
            markers.setdefault(name, []).append(_marker_of(block))
    out = [header]
    for name in sorted(blocks):
        block = blocks[name]
        marker = _merged_marker(markers[name])
        if marker != _marker_of(block):  # the applications use it under different markers: their union
            block = _MARKER.sub(f"marker = {json.dumps(marker)}" if marker else "", block).rstrip("\n")
            block = re.sub(r"\n{2,}", "\n", block)
        users = ", ".join(f'"{a}"' for a in sorted(used[name]))
        out.append(f"{block}\n\n[packages.tool.grocker]\nused-by = [{users}]")
    tool = ["[tool.grocker]",
            "# The workspace's shared third-party set: a build takes each application's closure from the packages "
            "it uses, and fails when its inputs differ (`grocker lock ROOT` writes it again)."]
    for app in apps:
        res = resolutions[app]
        sources = ", ".join(f'"{n}"' for n in res.from_source())
        tool += ["", f"[tool.grocker.applications.{app}]", f'inputs = "{res.inputs}"', f"from-source = [{sources}]"]
    out.append("\n".join(tool))
    return "\n\n".join(out) + "\n"


@dataclass(frozen=True)
class WorkspaceLock:
    """A workspace lock, checked: the packages with the applications that use them, each application's inputs."""

    path: Path
    digest: str
    applications: Mapping[str, tuple[str, tuple[str, ...]]]  # name -> (inputs, from-source)
    packages: tuple[tuple[LockedPackage, tuple[str, ...]], ...]  # each with its used-by
    fix: str

    def used_by(self, name: str) -> tuple[str, ...]:
        return next((users for p, users in self.packages if p.name == canonicalize_name(name)), ())

    def subset(self, application: str) -> Lock:
        """The lock of one application: its inputs and the packages it uses; its digest covers only those."""
        app = canonicalize_name(application)
        if app not in self.applications:
            raise LockError(f"{self.path} has no entry for the application {app}: it was locked before "
                            f"{app} joined the workspace", self.fix)
        inputs, from_source = self.applications[app]
        packages = tuple(p for p, users in self.packages if app in users)
        digest = hashlib.sha256(json.dumps({"inputs": inputs, "from_source": list(from_source),
                                            "packages": [p.to_job() for p in packages]},
                                           sort_keys=True).encode()).hexdigest()
        return Lock(self.path, digest, inputs, packages, from_source, fix=self.fix)


def parse_workspace_lock(path: Path, data: bytes, root: Path) -> WorkspaceLock:
    """Check ``data`` (the bytes of ``path``) as a workspace lock this tool wrote; LockError naming the problem."""
    fix = workspace_fix(root)
    doc = load_document(path, data)
    tool = doc.get("tool", {}).get("grocker") if isinstance(doc.get("tool"), dict) else None
    apps = tool.get("applications") if isinstance(tool, dict) else None
    if not isinstance(apps, dict):
        raise LockError(f"{path} is not a workspace lock written by `grocker lock` (no [tool.grocker.applications])",
                        fix)
    applications: dict[str, tuple[str, tuple[str, ...]]] = {}
    for name, table in apps.items():
        inputs = table.get("inputs") if isinstance(table, dict) else None
        sources = table.get("from-source", []) if isinstance(table, dict) else None
        if not isinstance(inputs, str) or not isinstance(sources, list) \
                or not all(isinstance(s, str) for s in sources):
            raise LockError(f"{path} is not a valid lock: [tool.grocker.applications.{name}] needs inputs and "
                            "from-source", fix)
        applications[canonicalize_name(name)] = (inputs, tuple(sorted(canonicalize_name(s) for s in sources)))
    packages = parse_packages(path, doc)
    users = []
    for entry, package in zip(doc.get("packages", []), packages):
        table = entry.get("tool", {}).get("grocker", {}) if isinstance(entry.get("tool"), dict) else {}
        used = table.get("used-by") if isinstance(table, dict) else None
        if not isinstance(used, list) or not all(isinstance(u, str) for u in used):
            raise LockError(f"{path} is not a valid lock: package {package.name!r} has no "
                            "[packages.tool.grocker] used-by", fix)
        users.append((package, tuple(sorted(canonicalize_name(u) for u in used))))
    return WorkspaceLock(path, hashlib.sha256(data).hexdigest(), applications, tuple(users), fix)


def read_workspace_lock(root: Path) -> WorkspaceLock | None:
    """The lock at the workspace root (``ROOT/pylock.toml``), checked; None when there is none."""
    path = root / LOCK_FILE
    data = lock_bytes(path)
    return None if data is None else parse_workspace_lock(path, data, root)


def write_workspace_lock(root: Path, resolutions: Mapping[str, Resolution]) -> WorkspaceLock:
    """Write ``ROOT/pylock.toml`` atomically (checked before it replaces the old one); return it."""
    path = root / LOCK_FILE
    text = render_workspace_lock(resolutions, root)
    lock = parse_workspace_lock(path, text.encode(), root)
    write_atomic(path, text)
    return lock
