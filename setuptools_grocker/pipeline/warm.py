"""A warm compile container: a single project's consecutive compiles run in one container, by ``docker exec``.

Starting a container costs about 0.35 s, an exec about 0.1 s; a one-line change spends most of its compile
there. So the compile stage of a single project (``mode="project"``, no ``--no-cache``) keeps its container:

* reused only under the same key: the compiler image's ID, every mount (source, target, read-only), the
  user, the environment but for the per-build values (:data:`PER_BUILD_ENV`, given to each exec), the
  host name and the tool's identity. The mounts are the same from one build to the next: the wheelhouse's
  staging parent is mounted once and each build's job and output are paths below it. A container of the
  same trust scope (the project directory) with another key is removed when a new one starts;
* each compile runs through ``warm_init.py --run``: every process the previous compile left is killed
  (``kill(-1, SIGKILL)`` as the build user; ``no-new-privileges``, so there is no other user to hide as),
  ``/tmp`` is emptied, and the same again after the compile. If that fails the container is removed and the
  compile runs in a fresh one;
* after a compile's clean-up, ``warm_init.py`` starts ``build_hook.py --serve``: the prepared build
  environment's backend imported, waiting for the next compile's project wheel (one build, then it exits);
  the next clean-up spares it only when it is the only other process and still waits;
* one compile at a time: a lock in the project's state directory; a concurrent build of the same project
  runs in a container of its own;
* PID 1 (``warm_init.py --idle``) ends the container after :data:`IDLE_ENV` minutes (default 10) with no
  other process; ``grocker gc`` removes warm containers; the reaper of dead runs leaves them (their
  ``io.grocker.warm`` label); ``GROCKER_WARM_IDLE=0`` turns the whole thing off.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from setuptools_grocker.engine import Engine, Mount
from setuptools_grocker.engine.containers import Container
from setuptools_grocker.engine.ownership import LEVEL_LABEL, WARM_SCOPE_LABEL
from setuptools_grocker.errors import ConfigError
from setuptools_grocker.image.recipes import BUILD_VENV, tool_identity
from setuptools_grocker.progress import Progress

IDLE_ENV = "GROCKER_WARM_IDLE"
DEFAULT_IDLE_MINUTES = 10.0
#: The environment values that change from one build to the next: given to each exec, not in the key.
PER_BUILD_ENV = frozenset({"SOURCE_DATE_EPOCH", "SETUPTOOLS_SCM_PRETEND_VERSION"})
#: warm_init.py's exit status when it could not clean the container before the compile.
UNCLEAN = 70


@dataclass(frozen=True)
class WarmSpec:
    """Where a project's warm compile container belongs: its state directory (the lock), its trust scope
    (the project directory), and how long it idles."""

    state_dir: Path
    scope: Path
    idle: float


def idle_seconds(environ: Mapping[str, str]) -> float | None:
    """How long an idle warm container lives, in seconds; None when warm containers are off."""
    text = environ.get(IDLE_ENV, "").strip()
    if not text:
        return DEFAULT_IDLE_MINUTES * 60
    try:
        minutes = float(text)
    except ValueError:
        minutes = -1.0
    if not minutes >= 0 or minutes > 24 * 60:
        raise ConfigError(f"{IDLE_ENV}={text!r} is not a number of minutes",
                          f"set {IDLE_ENV} to minutes between 0 (no warm container) and 1440")
    return minutes * 60 or None


def scope_label(scope: Path) -> str:
    return hashlib.sha256(str(scope.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _inode(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino]


def warm_key(*, compiler_id: str, mounts: Sequence[Mount], user: str, env: Mapping[str, str], scope: Path,
             idle: float) -> str:
    """What a warm container must have been started with to run a compile: everything but the per-build
    environment values."""
    # Each mount's source by its inode too: a directory removed and made again (``rm -rf .grocker``, a file
    # system unmounted) is another directory, which the container's bind mount does not see.
    data = {"compiler": compiler_id,
            "mounts": sorted([str(m.source), m.target, m.read_only, _inode(m.source)] for m in mounts),
            "user": user, "env": sorted((k, v) for k, v in env.items() if k not in PER_BUILD_ENV),
            "scope": str(scope.resolve()), "host": socket.gethostname(), "tool": tool_identity(), "idle": idle}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def warm_container(engine: Engine, *, state_dir: Path, scope: Path, compiler: str, mounts: Sequence[Mount],
                   user: str, env: Mapping[str, str], idle: float, progress: Progress) -> Iterator[Container | None]:
    """The project's warm compile container for this compile (reused or started), held for it alone; None
    when another build of the project holds it or the engine refused one (compile in a container of its own)."""
    compiler_id = engine.image_id(compiler)
    if compiler_id is None:
        yield None
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "warm.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            progress.detail("warm compile container busy (another build of this project): a container of its own")
            yield None
            return
        key = warm_key(compiler_id=compiler_id, mounts=mounts, user=user, env=env, scope=scope, idle=idle)
        got = engine.warm(f"grocker-warm-{key[:20]}", compiler,
                          [f"{BUILD_VENV}/bin/python", "-I", "/grocker/warm_init.py", "--idle", str(int(idle))],
                          key=key, mounts=list(mounts), user=user, labels={WARM_SCOPE_LABEL: scope_label(scope)})
        if got is None:
            yield None
            return
        container, reused = got
        progress.info(f"compile: {'reusing the' if reused else 'started a'} warm compile container "
                      f"{container.id[:12]}")
        yield container


def wrapped(command: list[str]) -> list[str]:
    """``command`` run through warm_init.py (leftovers killed and /tmp emptied, before and after)."""
    return [f"{BUILD_VENV}/bin/python", "-I", "/grocker/warm_init.py", "--run", *command]


# -- the test container the trusted libraries of a workspace share --------------------------------------------

LEVEL_ENV = "GROCKER_LEVEL_TESTS"
#: warm_init.py --exec's exit status when processes a library's compile started survived SIGKILL.
LEFTOVERS = 71


@dataclass(frozen=True)
class LevelSpec:
    """Where the libraries of one trust scope (a workspace's trusted members) compile and test together: one
    warm container, the mounts of every library at once, so each library is a ``docker exec`` in it.

    ``root`` (the workspace, its members below it) is mounted read-only at ``/ws``; ``wheels`` (the published
    wheels of every member: the internal and tested wheels) read-only at ``/wheels``; ``stage`` (each
    compile's job, output, home, tmp and scratch, one directory per compile) writable at ``/stage``;
    ``build_envs`` (the libraries' shared prepared build environments) read-only at ``/build-envs``."""

    root: Path
    wheels: Path
    stage: Path
    build_envs: Path
    idle: float


def level_spec(environ: Mapping[str, str], *, root: Path, state_dir: Path) -> LevelSpec | None:
    """The shared test container of a workspace's trusted libraries; None when it is off (``GROCKER_LEVEL_TESTS=0``,
    or no warm containers: ``GROCKER_WARM_IDLE=0``)."""
    value = environ.get(LEVEL_ENV, "1").strip()
    if value not in ("0", "1", ""):
        raise ConfigError(f"{LEVEL_ENV}={value!r} is neither 0 nor 1",
                          f"set {LEVEL_ENV}=0 to test every library in a container of its own, 1 (the default) "
                          "to test a workspace's trusted libraries in one shared container")
    idle = idle_seconds(environ)
    if value == "0" or idle is None:
        return None
    return LevelSpec(root=root, wheels=state_dir / "wheels", stage=state_dir / "stage",
                     build_envs=state_dir / "build-env" / "libraries", idle=idle)


class SharedContainers:
    """The shared test containers of one workspace run, one per key (compiler image, mounts, environment),
    started once and reused by every library's exec, from the scheduler's threads. ``discard`` (``--no-cache``:
    their caches are this run's) removes them when the run ends; otherwise they idle out like a warm compile
    container, and the next run reuses them."""

    def __init__(self, spec: LevelSpec, *, discard: bool = False) -> None:
        self.spec = spec
        self.discard = discard
        self._lock = threading.Lock()
        self._started: set[str] = set()

    def get(self, engine: Engine, *, compiler: str, mounts: Sequence[Mount], user: str, env: Mapping[str, str],
            progress: Progress) -> Container | None:
        """The running shared container for these mounts and environment (reused, else started); None when the
        engine refused one (the library then compiles in a container of its own)."""
        compiler_id = engine.image_id(compiler)
        if compiler_id is None:
            return None
        key = warm_key(compiler_id=compiler_id, mounts=mounts, user=user, env=env, scope=self.spec.root,
                       idle=self.spec.idle)
        with self._lock:  # one start per key: the other threads wait for it and reuse it
            got = engine.warm(f"grocker-level-{key[:20]}", compiler,
                              [f"{BUILD_VENV}/bin/python", "-I", "/grocker/warm_init.py", "--idle",
                               str(int(self.spec.idle))], key=key, mounts=list(mounts), user=user,
                              labels={WARM_SCOPE_LABEL: scope_label(self.spec.root), LEVEL_LABEL: key[:16]})
            if got is None:
                return None
            container, reused = got
            if not reused:
                self._started.add(container.id)
        progress.info(f"library compile: {'in the' if reused else 'started the'} shared test container "
                      f"{container.id[:12]}")
        return container

    @property
    def to_remove(self) -> bool:
        return self.discard and bool(self._started)

    def close(self, engine: Engine) -> None:
        """The end of the run: with ``discard``, remove the containers it started."""
        if self.discard:
            for cid in sorted(self._started):
                engine.remove_container(cid)


def shared_wrapped(command: list[str]) -> list[str]:
    """``command`` run in the shared test container through warm_init.py: what it starts is killed after it."""
    return [f"{BUILD_VENV}/bin/python", "-I", "/grocker/warm_init.py", "--exec", *command]
