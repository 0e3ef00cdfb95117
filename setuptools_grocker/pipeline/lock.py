"""The application's lock: a PEP 751 ``pylock.toml`` that pins its third-party closure by hash.

``grocker lock`` resolves the closure once (``uv pip compile --format pylock.toml --generate-hashes`` in the
compiler container, after building the project's wheel as a build does) and :func:`write_lock` keeps uv's
file with three changes: the project's own package and the packages built from source in the same compile
(``local-packages``, a workspace's internal libraries) are dropped, since they are built, never locked; any
``user:password@`` left in a URL is removed; and a ``[tool.grocker]`` table records ``inputs``, a digest of
what decides the closure (the ``Requires-Dist``/``Provides-Extra``/``Requires-Python`` of the project's wheel
and of the wheels built from source, the extras, the constraints file's bytes, the index strategy, the
Python version; computed by the compile driver, ``lock_inputs``), and ``from-source``, the names of the
packages built from source that the closure holds.

A build with a lock (:func:`read_lock`) does not resolve: the driver checks ``inputs`` against the wheels it
just built (a mismatch fails the build: the lock is stale), turns the packages whose markers hold into
hash-pinned requirements and fetches them by hash, as it fetches a resolution. Where a file comes from (the
lock's URLs, this machine's index or mirror) does not matter: pip accepts only the locked bytes.

The lock file's bytes are part of the build's cache key. This module only reads and writes the file.
"""
from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from packaging.markers import InvalidMarker, Marker
from packaging.utils import canonicalize_name

from setuptools_grocker.errors import LockError
from setuptools_grocker.fs import write_atomic

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["LOCK_FILE", "Lock", "LockedPackage", "host_inputs", "read_lock", "strip_credentials", "write_lock"]

LOCK_FILE = "pylock.toml"
FIX = "run `grocker lock` (and commit the new pylock.toml), or build with --upgrade"
# A URL's user information: "https://user:token@host" -> "https://host".
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s\"']+@")
_PACKAGES = "[[packages]]"


@dataclass(frozen=True)
class LockedPackage:
    """One locked distribution: what the driver turns into ``name==version ; marker --hash=sha256:...``."""

    name: str
    version: str
    hashes: tuple[str, ...]
    marker: str | None = None

    def to_job(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "hashes": list(self.hashes), "marker": self.marker}


@dataclass(frozen=True)
class Lock:
    """A lock file, checked: its path, the sha256 of its bytes, and what a build needs of it."""

    path: Path
    digest: str
    inputs: str
    packages: tuple[LockedPackage, ...]
    from_source: tuple[str, ...] = ()
    #: What to do when it is stale (a workspace's lock is written by `grocker lock ROOT`).
    fix: str = FIX

    def job(self) -> dict[str, Any]:
        """What the compile driver gets (``job["lock"]``)."""
        return {"inputs": self.inputs, "packages": [p.to_job() for p in self.packages],
                "from_source": list(self.from_source)}


def host_inputs(extras: Sequence[str], constraints: Path | None, index_strategy: str) -> dict[str, Any]:
    """What decides the closure and is known on the host; the driver adds the wheels' metadata and Python."""
    data = constraints.read_bytes() if constraints is not None and constraints.is_file() else b""
    return {"extras": sorted(extras), "constraints": hashlib.sha256(data).hexdigest(),
            "index_strategy": index_strategy}


def strip_credentials(text: str) -> str:
    """``text`` with the user information of every URL removed (uv leaves none; a lock is committed)."""
    return _USERINFO.sub(lambda m: m.group("scheme"), text)


def _bad(path: Path, why: str) -> LockError:
    return LockError(f"{path} is not a valid lock: {why}", FIX)


def _hashes(path: Path, name: str, files: Any) -> list[str]:
    found = []
    for entry in files:
        hashes = entry.get("hashes") if isinstance(entry, dict) else None
        if not isinstance(hashes, dict):
            raise _bad(path, f"a file of package {name!r} has no hashes")
        sha = hashes.get("sha256")
        if isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha):
            found.append(sha)
    return found


def load_document(path: Path, data: bytes) -> dict[str, Any]:
    """``data`` (the bytes of ``path``) as a PEP 751 version 1.x document; LockError naming the problem."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _bad(path, f"not TOML ({exc})") from exc
    version = doc.get("lock-version")
    if not isinstance(version, str) or version.split(".")[0] != "1":
        raise _bad(path, f"lock-version {version!r} is not a PEP 751 version 1.x")
    return doc


def parse_packages(path: Path, doc: Mapping[str, Any]) -> list[LockedPackage]:
    """The ``[[packages]]`` of a lock document, each with its sha256 hashes and its marker checked."""
    raw = doc.get("packages", [])
    if not isinstance(raw, list):
        raise _bad(path, "packages must be an array of tables")
    packages = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
                or not isinstance(entry.get("version"), str):
            raise _bad(path, "every package needs a name and a version")
        name = entry["name"]
        files = list(entry.get("wheels") or [])
        for single in ("sdist", "archive"):
            if isinstance(entry.get(single), dict):
                files.append(entry[single])
        hashes = _hashes(path, name, files)
        if not hashes:
            raise _bad(path, f"package {name!r} has no sha256 hash")
        marker = entry.get("marker")
        if marker is not None:
            try:
                Marker(str(marker))
            except InvalidMarker as exc:
                raise _bad(path, f"package {name!r} has an invalid marker {marker!r}") from exc
        packages.append(LockedPackage(canonicalize_name(name), entry["version"], tuple(sorted(set(hashes))),
                                      str(marker) if marker is not None else None))
    return packages


def parse_lock(path: Path, data: bytes) -> Lock:
    """Check ``data`` (the bytes of ``path``) as a lock this tool wrote; LockError naming the problem."""
    doc = load_document(path, data)
    tool = doc.get("tool", {}).get("grocker") if isinstance(doc.get("tool"), dict) else None
    inputs = tool.get("inputs") if isinstance(tool, dict) else None
    if not isinstance(inputs, str):
        raise LockError(f"{path} was not written by `grocker lock` (no [tool.grocker] inputs): a build cannot tell "
                        "whether it is up to date", FIX)
    from_source = tool.get("from-source", []) if isinstance(tool, dict) else []
    if not isinstance(from_source, list) or not all(isinstance(n, str) for n in from_source):
        raise _bad(path, "[tool.grocker] from-source must be a list of names")
    packages = parse_packages(path, doc)
    return Lock(path, hashlib.sha256(data).hexdigest(), inputs, tuple(packages),
                tuple(sorted(canonicalize_name(n) for n in from_source)))


def lock_bytes(path: Path) -> bytes | None:
    """The bytes of the lock at ``path``; None when there is none. LockError when it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LockError(f"cannot read the lock {path}: {exc.strerror}", "check the file's permissions") from exc


def read_lock(path: Path) -> Lock | None:
    """The lock at ``path``, checked; None when there is none. LockError when it is unreadable or invalid."""
    data = lock_bytes(path)
    return None if data is None else parse_lock(path, data)


def split_blocks(text: str) -> tuple[str, list[str]]:
    """uv's file split into its header and one text block per ``[[packages]]`` table."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == _PACKAGES]
    if not starts:
        return text.rstrip("\n"), []
    header = "\n".join(lines[:starts[0]]).rstrip("\n")
    blocks = ["\n".join(lines[a:b]).rstrip("\n") for a, b in zip(starts, starts[1:] + [len(lines)])]
    return header, blocks


def block_name(block: str) -> str | None:
    try:
        name = tomllib.loads(block.replace(_PACKAGES, "", 1)).get("name")
    except tomllib.TOMLDecodeError:
        return None
    return canonicalize_name(name) if isinstance(name, str) else None


def render_lock(uv_text: str, *, built: Sequence[str], inputs: str, project: str) -> str:
    """The lock to write, from uv's ``pylock.toml``: without the packages in ``built`` (the project's and those
    built from source), without credentials, with the ``[tool.grocker]`` table."""
    header, blocks = split_blocks(strip_credentials(uv_text))
    skip = {canonicalize_name(n) for n in built}
    kept, from_source = [], set()
    for block in blocks:
        name = block_name(block)
        if name is None:
            raise LockError("uv wrote a package without a name in its lock", "report it")
        if name in skip:
            if name != canonicalize_name(project):
                from_source.add(name)
            continue
        kept.append(block)
    quoted = ", ".join(f'"{n}"' for n in sorted(from_source))
    tool = ("[tool.grocker]\n"
            f"# What decides the closure of {canonicalize_name(project)}: a build checks it, and fails when it "
            "differs (`grocker lock` writes it again).\n"
            f'inputs = "{inputs}"\n'
            f"from-source = [{quoted}]\n")
    return "\n\n".join([header, *kept, tool.rstrip("\n")]) + "\n"


def write_lock(path: Path, uv_text: str, *, built: Sequence[str], inputs: str, project: str) -> Lock:
    """Write the lock to ``path`` atomically (checked before it replaces the old one); return it."""
    text = render_lock(uv_text, built=built, inputs=inputs, project=project)
    lock = parse_lock(path, text.encode())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
    return lock


def lock_line(lock: Lock | None) -> Mapping[str, str]:
    """The key data of a lock (nothing without one, so that builds without a lock keep their keys)."""
    return {"lock": lock.digest} if lock is not None else {}
