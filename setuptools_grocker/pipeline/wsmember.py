"""Running one workspace member's stages (wheel, test, image, smoke, push) and its plugin stages.

The member state (``.grocker/members/NAME.json``) is written after each finished stage, so a
later run (or the next Buildbot step, ``--stage``) goes on from there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from setuptools_grocker.config import DEFAULT_TEST_COMMAND, Config, RunOptions
from setuptools_grocker.engine import Engine
from setuptools_grocker.errors import GrockerError, PluginError, TestsFailed, WorkspaceError
from setuptools_grocker.image import records
from setuptools_grocker.image.recipes import BaseImages, ensure_base_images
from setuptools_grocker.image.runtime import WHEELS_UNCHANGED
from setuptools_grocker.pipeline.caches import bytecode_cache_dir, cache_home, pip_cache_dir, uv_dir
from setuptools_grocker.pipeline.compile import Wheelhouse, compile_wheels
from setuptools_grocker.pipeline.project import describe_project, git_commit_time
from setuptools_grocker.pipeline.provenance import record_provenance
from setuptools_grocker.pipeline.smoke import smoke_test
from setuptools_grocker.pipeline.stages import PLUGIN_PREFIX, SLOT, STAGES
from setuptools_grocker.pipeline.workspace import Member, load_member_state, save_member_state
from setuptools_grocker.pipeline.wslock import Resolution
from setuptools_grocker.pipeline.wsplan import PlanEntry, key_reference, reference, stages_of
from setuptools_grocker.pipeline.wsstore import WheelStore
from setuptools_grocker.plugin import BuildState, StageContext, apply
from setuptools_grocker.progress import Progress
from setuptools_grocker.registry.client import manifest_digest
from setuptools_grocker.registry.push import push_runtime_image
from setuptools_grocker.report import ProjectResult

if TYPE_CHECKING:
    from setuptools_grocker.pipeline.wsbuild import WorkspaceBuild


#: How the member's line at the end of its build shows ``ProjectResult.tests``.
TESTS_SHOWN = {"passed": "tests passed", "failed": "tests failed", "no tests": "no tests collected",
               "not found": "no tests found"}


class MemberStages:
    """The stages of the members of one workspace run; :meth:`build_member` is called once per member, from
    the scheduler's worker threads (the run-wide inputs are the build's: keys, shared config, plugins)."""

    def __init__(self, build: WorkspaceBuild, store: WheelStore) -> None:
        self.build = build
        self.ws = build.ws
        self.environ = build.environ
        self.options = build.options
        self.store = store
        self._lock = threading.Lock()
        self._image_locks: dict[str, threading.Lock] = {}

    def build_member(self, name: str, entry: PlanEntry, results: dict[str, ProjectResult],
                     images: BaseImages | None) -> None:
        member = self.ws.members[name]
        result = results[name]
        progress = self.build.progress.child(f"[{name}]")
        progress.quiet_output = self.options.jobs > 1
        result.started_at = time.time()
        result.reason = entry.reason
        start = time.monotonic()
        verb = "up to date" if entry.reason is None else f"building ({entry.reason})"
        self.build.progress.write(f"[{name}] {member.kind} {member.version}: {verb}")
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
        if result.status == "cached" and result.reason:
            mark += f" ({result.reason})"
        tail = f": {result.error}" if result.error else ""
        if result.tests and not result.error:
            tail = ", " + TESTS_SHOWN.get(result.tests, result.tests)
        self.build.progress.write(f"[{name}] {mark} in {result.seconds:.1f}s{tail}")

    def _run_stages(self, engine: Engine, member: Member, entry: PlanEntry, results: Mapping[str, ProjectResult],
                    images: BaseImages | None, progress: Progress, result: ProjectResult) -> None:
        state = load_member_state(self.ws, member.name)
        # The stages of the build before, whatever its key: the image stage may reuse its image (cut-off).
        previous: Mapping[str, Any] = dict(state.get("stages", {}))
        reusable = self._reusable_wheel(member, state)
        if state.get("key") != entry.key or self.options.no_cache:
            state = {}
        if entry.fetch and entry.fetch.startswith("registry:"):
            result.status, result.reason = "cached", "in the registry"
            result.image = reference(member)
            result.digest = manifest_digest(entry.fetch[len("registry:"):])
            return
        if entry.found and "wheel" not in state.get("stages", {}):
            state = self.store.fetch(member, entry, self.build.keys[member.name], progress)
        done: dict[str, Any] = dict(state.get("stages", {}))
        requested = set(self.options.stages or STAGES)
        ran = reused = False  # reused: this run's image stage took the previous image (same wheels)
        wanted_plugin_stages = [s[len(PLUGIN_PREFIX):] for s in self.options.stages if s.startswith(PLUGIN_PREFIX)]
        if wanted_plugin_stages:
            pm = self.build.plugins[member.name]
            known = {st.name: st for st in apply.stages(pm, member.config) if not pm.is_builtin(st.plugin)}
            for name in wanted_plugin_stages:
                if name not in known:
                    raise WorkspaceError(f"no plugin stage named '{name}' for {member.name}",
                                         "see `grocker plugins`; stages: " + (", ".join(sorted(known)) or "none"))
                self._custom_stages(known[name].position, engine, member, images, done, progress)
                ran = True
            if "wheel" in done:
                save_member_state(self.ws, member, self.build.keys[member.name], done)
        for stage in stages_of(member, self.options.push):
            if stage not in requested or (stage in done and stage_valid(engine, stage, done[stage])):
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
                try:
                    done[stage] = self._stage(stage, engine, member, entry, results, images, done, progress,
                                              with_tests=combine, previous=previous, reusable=reusable)
                except TestsFailed:
                    result.tests = "failed"
                    raise
            if combine:
                done["test"] = {"command": done[stage].pop("test_command"), "result": done[stage].pop("tests"),
                                "seconds": done[stage].pop("test_seconds", None)}
            if (combine or stage == "test") and isinstance(done["test"].get("seconds"), (int, float)):
                result.test_seconds = (result.test_seconds or 0.0) + done["test"]["seconds"]
            self._custom_stages(f"after-{SLOT[stage]}", engine, member, images, done, progress)
            if combine:
                self._custom_stages("after-test", engine, member, images, done, progress)
            ran = True
            reused = reused or (stage == "image" and bool(done[stage].get("reused")))
            save_member_state(self.ws, member, self.build.keys[member.name], done)
            if stage in ("smoke", "push") and member.kind == "application":
                published = ProjectResult(name=member.name, version=member.version, kind=member.kind)
                self._fill_result(member, done, published)
                published.status = "built"
                self.build.plugins[member.name].grocker_after_publish(member.config, published)
        self._fill_result(member, done, result)
        result.status = "built" if ran else "cached"
        if reused:
            result.status, result.reason = "cached", WHEELS_UNCHANGED
        if ran and self.store.index is not None and member.kind == "library" and \
                all(s in done for s in stages_of(member, False)) and not done["wheel"].get("fetched"):
            self.store.upload(member, entry, Path(done["wheel"]["wheel"]), progress)

    def _custom_stages(self, position: str, engine: Engine, member: Member, images: BaseImages | None,
                       done: dict[str, Any], progress: Progress) -> None:
        """Plugin stages at ``position``; files they add for the image are kept in the state."""
        pm = self.build.plugins[member.name]
        todo = [s for s in apply.stages(pm, member.config) if s.position == position and not pm.is_builtin(s.plugin)]
        if self.options.stages:  # staged runs (one Buildbot step per stage): plugin stages only by name
            todo = [s for s in todo if PLUGIN_PREFIX + s.name in self.options.stages]
        if not todo:
            return
        contributed = apply.image_files(pm, member.config)
        ctx = member_stage_context(member, done, engine=engine, progress=progress, environ=self.environ,
                                   key=self.build.keys[member.name]["key"], images=images, contributed=contributed,
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

    def _stage(self, stage: str, engine: Engine, member: Member, entry: PlanEntry,
               results: Mapping[str, ProjectResult], images: BaseImages | None, done: Mapping[str, Any],
               progress: Progress, with_tests: bool = False, previous: Mapping[str, Any] | None = None,
               reusable: Path | None = None) -> dict[str, Any]:
        if stage == "push":
            # Only the immutable key tag: the names people use move at the release, all or none.
            keyed = key_reference(member, entry.key)
            engine.tag(done["image"]["image_id"], keyed)
            pm = self.build.plugins[member.name]
            digest, uploaded = push_runtime_image(engine, done["image"]["image_id"], [keyed],
                                                  cache_home(self.environ), progress,
                                                  sign=lambda request: pm.grocker_sign(member.config, request))
            records.update(cache_home(self.environ), done["image"]["image_id"], digest=digest, tags=[keyed])
            return {"image": keyed, "digest": digest, "pushed_bytes": uploaded}
        assert images is not None, "the compiler image is made before any stage runs"
        if stage == "wheel":
            mode = "library" if member.kind == "library" else "project"
            test = self._test_spec(member) if with_tests else None
            env, commands = apply.compile_environment(self.build.plugins[member.name], member.config)
            if reusable is not None and not env and not commands:
                return self._reuse_wheel(engine, member, entry, images, progress, reusable, test)
            wheels = self._compile(engine, member, entry, images, progress, mode=mode, test=test,
                                   extra_env=env, pre_commands=commands)
            data: dict[str, Any] = {"wheel": str(wheels.project_wheel), "distributions": wheels.distributions()}
            if mode == "project":
                data["closure"] = wheels.closure
            if test:
                data["test_command"] = test["command"]
                data["tests"] = wheels.manifest.get("tests", "passed")
                data["test_seconds"] = wheels.test_seconds
            return data
        if stage == "test":
            test = self._test_spec(member)
            tested = self._compile(engine, member, entry, images, progress, mode="test", test=test,
                                   test_wheel=Path(done["wheel"]["wheel"]))
            return {"command": test["command"], "result": tested.manifest.get("tests", "passed"),
                    "seconds": tested.test_seconds}
        config = self._app_config(member)
        if stage == "image":
            from setuptools_grocker.image.runtime import build_runtime_image, cut_off, image_key
            from setuptools_grocker.pipeline.project import git_revision, source_date_epoch

            with self._image_lock(config.run_packages):
                roots = ensure_base_images(engine, config, progress, need_compiler=False,
                                           shared=self.build.shared_images)
            wheelhouse = Wheelhouse.load(Path(done["wheel"]["wheel"]).parent.parent)
            if wheelhouse is None:
                raise WorkspaceError(f"the wheels of {member.name} are gone", "build again with --no-cache")
            files = {**apply.image_files(self.build.plugins[member.name], config),
                     **{k: Path(v) for k, v in done["wheel"].get("plugin_files", {}).items()}}
            epoch, revision = source_date_epoch(config.project_dir, self.environ), git_revision(config.project_dir)
            internal, bytecode = self.ws.closure(member.name), bytecode_cache_dir(self.environ)
            base = BaseImages(roots.root, images.compiler, roots.root_key)
            ikey = image_key(config, root_key=roots.root_key, wheels=wheelhouse, revision=revision, epoch=epoch,
                             plugins=apply.identity(self.build.plugins[member.name], files, None),
                             internal=internal, bytecode=bytecode is not None)
            # Only an image that passed its smoke test before is reused without one.
            before = (previous or {}).get("image", {}) if "smoke" in (previous or {}) else {}
            reused = cut_off(engine, before, ikey, progress, no_cache=self.options.no_cache)
            if reused is not None:
                return {"image_id": reused, "image_key": ikey, "reused": True}
            image_id = build_runtime_image(engine, config, wheels=wheelhouse, key=entry.key, progress=progress,
                                           internal=internal, images=base, files=files, epoch=epoch,
                                           revision=revision, bytecode=bytecode, no_cache=self.options.no_cache)
            records.record_assembled(engine, cache_home(self.environ), image_id, config,
                                     images=base, key=entry.key,
                                     name=member.name, version=member.version,
                                     revision=revision, state_dir=self.ws.state_dir,
                                     workspace=self.ws.root)
            record_provenance(engine, cache_home(self.environ), image_id, config, images=base, key=entry.key,
                              name=member.name, version=member.version, source_digest=member.source.digest,
                              revision=revision, pip_env=self.build.pip.env, plugins=self.build.plugins[member.name],
                              internal={d: (self.ws.members[d].path, self.build.keys[d]["key"]) for d in internal},
                              lock=self._provenance_lock(member))
            return {"image_id": image_id, "image_key": ikey}
        if stage == "smoke":
            try:
                if not done["image"].get("reused"):  # a reused image passed its smoke test when it was built
                    smoke_test(engine, config, done["image"]["image_id"], progress,
                               commands=apply.smoke_commands(self.build.plugins[member.name], config))
            except BaseException:
                with contextlib.suppress(OSError):  # the smoke test's error is the one to report
                    records.update(cache_home(self.environ), done["image"]["image_id"], status="failed")
                raise
            ref = reference(member)
            engine.tag(done["image"]["image_id"], ref)
            records.update(cache_home(self.environ), done["image"]["image_id"], status="built", tags=[ref])
            return {"image": ref}
        raise AssertionError(stage)

    def _provenance_lock(self, member: Member) -> tuple[str, str] | None:
        """The workspace lock the application's closure came from: its path from the application's directory
        and the sha256 of the whole file (what a reviewer can check against the committed file)."""
        lock = self.build.lock
        if lock is None or member.name not in lock.applications:
            return None
        return os.path.relpath(lock.path, member.path), lock.digest

    def _reusable_wheel(self, member: Member, state: Mapping[str, Any]) -> Path | None:
        """The library's wheel of its last build when only its dependencies changed since (its source, config,
        build environment and the tool are the same): that wheel is what a new build would make, since a
        library's wheel is built from its own source alone. Its tests still run against the new dependencies."""
        old, parts = state.get("parts") or {}, self.build.keys[member.name]
        if member.kind != "library" or self.options.no_cache or old.get("key") == parts["key"] or \
                any(old.get(k) != parts[k] for k in ("tool", "source", "config", "env")):
            return None
        wheel = state.get("stages", {}).get("wheel", {}).get("wheel")
        if not wheel or not Path(wheel).is_file() or state.get("stages", {}).get("wheel", {}).get("fetched"):
            return None
        return Path(wheel)

    def _reuse_wheel(self, engine: Engine, member: Member, entry: PlanEntry, images: BaseImages, progress: Progress,
                     wheel: Path, test: Mapping[str, Any] | None) -> dict[str, Any]:
        published = self.store.republish(member, wheel, entry.key)
        progress.info(f"wheel {published.name} reused: only dependencies changed" +
                      (", its tests run against them" if test else ""))
        data: dict[str, Any] = {"wheel": str(published), "distributions": [], "reused": True}
        wheelhouse = Wheelhouse.load(published.parent.parent)
        if wheelhouse is not None:
            data["distributions"] = wheelhouse.distributions()
        if test:
            tested = self._compile(engine, member, entry, images, progress, mode="test", test=test,
                                   test_wheel=published)
            data["test_command"] = test["command"]
            data["tests"] = tested.manifest.get("tests", "passed")
            data["test_seconds"] = tested.test_seconds
        return data

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
                                   build_packages=self.build.shared.build_packages if self.build.shared else ())

    def _fill_result(self, member: Member, done: Mapping[str, Any], result: ProjectResult) -> None:
        wheel = done.get("wheel", {})
        result.wheel = wheel.get("wheel")
        result.distributions = list(wheel.get("distributions", []))
        result.closure = wheel.get("closure")
        if wheel.get("fetched"):
            result.reason = "fetched from the wheel index"
        if member.kind == "library":
            # "passed" / "no tests" (nothing collected) from the run; "not found" when none were detected.
            result.tests = done["test"].get("result", "passed") if "test" in done else \
                (None if member.has_tests else "not found")
        if member.kind == "application":
            result.image_id = done.get("image", {}).get("image_id")
            result.image = done.get("smoke", {}).get("image")
            result.digest = done.get("push", {}).get("digest")
            result.pushed_bytes = done.get("push", {}).get("pushed_bytes")
            if result.image and result.image_id and result.image != reference(member):
                result.image = reference(member)

    def _compile(self, engine: Engine, member: Member, entry: PlanEntry, images: BaseImages, progress: Progress,
                 *, mode: str, test: Mapping[str, Any] | None = None, test_wheel: Path | None = None,
                 extra_env: Mapping[str, str] | None = None, pre_commands: Sequence[str] = ()) -> Wheelhouse:
        internal = [self.store.dep_wheel(d, self.build.keys[d]) for d in self.ws.closure(member.name)]
        # An application's closure comes from its part of the workspace's lock when there is one.
        lock = self.build.application_lock(member.name) if mode == "project" else None
        if mode == "project" and member.config.lock_file.is_file():
            progress.warn(f"{member.config.lock_file} is not used by workspace builds: the closure is "
                          + ("the workspace's lock's" if lock is not None else "resolved") +
                          f" (`grocker lock {self.ws.root}` locks the workspace)")
        epoch = int(self.environ.get("SOURCE_DATE_EPOCH") or git_commit_time(member.path) or 315532800)
        return compile_wheels(
            engine, member.config, compiler=images.compiler, source=member.source, local_sources=[], pip=self.build.pip,
            wheelhouse_root=self.ws.state_dir / "wheels" / member.name, key=entry.key,
            # Members trust each other, and share a cache; an untrusted member has a cache of its own.
            pip_cache=pip_cache_dir(self.environ, self.ws.root if member.trusted else member.path),
            uv_root=uv_dir(self.environ, self.ws.root if member.trusted else member.path),
            source_date_epoch=epoch, progress=progress,
            internal_wheels=internal, mode=mode, test=test, test_wheel=test_wheel,
            what=describe_project(member.path, member.name, member.version, base=self.ws.root),
            extra_env=extra_env, pre_commands=pre_commands, no_cache=self.options.no_cache,
            closure_key=self._closure_key(member) if mode == "project" else None, upgrade=self.options.upgrade,
            build_env_root=self.ws.state_dir / "build-env" / (
                "libraries" if mode == "library" and member.trusted else member.name),
            # The trusted libraries of the workspace share one prepared build environment per set of build
            # requirements (mounted read-only once made); an untrusted one prepares its own.
            shared_build_env=self._build_env_key(member) if mode == "library" else None,
            lock=lock,
            # Trusted libraries compile and test by `docker exec` in one shared container (see warm.py); an
            # untrusted one in a container of its own.
            level=self.build.level if member.trusted and member.kind == "library" else None,
        )

    def lock_resolution(self, engine: Engine, member: Member, images: BaseImages, progress: Progress,
                        pins: Sequence[str] = ()) -> Resolution:
        """``grocker lock ROOT``: the application's closure resolved by uv into a PEP 751 lock, with its internal
        libraries given as the wheels of this workspace (built before), as its build compiles it; ``pins`` are
        versions uv must keep (the shared set's second pass)."""
        internal = [self.store.dep_wheel(d, self.build.keys[d]) for d in self.ws.closure(member.name)]
        env, commands = apply.compile_environment(self.build.plugins[member.name], member.config)
        epoch = int(self.environ.get("SOURCE_DATE_EPOCH") or git_commit_time(member.path) or 315532800)
        self.ws.state_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".lock-", dir=self.ws.state_dir) as tmp:
            out = Path(tmp) / "out"
            compile_wheels(
                engine, member.config, compiler=images.compiler, source=member.source, local_sources=[],
                pip=self.build.pip, wheelhouse_root=self.ws.state_dir / "wheels" / member.name,
                key=f"lock{uuid.uuid4().hex}",
                pip_cache=pip_cache_dir(self.environ, self.ws.root if member.trusted else member.path),
                uv_root=uv_dir(self.environ, self.ws.root if member.trusted else member.path),
                source_date_epoch=epoch, progress=progress, internal_wheels=internal, mode="lock", lock_out=out,
                what=describe_project(member.path, member.name, member.version, base=self.ws.root),
                extra_env=env, pre_commands=commands, lock_pins=pins)
            found = json.loads((out / "lock.json").read_text())
            return Resolution(member.name, (out / "pylock.toml").read_text(), found["inputs"],
                              tuple(found["built"]))

    def _build_env_key(self, member: Member) -> str:
        """What decides a library's build environment besides its build requirements: the tool, the workspace's
        build settings and images (``env``), its constraints; not its source, config or dependencies."""
        parts = self.build.keys[member.name]
        data = {"tool": parts["tool"], "env": parts["env"], "installer": member.config.installer,
                "index-strategy": member.config.index_strategy, "constraints": _constraints_digest(member)}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def _closure_key(self, member: Member) -> str:
        """The member's cache key without its own source and without its internal dependencies' keys (their
        names stay): the compile compares the metadata of the project and internal wheels itself."""
        parts = self.build.keys[member.name]
        data = {k: v for k, v in parts.items() if k not in ("source", "deps", "key")}
        data["env"] = self.build.closure_env_key
        data["internal"] = sorted(self.ws.closure(member.name))
        data["constraints"] = _constraints_digest(member)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def _image_lock(self, key: tuple[str, ...]) -> threading.Lock:
        with self._lock:
            return self._image_locks.setdefault(",".join(key), threading.Lock())


def _constraints_digest(member: Member) -> str:
    """The sha256 of the member's constraints file ("" without one): part of what decides a resolution."""
    constraints = member.config.constraints
    return hashlib.sha256(constraints.read_bytes()).hexdigest() if constraints and constraints.is_file() else ""


def stage_valid(engine: Engine, stage: str, data: Mapping[str, Any]) -> bool:
    """Whether a stage done before still holds (its wheel file, its image are still there)."""
    if stage == "wheel":
        return Path(str(data.get("wheel"))).is_file()
    if stage == "image":
        return engine.image_id(str(data.get("image_id"))) is not None
    return True


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
