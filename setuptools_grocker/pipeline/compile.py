"""The compile stage: wheels for a project and its whole closure, built in the compiler image.

The container gets the source read-only, a scratch output directory, the user's pip
configuration and a persistent pip cache (an empty one with ``--no-cache``). The wheels land
in a staging directory that is renamed into the wheelhouse only when everything succeeded, so
a build killed at any point never leaves a wheelhouse entry that claims success.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from setuptools_grocker.config import Config
from setuptools_grocker.engine import Engine, Mount
from setuptools_grocker.errors import BuildCommandFailed, CompileError, LockError, ProjectError, TestsFailed, disk_full
from setuptools_grocker.fs import PROCESS_STARTED, made_by_this_run
from setuptools_grocker.image.recipes import BUILD_VENV, RESOURCES
from setuptools_grocker.pipeline.lock import FIX as LOCK_FIX
from setuptools_grocker.pipeline.lock import Lock, host_inputs
from setuptools_grocker.pipeline.pipconf import UV_SECRET_ENV, PipForward, uv_env
from setuptools_grocker.pipeline.project import Source, metadata_fields, scm_version
from setuptools_grocker.pipeline.warm import (
    LEFTOVERS,
    LEVEL_ENV,
    UNCLEAN,
    SharedContainers,
    WarmSpec,
    shared_wrapped,
    warm_container,
    wrapped,
)
from setuptools_grocker.progress import Progress, add_secret


@dataclass(frozen=True)
class Wheelhouse:
    """A finished compile: the directory of wheels and what the driver found out."""

    path: Path
    manifest: Mapping[str, Any]
    #: How long the tests of this compile took (their environment and command), when it ran them.
    test_seconds: float | None = None

    @property
    def name(self) -> str:
        return canonicalize_name(str(self.manifest["name"]))

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def wheels(self) -> list[Path]:
        return sorted((self.path / "wheels").glob("*.whl"))

    @property
    def project_wheel(self) -> Path:
        return self.path / "wheels" / str(self.manifest["wheel"])

    @property
    def closure(self) -> str:
        """How the compile got the closure: ``reused`` (copied from an earlier compile, metadata unchanged),
        ``locked`` (as the application's pylock.toml pins it) or ``resolved``."""
        try:
            how = json.loads((self.path / "closure.json").read_text()).get("closure")
        except (OSError, ValueError, AttributeError):
            return "resolved"
        return how if how in ("reused", "locked") else "resolved"

    def distributions(self) -> list[str]:
        return sorted(f"{canonicalize_name(w['name'])}=={w['version']}" for w in self.manifest["closure"])

    def content_digest(self) -> str:
        """A hash of what the wheels install: each wheel's file name and its ``RECORD`` (the sha256 of every
        file in it), so the archives' timestamps and compression do not count; with the manifest."""
        h = hashlib.sha256(json.dumps(dict(self.manifest), sort_keys=True).encode())
        for wheel in self.wheels:
            h.update(wheel.name.encode() + b"\0" + record_digest(wheel).encode() + b"\0")
        return h.hexdigest()

    @classmethod
    def load(cls, path: Path) -> Wheelhouse | None:
        manifest = path / "manifest.json"
        if not manifest.is_file():
            return None
        try:
            tests = path / "tests.json"  # written when this compile ran the library's tests
            seconds = json.loads(tests.read_text()).get("test_seconds") if tests.is_file() else None
            return cls(path, json.loads(manifest.read_text()),
                       test_seconds=float(seconds) if isinstance(seconds, (int, float)) else None)
        except (OSError, ValueError, AttributeError):
            return None


CLOSURE_KEY_FILE = "closure-key"


def _closure_identity(closure_key: str, compiler: str) -> str:
    return hashlib.sha256(f"{closure_key}\0{compiler}".encode()).hexdigest()


#: The layout of a prepared build environment, in its identity: 2 holds its bytecode (environments of layout 1,
#: without it, are prepared again once).
BUILD_ENV_LAYOUT = 2


@dataclass(frozen=True)
class BuildEnv:
    """The prepared PEP 517 build environment of one project: its build requirements installed once, for
    builds without isolation (an isolated environment is about 2 s of every compile).

    Kept in the project's state directory (its own trust scope, like its pip cache), one per set of build
    requirements and closure identity (compiler image, pip configuration); mounted read-only once made.
    Projects with an in-tree backend (``backend-path``) get none.
    """

    path: Path
    requires: tuple[str, ...]
    backend: str
    ready: bool
    #: A root shared by the libraries of one trust scope (a workspace's trusted members): one environment per set
    #: of build requirements, none removed when another is kept.
    shared: bool = False

    @classmethod
    def find(cls, root: Path, reuse_key: str, project: Path, *, fresh: bool, shared: bool = False
             ) -> BuildEnv | None:
        found = build_requirements(project)
        if found is None:
            return None
        requires, backend = found
        identity = hashlib.sha256(json.dumps([BUILD_ENV_LAYOUT, reuse_key, requires, backend] if shared
                                             else [BUILD_ENV_LAYOUT, reuse_key, requires]).encode()).hexdigest()[:24]
        path = root / identity
        # Fresh (--no-cache, --upgrade): not one an earlier run prepared; one this run prepared is as fresh.
        ready = (path / "ready").is_file() and (not fresh or made_by_this_run(path / "ready"))
        return cls(path, tuple(requires), backend, ready=ready, shared=shared)

    def job(self, ready_at: str = "/build-env", out: str = "/out") -> dict[str, Any]:
        return {"path": ready_at if self.ready else f"{out}/build-env", "requires": list(self.requires),
                "backend": self.backend, "ready": self.ready}

    def keep(self, prepared: Path) -> None:
        """Publish the environment the compile prepared (when it succeeded); drop the project's older ones."""
        if not (prepared / "ready").is_file():
            shutil.rmtree(prepared, ignore_errors=True)
            return
        for old in self.path.parent.glob("*") if self.path.parent.is_dir() and not self.shared else ():
            shutil.rmtree(old, ignore_errors=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(prepared, self.path)
        except OSError:  # a concurrent compile kept one first
            shutil.rmtree(prepared, ignore_errors=True)


#: pip's choice for a project that names no build backend (a setup.py-only one).
LEGACY = (["setuptools>=40.8.0"], "setuptools.build_meta:__legacy__")


def build_requirements(project: Path) -> tuple[list[str], str] | None:
    """The ``[build-system]`` ``requires`` and ``build-backend`` of a project (pip's default for a setup.py-only
    one); None when the project names an in-tree backend or its pyproject.toml is unreadable."""
    pyproject = project / "pyproject.toml"
    if not pyproject.is_file():
        return LEGACY if (project / "setup.py").is_file() else None
    try:
        with pyproject.open("rb") as fh:
            table = tomllib.load(fh).get("build-system")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if table is None:
        return LEGACY
    requires = table.get("requires") if isinstance(table, dict) else None
    backend = table.get("build-backend", LEGACY[1]) if isinstance(table, dict) else None
    if "backend-path" in table or not isinstance(requires, list) or not all(isinstance(r, str) for r in requires) \
            or not isinstance(backend, str):
        return None
    return sorted(requires), backend


def previous_closure(wheelhouse_root: Path, reuse_key: str) -> Wheelhouse | None:
    """The newest project wheelhouse under ``wheelhouse_root`` compiled with the same closure identity."""
    found: list[tuple[float, Wheelhouse]] = []
    for entry in wheelhouse_root.iterdir() if wheelhouse_root.is_dir() else ():
        try:
            if entry.name.startswith(".") or (entry / CLOSURE_KEY_FILE).read_text() != reuse_key:
                continue
            mtime = entry.stat().st_mtime
        except OSError:
            continue
        wheelhouse = Wheelhouse.load(entry)
        if wheelhouse is not None and isinstance(wheelhouse.manifest.get("wheel"), str) \
                and wheelhouse.project_wheel.is_file():
            found.append((mtime, wheelhouse))
    return max(found, key=lambda f: f[0])[1] if found else None


def record_digest(wheel: Path) -> str:
    """The sha256 of the wheel's ``*.dist-info/RECORD``: its content, whatever the zip's timestamps."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            records = sorted(n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/RECORD"))
            if len(records) != 1:  # not a wheel we can describe: its bytes, then
                return hashlib.sha256(wheel.read_bytes()).hexdigest()
            return hashlib.sha256(zf.read(records[0])).hexdigest()
    except (OSError, zipfile.BadZipFile):
        return hashlib.sha256(wheel.read_bytes()).hexdigest()


def compile_wheels(engine: Engine, config: Config, *, compiler: str, source: Source,
                   local_sources: list[Source], pip: PipForward, wheelhouse_root: Path, key: str,
                   pip_cache: Path, source_date_epoch: int, progress: Progress,
                   internal_wheels: Sequence[Path] = (), mode: str = "project",
                   test: Mapping[str, Any] | None = None, what: str | None = None,
                   test_wheel: Path | None = None, extra_env: Mapping[str, str] | None = None,
                   pre_commands: Sequence[str] = (), no_cache: bool = False, closure_key: str | None = None,
                   upgrade: bool = False, build_env_root: Path | None = None, shared_build_env: str | None = None,
                   uv_root: Path | None = None, bytecode: Mapping[str, str] | None = None,
                   warm: WarmSpec | None = None, lock: Lock | None = None, lock_out: Path | None = None,
                   lock_pins: Sequence[str] = (), level: SharedContainers | None = None) -> Wheelhouse:
    """Build wheels into ``wheelhouse_root/key`` (atomically) and return it.

    ``no_cache`` (``--no-cache``) is a clean build: an existing wheelhouse is ignored, and the
    container gets an empty pip cache instead of ``pip_cache`` (the scope's shared one), and an empty
    uv cache instead of the one in ``uv_root`` (the scope's uv directory, ``caches.uv_dir``).

    ``mode="project"`` builds the project and its whole closure (internal wheels given as
    files); ``mode="library"`` builds the project's own wheel and runs ``test`` against it
    when given; ``mode="test"`` only runs ``test`` against ``test_wheel`` (nothing is
    published; the existing wheelhouse is returned).

    ``closure_key`` (the cache key without the project's source, see ``build.closure_key``; a workspace
    member's also leaves out its internal dependencies' keys, not their names) lets a
    project compile reuse the closure of the newest earlier wheelhouse with the same closure key and
    compiler image: the driver copies its wheels instead of resolving when the new project wheel (and
    each internal wheel) has the same metadata as before. ``upgrade`` (``--upgrade``) and ``no_cache``
    resolve afresh. It also gives the project a prepared build environment under ``build_env_root``
    (default: ``build-env`` beside ``wheelhouse_root``).

    ``bytecode`` (``{"venv": ..., "interpreter": ...}``, project mode only): the container also compiles the
    bytecode of the project's own wheel into ``bytecode/`` of the wheelhouse, for this project's image only
    (bytecode.load_precompiled checks it; it never enters the shared bytecode cache).

    ``lock`` (project mode): take the closure as this lock pins it, no resolution (the driver fails the compile,
    LockError, when the lock's inputs are not the project's). ``mode="lock"`` (``grocker lock``) builds the
    project's wheel (and those built from source with it) and resolves the closure into a PEP 751 lock: the
    driver's output directory (``pylock.toml`` as uv wrote it, ``lock.json``) is moved to ``lock_out``, nothing
    is published.

    ``warm``: run the compile in the project's warm compile container (pipeline/warm.py) when it can be one
    (project mode, no ``--no-cache``, no internal or test wheels); its mounts are then the same from build to
    build (the staging parent, the wheelhouse and the build environments mounted whole).

    ``level``: a library's compile (``mode="library"`` or ``"test"``) runs by ``docker exec`` in the test container
    its workspace's trusted libraries share (pipeline/warm.py's ``SharedContainers``), with its own staging, home,
    tmp and scratch directories, when its source, wheels and build environment lie below that container's mounts
    and no plugin adds environment values or commands; else in a container of its own.
    """
    final = wheelhouse_root / key
    existing = Wheelhouse.load(final)
    if mode not in ("test", "lock") and existing is not None and not no_cache:
        progress.detail(f"wheels for {key[:12]} already built: {final}")
        return existing
    what = what or config.project_dir.name
    if no_cache:
        # A clean build: pip and uv caches that started empty with this run (one per trust scope, shared by
        # the compiles of this run only, removed at its end). A wheel the scope's cache kept from an earlier
        # build (made when system-packages.build still had a header this build lacks) cannot stand in for a
        # compile a clean machine would fail.
        uv_root = _clean_cache(uv_root or pip_cache.parent.parent / "uv" / pip_cache.name)
        pip_cache = _clean_cache(pip_cache)
        uv_too = " and uv cache" if config.installer == "uv" else ""
        progress.info(f"--no-cache: a clean build, with an empty pip cache{uv_too}")
    pip_cache.mkdir(parents=True, exist_ok=True)
    use_uv = config.installer == "uv"
    uv_scratch = None
    if use_uv:
        uv_root = uv_root or pip_cache.parent.parent / "uv" / pip_cache.name  # caches.uv_dir's layout
        uv_scratch = _uv_scratch(uv_root)
    reuse_key = _closure_identity(closure_key, compiler) if closure_key and mode == "project" else None
    previous = previous_closure(wheelhouse_root, reuse_key) if reuse_key and not (no_cache or upgrade or lock) \
        else None
    if reuse_key:
        build_env = BuildEnv.find(build_env_root or wheelhouse_root.parent / "build-env", reuse_key, source.root,
                                  fresh=no_cache or upgrade)
    elif shared_build_env and mode == "library" and build_env_root is not None:
        # A library: the environment of its build requirements, shared with the other libraries of its scope.
        build_env = BuildEnv.find(build_env_root, _closure_identity(shared_build_env, compiler), source.root,
                                  fresh=no_cache or upgrade, shared=True)
    else:
        build_env = None
    spec = level.spec if level is not None else None
    src_at = _below(source.root, spec.root, "/ws") if spec else None
    wheels_at = [_below(w, spec.wheels, "/wheels") for w in [*internal_wheels, *([test_wheel] if test_wheel else [])]] \
        if spec else []
    use_level = (spec is not None and mode in ("library", "test") and not local_sources and not extra_env
                 and not pre_commands and src_at is not None and None not in wheels_at
                 and (build_env is None or build_env.path.parent == spec.build_envs))
    tmp_root = spec.stage if use_level and spec else wheelhouse_root / ".tmp"
    staging = tmp_root / f"{key[:16]}-{uuid.uuid4().hex[:8]}"
    (staging / "out" / "wheels").mkdir(parents=True)
    (staging / "job").mkdir()
    use_warm = (warm is not None and not no_cache and mode == "project" and not internal_wheels
                and not test_wheel and (previous is None or previous.path.parent == wheelhouse_root))
    if use_warm or use_level:
        out_at, job_at = f"/stage/{staging.name}/out", f"/stage/{staging.name}/job"
        previous_at = f"/wheelhouse/{previous.path.name}/wheels" if previous else ""
        build_env_at = f"/build-envs/{build_env.path.name}" if build_env else ""
    else:
        out_at, job_at, previous_at, build_env_at = "/out", "/job", "/previous", "/build-env"
    src, internal_at = "/src", [f"/internal/{i}/{w.name}" for i, w in enumerate(internal_wheels)]
    test_wheel_at = f"/test-wheel/{test_wheel.name}" if test_wheel else None
    level_env: dict[str, str] = {}
    if use_level:
        src = str(src_at)
        internal_at = [str(w) for w in wheels_at[:len(internal_wheels)]]
        test_wheel_at = str(wheels_at[-1]) if test_wheel else None
        # Its own home and tmp: what its tests write there is removed with its staging directory.
        for d in ("home", "tmp"):
            (staging / d).mkdir()
        level_env = {"HOME": f"/stage/{staging.name}/home", "TMPDIR": f"/stage/{staging.name}/tmp"}
    try:
        job = {
            "src": src,
            "files": list(source.files),
            "local": [
                {"name": s.root.name, "mount": f"/local/{i}", "files": list(s.files)}
                for i, s in enumerate(local_sources)
            ],
            "extras": list(config.extras),
            "out": out_at,
            "mode": mode,
            "internal_wheels": internal_at,
            "test": dict(test) if test else None,
            "wheel": test_wheel_at,
            # In the shared test container every compile has its own scratch (in a container of its own: /tmp).
            "scratch": f"/stage/{staging.name}/scratch" if use_level else None,
            "pre_commands": list(pre_commands),
            "build_commands": list(config.build_commands),
            "installer": config.installer,
            "lock": lock.job() if lock is not None and mode == "project" else None,
            # A workspace lock's second pass: "name==version" that uv must keep (one version across applications).
            "lock_pins": list(lock_pins) if mode == "lock" else [],
            "lock_inputs": host_inputs(config.extras, config.constraints, config.index_strategy),
            "uv_scratch": f"/uv/{uv_scratch.name}" if uv_scratch else None,
            "build_env": build_env.job(build_env_at, out_at) if build_env else None,
            "bytecode": dict(bytecode) if bytecode and mode == "project" else None,
            "previous": {"wheel": f"{previous_at}/{previous.manifest['wheel']}",
                         "closure": [f"{previous_at}/{w.name}" for w in previous.wheels]} if previous else None,
        }
        (staging / "job" / "job.json").write_text(json.dumps(job))
        if use_level:
            assert spec is not None
            for made in (spec.build_envs, spec.wheels):
                made.mkdir(parents=True, exist_ok=True)
            # The same for every library of the scope: the workspace, every member's wheels, the stage.
            mounts = [
                Mount(spec.root, "/ws"),
                Mount(spec.stage, "/stage", read_only=False),
                Mount(spec.wheels, "/wheels"),
                Mount(RESOURCES, "/grocker"),
                Mount(pip_cache, "/pip-cache", read_only=False),
                Mount(spec.build_envs, "/build-envs"),
                *pip.mounts,
                *([Mount(uv_scratch.parent, "/uv", read_only=False)] if uv_scratch else []),
            ]
        elif use_warm:
            if build_env:
                build_env.path.parent.mkdir(parents=True, exist_ok=True)
            mounts = [
                Mount(source.root, "/src"),
                Mount(tmp_root, "/stage", read_only=False),
                Mount(wheelhouse_root, "/wheelhouse"),
                Mount(RESOURCES, "/grocker"),
                Mount(pip_cache, "/pip-cache", read_only=False),
                *(Mount(s.root, f"/local/{i}") for i, s in enumerate(local_sources)),
                *([Mount(build_env.path.parent, "/build-envs")] if build_env else []),
                *pip.mounts,
                *([Mount(uv_scratch.parent, "/uv", read_only=False)] if uv_scratch else []),
            ]
        else:
            mounts = [
                Mount(source.root, "/src"),
                Mount(staging / "out", "/out", read_only=False),
                Mount(staging / "job", "/job"),
                Mount(RESOURCES, "/grocker"),
                Mount(pip_cache, "/pip-cache", read_only=False),
                *(Mount(s.root, f"/local/{i}") for i, s in enumerate(local_sources)),
                *(Mount(w.parent, f"/internal/{i}") for i, w in enumerate(internal_wheels)),
                *([Mount(test_wheel.parent, "/test-wheel")] if test_wheel else []),
                *([Mount(previous.path / "wheels", "/previous")] if previous else []),
                *([Mount(build_env.path, "/build-env")] if build_env and build_env.ready else []),
                *pip.mounts,
                *([Mount(uv_scratch.parent, "/uv", read_only=False)] if uv_scratch else []),
            ]
        uv_vars = _uv_environment(pip, config.index_strategy) if use_uv else {}
        uv_options = set(uv_env(pip.env, config.index_strategy)) if use_uv else set()
        env = {
            **uv_vars,
            **dict(extra_env or {}),
            **pip.env,
            "PIP_CACHE_DIR": "/pip-cache",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
            "PIP_PROGRESS_BAR": "off",
            "HOME": "/tmp",
            "SOURCE_DATE_EPOCH": str(source_date_epoch),
        }
        version = scm_version(source.root, source.digest, wheelhouse_root / ".scm")
        if version:
            env["SETUPTOOLS_SCM_PRETEND_VERSION"] = version
        # Plugin environment values and the user's pip options (index URLs, tokens) are never
        # echoed; values that look like secrets are also masked in the container's output.
        secret_env = set(extra_env or {}) | set(pip.env) | uv_options
        for name in set(extra_env or {}) | pip.secret_env | (UV_SECRET_ENV & set(uv_vars)):
            for value in [env[name], *env[name].split()]:
                add_secret(value)
        command = [f"{BUILD_VENV}/bin/python", "/grocker/compile_driver.py", f"{job_at}/job.json"]
        user = f"{os.getuid()}:{os.getgid()}"
        result = None
        if use_warm:
            assert warm is not None
            with warm_container(engine, state_dir=warm.state_dir, scope=warm.scope, compiler=compiler,
                                mounts=mounts, user=user, env=env, idle=warm.idle, progress=progress) as container:
                if container is not None:
                    result = container.exec_streamed(wrapped(command), env=env, user=user, secret_env=secret_env)
                    if result is None or result.exit_code == UNCLEAN:  # nothing ran: a fresh container
                        engine.remove_container(container.id)
                        result = None
        if use_level:
            assert level is not None
            container = level.get(engine, compiler=compiler, mounts=mounts, user=user, env=env, progress=progress)
            env = {**env, **level_env}
            if container is not None:
                result = container.exec_streamed(shared_wrapped(command), env=env, user=user, secret_env=secret_env)
                if result is not None and result.exit_code == UNCLEAN:  # nothing ran: a container of its own
                    result = None
        if result is None:
            result = engine.run(compiler, command, mounts=mounts, env=env, user=user, secret_env=secret_env)
        if result.exit_code != 0:
            if "No space left on device" in result.output:
                raise disk_full(staging) from None
            cause = pip_failure_cause(result.output) or f"exit code {result.exit_code}"
            if result.exit_code == LEFTOVERS:
                raise CompileError(f"processes the compile of {what} started survived SIGKILL in the shared test "
                                   "container: its result is not trusted",
                                   f"build again; set {LEVEL_ENV}=0 to compile each library in a container of "
                                   "its own", details=result.tail(30))
            if result.exit_code == 24:
                raise CompileError(f"a plugin's compile command failed for {what}: {test_failure_cause(result.output)}",
                                   progress.see("its output"), details=result.tail(30))
            if result.exit_code == 25:
                failed = json.loads((staging / "out" / "build-command.json").read_text())
                raise BuildCommandFailed(
                    f"build command `{failed['command']}` of {what} failed with exit status {failed['status']}",
                    "fix the command or change build-commands; " + progress.see("its output"), details=result.tail(30))
            if result.exit_code == 26:
                raise CompileError(f"installing {what} for its build-commands failed: {cause}",
                                   progress.see(f"{config.installer}'s output"), details=result.tail(30))
            if result.exit_code == 27 and lock is not None:
                raise LockError(f"{lock.path} is stale: the requirements of {what} (its dependencies, extras, "
                                "constraints, index-strategy or Python) changed since it was written", lock.fix)
            if result.exit_code == 28:
                raise LockError(f"the lock of {what} has a marker this compiler's pip cannot evaluate",
                                lock.fix if lock is not None else LOCK_FIX,
                                details=result.tail(10))
            if result.exit_code == 23:
                raise TestsFailed(f"the tests of {what} failed: {test_failure_cause(result.output)}",
                                  progress.see("the test output"), details=result.tail(40))
            why = compile_failure_hint(result.output)
            raise CompileError(
                f"compiling wheels for {what} failed: {cause}",
                (f"{why}; " if why else "") + progress.see(f"{config.installer}'s output"),
                details=result.tail(30),
            )
        if mode == "test":
            assert existing is not None, "tests need the published wheel"
            # This run's outcome ("passed", "no tests"), beside the manifest of the wheel it tested.
            ran = json.loads((staging / "out" / "tests.json").read_text())
            return Wheelhouse(existing.path, {**existing.manifest, "tests": ran["tests"]},
                              test_seconds=ran.get("test_seconds"))
        manifest = json.loads((staging / "out" / "manifest.json").read_text())
        if mode == "lock":
            assert lock_out is not None, "a lock compile needs lock_out"
            shutil.move(str(staging / "out"), str(lock_out))
            return Wheelhouse(lock_out, manifest)
        if reuse_key:
            (staging / "out" / CLOSURE_KEY_FILE).write_text(reuse_key)
        if build_env and not build_env.ready:
            build_env.keep(staging / "out" / "build-env")
        if previous:
            reused = Wheelhouse(staging / "out", manifest).closure == "reused"
            progress.info(f"closure of {manifest['name']}: " + (
                f"reused ({len(manifest['closure'])} wheels, metadata unchanged), no resolution" if reused
                else "metadata changed, resolved again"))
        # Atomic publication: the directory appears complete or not at all.
        if final.exists() and no_cache:
            shutil.rmtree(final, ignore_errors=True)
        final.parent.mkdir(parents=True, exist_ok=True)  # staged elsewhere in the shared test container
        try:
            os.replace(staging / "out", final)
        except OSError:
            # A concurrent build published the same key first: its result is as good as ours.
            other = Wheelhouse.load(final)
            if other is None:
                raise
            return other
        return Wheelhouse.load(final) or Wheelhouse(final, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if uv_scratch is not None:
            shutil.rmtree(uv_scratch, ignore_errors=True)


def _below(path: Path, root: Path, mounted_at: str) -> str | None:
    """Where ``path`` is in a container that mounts ``root`` at ``mounted_at``; None when it lies outside."""
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError):
        return None
    return mounted_at if rel == "." else f"{mounted_at}/{rel}"


_CLEAN_CACHES: set[Path] = set()


def _remove_clean_caches() -> None:
    for clean in _CLEAN_CACHES:
        shutil.rmtree(clean, ignore_errors=True)


def _clean_cache(scope_cache: Path) -> Path:
    """This run's empty stand-in for ``scope_cache`` (``--no-cache``), beside it; removed when the process ends
    (those of killed runs after a day)."""
    clean = scope_cache.with_name(f"{scope_cache.name}.clean-{os.getpid()}-{int(PROCESS_STARTED)}")
    if clean not in _CLEAN_CACHES:
        for old in scope_cache.parent.glob(f"{scope_cache.name}.clean-*"):
            with contextlib.suppress(OSError):
                if time.time() - old.stat().st_mtime > 86400:
                    shutil.rmtree(old, ignore_errors=True)
        if not _CLEAN_CACHES:
            atexit.register(_remove_clean_caches)
        _CLEAN_CACHES.add(clean)
    clean.mkdir(parents=True, exist_ok=True)
    return clean


def _uv_scratch(root: Path) -> Path:
    """A fresh ``tmp-<id>`` beside uv's cache in ``root`` (removing those a killed run left a day ago)."""
    (root / "cache").mkdir(parents=True, exist_ok=True)
    for old in root.glob("tmp-*"):
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > 86400:
                shutil.rmtree(old, ignore_errors=True)
    scratch = root / f"tmp-{uuid.uuid4().hex[:12]}"
    scratch.mkdir()
    return scratch


def _uv_environment(pip: PipForward, index_strategy: str) -> dict[str, str]:
    """uv's variables in the compile container: the user's pip configuration translated, uv's cache, and
    copies rather than links from the cache into every environment (project code runs in all of them:
    build backends, build-commands, tests; a hardlinked file it rewrote would be the cache's)."""
    return {
        **uv_env(pip.env, index_strategy),
        "UV_CACHE_DIR": "/uv/cache",
        "UV_LINK_MODE": "copy",
        "UV_PYTHON_DOWNLOADS": "never",
        # Only the user's pip configuration decides where packages come from, as with pip: no uv.toml, no
        # [tool.uv] table or sources of the project.
        "UV_NO_CONFIG": "1",
        "UV_NO_SOURCES": "1",
        "UV_NO_PROGRESS": "1",
        "NO_COLOR": "1",
    }


def container_metadata(engine: Engine, *, compiler: str, source: Source, pip: PipForward, pip_cache: Path,
                       progress: Progress) -> dict[str, Any]:
    """The PEP 517 metadata of ``source``, prepared by its build backend in a compiler container.

    For workspace members that are not trusted to run code on the host. The container is
    the compile stage's (the user's uid, the source read-only, the member's own pip cache);
    what it reports is checked before use, since the member's code wrote it.
    """
    with tempfile.TemporaryDirectory(prefix="grocker-metadata-") as tmp:
        out, job = Path(tmp) / "out", Path(tmp) / "job"
        out.mkdir()
        job.mkdir()
        (job / "job.json").write_text(json.dumps({"mode": "metadata", "src": "/src", "files": list(source.files),
                                                  "out": "/out"}))
        pip_cache.mkdir(parents=True, exist_ok=True)
        result = engine.run(
            compiler, [f"{BUILD_VENV}/bin/python", "/grocker/compile_driver.py", "/job/job.json"],
            mounts=[Mount(source.root, "/src"), Mount(out, "/out", read_only=False), Mount(job, "/job"),
                    Mount(RESOURCES, "/grocker"), Mount(pip_cache, "/pip-cache", read_only=False), *pip.mounts],
            env={**pip.env, "PIP_CACHE_DIR": "/pip-cache", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1",
                 "PIP_PROGRESS_BAR": "off", "HOME": "/tmp"},
            user=f"{os.getuid()}:{os.getgid()}", secret_env=pip.secret_env, stream=False)
        if result.exit_code != 0:
            cause = pip_failure_cause(result.output) or f"exit code {result.exit_code}"
            raise ProjectError(f"cannot prepare the metadata of {source.root} (in the compiler container): {cause}",
                               "check that `python -m build --wheel` works in that project", details=result.tail(30))
        try:
            report = json.loads((out / "report.json").read_text())
            meta = report["install"][0]["metadata"]
            fields = (meta["name"], meta["version"], meta.get("requires_dist", []), meta.get("provides_extra", []))
            if not all(isinstance(f, str) for f in fields[:2]) or not all(
                    isinstance(lst, list) and all(isinstance(x, str) for x in lst) for lst in fields[2:]):
                raise ValueError("unexpected types")
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise ProjectError(f"the metadata of {source.root} prepared in the compiler container is unreadable "
                               f"({exc})", "check that `python -m build --wheel` works in that project") from exc
    progress.info(f"metadata of {fields[0]} {fields[1]} prepared in the compiler container")
    return metadata_fields(*fields)


# pip could not find a requirement on the index (a typo, a private package, a version not published).
_NOT_ON_INDEX = re.compile(r"(?:Could not find a version that satisfies the requirement|"
                           r"No matching distribution found for) (?P<req>\S+)|"
                           # uv's words for the same
                           r"Because (?:there is no version of )?(?P<uvreq>[^\s,]+?) (?:was not found in the package "
                           r"registry|and you require)")
# uv found the package on an earlier index without the version wanted (its first-index rule).
_FIRST_INDEX = re.compile(r"hint: `[^`]+` was found on \S+, but not at the requested version \((?P<req>[^)]+)\)")
# A compile that failed for want of a system header or library (what system-packages.build provides).
_MISSING_SYSTEM = re.compile(r"fatal error: [^:\n]+\.h: No such file|cannot find -l\w|pg_config executable not found|"
                             r"was not found in the pkg-config search path|No package '[^']+' found|"
                             r"(?:library|header) \S+ (?:is )?(?:not found|missing)", re.IGNORECASE)


def compile_failure_hint(output: str) -> str | None:
    """What to do about a failed compile, when its output says: a requirement missing from the index, or a
    missing system header or library. None when it says neither (the log then tells)."""
    shadowed = _FIRST_INDEX.search(output)
    if shadowed:
        return (f"uv takes each package from the first index that has it (index-strategy \"first-index\"), and "
                f"that index has no {shadowed.group('req')}: publish it there, or set index-strategy = "
                "\"unsafe-best-match\" if every index is equally trusted (see docs/security.md)")
    missing = _NOT_ON_INDEX.search(output)
    if missing:
        req = missing.group("req") or missing.group("uvreq")
        return (f"check the name and version of {req} and that the index pip uses has it "
                "(pip's index-url, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL; local-packages for projects on disk)")
    if _MISSING_SYSTEM.search(output):
        return "a missing C header or library usually needs its -dev package in system-packages.build"
    return None


def pip_failure_cause(output: str) -> str | None:
    """The most telling line of a failed pip or uv run: the backend's last error, else pip's or uv's."""
    lines = output.splitlines()
    cause = None
    inside = False
    block: list[str] = []
    for line in lines:
        text = line.strip().lstrip("│").strip()
        if "lines of output]" in line:
            inside, block = True, []
        elif "[end of output]" in line:
            inside = False
            meaningful = [b for b in block if b and not b.startswith(("note:", "hint:"))]
            fatal = [b for b in meaningful if "fatal error" in b.lower()]
            # "error: Command '[gcc ...]' returned non-zero" only repeats what failed, not why.
            errors = [b for b in meaningful if "error" in b.lower() and not b.startswith("error: Command '")]
            if fatal or errors or meaningful:
                cause = fatal[0] if fatal else (errors or meaningful)[-1]
        elif inside:
            block.append(text)
    if cause:
        return cause
    errors = [ln.strip() for ln in lines if ln.strip().startswith("ERROR:")]
    return errors[0] if errors else uv_failure_cause(lines)


def uv_failure_cause(lines: list[str]) -> str | None:
    """The most telling line of a failed uv run. uv prints ``error: ...`` then ``  cause: ...`` lines (the
    resolver's explanation, "Because X was not found in the package registry ..."); a build backend's own
    output comes before, unframed."""
    # uv's own error is its last one; a backend's "error: Command '[gcc ...]'" lines come before it.
    errors = [i for i, ln in enumerate(lines) if ln.startswith("error: ") and not ln.startswith("error: Command '")]
    if not errors:
        return None
    first = errors[-1]
    causes = [ln.strip()[len("cause: "):] for ln in lines[first + 1:] if ln.strip().startswith("cause: ")]
    if "No solution found when resolving" in lines[first] and causes:
        return causes[0]
    if "Failed to build" in lines[first]:
        # The backend's output: after the uv command that failed was started, before uv's error.
        starts = [i for i, ln in enumerate(lines[:first]) if ln.startswith("[compile] + uv ")]
        backend = [ln.strip() for ln in lines[(starts[-1] + 1 if starts else 0):first]
                   if ln.strip() and not ln.startswith("[compile]") and ln.strip() != "Building wheel..."]
        fatal = [b for b in backend if "fatal error" in b.lower()]
        said = [b for b in backend if "error" in b.lower() and not b.startswith("error: Command '")]
        if fatal or said:
            return fatal[0] if fatal else said[-1]
        if backend:  # a backend that says why without the word "error" (a SystemExit message, say)
            return backend[-1]
    return lines[first][len("error: "):].strip() + (f": {causes[-1]}" if causes else "")


def test_failure_cause(output: str) -> str:
    """pytest's summary line (``1 failed, 3 passed``) or the last line of the test output."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and not ln.startswith("[compile]")]
    for line in reversed(lines):
        if (" failed" in line or " error" in line) and (" in " in line or "passed" in line):
            return line.strip("= ")
    return lines[-1] if lines else "no output"
