"""Building a workspace: in dependency order, up to ``jobs`` members at once, incrementally.

* a library: its wheel is built and its tests run, in one compiler container, against the
  wheels of its internal dependencies built in this run;
* an application: its closure is compiled with the internal wheels given as files (never
  from an index), then its runtime image is built, smoke-tested and tagged;
* a member whose key is unchanged and whose artifact is still there is ``cached``;
* a failure marks every dependent ``skipped`` (naming the failed dependency); members
  that do not depend on it go on (unless ``fail_fast``).

Wheels live in ``.grocker/wheels/NAME/KEY/`` (published by an atomic rename), member state
in ``.grocker/members/NAME.json`` (atomic writes), so a killed build never leaves an entry
claiming success, and concurrent builds of the same workspace cannot mix their results.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from packaging.utils import canonicalize_name

from setuptools_grocker.config import DEFAULT_TEST_COMMAND, Config, RunOptions, check_default_command
from setuptools_grocker.engine import Engine
from setuptools_grocker.errors import GrockerError, PluginError, WorkspaceError
from setuptools_grocker.image.recipes import BaseImages, ensure_base_images, root_key
from setuptools_grocker.pipeline.build import (
    cache_home,
    default_reference,
    pip_cache_dir,
    plugin_manager,
    push_runtime_image,
)
from setuptools_grocker.pipeline.compile import Wheelhouse, compile_wheels
from setuptools_grocker.pipeline.pipconf import PipForward, forward
from setuptools_grocker.pipeline.project import git_commit_time
from setuptools_grocker.pipeline.scheduler import Scheduler
from setuptools_grocker.pipeline.smoke import smoke_test
from setuptools_grocker.pipeline.stages import PLUGIN_PREFIX, SLOT, STAGES, member_stages
from setuptools_grocker.pipeline.workspace import (
    Member,
    Workspace,
    load_member_state,
    member_keys,
    member_state_path,
    shared_config,
    why_rebuild,
)
from setuptools_grocker.plugin import BuildState, StageContext, apply
from setuptools_grocker.plugin.manager import PluginManager
from setuptools_grocker.progress import Progress
from setuptools_grocker.ref import ImageRef
from setuptools_grocker.registry.client import key_tag, manifest_digest
from setuptools_grocker.registry.release import lagging_error
from setuptools_grocker.registry.wheelhouse import IndexedWheel, open_index
from setuptools_grocker.report import ProjectResult, Report, write_json_atomic

STALE_STAGING_SECONDS = 6 * 3600


def stages_of(member: Member, push: bool) -> list[str]:
    """The stages of one member, in order (``push`` only when asked for)."""
    return member_stages(member.kind, has_tests=member.has_tests, push=push)


@dataclass(frozen=True)
class WorkspaceOptions:
    jobs: int = 1
    only: tuple[str, ...] = ()
    fail_fast: bool = False
    push: bool = False
    no_cache: bool = False
    #: The wheel index (no credentials: they come from GROCKER_WORKSPACE_INDEX_URL or ~/.netrc).
    index_url: str | None = None
    #: Run only these stages (default: all); with ``no_deps``, build only the members named in ``only``.
    stages: tuple[str, ...] = ()
    no_deps: bool = False
    #: With push: also point this tag at every application image (and name the release document).
    release: str | None = None


@dataclass
class PlanEntry:
    name: str
    kind: str
    version: str
    level: int
    depends_on: list[str]
    key: str
    reason: str | None  # None: up to date
    #: Where this exact build is, when it is there and not here: its URL on the wheel index
    #: (no credentials, no query) or ``registry:REF``.
    fetch: str | None = None
    stages: list[str] = dataclasses.field(default_factory=list)
    #: The wheel index's link to this build (not part of the JSON plan).
    found: IndexedWheel | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "version": self.version, "level": self.level,
                "depends_on": self.depends_on, "key": self.key, "up_to_date": self.reason is None,
                "reason": self.reason, "fetch": self.fetch, "stages": self.stages}


class WorkspaceBuild:
    """One run over a workspace; construct, then :meth:`plan` or :meth:`run`."""

    def __init__(self, ws: Workspace, *, environ: Mapping[str, str], progress: Progress,
                 options: WorkspaceOptions = WorkspaceOptions()) -> None:
        self.ws = ws
        self.environ = environ
        self.progress = progress
        self.options = options
        self.pip: PipForward = forward(environ) if environ.get("GROCKER_NO_PIP_CONFIG") != "1" else forward({})
        self._lock = threading.Lock()
        self._image_locks: dict[str, threading.Lock] = {}
        self.keys: dict[str, dict[str, Any]] = {}
        self.env_key = ""
        self.shared: Config | None = None
        self.index = open_index(options.index_url, environ=environ, configured=ws.settings.index_url)
        # Plugins, per member (the plugins key may differ): configuration applied once, here.
        self.plugins: dict[str, PluginManager] = {}
        for m in ws.members.values():
            pm = plugin_manager(m.config.plugins, environ, progress.write)
            m.config = apply.configure(pm, m.config)
            check_default_command(m.config)
            m.plugin_key = apply.identity(pm, apply.image_files(pm, m.config), apply.compile_environment(pm, m.config))
            self.plugins[m.name] = pm

    # -- the shared environment ---------------------------------------------------------
    def _shared_config(self) -> Config:
        """One compiler image for the whole workspace: union of every member's packages."""
        return shared_config([m.config for m in self.ws.members.values()])

    def _compute_keys(self, engine: Engine) -> None:
        self.shared = self._shared_config()
        base = engine.ensure_image(self.shared.base_image)
        pip_hash = hashlib.sha256(json.dumps(sorted(self.pip.env.items())).encode()).hexdigest()
        self.env_key = hashlib.sha256(json.dumps({
            "root": root_key(self.shared, base["Id"]),
            "build": list(self.shared.build_packages),
            "pip": pip_hash,
        }, sort_keys=True).encode()).hexdigest()
        self.keys = member_keys(self.ws, self.env_key)

    def _artifact_present(self, engine: Engine, member: Member, state: Mapping[str, Any]) -> bool:
        done = state.get("stages", {})
        needed = stages_of(member, self.options.push)
        if not all(s in done and self._stage_valid(engine, s, done[s]) for s in needed):
            return False
        return True

    def plan(self, engine: Engine) -> list[PlanEntry]:
        self._compute_keys(engine)
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
                    ref = self._key_reference(m, self.keys[name]["key"])
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
        self._clean_stale_staging()
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
                images = ensure_base_images(engine, self.shared, self.progress)
        self._schedule(todo, entries, results, images)
        report = Report([results[n] for n in todo], time.monotonic() - start)
        if self.options.push and not self.options.stages:
            self._release_after_build(results, report)
            report.seconds = time.monotonic() - start
        report.extra["workspace"] = str(self.ws.root)
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
                    running[pool.submit(self._build_member, name, entries[name], results, images)] = name
                if not running:
                    break
                done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    name = running.pop(fut)
                    fut.result()  # _build_member never raises GrockerError; anything else is a bug
                    if results[name].status in ("built", "cached"):
                        sched.succeeded(name)
                        continue
                    sched.failed(name)
                    if self.options.fail_fast:
                        skip(sched.stop("stopped after a failure (--fail-fast)"))

    def _build_member(self, name: str, entry: PlanEntry, results: dict[str, ProjectResult],
                      images: BaseImages | None) -> None:
        member = self.ws.members[name]
        result = results[name]
        progress = self.progress.child(f"[{name}]")
        progress.quiet_output = self.options.jobs > 1
        result.started_at = time.time()
        result.reason = entry.reason
        start = time.monotonic()
        verb = "up to date" if entry.reason is None else f"building ({entry.reason})"
        self.progress.write(f"[{name}] {member.kind} {member.version}: {verb}")
        with result.failures_recorded(progress.write), Engine(progress) as engine:
            try:
                self._run_stages(engine, member, entry, results, images, progress, result)
            finally:
                result.containers_started = engine.containers_started
        result.seconds = time.monotonic() - start
        result.ended_at = time.time()
        for stage, seconds in progress.timings:
            result.stages[stage] = result.stages.get(stage, 0.0) + seconds
        mark = {"built": "built", "cached": "cached", "failed": "FAILED"}.get(result.status, result.status)
        tail = f": {result.error}" if result.error else ""
        self.progress.write(f"[{name}] {mark} in {result.seconds:.1f}s{tail}")

    def _run_stages(self, engine: Engine, member: Member, entry: PlanEntry, results: Mapping[str, ProjectResult],
                    images: BaseImages | None, progress: Progress, result: ProjectResult) -> None:
        state = load_member_state(self.ws, member.name)
        if state.get("key") != entry.key or self.options.no_cache:
            state = {}
        if entry.fetch and entry.fetch.startswith("registry:"):
            result.status, result.reason = "cached", "in the registry"
            result.image = self._reference(member)
            result.digest = manifest_digest(entry.fetch[len("registry:"):])
            return
        if entry.found and "wheel" not in state.get("stages", {}):
            state = self._fetch(member, entry, progress)
        done: dict[str, Any] = dict(state.get("stages", {}))
        requested = set(self.options.stages or STAGES)
        ran = False
        wanted_plugin_stages = [s[len(PLUGIN_PREFIX):] for s in self.options.stages if s.startswith(PLUGIN_PREFIX)]
        if wanted_plugin_stages:
            pm = self.plugins[member.name]
            known = {st.name: st for st in apply.stages(pm, member.config) if not pm.is_builtin(st.plugin)}
            for name in wanted_plugin_stages:
                if name not in known:
                    raise WorkspaceError(f"no plugin stage named '{name}' for {member.name}",
                                         "see `grocker plugins`; stages: " + (", ".join(sorted(known)) or "none"))
                self._custom_stages(known[name].position, engine, member, images, done, progress)
                ran = True
            if "wheel" in done:
                self._save_state(member, done)
        for stage in stages_of(member, self.options.push):
            if stage not in requested or (stage in done and self._stage_valid(engine, stage, done[stage])):
                continue
            earlier = stages_of(member, True)
            missing = [s for s in earlier[: earlier.index(stage)] if s not in done]
            if missing:
                raise WorkspaceError(f"stage '{stage}' of {member.name} needs stage '{missing[0]}' first",
                                     f"run it: grocker workspace build --only {member.name} --stage {missing[0]}")
            # A library's wheel and tests share one container when both are to run; the plugin
            # stages of both positions then run before and after that container.
            combine = stage == "wheel" and "test" in stages_of(member, False) and "test" in requested \
                and "test" not in done
            self._custom_stages(f"before-{SLOT[stage]}", engine, member, images, done, progress)
            if combine:
                self._custom_stages("before-test", engine, member, images, done, progress)
            with progress.stage("wheel + test" if combine else stage):
                done[stage] = self._stage(stage, engine, member, entry, results, images, done, progress,
                                          with_tests=combine)
            if combine:
                done["test"] = {"command": done[stage].pop("test_command")}
            self._custom_stages(f"after-{SLOT[stage]}", engine, member, images, done, progress)
            if combine:
                self._custom_stages("after-test", engine, member, images, done, progress)
            ran = True
            self._save_state(member, done)
            if stage in ("smoke", "push") and member.kind == "application":
                published = ProjectResult(name=member.name, version=member.version, kind=member.kind)
                self._fill_result(member, done, published)
                published.status = "built"
                self.plugins[member.name].grocker_after_publish(member.config, published)
        self._fill_result(member, done, result)
        result.status = "built" if ran else "cached"
        if ran and self.index is not None and member.kind == "library" and \
                all(s in done for s in stages_of(member, False)) and not done["wheel"].get("fetched"):
            self._upload(member, entry, Path(done["wheel"]["wheel"]), progress)

    def _custom_stages(self, position: str, engine: Engine, member: Member, images: BaseImages | None,
                       done: dict[str, Any], progress: Progress) -> None:
        """Plugin stages at ``position``; files they add for the image are kept in the state."""
        pm = self.plugins[member.name]
        todo = [s for s in apply.stages(pm, member.config) if s.position == position and not pm.is_builtin(s.plugin)]
        if self.options.stages:  # staged runs (one Buildbot step per stage): plugin stages only by name
            todo = [s for s in todo if PLUGIN_PREFIX + s.name in self.options.stages]
        if not todo:
            return
        contributed = apply.image_files(pm, member.config)
        ctx = member_stage_context(member, done, engine=engine, progress=progress, environ=self.environ,
                                   key=self.keys[member.name]["key"], images=images, contributed=contributed,
                                   work_dir=self.ws.state_dir / "stages" / member.name,
                                   run=RunOptions(no_cache=self.options.no_cache, push=self.options.push))
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        for stage in todo:
            with progress.stage(f"{stage.name} [{stage.plugin}]"):
                try:
                    stage.run(ctx)
                except GrockerError:
                    raise
                except Exception as exc:
                    raise PluginError(f"stage '{stage.name}' of plugin '{stage.plugin}' failed: "
                                      f"{type(exc).__name__}: {exc}", "fix the plugin, or disable it with "
                                      f"GROCKER_DISABLE_PLUGINS={stage.plugin}") from exc
        # Kept: the files stages added (the contribution's own are added again by the image stage).
        added = {k: str(v) for k, v in ctx.state.files.items() if contributed.get(k) != v}
        if "wheel" in done and added:
            done["wheel"]["plugin_files"] = added

    def _stage_valid(self, engine: Engine, stage: str, data: Mapping[str, Any]) -> bool:
        if stage == "wheel":
            return Path(str(data.get("wheel"))).is_file()
        if stage == "image":
            return engine.image_id(str(data.get("image_id"))) is not None
        return True

    def _stage(self, stage: str, engine: Engine, member: Member, entry: PlanEntry,
               results: Mapping[str, ProjectResult], images: BaseImages | None, done: Mapping[str, Any],
               progress: Progress, with_tests: bool = False) -> dict[str, Any]:
        if stage == "push":
            # Only the immutable key tag: the names people use move at the release, all or none.
            keyed = self._key_reference(member, entry.key)
            engine.tag(done["image"]["image_id"], keyed)
            digest, uploaded = push_runtime_image(engine, done["image"]["image_id"], [keyed],
                                                  cache_home(self.environ), progress)
            return {"image": keyed, "digest": digest, "pushed_bytes": uploaded}
        assert images is not None, "the compiler image is made before any stage runs"
        if stage == "wheel":
            mode = "library" if member.kind == "library" else "project"
            test = self._test_spec(member) if with_tests else None
            env, commands = apply.compile_environment(self.plugins[member.name], member.config)
            wheels = self._compile(engine, member, entry, images, progress, mode=mode, test=test,
                                   extra_env=env, pre_commands=commands)
            data: dict[str, Any] = {"wheel": str(wheels.project_wheel), "distributions": wheels.distributions()}
            if test:
                data["test_command"] = test["command"]
            return data
        if stage == "test":
            test = self._test_spec(member)
            self._compile(engine, member, entry, images, progress, mode="test", test=test,
                          test_wheel=Path(done["wheel"]["wheel"]))
            return {"command": test["command"]}
        config = self._app_config(member)
        if stage == "image":
            from setuptools_grocker.pipeline.build import build_runtime_image, source_date_epoch

            with self._image_lock(config.run_packages):
                roots = ensure_base_images(engine, config, progress, need_compiler=False)
            wheelhouse = Wheelhouse.load(Path(done["wheel"]["wheel"]).parent.parent)
            if wheelhouse is None:
                raise WorkspaceError(f"the wheels of {member.name} are gone", "build again with --no-cache")
            files = {**apply.image_files(self.plugins[member.name], config),
                     **{k: Path(v) for k, v in done["wheel"].get("plugin_files", {}).items()}}
            image_id = build_runtime_image(engine, config, wheels=wheelhouse, key=entry.key, progress=progress,
                                           internal=self.ws.closure(member.name),
                                           images=BaseImages(roots.root, images.compiler, roots.root_key),
                                           files=files, epoch=source_date_epoch(config, self.environ))
            return {"image_id": image_id}
        if stage == "smoke":
            smoke_test(engine, config, done["image"]["image_id"], progress,
                       commands=apply.smoke_commands(self.plugins[member.name], config))
            ref = self._reference(member)
            engine.tag(done["image"]["image_id"], ref)
            return {"image": ref}
        raise AssertionError(stage)

    def _test_spec(self, member: Member) -> dict[str, Any]:
        extras = (list(member.config.test_extras) if member.config.test_extras is not None
                  else sorted(e for e in member.optional if e in ("test", "tests", "testing")))
        command = member.config.test_command or DEFAULT_TEST_COMMAND
        return {"command": command, "extras": extras,
                "requirements": [] if member.config.test_command else ["pytest"]}

    def _app_config(self, member: Member) -> Config:
        # The runtime root gets the run packages of the application and of its internal libraries.
        closure = self.ws.closure(member.name)
        run_packages = sorted({p for n in [member.name, *closure] for p in self.ws.members[n].config.run_packages})
        return dataclasses.replace(member.config, run_packages=tuple(run_packages),
                                   build_packages=self.shared.build_packages if self.shared else ())

    def _fill_result(self, member: Member, done: Mapping[str, Any], result: ProjectResult) -> None:
        wheel = done.get("wheel", {})
        result.wheel = wheel.get("wheel")
        result.distributions = list(wheel.get("distributions", []))
        if wheel.get("fetched"):
            result.reason = "fetched from the wheel index"
        if member.kind == "application":
            result.image_id = done.get("image", {}).get("image_id")
            result.image = done.get("smoke", {}).get("image")
            result.digest = done.get("push", {}).get("digest")
            result.pushed_bytes = done.get("push", {}).get("pushed_bytes")
            if result.image and result.image_id and result.image != self._reference(member):
                result.image = self._reference(member)

    def _fetch(self, member: Member, entry: PlanEntry, progress: Progress) -> dict[str, Any]:
        """Take this exact build of a library from the wheel index instead of building it."""
        assert self.index is not None and entry.found is not None
        final = self.ws.state_dir / "wheels" / member.name / entry.key
        staging = final.parent / ".tmp" / f"fetch-{uuid.uuid4().hex[:8]}"
        try:
            wheel = self.index.download(entry.found, staging / "wheels", member.name, member.version, entry.key)
            (staging / "manifest.json").write_text(json.dumps({
                "name": member.name, "version": member.version, "wheel": wheel.name, "closure": [],
                "fetched": entry.found.public, entry.found.hash_name: entry.found.digest}))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            os.replace(staging, final)
        except OSError:  # published meanwhile by a concurrent build
            shutil.rmtree(staging, ignore_errors=True)
        found = sorted((final / "wheels").glob("*.whl"))
        progress.info(f"fetched {found[0].name} from the wheel index")
        # Only complete (tested) libraries are uploaded: every stage counts as done.
        done = {"wheel": {"wheel": str(found[0]), "distributions": [], "fetched": True}}
        for stage in stages_of(member, False)[1:]:
            done[stage] = {"fetched": True}
        self._save_state(member, done)
        return {"key": entry.key, "stages": done}

    def _upload(self, member: Member, entry: PlanEntry, wheel: Path, progress: Progress) -> None:
        if self.index is not None:
            with progress.stage("upload"):
                name = self.index.upload(wheel, entry.key, member.name, member.version)
                progress.info(f"uploaded {name}")

    def _reference(self, member: Member) -> str:
        return default_reference(member.config, member.name, member.version)

    def _key_reference(self, member: Member, key: str) -> str:
        return str(ImageRef.parse(self._reference(member)).with_tag(key_tag(key)))

    # -- the release ----------------------------------------------------------------------
    def _release_after_build(self, results: Mapping[str, ProjectResult], report: Report) -> None:
        bad = [r.name for r in results.values() if r.status not in ("built", "cached")]
        if bad:
            why = f"{len(bad)} member(s) failed or were skipped ({', '.join(bad)})"
            self.progress.write(f"release not published: {why}; no release tag was moved")
            report.extra["release"] = {"published": False, "reason": why}
            return
        try:
            document = self.release(results, self.options.release)
        except GrockerError as exc:
            self.progress.write(f"release not published: {exc.one_line()}")
            report.extra["release"] = {"published": False, "reason": exc.one_line()}
            report.error = exc
            return
        report.extra["release"] = {"published": True, **document}
        self.progress.write(f"release {document['release']} published: {document['document']['image']}")
        # Published: the pointer names it. Lagging convenience tags still fail the run, so a re-run moves them.
        report.error = lagging_error(document)

    def release(self, results: Mapping[str, ProjectResult] | None = None, name: str | None = None) -> dict[str, Any]:
        """Publish the release of every application (of ``--only``'s selection); see registry/release.py.

        Called after a build with ``--push`` that succeeded, and by ``grocker workspace release``
        (with no results: the key tags in the registry are the build's). Serialised with any
        other release of this workspace on this machine by ``.grocker/release.lock``. The
        returned document lists in ``lagging`` the convenience tags that could not be moved.
        """
        from setuptools_grocker import __version__
        from setuptools_grocker.pipeline.build import extra_tags
        from setuptools_grocker.pipeline.project import git_revision
        from setuptools_grocker.registry.release import AppRelease, check_release_name, publish_release

        check_release_name(name)
        if not self.keys:
            with Engine(Progress(quiet=True)) as engine:
                self._compute_keys(engine)
        selected = self.ws.select(self.options.only) if self.options.only else set(self.ws.order)
        apps, libraries = [], {}
        for member_name in self.ws.order:
            m = self.ws.members[member_name]
            if member_name not in selected:
                continue
            if m.kind == "library":
                libraries[m.name] = m.version
                continue
            if not m.config.registry:
                raise WorkspaceError(f"application {m.name} has no registry to release to",
                                     "set registry in the workspace root or the member")
            ref = self._reference(m)
            refs = [ref, *extra_tags(m.config, ref, m.version, git_revision(m.path))]
            tags = [ImageRef.parse(r).tag or "latest" for r in refs] + ([name] if name else [])
            result = (results or {}).get(member_name)
            apps.append(AppRelease(m.name, m.version, self._key_reference(m, self.keys[member_name]["key"]),
                                   result.digest if result else None, tags))
        first = next((self.ws.members[a.name] for a in apps), None)
        repo = self.ws.settings.release_image or f"{canonicalize_name(self.ws.root.name)}-release"
        registry = first.config.registry.rstrip("/") if first and first.config.registry else ""
        with self.progress.stage("release"):
            document = publish_release(apps, document_repo=f"{registry}/{repo}", release=name,
                                       libraries=libraries, workspace=self.ws.root.name, tool_version=__version__,
                                       lock_path=self.ws.state_dir / "release.lock",
                                       carried=sorted(set(self.ws.order) - selected), info=self.progress.info)
        releases = self.ws.state_dir / "releases"
        releases.mkdir(parents=True, exist_ok=True)
        write_json_atomic(releases / f"{document['release']}.json", document)
        for app in apps:
            if results and app.name in results:
                r = results[app.name]
                r.digest = app.digest
                repo_of = ImageRef.parse(app.key_ref)
                r.image = str(repo_of.with_tag(app.tags[0]))
                r.tags = [str(repo_of.with_tag(t)) for t in dict.fromkeys(app.tags)]
        return document

    def _dep_wheel(self, name: str) -> Path:
        """The wheel of internal dependency ``name``: built in this run, before, or on the index."""
        state = load_member_state(self.ws, name)
        key = self.keys[name]["key"]
        wheel = state.get("stages", {}).get("wheel", {}).get("wheel") if state.get("key") == key else None
        if wheel and Path(wheel).is_file():
            return Path(wheel)
        if self.index is not None:
            m = self.ws.members[name]
            found = self.index.find(m.name, m.version, key)
            if found:
                entry = PlanEntry(name, m.kind, m.version, 0, sorted(m.deps), key, None, found.public, found=found)
                fetched = self._fetch(m, entry, Progress(quiet=True))
                return Path(fetched["stages"]["wheel"]["wheel"])
        raise WorkspaceError(f"dependency {name} is not built for this source",
                             f"build it first (grocker workspace build --only {name}), or drop --no-deps")

    def _compile(self, engine: Engine, member: Member, entry: PlanEntry, images: BaseImages, progress: Progress,
                 *, mode: str, test: Mapping[str, Any] | None = None, test_wheel: Path | None = None,
                 extra_env: Mapping[str, str] | None = None, pre_commands: Sequence[str] = ()) -> Wheelhouse:
        internal = [self._dep_wheel(d) for d in self.ws.closure(member.name)]
        epoch = int(self.environ.get("SOURCE_DATE_EPOCH") or git_commit_time(member.path) or 315532800)
        return compile_wheels(
            engine, member.config, compiler=images.compiler, source=member.source, local_sources=[], pip=self.pip,
            wheelhouse_root=self.ws.state_dir / "wheels" / member.name, key=entry.key,
            # Members trust each other, and share a cache; an untrusted member has a cache of its own.
            pip_cache=pip_cache_dir(self.environ, self.ws.root if member.trusted else member.path),
            source_date_epoch=epoch, progress=progress,
            internal_wheels=internal, mode=mode, test=test, what=member.name, test_wheel=test_wheel,
            extra_env=extra_env, pre_commands=pre_commands, no_cache=self.options.no_cache,
        )

    def _image_lock(self, key: tuple[str, ...]) -> threading.Lock:
        with self._lock:
            return self._image_locks.setdefault(",".join(key), threading.Lock())

    def _save_state(self, member: Member, done: Mapping[str, Any]) -> None:
        """Write the member's state (atomically) after each finished stage."""
        parts = self.keys[member.name]
        wheel = done.get("wheel", {})
        write_json_atomic(member_state_path(self.ws, member.name), {
            "name": member.name, "version": member.version, "kind": member.kind, "key": parts["key"],
            "parts": parts, "stages": dict(done),
            # Flat copies for readers of the state file.
            "wheel": wheel.get("wheel"), "distributions": wheel.get("distributions", []),
            "image_id": done.get("image", {}).get("image_id"), "image": done.get("smoke", {}).get("image"),
            "digest": done.get("push", {}).get("digest"),
            "complete": all(s in done for s in stages_of(member, False)),
        })

    def _clean_stale_staging(self) -> None:
        """Remove staging directories of builds killed long ago (never read as results)."""
        now = time.time()
        for tmp in (self.ws.state_dir / "wheels").glob("*/.tmp/*"):
            try:
                if now - tmp.stat().st_mtime > STALE_STAGING_SECONDS:
                    shutil.rmtree(tmp, ignore_errors=True)
            except OSError:
                pass


def member_stage_context(member: Member, done: Mapping[str, Any], *, engine: Engine, progress: Progress,
                         environ: Mapping[str, str], key: str, images: BaseImages | None,
                         contributed: Mapping[str, Path], work_dir: Path, run: RunOptions) -> StageContext:
    """The context of a workspace member's plugin stages: the same :class:`BuildState` fields as a single build's
    (``stage_context`` in build.py), filled from the stages done so far (``done``: the member state's stages)."""
    wheel = done.get("wheel", {})
    wheels = Wheelhouse.load(Path(wheel["wheel"]).parent.parent) if wheel.get("wheel") else None
    files = {**contributed, **{k: Path(v) for k, v in wheel.get("plugin_files", {}).items()}}
    state = BuildState(key=key, environ=environ, images=images, files=files, wheels=wheels,
                       image_id=done.get("image", {}).get("image_id"), ref=done.get("smoke", {}).get("image"))
    return StageContext(config=member.config, engine=engine, progress=progress, work_dir=work_dir, state=state,
                        compiler_image=images.compiler if images else None, run=run)


def print_plan(entries: list[PlanEntry], write: Callable[[str], None]) -> None:
    width = max((len(e.name) for e in entries), default=4)
    write(f"{'level':<5}  {'member':<{width}}  {'kind':<11}  {'version':<10}  status")
    for e in entries:
        status = "up to date" if e.reason is None else f"rebuild: {e.reason}"
        if e.fetch:
            status = "up to date (in the registry)" if e.fetch.startswith("registry:") else \
                "up to date (on the wheel index)"
        write(f"{e.level:<5}  {e.name:<{width}}  {e.kind:<11}  {e.version:<10}  {status}")
    todo = sum(1 for e in entries if e.reason is not None)
    write(f"{len(entries)} members, {todo} to build, {len(entries) - todo} up to date")
