"""The single-project pipeline: compile -> runtime image -> smoke test -> tag (-> push).

:func:`build_project` is what ``python setup.py docker_image`` and ``grocker build`` call.
A project whose cache key is unchanged and whose image is still in the engine is reported
``cached`` without starting any container. When the key changed but the compile gives wheels
of the same content (a stray file in a project outside git), the early cut-off (``cut_off`` in image/runtime.py)
reuses the image built before: no new image, no smoke test, status ``cached`` with the reason
``wheels unchanged``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from setuptools_grocker.config import Config, RunOptions, check_default_command
from setuptools_grocker.engine import Engine
from setuptools_grocker.errors import (
    ConfigError,
    GrockerError,
    PluginError,
    ProjectError,
)
from setuptools_grocker.image import records
from setuptools_grocker.image.bytecode import compile_bytecode
from setuptools_grocker.image.bytecode import identity as bytecode_identity
from setuptools_grocker.image.recipes import (
    BaseImages,
    current_root_key,
    ensure_base_images,
    tool_identity,
)
from setuptools_grocker.image.runtime import WHEELS_UNCHANGED, build_runtime_image, cut_off, image_key, prepare_image
from setuptools_grocker.pipeline.caches import bytecode_cache_dir, cache_home, pip_cache_dir, uv_dir
from setuptools_grocker.pipeline.compile import compile_wheels
from setuptools_grocker.pipeline.lock import Lock, lock_line, read_lock, write_lock
from setuptools_grocker.pipeline.naming import default_reference, extra_tags
from setuptools_grocker.pipeline.pipconf import PipForward, forward, pip_identity
from setuptools_grocker.pipeline.plugins import plugin_manager
from setuptools_grocker.pipeline.project import Source, describe_project, git_revision, project_label, source_date_epoch
from setuptools_grocker.pipeline.provenance import record_provenance
from setuptools_grocker.pipeline.smoke import smoke_test
from setuptools_grocker.pipeline.warm import WarmSpec, idle_seconds
from setuptools_grocker.plugin import BuildState, Stage, StageContext, apply, impl
from setuptools_grocker.plugin.manager import PluginManager
from setuptools_grocker.progress import Progress
from setuptools_grocker.registry.push import push_runtime_image
from setuptools_grocker.registry.sharedcache import shared_cache
from setuptools_grocker.report import ProjectResult, write_json_atomic

STATE_FILE = "state.json"


def _apply_tags(engine: Engine, config: Config, image_id: str, ref: str, version: str) -> list[str]:
    refs = [ref, *extra_tags(config, ref, version, git_revision(config.project_dir))]
    for extra in refs[1:]:
        if engine.image_id(extra) != image_id:
            engine.tag(image_id, extra)
    return refs


def cache_key(config: Config, *, rkey: str, source: Source, local_sources: list[Source],
              pip_env: Mapping[str, str], plugins: str = "", bytecode: bool = True, lock: Lock | None = None) -> str:
    data = _key_data(config, rkey=rkey, source=source, local_sources=local_sources, pip_env=pip_env,
                     plugins=plugins, bytecode=bytecode)
    data.update(lock_line(lock))  # the lock's bytes: another lock, another build (none: the keys as before)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def closure_key(config: Config, *, rkey: str, source: Source, local_sources: list[Source],
                pip_env: Mapping[str, str], plugins: str = "", bytecode: bool = True, lock: Lock | None = None) -> str:
    """The cache key without the project's source: compiles under the same closure key differ only by
    the project's own files, so the closure of one can serve the other when the wheel's metadata agrees."""
    # A local index's new uploads: the same closure (its contents are not walked).
    data = _key_data(config, rkey=rkey, source=source, local_sources=local_sources, pip_env=pip_env,
                     plugins=plugins, bytecode=bytecode, index_contents=False)
    data["source"] = "closure"
    data.update(lock_line(lock))
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _key_data(config: Config, *, rkey: str, source: Source, local_sources: list[Source],
              pip_env: Mapping[str, str], plugins: str, bytecode: bool, index_contents: bool = True
              ) -> dict[str, Any]:
    constraints = config.constraints.read_bytes() if config.constraints and config.constraints.is_file() else b""
    data: dict[str, Any] = {
        "tool": tool_identity(),
        "config": config.image_inputs(),
        "root": rkey,
        "source": source.digest,
        "local": [s.digest for s in local_sources],
        "constraints": hashlib.sha256(constraints).hexdigest(),
        # Where packages come from decides what gets built; values are hashed, never stored.
        "pip": pip_identity(pip_env, index_contents=index_contents),
        "plugins": plugins,
        # How the runtime image is made beyond its inputs: images made before bytecode are rebuilt.
        "image": bytecode_identity(bytecode),
    }
    return data


def _load_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def build_project(config: Config, *, environ: Mapping[str, str], progress: Progress,
                  engine: Engine | None = None, run: RunOptions | None = None) -> ProjectResult:
    """Run the whole pipeline for the project of ``config``; never raises GrockerError.

    ``run`` holds what this invocation does with the image (``--tag``, ``--push``, ``--no-cache``).

    The returned result has ``status`` ``built``, ``cached`` or ``failed`` (with ``error``
    and ``exit_code`` set).
    """
    start = time.monotonic()
    run = run or RunOptions()
    # Named as its files state it until its wheel says (a failure before then still shows name and version).
    name, version = project_label(config.project_dir)
    result = ProjectResult(name=name, version=version)
    own_engine = engine is None
    interrupted = False
    try:
        with result.failures_recorded(progress.write):
            if engine is None:
                engine = Engine(progress)
                engine.connect()
            started_before = engine.containers_started
            engine.reap_orphans_soon()
            try:
                _run(config, run, environ, progress, engine, result)
            finally:
                result.containers_started = engine.containers_started - started_before
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if own_engine and engine is not None:
            engine.close(interrupted=interrupted)
        result.seconds = time.monotonic() - start
        for name, seconds in progress.timings:
            result.stages[name] = result.stages.get(name, 0.0) + seconds
    return result


def _run(config: Config, run: RunOptions, environ: Mapping[str, str], progress: Progress, engine: Engine,
         result: ProjectResult) -> None:
    plugins = plugin_manager(config.plugins, environ, progress.write)
    config = apply.configure(plugins, config)
    check_default_command(config)
    files = apply.image_files(plugins, config)
    compile_env = apply.compile_environment(plugins, config)
    with progress.stage("scan"):
        source, local_sources, pip = _scan(config, environ, progress)
        base = engine.ensure_image(config.base_image)
        rkey = current_root_key(engine, config, base["Id"])
        # --upgrade with a lock (even one that is not valid any more): resolved again and rewritten below.
        relock = run.upgrade and config.lock_file.is_file()
        lock = None if relock else read_lock(config.lock_file)
    if relock:
        # --upgrade with a lock: resolve again, rewrite the lock, then build from it.
        lock = _relock(config, environ, progress, engine, source=source, local_sources=local_sources, pip=pip,
                       compile_env=compile_env, images=ensure_base_images(engine, config, progress, pip=pip,
                                                                          work=cache_home(environ)))
        progress.info(f"--upgrade: {config.lock_file} resolved again and rewritten ({len(lock.packages)} packages)")
    key = cache_key(config, rkey=rkey, source=source, local_sources=local_sources, pip_env=pip.env,
                    plugins=apply.identity(plugins, files, compile_env),
                    bytecode=bytecode_cache_dir(environ) is not None, lock=lock)
    ckey = closure_key(config, rkey=rkey, source=source, local_sources=local_sources, pip_env=pip.env,
                       plugins=apply.identity(plugins, files, compile_env),
                       bytecode=bytecode_cache_dir(environ) is not None, lock=lock)
    result.key = key
    state_path = config.state_dir / STATE_FILE
    state = _load_state(state_path)
    if not run.no_cache and state.get("key") == key and engine.image_id(state.get("image_id", "")):
        _cached(config, run, environ, engine, state, result, plugins)
        progress.info(f"{result.image}: up to date (cache key {key[:12]}), nothing to build")
        return

    images = ensure_base_images(engine, config, progress, pip=pip, work=cache_home(environ),
                                shared=shared_cache(config.build_cache, environ, write=run.cache_write,
                                                    cache=cache_home(environ)))
    result.base_images = dict(images.origins)
    engine.hold_lease_soon(images.compiler)  # the smoke test starts a container: its lease, made meanwhile
    ctx = stage_context(config, run, environ, progress, engine, key=key, images=images, files=files,
                        inputs=SingleInputs(source=source, local_sources=local_sources, pip=pip, result=result,
                                            compile_env=compile_env,
                                            smoke_commands=apply.smoke_commands(plugins, config),
                                            plugins=plugins, previous=state, closure_key=ckey, lock=lock))
    try:
        for stage in apply.stages(plugins, config):
            with progress.stage(stage.name if plugins.is_builtin(stage.plugin) else f"{stage.name} [{stage.plugin}]"):
                try:
                    stage.run(ctx)
                except GrockerError:
                    raise
                except Exception as exc:  # a plugin's stage: name it, as the manager does for hooks
                    raise PluginError(f"stage '{stage.name}' of plugin '{stage.plugin}' failed: "
                                      f"{type(exc).__name__}: {exc}", "fix the plugin, or disable it with "
                                      f"GROCKER_DISABLE_PLUGINS={stage.plugin}") from exc
    except BaseException:
        # An image that never passed its smoke test is recorded as failed: `grocker gc` removes it.
        if ctx.state.image_id and ctx.state.ref is None:
            with contextlib.suppress(OSError):  # the build's own error is the one to report
                records.update(cache_home(environ), ctx.state.image_id, status="failed")
        raise
    if ctx.state.image_id is None or ctx.state.ref is None:
        raise PluginError("the pipeline ended without an image: a plugin replaced a built-in stage",
                          "check GROCKER_DISABLE_PLUGINS and the plugins' stages")
    inputs = _inputs(ctx)
    result.status = "cached" if inputs.reused else "built"
    write_json_atomic(state_path, {
        "key": key, "image_id": result.image_id, "image": result.image, "name": result.name,
        "version": result.version, "wheel": result.wheel, "distributions": result.distributions,
        "digest": result.digest, "image_key": inputs.image_key,
    })
    plugins.grocker_after_publish(config, result)
    _prune_wheelhouse(config.state_dir / "wheelhouse", keep=key)


def _scan(config: Config, environ: Mapping[str, str], progress: Progress) -> tuple[Source, list[Source], PipForward]:
    """The project's source, its local packages' sources, and the pip configuration forwarded to the compile."""
    source = Source.scan(config.project_dir)
    local_sources = []
    for path in config.local_packages:
        try:
            local_sources.append(Source.scan(path))
        except ProjectError as exc:
            raise ProjectError(f"local-packages entry {path}: {exc.message}", exc.hint) from exc
    pip = forward(environ, config.constraints) if environ.get("GROCKER_NO_PIP_CONFIG") != "1" else forward({})
    for warning in pip.warnings:
        progress.warn(warning)
    return source, local_sources, pip


def lock_project(config: Config, *, environ: Mapping[str, str], progress: Progress, engine: Engine) -> Lock:
    """``grocker lock``: resolve the application's closure and write its lock (``config.lock_file``) atomically.

    The project's wheel (and its local packages') is built in the compiler container as a build builds it; the
    closure is resolved by uv into a PEP 751 lock with the hash of every file (pipeline/lock.py says what is
    kept). Nothing is published and no image is built.
    """
    plugins = plugin_manager(config.plugins, environ, progress.write)
    config = apply.configure(plugins, config)
    compile_env = apply.compile_environment(plugins, config)
    with progress.stage("scan"):
        source, local_sources, pip = _scan(config, environ, progress)
    images = ensure_base_images(engine, config, progress, pip=pip, work=cache_home(environ))
    return _relock(config, environ, progress, engine, source=source, local_sources=local_sources, pip=pip,
                   compile_env=compile_env, images=images)


def _relock(config: Config, environ: Mapping[str, str], progress: Progress, engine: Engine, *, source: Source,
            local_sources: list[Source], pip: PipForward, compile_env: tuple[dict[str, str], list[str]],
            images: BaseImages) -> Lock:
    if config.installer != "uv":
        raise ConfigError(f"installer {config.installer!r} cannot write a lock: uv resolves it into pylock.toml",
                          'set installer = "uv" (the default) for `grocker lock` and --upgrade')
    env, commands = compile_env
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with progress.stage("lock"), tempfile.TemporaryDirectory(prefix=".lock-", dir=config.state_dir) as tmp:
        out = Path(tmp) / "out"
        compiled = compile_wheels(
            engine, config, compiler=images.compiler, source=source, local_sources=local_sources, pip=pip,
            wheelhouse_root=config.state_dir / "wheelhouse", key=f"lock{uuid.uuid4().hex}",
            pip_cache=pip_cache_dir(environ, config.project_dir), uv_root=uv_dir(environ, config.project_dir),
            source_date_epoch=source_date_epoch(config.project_dir, environ), progress=progress,
            extra_env=env, pre_commands=commands, mode="lock", lock_out=out,
            what=describe_project(config.project_dir, *project_label(config.project_dir),
                                  base=config.project_dir.parent))
        found = json.loads((out / "lock.json").read_text())
        lock = write_lock(config.lock_file, (out / "pylock.toml").read_text(), built=found["built"],
                          inputs=found["inputs"], project=compiled.name)
    progress.detail(f"{config.lock_file}: {len(lock.packages)} packages of {compiled.name} {compiled.version} "
                    f"locked (sha256 {lock.digest[:12]})")
    return lock


# -- the built-in stages: this module is registered as a plugin (pipeline/plugins.py) ------------------

@impl(tryfirst=True)  # first in their positions, as a plugin's stage at the same position expects
def grocker_stages(config: Config) -> Sequence[Stage]:
    return [
        Stage("compile", "compile", stage_compile),
        Stage("image", "image", stage_image),
        Stage("smoke test", "smoke", stage_smoke),
        Stage("push", "push", stage_push),
    ]


@dataclass
class SingleInputs:
    """What the single pipeline's built-in stages need besides the :class:`BuildState` (``state.internal``)."""

    source: Source
    local_sources: list[Source]
    pip: PipForward
    result: ProjectResult
    compile_env: tuple[dict[str, str], list[str]]
    smoke_commands: list[list[str]]
    plugins: PluginManager | None = None
    #: The state of the build before this one (``.grocker/state.json``), for the early cut-off.
    previous: Mapping[str, Any] = field(default_factory=dict)
    image_key: str | None = None
    #: True when the image of the previous build is reused (same wheels).
    reused: bool = False
    #: The cache key without the source (``closure_key``): finds an earlier closure to reuse.
    closure_key: str | None = None
    #: The application's lock, when it has one: the closure is taken from it, not resolved.
    lock: Lock | None = None
    #: The image stage's work done while the compile container works (image/runtime.py's ``prepare_image``).
    prepared: threading.Thread | None = None


def stage_context(config: Config, run: RunOptions, environ: Mapping[str, str], progress: Progress, engine: Engine,
                  *, key: str, images: BaseImages, files: Mapping[str, Path], inputs: SingleInputs) -> StageContext:
    """The context the stages of a single-project build share (see ``member_stage_context`` for a workspace)."""
    state = BuildState(key=key, environ=environ, images=images, files=dict(files), internal=inputs)
    return StageContext(config=config, engine=engine, progress=progress, work_dir=config.state_dir / "stages",
                        state=state, compiler_image=images.compiler, run=run)


def _inputs(ctx: StageContext) -> SingleInputs:
    if not isinstance(ctx.state.internal, SingleInputs):  # a built-in stage of this module, run elsewhere
        raise PluginError("a built-in stage of the single-project pipeline ran outside it",
                          "check the plugins' stages")
    return ctx.state.internal


def stage_compile(ctx: StageContext) -> None:
    st, config, inputs = ctx.state, ctx.config, _inputs(ctx)
    assert st.images is not None
    epoch = source_date_epoch(config.project_dir, st.environ)
    env, commands = inputs.compile_env
    # What the image stage can do before the compile ends, done while the compile container works.
    inputs.prepared = prepare_image(ctx.engine, config, images=st.images, previous=inputs.previous,
                                    bytecode=bytecode_cache_dir(st.environ))
    wheels = compile_wheels(
        ctx.engine, config, compiler=st.images.compiler, source=inputs.source, local_sources=inputs.local_sources,
        pip=inputs.pip, wheelhouse_root=config.state_dir / "wheelhouse", key=st.key,
        pip_cache=pip_cache_dir(st.environ, config.project_dir), uv_root=uv_dir(st.environ, config.project_dir),
        source_date_epoch=epoch, progress=ctx.progress,
        extra_env=env, pre_commands=commands, no_cache=ctx.run.no_cache,
        closure_key=inputs.closure_key, upgrade=ctx.run.upgrade,
        bytecode=compile_bytecode() if bytecode_cache_dir(st.environ) is not None else None,
        warm=WarmSpec(config.state_dir, config.project_dir, idle) if (idle := idle_seconds(st.environ)) else None,
        what=describe_project(config.project_dir, *project_label(config.project_dir), base=config.project_dir.parent),
        lock=inputs.lock,
    )
    if inputs.lock is None:
        ctx.progress.info(f"no lock ({config.lock_file.name}): the closure was resolved from the index as it is today; "
                          "`grocker lock` pins it, so that every machine installs the same files")
    result = inputs.result
    result.name, result.version = wheels.name, wheels.version
    result.wheel = str(wheels.project_wheel)
    result.distributions = wheels.distributions()
    result.closure = wheels.closure
    st.wheels = wheels


def stage_image(ctx: StageContext) -> None:
    st, inputs = ctx.state, _inputs(ctx)
    assert st.images is not None and st.wheels is not None
    epoch = source_date_epoch(ctx.config.project_dir, st.environ)
    revision = git_revision(ctx.config.project_dir)
    bytecode = bytecode_cache_dir(st.environ)
    inputs.image_key = image_key(ctx.config, root_key=st.images.root_key, wheels=st.wheels, revision=revision,
                                 epoch=epoch, plugins=apply.identity(inputs.plugins, st.files, None)
                                 if inputs.plugins is not None else "",
                                 bytecode=bytecode is not None)
    reused = cut_off(ctx.engine, inputs.previous, inputs.image_key, ctx.progress, no_cache=ctx.run.no_cache)
    if reused is not None:
        st.image_id, inputs.reused = reused, True
        inputs.result.reason = WHEELS_UNCHANGED
        return
    st.image_id = build_runtime_image(ctx.engine, ctx.config, images=st.images, wheels=st.wheels,
                                      key=st.key, progress=ctx.progress, files=st.files,
                                      epoch=epoch, revision=revision,
                                      bytecode=bytecode, no_cache=ctx.run.no_cache,
                                      previous=inputs.previous.get("image_id") or None, prepared=inputs.prepared)
    records.record_assembled(ctx.engine, cache_home(st.environ), st.image_id, ctx.config, images=st.images, key=st.key,
                             name=st.wheels.name, version=st.wheels.version,
                             revision=revision, state_dir=ctx.config.state_dir)
    record_provenance(ctx.engine, cache_home(st.environ), st.image_id, ctx.config, images=st.images, key=st.key,
                      name=st.wheels.name, version=st.wheels.version, source_digest=inputs.source.digest,
                      revision=revision, pip_env=inputs.pip.env, plugins=inputs.plugins,
                      local={s.root.name: s.digest for s in inputs.local_sources},
                      lock=(os.path.relpath(inputs.lock.path, ctx.config.project_dir), inputs.lock.digest)
                      if inputs.lock is not None else None)


def stage_smoke(ctx: StageContext) -> None:
    st, config, inputs = ctx.state, ctx.config, _inputs(ctx)
    assert st.image_id is not None and st.wheels is not None
    if not inputs.reused:  # a reused image passed its smoke test when it was built
        smoke_test(ctx.engine, config, st.image_id, ctx.progress, commands=inputs.smoke_commands)
    wheels = st.wheels
    ref = ctx.run.tag or default_reference(config, wheels.name, wheels.version)
    ctx.engine.tag(st.image_id, ref)
    result = inputs.result
    result.image, result.image_id = ref, st.image_id
    result.tags = _apply_tags(ctx.engine, config, st.image_id, ref, wheels.version)
    result.size = (ctx.engine.image_attrs(st.image_id) or {}).get("Size")
    st.ref = ref
    changes: dict[str, Any] = {"status": "built", "tags": result.tags}
    if inputs.reused:  # the cut-off: a build used it again
        changes["used"] = records.now()
    records.update(cache_home(st.environ), st.image_id, **changes)


def stage_push(ctx: StageContext) -> None:
    if ctx.run.push:
        inputs = _inputs(ctx)
        result, plugins = inputs.result, inputs.plugins
        assert result.image_id is not None
        result.digest, result.pushed_bytes = push_runtime_image(
            ctx.engine, result.image_id, result.tags, cache_home(ctx.state.environ), ctx.progress,
            sign=None if plugins is None else lambda request: plugins.grocker_sign(ctx.config, request))
        records.update(cache_home(ctx.state.environ), result.image_id, digest=result.digest)


def _cached(config: Config, run: RunOptions, environ: Mapping[str, str], engine: Engine, state: dict[str, Any],
            result: ProjectResult, plugins: PluginManager) -> None:
    ref = run.tag or default_reference(config, state["name"], state["version"])
    image_id = state["image_id"]
    if engine.image_id(ref) != image_id:
        engine.tag(image_id, ref)
    result.status = "cached"
    result.name, result.version = state["name"], state["version"]
    result.image, result.image_id = ref, image_id
    result.tags = _apply_tags(engine, config, image_id, ref, state["version"])
    result.wheel = state.get("wheel")
    result.distributions = list(state.get("distributions", []))
    result.size = (engine.image_attrs(image_id) or {}).get("Size")
    if run.push:
        result.digest, result.pushed_bytes = push_runtime_image(
            engine, image_id, result.tags, cache_home(environ), Progress(quiet=True),
            sign=lambda request: plugins.grocker_sign(config, request))
    else:
        result.digest = state.get("digest") if state.get("image") == ref else None
    changes: dict[str, Any] = {"used": records.now(), "tags": result.tags}
    if run.push:
        changes["digest"] = result.digest
    records.update(cache_home(environ), image_id, **changes)


def _prune_wheelhouse(root: Path, keep: str, retain: int = 3) -> None:
    """Keep the newest few wheelhouse entries so the cache does not grow without bound."""
    entries = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for entry in entries[retain:]:
        if entry.name != keep:
            shutil.rmtree(entry, ignore_errors=True)
    os.makedirs(root / ".tmp", exist_ok=True)
