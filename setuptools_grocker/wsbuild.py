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
from typing import Any, Callable, Mapping

from setuptools_grocker.build import cache_home, default_reference
from setuptools_grocker.compile import Wheelhouse, compile_wheels
from setuptools_grocker.config import DEFAULT_TEST_COMMAND, Config
from setuptools_grocker.engine import Engine
from setuptools_grocker.errors import GrockerError
from setuptools_grocker.image import BaseImages, ensure_base_images, root_key
from setuptools_grocker.pipconf import PipForward, forward
from setuptools_grocker.progress import Progress
from setuptools_grocker.project import git_commit_time
from setuptools_grocker.report import ProjectResult, Report, write_json_atomic
from setuptools_grocker.smoke import smoke_test
from setuptools_grocker.wheelhouse import WheelIndex
from setuptools_grocker.workspace import (
    Member,
    Workspace,
    load_member_state,
    member_keys,
    member_state_path,
    why_rebuild,
)

STALE_STAGING_SECONDS = 6 * 3600


@dataclass(frozen=True)
class WorkspaceOptions:
    jobs: int = 1
    only: tuple[str, ...] = ()
    fail_fast: bool = False
    push: bool = False
    no_cache: bool = False
    index_url: str | None = None


@dataclass
class PlanEntry:
    name: str
    kind: str
    version: str
    level: int
    depends_on: list[str]
    key: str
    reason: str | None  # None: up to date
    #: URL of this exact build on the wheel index, when it is there and not here.
    fetch: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "version": self.version, "level": self.level,
                "depends_on": self.depends_on, "key": self.key, "up_to_date": self.reason is None,
                "reason": self.reason, "fetch": self.fetch}


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
        index_url = options.index_url or ws.settings.index_url
        self.index = WheelIndex(index_url) if index_url else None

    # -- the shared environment ---------------------------------------------------------
    def _shared_config(self) -> Config:
        """One compiler image for the whole workspace: union of every member's packages."""
        members = list(self.ws.members.values())
        first = members[0].config
        return dataclasses.replace(
            first,
            run_packages=tuple(sorted({p for m in members for p in m.config.run_packages})),
            build_packages=tuple(sorted({p for m in members for p in m.config.build_packages})),
        )

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
        if member.kind == "library":
            wheel = state.get("wheel")
            return isinstance(wheel, str) and Path(wheel).is_file()
        image_id = state.get("image_id")
        return isinstance(image_id, str) and engine.image_id(image_id) is not None

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
                    reason = "wheel missing" if m.kind == "library" else "image missing"
                fetch = None
                if reason is not None and m.kind == "library" and self.index and not self.options.no_cache:
                    fetch = self.index.find(m.name, m.version, self.keys[name]["key"])
                    if fetch:
                        reason = None
                if self.options.no_cache and reason is None:
                    reason = "--no-cache"
                if reason is not None:
                    rebuilt.add(name)
                entries.append(PlanEntry(name, m.kind, m.version, level, sorted(m.deps),
                                         self.keys[name]["key"], reason, fetch))
        return entries

    # -- the run ------------------------------------------------------------------------
    def run(self) -> Report:
        start = time.monotonic()
        self._clean_stale_staging()
        with Engine(self.progress) as engine:
            engine.reap_orphans()
            entries = {e.name: e for e in self.plan(engine)}
            selected = self.ws.select(self.options.only) if self.options.only else set(self.ws.order)
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
        report.extra["workspace"] = str(self.ws.root)
        report.extra["levels"] = self.ws.levels
        report.extra["containers_started"] = sum(r.containers_started for r in report.projects)
        return report

    def _schedule(self, todo: list[str], entries: Mapping[str, PlanEntry], results: dict[str, ProjectResult],
                  images: BaseImages | None) -> None:
        pending = list(todo)
        running: dict[cf.Future[None], str] = {}
        failed_any = False
        with cf.ThreadPoolExecutor(max_workers=max(1, self.options.jobs), thread_name_prefix="grocker") as pool:
            while pending or running:
                for name in list(pending):
                    r = results[name]
                    deps = self.ws.members[name].deps & set(results)
                    bad = [d for d in sorted(deps) if results[d].status in ("failed", "skipped")]
                    if bad:
                        pending.remove(name)
                        first = bad[0]
                        why = "failed" if results[first].status == "failed" else "was skipped"
                        r.status = "skipped"
                        r.error = f"dependency {first} {why}"
                        self.progress.info(f"[{name}] skipped: dependency {first} {why}")
                        continue
                    if failed_any and self.options.fail_fast:
                        pending.remove(name)
                        r.status, r.error = "skipped", "stopped after a failure (--fail-fast)"
                        continue
                    if all(results[d].status in ("built", "cached") for d in deps) and \
                            len(running) < max(1, self.options.jobs):
                        pending.remove(name)
                        r.status = "running"
                        fut = pool.submit(self._build_member, name, entries[name], results, images)
                        running[fut] = name
                if not running:
                    if pending:  # cannot happen with a valid graph; never spin
                        for name in pending:
                            results[name].status, results[name].error = "skipped", "unreachable"
                        pending.clear()
                    break
                done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    name = running.pop(fut)
                    fut.result()  # _build_member never raises GrockerError; anything else is a bug
                    if results[name].status == "failed":
                        failed_any = True

    def _build_member(self, name: str, entry: PlanEntry, results: dict[str, ProjectResult],
                      images: BaseImages | None) -> None:
        member = self.ws.members[name]
        result = results[name]
        progress = self.progress.child(f"[{name}]")
        progress.quiet_output = self.options.jobs > 1
        result.started_at = time.time()
        result.reason = entry.reason
        start = time.monotonic()
        state = load_member_state(self.ws, name)
        verb = "up to date" if entry.reason is None else f"building ({entry.reason})"
        self.progress.write(f"[{name}] {member.kind} {member.version}: {verb}")
        try:
            with Engine(progress) as engine:
                try:
                    if entry.reason is None and entry.fetch:
                        self._fetch(member, entry, result)
                    elif entry.reason is None:
                        self._reuse(engine, member, state, result)
                    elif member.kind == "library":
                        assert images is not None
                        self._library(engine, member, entry, results, images, progress, result)
                    else:
                        assert images is not None
                        self._application(engine, member, entry, results, images, progress, result)
                finally:
                    result.containers_started = engine.containers_started
        except GrockerError as exc:
            result.fail(exc)
            if exc.details:
                progress.write(exc.details)
        result.seconds = time.monotonic() - start
        result.ended_at = time.time()
        for stage, seconds in progress.timings:
            result.stages[stage] = result.stages.get(stage, 0.0) + seconds
        mark = {"built": "built", "cached": "cached", "failed": "FAILED"}.get(result.status, result.status)
        tail = f": {result.error}" if result.error else ""
        self.progress.write(f"[{name}] {mark} in {result.seconds:.1f}s{tail}")

    def _reuse(self, engine: Engine, member: Member, state: Mapping[str, Any], result: ProjectResult) -> None:
        result.status = "cached"
        result.wheel = state.get("wheel")
        if member.kind == "application":
            ref = self._reference(member)
            if engine.image_id(ref) != state["image_id"]:
                engine.tag(state["image_id"], ref)
            result.image, result.image_id = ref, state["image_id"]
            result.distributions = list(state.get("distributions", []))
            if self.options.push:
                result.digest = engine.push(ref)

    def _fetch(self, member: Member, entry: PlanEntry, result: ProjectResult) -> None:
        """Take this exact build of a library from the wheel index instead of building it."""
        assert self.index is not None and entry.fetch is not None
        final = self.ws.state_dir / "wheels" / member.name / entry.key
        staging = final.parent / ".tmp" / f"fetch-{uuid.uuid4().hex[:8]}"
        wheel = self.index.download(entry.fetch, staging / "wheels")
        (staging / "manifest.json").write_text(json.dumps({"name": member.name, "version": member.version,
                                                           "wheel": wheel.name, "closure": [], "fetched": entry.fetch}))
        try:
            os.replace(staging, final)
        except OSError:  # published meanwhile by a concurrent build
            shutil.rmtree(staging, ignore_errors=True)
        found = sorted((final / "wheels").glob("*.whl"))
        result.status = "cached"
        result.reason = "fetched from the wheel index"
        result.wheel = str(found[0])
        self._save_state(member, {"wheel": result.wheel, "fetched": True})

    def _upload(self, member: Member, entry: PlanEntry, wheel: Path, progress: Progress) -> None:
        if self.index is not None:
            with progress.stage("upload"):
                name = self.index.upload(wheel, entry.key, member.name, member.version)
                progress.info(f"uploaded {name}")

    def _reference(self, member: Member) -> str:
        return default_reference(member.config, member.name, member.version)

    def _wheel_of(self, results: Mapping[str, ProjectResult], name: str) -> Path:
        wheel = results[name].wheel
        assert wheel, f"{name} has no wheel"
        return Path(wheel)

    def _compile(self, engine: Engine, member: Member, entry: PlanEntry, results: Mapping[str, ProjectResult],
                 images: BaseImages, progress: Progress, *, mode: str,
                 test: Mapping[str, Any] | None) -> Wheelhouse:
        internal = [self._wheel_of(results, d) for d in self.ws.closure(member.name)]
        config = dataclasses.replace(member.config, no_cache=self.options.no_cache)
        epoch = int(self.environ.get("SOURCE_DATE_EPOCH") or git_commit_time(member.path) or 315532800)
        return compile_wheels(
            engine, config, compiler=images.compiler, source=member.source, local_sources=[], pip=self.pip,
            wheelhouse_root=self.ws.state_dir / "wheels" / member.name, key=entry.key,
            pip_cache=cache_home(self.environ) / "pip", source_date_epoch=epoch, progress=progress,
            internal_wheels=internal, mode=mode, test=test, what=member.name,
        )

    def _library(self, engine: Engine, member: Member, entry: PlanEntry, results: Mapping[str, ProjectResult],
                 images: BaseImages, progress: Progress, result: ProjectResult) -> None:
        test = None
        if member.has_tests:
            if member.config.test_extras is not None:
                extras = list(member.config.test_extras)
            else:
                extras = sorted(e for e in member.optional if e in ("test", "tests", "testing"))
            command = member.config.test_command or DEFAULT_TEST_COMMAND
            test = {"command": command, "extras": extras,
                    "requirements": [] if member.config.test_command else ["pytest"]}
        with progress.stage("wheel" + (" + tests" if test else "")):
            wheels = self._compile(engine, member, entry, results, images, progress, mode="library", test=test)
        result.wheel = str(wheels.project_wheel)
        result.distributions = wheels.distributions()
        self._upload(member, entry, wheels.project_wheel, progress)
        result.status = "built"
        self._save_state(member, {"wheel": result.wheel, "distributions": result.distributions})

    def _application(self, engine: Engine, member: Member, entry: PlanEntry,
                     results: Mapping[str, ProjectResult], images: BaseImages, progress: Progress,
                     result: ProjectResult) -> None:
        from setuptools_grocker.build import build_runtime_image

        with progress.stage("compile"):
            wheels = self._compile(engine, member, entry, results, images, progress, mode="project", test=None)
        result.wheel = str(wheels.project_wheel)
        result.distributions = wheels.distributions()
        # The runtime root gets the run packages of the application and of its internal libraries.
        closure = self.ws.closure(member.name)
        run_packages = sorted({p for n in [member.name, *closure] for p in self.ws.members[n].config.run_packages})
        config = dataclasses.replace(member.config, run_packages=tuple(run_packages),
                                     build_packages=self.shared.build_packages if self.shared else (),
                                     no_cache=self.options.no_cache)
        with self._image_lock(tuple(run_packages)):
            app_images = ensure_base_images(engine, config, progress)
        app_images = BaseImages(root=app_images.root, compiler=images.compiler, root_key=app_images.root_key)
        with progress.stage("image"):
            image_id = build_runtime_image(engine, config, images=app_images, wheels=wheels, key=entry.key,
                                           progress=progress)
        with progress.stage("smoke test"):
            smoke_test(engine, config, image_id, progress)
        ref = self._reference(member)
        engine.tag(image_id, ref)
        result.image, result.image_id = ref, image_id
        if self.options.push:
            with progress.stage("push"):
                result.digest = engine.push(ref)
        result.status = "built"
        self._save_state(member, {"wheel": result.wheel, "image": ref, "image_id": image_id,
                                  "distributions": result.distributions, "digest": result.digest})

    def _image_lock(self, key: tuple[str, ...]) -> threading.Lock:
        with self._lock:
            return self._image_locks.setdefault(",".join(key), threading.Lock())

    def _save_state(self, member: Member, data: dict[str, Any]) -> None:
        parts = self.keys[member.name]
        write_json_atomic(member_state_path(self.ws, member.name),
                          {"name": member.name, "version": member.version, "kind": member.kind,
                           "key": parts["key"], "parts": parts, **data})

    def _clean_stale_staging(self) -> None:
        """Remove staging directories of builds killed long ago (never read as results)."""
        now = time.time()
        for tmp in (self.ws.state_dir / "wheels").glob("*/.tmp/*"):
            try:
                if now - tmp.stat().st_mtime > STALE_STAGING_SECONDS:
                    shutil.rmtree(tmp, ignore_errors=True)
            except OSError:
                pass


def print_plan(entries: list[PlanEntry], write: Callable[[str], None]) -> None:
    width = max((len(e.name) for e in entries), default=4)
    write(f"{'level':<5}  {'member':<{width}}  {'kind':<11}  {'version':<10}  status")
    for e in entries:
        status = "up to date" if e.reason is None else f"rebuild: {e.reason}"
        if e.fetch:
            status = "up to date (on the wheel index)"
        write(f"{e.level:<5}  {e.name:<{width}}  {e.kind:<11}  {e.version:<10}  {status}")
    todo = sum(1 for e in entries if e.reason is not None)
    write(f"{len(entries)} members, {todo} to build, {len(entries) - todo} up to date")
