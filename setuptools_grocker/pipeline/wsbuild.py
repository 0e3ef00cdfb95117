"""Building a workspace: in dependency order, up to ``jobs`` members at once, incrementally.

* a library: its wheel is built and its tests run, in one compiler container, against the
  wheels of its internal dependencies built in this run; for trusted libraries that container is the
  one they share, each by ``docker exec`` (warm.py's ``SharedContainers``);
* an application: its closure is compiled with the internal wheels given as files (never
  from an index), then its runtime image is built, smoke-tested and tagged;
* a member whose key is unchanged and whose artifact is still there is ``cached``;
* a failure marks every dependent ``skipped`` (naming the failed dependency); members
  that do not depend on it go on (unless ``fail_fast``).

Wheels live in ``.grocker/wheels/NAME/KEY/`` (published by an atomic rename), member state
in ``.grocker/members/NAME.json`` (atomic writes), so a killed build never leaves an entry
claiming success, and concurrent builds of the same workspace cannot mix their results.

This module is the orchestration (plan -> schedule -> results -> release); next to it:
wsplan.py (options, plan entries, image names), wsmember.py (one member's stages),
wsstore.py (the wheels here and on the wheel index), wsrelease.py (the release).
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Mapping

from packaging.utils import canonicalize_name

from setuptools_grocker.config import Config, check_default_command
from setuptools_grocker.engine import Engine
from setuptools_grocker.errors import GrockerError, LockError
from setuptools_grocker.image.bytecode import identity as bytecode_identity
from setuptools_grocker.image.recipes import BaseImages, current_root_key, ensure_base_images
from setuptools_grocker.pipeline.caches import bytecode_cache_dir, cache_home
from setuptools_grocker.pipeline.lock import LOCK_FILE, Lock
from setuptools_grocker.pipeline.pipconf import PipForward, forward, pip_identity
from setuptools_grocker.pipeline.plugins import plugin_manager
from setuptools_grocker.pipeline.scheduler import Scheduler
from setuptools_grocker.pipeline.warm import SharedContainers, level_spec
from setuptools_grocker.pipeline.workspace import (
    Member,
    Workspace,
    load_member_state,
    load_workspace,
    member_keys,
    shared_config,
    why_rebuild,
)
from setuptools_grocker.pipeline.wslock import (
    Resolution,
    WorkspaceLock,
    conflict_error,
    conflict_pins,
    conflicts,
    read_workspace_lock,
    write_workspace_lock,
)
from setuptools_grocker.pipeline.wsmember import MemberStages, member_stage_context, stage_valid
from setuptools_grocker.pipeline.wsplan import PlanEntry, WorkspaceOptions, key_reference, print_plan, stages_of
from setuptools_grocker.pipeline.wsrelease import release, release_after_build
from setuptools_grocker.pipeline.wsstore import WheelStore
from setuptools_grocker.plugin import apply
from setuptools_grocker.plugin.manager import PluginManager
from setuptools_grocker.progress import Progress
from setuptools_grocker.registry.client import manifest_digest
from setuptools_grocker.registry.sharedcache import shared_cache
from setuptools_grocker.registry.wheelhouse import open_index
from setuptools_grocker.report import ProjectResult, Report

# Re-exported: the CLI, Buildbot and tests import these from here.
__all__ = ["PlanEntry", "WorkspaceBuild", "WorkspaceOptions", "lock_workspace", "member_stage_context", "print_plan",
           "stages_of"]

DEFAULT_OPTIONS = WorkspaceOptions()


class WorkspaceBuild:
    """One run over a workspace; construct, then :meth:`plan` or :meth:`run`."""

    def __init__(self, ws: Workspace, *, environ: Mapping[str, str], progress: Progress,
                 options: WorkspaceOptions = DEFAULT_OPTIONS) -> None:
        self.ws = ws
        self.environ = environ
        self.progress = progress
        self.options = options
        self.pip: PipForward = forward(environ) if environ.get("GROCKER_NO_PIP_CONFIG") != "1" else forward({})
        self.keys: dict[str, dict[str, Any]] = {}
        self.env_key = ""
        self.closure_env_key = ""
        self.shared: Config | None = None
        #: The workspace's lock (``ROOT/pylock.toml``), read with the keys; ``use_lock`` False ignores it.
        self.lock: WorkspaceLock | None = None
        self.use_lock = True
        self.index = open_index(options.index_url, environ=environ, configured=ws.settings.index_url)
        # Plugins, per member (the plugins key may differ): configuration applied once, here.
        self.plugins: dict[str, PluginManager] = {}
        for m in ws.members.values():
            pm = plugin_manager(m.config.plugins, environ, progress.write)
            m.config = apply.configure(pm, m.config)
            check_default_command(m.config)
            m.plugin_key = apply.identity(pm, apply.image_files(pm, m.config), apply.compile_environment(pm, m.config))
            self.plugins[m.name] = pm
        self.store = WheelStore(ws, self.index)
        self.members = MemberStages(self, self.store)
        #: The shared cache of root and compiler images (``build-cache``), one per run.
        self.shared_images = shared_cache(self._shared_config().build_cache, environ, write=options.cache_write,
                                          cache=cache_home(environ))
        # The trusted libraries' shared test container (GROCKER_LEVEL_TESTS=0: none).
        spec = level_spec(environ, root=ws.root, state_dir=ws.state_dir)
        self.level = SharedContainers(spec, discard=options.no_cache) if spec else None

    # -- the shared environment ---------------------------------------------------------
    def _shared_config(self) -> Config:
        """One compiler image for the whole workspace: union of every member's packages."""
        return shared_config([m.config for m in self.ws.members.values()])

    def compute_keys(self, engine: Engine) -> None:
        self.shared = self._shared_config()
        base = engine.ensure_image(self.shared.base_image)
        env = {
            "root": current_root_key(engine, self.shared, base["Id"]),
            "build": list(self.shared.build_packages),
            "pip": pip_identity(self.pip.env),  # contents, not paths: the same on every machine
            "image": bytecode_identity(bytecode_cache_dir(self.environ) is not None),
        }
        self.env_key = hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()
        # What an application's closure reuse compares (wsmember's closure key): a local index's new uploads
        # do not make another closure (pipconf.pip_identity).
        env["pip"] = pip_identity(self.pip.env, index_contents=False)
        self.closure_env_key = hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()
        self.lock = read_workspace_lock(self.ws.root) if self.use_lock else None
        locks = {} if self.lock is None else {
            n: self.lock.subset(n).digest for n, m in self.ws.members.items()
            if m.kind == "application" and n in self.lock.applications}
        self.keys = member_keys(self.ws, self.env_key, locks)

    def application_lock(self, name: str) -> Lock | None:
        """The application's part of the workspace lock (None without one); LockError when it has no entry."""
        return self.lock.subset(name) if self.lock is not None else None

    def _artifact_present(self, engine: Engine, member: Member, state: Mapping[str, Any]) -> bool:
        done = state.get("stages", {})
        needed = stages_of(member, self.options.push)
        if not all(s in done and stage_valid(engine, s, done[s]) for s in needed):
            return False
        return True

    def plan(self, engine: Engine) -> list[PlanEntry]:
        self.compute_keys(engine)
        entries: list[PlanEntry] = []
        rebuilt: set[str] = set()
        for level, names in enumerate(self.ws.levels):
            for name in names:
                m = self.ws.members[name]
                state = load_member_state(self.ws, name)
                reason = why_rebuild(self.keys[name], state, rebuilt)
                if reason is None and not self._artifact_present(engine, m, state):
                    reason = "unfinished stages or missing " + ("wheel" if m.kind == "library" else "image")
                fetch, found = None, None
                if reason is not None and m.kind == "library" and self.index and not self.options.no_cache:
                    found = self.index.find(m.name, m.version, self.keys[name]["key"])
                    if found:
                        reason, fetch = None, found.public
                if reason is not None and m.kind == "application" and m.config.registry and not self.options.no_cache:
                    # Built and pushed by another machine: the registry holds it under its key tag.
                    ref = key_reference(m, self.keys[name]["key"])
                    if manifest_digest(ref):
                        reason, fetch = None, f"registry:{ref}"
                if self.options.no_cache and reason is None:
                    reason = "--no-cache"
                if reason is not None:
                    rebuilt.add(name)
                entries.append(PlanEntry(name, m.kind, m.version, level, sorted(m.deps),
                                         self.keys[name]["key"], reason, fetch, stages_of(m, self.options.push),
                                         found))
        return entries

    # -- the run ------------------------------------------------------------------------
    def run(self) -> Report:
        start = time.monotonic()
        if self.options.upgrade and self.use_lock and (self.ws.root / LOCK_FILE).is_file():
            # --upgrade with a workspace lock: resolve the shared set again and rewrite it, then build from it.
            lock = lock_workspace(self.ws.root, environ=self.environ, progress=self.progress)
            self.progress.info(f"--upgrade: {lock.path} resolved again and rewritten ({len(lock.packages)} "
                               "packages)")
        self.store.clean_stale_staging()
        with Engine(self.progress) as engine:
            engine.reap_orphans()
            entries = {e.name: e for e in self.plan(engine)}
            if self.options.only and self.options.no_deps:
                selected: set[str] = {canonicalize_name(n) for n in self.options.only}
                self.ws.select(self.options.only)  # unknown names fail with a hint
            elif self.options.only:
                selected = self.ws.select(self.options.only)
            else:
                selected = set(self.ws.order)
            results: dict[str, ProjectResult] = {}
            for name in self.ws.order:
                if name not in selected:
                    continue
                m = self.ws.members[name]
                results[name] = ProjectResult(name=name, version=m.version, kind=m.kind, status="pending",
                                              depends_on=sorted(m.deps), key=entries[name].key)
            todo = [n for n in self.ws.order if n in selected]
            to_build = [n for n in todo if entries[n].reason is not None]
            self.progress.info(f"workspace {self.ws.root}: {len(todo)} members, {len(to_build)} to build, "
                               f"{len(todo) - len(to_build)} up to date, jobs={self.options.jobs}")
            images: BaseImages | None = None
            if to_build:
                assert self.shared is not None
                images = ensure_base_images(engine, self.shared, self.progress, pip=self.pip,
                                            work=cache_home(self.environ), shared=self.shared_images)
        try:
            self._schedule(todo, entries, results, images)
        finally:
            if self.level is not None and self.level.to_remove:
                with Engine(self.progress) as engine:
                    self.level.close(engine)
        report = Report([results[n] for n in todo], time.monotonic() - start)
        if self.options.push and not self.options.stages:
            release_after_build(self, results, report)
            report.seconds = time.monotonic() - start
        report.extra["workspace"] = str(self.ws.root)
        if images is not None:  # where the shared root and compiler images came from: local, pulled, built
            report.extra["base_images"] = dict(images.origins)
        report.extra["levels"] = self.ws.levels
        report.extra["containers_started"] = sum(r.containers_started for r in report.projects)
        return report

    def _schedule(self, todo: list[str], entries: Mapping[str, PlanEntry], results: dict[str, ProjectResult],
                  images: BaseImages | None) -> None:
        # --no-deps: the dependencies left out are on disk, the scheduler takes them as satisfied.
        sched = Scheduler({name: self.ws.members[name].deps for name in todo}, todo)
        running: dict[cf.Future[None], str] = {}
        jobs = max(1, self.options.jobs)

        def skip(skipped: list[tuple[str, str]]) -> None:
            for name, why in skipped:
                results[name].status, results[name].error = "skipped", why
                self.progress.info(f"[{name}] skipped: {why}")

        with cf.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="grocker") as pool:
            while not sched.settled:
                batch = sched.advance(jobs)
                skip(batch.skipped)
                for name in batch.start:
                    results[name].status = "running"
                    running[pool.submit(self.members.build_member, name, entries[name], results, images)] = name
                if not running:
                    break
                done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    name = running.pop(fut)
                    fut.result()  # build_member never raises GrockerError; anything else is a bug
                    if results[name].status in ("built", "cached"):
                        sched.succeeded(name)
                        continue
                    sched.failed(name)
                    if self.options.fail_fast:
                        skip(sched.stop("stopped after a failure (--fail-fast)"))

    def release(self, results: Mapping[str, ProjectResult] | None = None, name: str | None = None) -> dict[str, Any]:
        """Publish the release of every application (of ``--only``'s selection): see wsrelease.py."""
        return release(self, results, name)


def lock_workspace(root: Path, *, environ: Mapping[str, str], progress: Progress) -> WorkspaceLock:
    """``grocker lock ROOT``: one lock for the applications' shared third-party set (pipeline/wslock.py).

    The internal libraries the applications use are built first (their wheel stage, as a workspace build makes
    them; their tests are left to the build), then each application's closure is resolved by uv with those
    wheels as files. Packages locked in different versions by two applications are resolved again with the
    lowest of them pinned for all; a conflict left after that is a LockError naming it. Nothing else is built.
    """
    ws = load_workspace(root, environ=environ, progress=progress)
    apps = [n for n in ws.order if ws.members[n].kind == "application"]
    if not apps:
        raise LockError(f"{ws.root} has no application to lock", "a workspace lock pins its applications' closures")
    libraries = sorted({d for a in apps for d in ws.closure(a)})
    build = WorkspaceBuild(ws, environ=environ, progress=progress,
                           options=WorkspaceOptions(only=tuple(libraries), stages=("wheel",)))
    build.use_lock = False  # the lock being written is not an input of the libraries
    if libraries:
        report = build.run()
        failed = [p.name for p in report.projects if p.status not in ("built", "cached")]
        if failed:
            raise LockError(f"the internal libraries {', '.join(failed)} did not build, so the applications of "
                            f"{ws.root} cannot be locked", "fix them (see the errors above), then lock again")
    with Engine(progress) as engine:
        if not build.keys:
            build.compute_keys(engine)
        assert build.shared is not None
        images = ensure_base_images(engine, build.shared, progress, pip=build.pip, work=cache_home(environ),
                                    shared=build.shared_images)
        found: dict[str, Resolution] = {}
        for app in apps:
            with progress.stage(f"lock {app}"):
                found[app] = build.members.lock_resolution(engine, ws.members[app], images, progress)
        clash = conflicts(found)
        if clash:
            # One version per package: the lowest any application was resolved to, for all of them.
            pins = conflict_pins(clash)
            progress.info(f"{len(clash)} package(s) resolved in different versions ({', '.join(clash)}): "
                          f"resolving again with {', '.join(pins)}")
            chosen = dict(pin.split("==", 1) for pin in pins)
            for app in apps:  # only those resolved to another version than the pinned one
                if any(versions.get(app, chosen[name]) != chosen[name] for name, versions in clash.items()):
                    try:
                        with progress.stage(f"lock {app}"):
                            found[app] = build.members.lock_resolution(engine, ws.members[app], images, progress,
                                                                       pins=pins)
                    except GrockerError as exc:
                        raise conflict_error(clash, ws.root) from exc
    return write_workspace_lock(ws.root, found)
