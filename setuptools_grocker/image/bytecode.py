"""Bytecode for the runtime image: compiled at build time by the image's own interpreter, reproducibly.

An image without ``.pyc`` files compiles every module it imports at every start (the venv is
read-only and the image sets ``PYTHONDONTWRITEBYTECODE``): Django's ``manage.py check`` spends
most of its start-up there. So the image ships the bytecode of every module of every wheel,
next to its source, in the wheel's own layer:

* the modules (``.py`` files below ``site-packages``) of the wheels whose bytecode is not cached
  are written to a staging directory and compiled in **one** container of the root image
  (``resources/bytecode_driver.py``, standard library only): the image's interpreter gives the
  image's magic number and cache tag (``__pycache__/m.cpython-311.pyc``);
* each module is compiled with its final path in the image as its file name (tracebacks show
  ``/opt/app/venv/lib/python3.11/site-packages/...``) and ``UNCHECKED_HASH``: the header holds a
  hash of the source, never an mtime, and Python does not check it at import (the venv is
  read-only); the same wheel gives the same bytes, hence the same layer and image ID;
* the result is kept per wheel in ``<cache home>/bytecode/<key>.tar``, ``key`` covering the
  wheel's SHA-256, the root image (its interpreter), the venv's path and :data:`BYTECODE_VERSION`;
  written atomically, and checked at every read (every member a ``__pycache__`` file of one of
  the wheel's modules, with an unchecked-hash header, matching the SHA-256 its manifest records):
  a damaged or foreign archive is compiled again.

The project's own wheel (the one a one-line change rebuilds) is compiled in the compile container
instead, by the same driver and the same interpreter (the compiler image is the root image plus
packages): no bytecode container on a one-line change. That container ran the project's build code, so
its output is trusted for this project's image only: it stays in the project's wheelhouse, never enters
the shared cache, and :func:`load_precompiled` uses it only when the interpreter that made it is the root
image's (as recorded by a bytecode container, :func:`root_interpreter`) and every file is the
unchecked-hash bytecode of exactly the wheel's modules, its header's source hash matching the module's
source. Anything else and the wheel goes to the bytecode container as before.
"""
from __future__ import annotations

import _imp
import hashlib
import io
import json
import os
import posixpath
import tarfile
import tempfile
from pathlib import Path
from typing import Mapping

from setuptools_grocker.engine import Engine, Mount
from setuptools_grocker.errors import ImageBuildError
from setuptools_grocker.fs import made_by_this_run, write_atomic
from setuptools_grocker.image.assemble import Entry, Venv, deterministic_tar
from setuptools_grocker.progress import Progress

#: Bump when what is compiled, or how, changes: cached bytecode and images with it are rebuilt.
BYTECODE_VERSION = "1"
#: The file of a cached archive that lists its members and their SHA-256.
MANIFEST = "BYTECODE.json"
#: Flags of a PEP 552 header: hash-based (bit 0), source not checked (bit 1 clear).
UNCHECKED_HASH_FLAGS = 0b01
DRIVER = "bytecode_driver.py"


def compile_bytecode() -> dict[str, str]:
    """What the compile container needs to compile the project wheel's bytecode (compile.compile_wheels)."""
    from setuptools_grocker.image.recipes import VENV

    return {"venv": VENV, "interpreter": Venv(VENV, "").interpreter}


def identity(enabled: bool) -> str:
    """What the runtime image's cache key records about how the image is made beyond its inputs: bytecode
    and the SBOM's format (sbom.py's ``SBOM_VERSION``); a change rebuilds the images."""
    from setuptools_grocker.image.sbom import SBOM_VERSION

    return (f"bytecode-{BYTECODE_VERSION}" if enabled else "no-bytecode") + f"+sbom-{SBOM_VERSION}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheel_key(wheel_sha256: str, root_id: str, venv: Venv) -> str:
    """The cache key of one wheel's bytecode: what decides its bytes, and nothing else."""
    parts = {"version": BYTECODE_VERSION, "wheel": wheel_sha256, "root": root_id, "venv": venv.path,
             "site": venv.site_packages}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def modules(entries: list[Entry], venv: Venv) -> list[Entry]:
    """The entries of an installed wheel that get bytecode: regular ``.py`` files below site-packages."""
    site = f"{venv.path}/{venv.site_packages}/"
    return [e for e in entries
            if e.data is not None and e.link is None and e.path.startswith(site) and e.path.endswith(".py")]


def pyc_header_flags(data: bytes) -> int | None:
    """The PEP 552 flags of a ``.pyc`` (bytes 4-8, little-endian), None when it is too short."""
    return int.from_bytes(data[4:8], "little") if len(data) >= 16 else None


def source_of(pyc: str) -> str | None:
    """``/d/m.py`` for ``/d/__pycache__/m.TAG.pyc`` (any tag), None for any other path."""
    directory, name = posixpath.split(pyc)
    parent, cache = posixpath.split(directory)
    stem, dot, tag = name.removesuffix(".pyc").rpartition(".")
    if cache != "__pycache__" or not name.endswith(".pyc") or not dot or not stem or not tag:
        return None
    return f"{parent}/{stem}.py"


# -- the interpreter of the root image, and bytecode made in the compile container -----------

def _root_record(cache: BytecodeCache, root_id: str) -> Path:
    return cache.root / f"interpreter-{root_id.removeprefix('sha256:')}.json"


def remember_root_interpreter(cache: BytecodeCache, root_id: str, found: object) -> None:
    """Record what a bytecode container of the root image said of its interpreter (trusted: the root image's
    own interpreter, no project code ran)."""
    if isinstance(found, dict) and {"version", "magic", "tag"} <= set(found):
        cache.root.mkdir(parents=True, exist_ok=True)
        write_atomic(_root_record(cache, root_id), json.dumps(found, sort_keys=True).encode())


def root_interpreter(cache: BytecodeCache, root_id: str) -> dict[str, str] | None:
    try:
        found = json.loads(_root_record(cache, root_id).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def source_hash_ok(pyc: bytes, source: bytes) -> bool:
    """Whether the PEP 552 header of ``pyc`` holds the hash of ``source`` (keyed by the pyc's magic number)."""
    key = int.from_bytes(pyc[:4], "little")
    return len(pyc) >= 16 and pyc[8:16] == _imp.source_hash(key, source)


def load_precompiled(directory: Path, sources: Mapping[str, bytes], interpreter: Mapping[str, str] | None
                     ) -> dict[str, bytes] | None:
    """The bytecode the compile container made for one wheel (``directory``: its ``bytecode/``), or None when
    it cannot stand for what the bytecode container would make: no record of the root's interpreter, another
    interpreter, a file that is not the unchecked-hash bytecode of one of the wheel's modules (``sources``,
    path to source bytes) or whose header does not match that module's source, a module neither compiled
    nor reported as not compiling, a link anywhere."""
    if interpreter is None:
        return None
    try:
        base = directory.resolve(strict=True)
        listing = json.loads((base / "0.json").read_text())
        compiled, skipped = listing["compiled"], listing["skipped"]
        if listing.get("interpreter") != interpreter or not isinstance(compiled, list) \
                or not isinstance(skipped, list) or not all(isinstance(p, str) for p in compiled + skipped):
            return None
        tag = f".{interpreter.get('tag')}.pyc"
        if len(set(compiled)) != len(compiled) or len({source_of(p) for p in compiled}) != len(compiled) \
                or not all(p.endswith(tag) for p in compiled):
            return None
        covered = [source_of(p) for p in compiled] + list(skipped)
        if len(covered) != len(set(covered)) or set(covered) != set(sources):
            return None
        pycs: dict[str, bytes] = {}
        for path in compiled:
            source = sources[source_of(path) or ""]
            file = base / "0" / path.lstrip("/")
            if file.resolve(strict=True) != file or not file.is_file() or file.is_symlink():
                return None
            data = file.read_bytes()
            if pyc_header_flags(data) != UNCHECKED_HASH_FLAGS or data[:4].hex() != interpreter.get("magic") \
                    or not source_hash_ok(data, source):
                return None
            pycs[path] = data
        return pycs
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None


# -- the cached archive -------------------------------------------------------------------------

def pack(key: str, pycs: Mapping[str, bytes], skipped: list[str]) -> bytes:
    """The cache archive of one wheel: its ``.pyc`` files and a manifest, as a deterministic tar."""
    manifest = {"key": key, "version": BYTECODE_VERSION, "skipped": sorted(skipped),
                "files": {path: hashlib.sha256(data).hexdigest() for path, data in sorted(pycs.items())}}
    entries = [Entry(path, data) for path, data in pycs.items()]
    entries.append(Entry(MANIFEST, json.dumps(manifest, sort_keys=True).encode()))
    return deterministic_tar(entries, 0)


def unpack(data: bytes, key: str, sources: set[str]) -> dict[str, bytes]:
    """The ``.pyc`` files of a cache archive, by absolute path; ValueError when it is not exactly right."""
    files: dict[str, bytes] = {}
    manifest = None
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                if info.isdir():
                    continue
                if not info.isfile():
                    raise ValueError(f"{info.name} is not a regular file")
                extracted = tar.extractfile(info)
                assert extracted is not None  # a regular file
                content = extracted.read()
                if info.name == MANIFEST:
                    manifest = json.loads(content)
                else:
                    files["/" + info.name] = content
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a readable tar: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("key") != key or manifest.get("version") != BYTECODE_VERSION:
        raise ValueError("no manifest, or the manifest of another key")
    recorded = manifest.get("files")
    if not isinstance(recorded, dict) or set(recorded) != set(files):
        raise ValueError("the members are not those the manifest lists")
    for path, content in files.items():
        if hashlib.sha256(content).hexdigest() != recorded[path]:
            raise ValueError(f"{path} does not match its SHA-256")
        if source_of(path) not in sources:
            raise ValueError(f"{path} is not the bytecode of a module of the wheel")
        if pyc_header_flags(content) != UNCHECKED_HASH_FLAGS:
            raise ValueError(f"{path} is not an unchecked-hash .pyc")
    return files


class BytecodeCache:
    """``<cache home>/bytecode``: one archive per key, shared by builds, threads and processes."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / f"{key}.tar"

    def load(self, key: str, sources: set[str]) -> dict[str, bytes] | None:
        """The cached bytecode of ``key``, or None when absent or damaged (a damaged archive is removed)."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            return unpack(data, key, sources)
        except ValueError:
            try:
                path.unlink()
            except OSError:
                pass
            return None

    def store(self, key: str, pycs: Mapping[str, bytes], skipped: list[str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path(key), pack(key, pycs, skipped))


# -- compiling ----------------------------------------------------------------------------------

def add_bytecode(engine: Engine, *, root: Mapping[str, object], root_image: str, venv: Venv,
                 installed: Mapping[Path, list[Entry]], cache: BytecodeCache,
                 progress: Progress, reuse: bool = True,
                 precompiled: Mapping[Path, Path] | None = None) -> dict[Path, list[Entry]]:
    """``installed`` with each wheel's ``.pyc`` entries added (from the cache, from the compile container, or
    compiled in one container).

    ``reuse=False`` (``--no-cache``, a clean build) compiles every wheel again (and refreshes the cache), but
    for those this run compiled already (another application of the workspace).
    ``precompiled``: wheel -> the ``bytecode/`` directory its compile container wrote (the project's own
    wheel), used when :func:`load_precompiled` accepts it, for this image only.
    """
    root_id = str(root["Id"])
    wanted: dict[Path, tuple[str, list[Entry]]] = {}
    found: dict[Path, dict[str, bytes]] = {}
    local = 0
    for wheel, entries in installed.items():
        sources = modules(entries, venv)
        if not sources:
            continue
        key = wheel_key(file_sha256(wheel), root_id, venv)
        cached = cache.load(key, {e.path for e in sources}) if reuse or made_by_this_run(cache.path(key)) else None
        if cached is None and wheel in (precompiled or {}):
            assert precompiled is not None
            cached = load_precompiled(precompiled[wheel], {e.path: e.data or b"" for e in sources},
                                      root_interpreter(cache, root_id))
            local += cached is not None
        if cached is None:
            wanted[wheel] = (key, sources)
        else:
            found[wheel] = cached
    if wanted:
        found.update(_compile(engine, root_image, root_id, venv, wanted, cache, progress))
    progress.info(f"bytecode: {len(wanted)} wheel(s) compiled, {len(found) - len(wanted) - local} from the cache"
                  + (f", {local} from the compile container" if local else ""))
    return {wheel: entries + [Entry(path, data) for path, data in sorted(found.get(wheel, {}).items())]
            for wheel, entries in installed.items()}


def _compile(engine: Engine, root_image: str, root_id: str, venv: Venv, wanted: Mapping[Path, tuple[str, list[Entry]]],
             cache: BytecodeCache, progress: Progress) -> dict[Path, dict[str, bytes]]:
    from setuptools_grocker.image.recipes import RESOURCES

    cache.root.mkdir(parents=True, exist_ok=True)
    order = sorted(wanted, key=lambda w: w.name)
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=cache.root) as tmp:
        staging = Path(tmp)
        job = {"wheels": [{"id": str(i), "files": sorted(e.path for e in wanted[w][1])} for i, w in enumerate(order)]}
        for i, wheel in enumerate(order):
            for entry in wanted[wheel][1]:
                # Paths were checked when the wheel was installed (assemble.LayerDestination): absolute,
                # no `..`, below site-packages.
                target = staging / "src" / str(i) / entry.path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                assert entry.data is not None
                target.write_bytes(entry.data)
        (staging / "out").mkdir()
        (staging / "job").mkdir()
        (staging / "job" / "job.json").write_text(json.dumps(job))
        result = engine.run(
            root_image, [venv.interpreter, "-I", f"/grocker/{DRIVER}", "/job/job.json"],
            mounts=[Mount(staging / "src", "/src"), Mount(staging / "out", "/out", read_only=False),
                    Mount(staging / "job", "/job"), Mount(RESOURCES, "/grocker")],
            user=f"{os.getuid()}:{os.getgid()}", network="none", stream=False)
        if result.exit_code != 0:
            raise ImageBuildError(f"compiling the bytecode of {len(order)} wheel(s) failed "
                                  f"(exit {result.exit_code})",
                                  "the lines below are the end of its output; "
                                  "build without bytecode with GROCKER_NO_BYTECODE=1",
                                  details=result.tail())
        out: dict[Path, dict[str, bytes]] = {}
        for i, wheel in enumerate(order):
            key, sources = wanted[wheel]
            try:
                listing = json.loads((staging / "out" / f"{i}.json").read_text())
                pycs = {path: (staging / "out" / str(i) / path.lstrip("/")).read_bytes()
                        for path in listing["compiled"]}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ImageBuildError(f"the bytecode of {wheel.name} is missing from the compile container's "
                                      f"output: {exc}", "build again; report it if it persists") from exc
            names = {e.path for e in sources}
            if any(source_of(p) not in names or pyc_header_flags(d) != UNCHECKED_HASH_FLAGS
                   for p, d in pycs.items()):
                raise ImageBuildError(f"the compile container wrote unexpected bytecode for {wheel.name}",
                                      "build again; report it if it persists")
            cache.store(key, pycs, list(listing.get("skipped", [])))
            remember_root_interpreter(cache, root_id, listing.get("interpreter"))
            out[wheel] = pycs
        return out
