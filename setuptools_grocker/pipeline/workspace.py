"""A workspace: many projects, their internal dependency graph, cache keys and the plan.

The root declares ``[tool.grocker.workspace] members = ["libs/*", "apps/*"]`` in
pyproject.toml or grocker.toml. The other keys of the root's ``[tool.grocker]`` are
defaults for every member (a member's own file wins). A member is an *application* when
its config says ``image = true`` or declares ``commands``; otherwise a *library*.

Metadata comes from static PEP 621 tables when they are complete, otherwise from PEP 517
``prepare_metadata_for_build_wheel`` (cached by source hash): on the host, or, for the
members matched by ``workspace.untrusted``, in a container of the compiler image. Internal
edges honour markers and extras, with names normalised as pip does.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import graphlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from setuptools_grocker.config import (
    Config,
    check_default_command,
    check_workspace_keys,
    flatten,
    load_config,
    read_file_layer,
    validate_reference,
)
from setuptools_grocker.errors import ConfigError, ProjectError, WorkspaceError
from setuptools_grocker.image.recipes import tool_identity
from setuptools_grocker.keys import MEMBER_ONLY, TABLES
from setuptools_grocker.pipeline.project import Source, prepare_metadata, static_metadata, uses_scm_version
from setuptools_grocker.pipeline.stages import member_stages
from setuptools_grocker.pipeline.testdetect import has_tests
from setuptools_grocker.progress import Progress
from setuptools_grocker.report import write_json_atomic

# A Linux CPython 3.11 target, for evaluating markers of the image's interpreter.
TARGET_ENV = {
    "implementation_name": "cpython", "implementation_version": "3.11.2", "os_name": "posix",
    "platform_machine": os.uname().machine if hasattr(os, "uname") else "x86_64",
    "platform_python_implementation": "CPython", "platform_system": "Linux", "python_full_version": "3.11.2",
    "python_version": "3.11", "sys_platform": "linux", "platform_release": "", "platform_version": "",
}


@dataclass(frozen=True)
class WorkspaceSettings:
    members: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    index_url: str | None = None
    #: Repository (under the registry) of the release documents; default: ROOTNAME-release.
    release_image: str | None = None
    #: Globs of the members whose build code never runs on the host and that get a pip cache of their own.
    untrusted: tuple[str, ...] = ()


@dataclass
class Member:
    name: str
    path: Path
    version: str
    requires: list[str]
    optional: dict[str, list[str]]
    config: Config
    source: Source
    deps: set[str] = field(default_factory=set)
    #: What the member's plugins change (their identity, files, compile environment).
    plugin_key: str = ""

    #: Fixed from the member's own configuration when loaded (plugins may add commands later).
    fixed_kind: str = ""
    #: False for the members matched by workspace.untrusted.
    trusted: bool = True

    @property
    def kind(self) -> str:
        if self.fixed_kind:
            return self.fixed_kind
        if self.config.image is not None:
            return "application" if self.config.image else "library"
        return "application" if self.config.commands else "library"

    @functools.cached_property
    def has_tests(self) -> bool:
        """An explicit test-command, or tests found from the pytest configuration and layout (testdetect.py)."""
        return bool(self.config.test_command) or has_tests(self.source.root, self.source.files)

    def config_digest(self) -> str:
        data = {"image": self.config.image_inputs(), "test": self.config.test_command,
                "test-extras": self.config.test_extras, "kind": self.kind, "plugins": self.plugin_key}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass
class Workspace:
    root: Path
    settings: WorkspaceSettings
    members: dict[str, Member]
    order: list[str]
    levels: list[list[str]]

    @property
    def state_dir(self) -> Path:
        return self.root / ".grocker"

    def dependents(self, name: str) -> set[str]:
        """Every member that depends on ``name``, directly or not."""
        out: set[str] = set()
        frontier = [name]
        while frontier:
            current = frontier.pop()
            for m in self.members.values():
                if current in m.deps and m.name not in out:
                    out.add(m.name)
                    frontier.append(m.name)
        return out

    def closure(self, name: str) -> list[str]:
        """Internal dependencies of ``name``, recursively, in build order."""
        seen: set[str] = set()
        stack = list(self.members[name].deps)
        while stack:
            dep = stack.pop()
            if dep not in seen:
                seen.add(dep)
                stack.extend(self.members[dep].deps)
        return [n for n in self.order if n in seen]

    def select(self, only: Iterable[str]) -> set[str]:
        wanted: set[str] = set()
        for raw in only:
            name = canonicalize_name(raw)
            if name not in self.members:
                import difflib

                close = difflib.get_close_matches(name, list(self.members), n=1)
                raise WorkspaceError(f"--only {raw}: no such member",
                                     f"did you mean '{close[0]}'?" if close else "see `grocker workspace plan`")
            wanted.add(name)
            wanted.update(self.closure(name))
        return wanted


def read_settings(root: Path) -> tuple[WorkspaceSettings, dict[str, Any]]:
    table, where = read_file_layer(root)
    ws = table.get("workspace")
    if not isinstance(ws, dict) or "members" not in ws:
        raise WorkspaceError(f"{root} declares no workspace",
                             'add [tool.grocker.workspace] members = ["libs/*", "apps/*"] to its pyproject.toml '
                             "or grocker.toml")
    check_workspace_keys(ws, where)
    members = ws["members"]
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise ConfigError(f"workspace.members in {where} must be a list of glob patterns",
                          'write members = ["libs/*", "apps/*"]')
    untrusted = ws.get("untrusted", [])
    if not isinstance(untrusted, list) or not all(isinstance(m, str) for m in untrusted):
        raise ConfigError(f"workspace.untrusted in {where} must be a list of glob patterns of members",
                          'write untrusted = ["vendor/*"]')
    exclude = ws.get("exclude", [])
    if ws.get("release-image") is not None:
        validate_reference(str(ws["release-image"]))
    shared = {k: v for k, v in table.items() if k != "workspace"}
    flatten(shared, where)  # unknown keys in the root fail here, with a hint
    return WorkspaceSettings(tuple(members), tuple(exclude), ws.get("index-url"),
                             ws.get("release-image"), tuple(untrusted)), shared


def _member_dirs(root: Path, settings: WorkspaceSettings) -> list[Path]:
    found: list[Path] = []
    excluded = {Path(p).resolve() for pattern in settings.exclude for p in glob.glob(str(root / pattern))}
    for pattern in settings.members:
        matches = sorted(Path(p).resolve() for p in glob.glob(str(root / pattern)))
        dirs = [m for m in matches if m.is_dir()]
        if not dirs:
            raise WorkspaceError(f"workspace member pattern '{pattern}' matches no directory under {root}",
                                 "fix workspace.members, or remove the pattern")
        for d in dirs:
            if d in excluded or d in found:
                continue
            if not ((d / "pyproject.toml").is_file() or (d / "setup.py").is_file()):
                continue  # e.g. a README next to the projects
            found.append(d)
    if not found:
        raise WorkspaceError(f"the workspace {root} has no member projects",
                             "each member needs a pyproject.toml or setup.py")
    return found


def _merge(shared: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """Root defaults under a member's own table (nested tables merged key by key)."""
    merged: dict[str, Any] = {}
    for key, value in shared.items():
        if key in MEMBER_ONLY:
            continue
        if isinstance(value, dict) and key in TABLES:
            value = {k: v for k, v in value.items() if f"{key}.{k}" not in MEMBER_ONLY}
        merged[key] = value
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key in TABLES:
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def load_workspace(root: Path, *, environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None,
                   progress: Progress | None = None) -> Workspace:
    root = root.resolve()
    if not root.is_dir():
        raise WorkspaceError(f"{root} is not a directory", "give the root directory of a workspace")
    settings, shared = read_settings(root)
    progress = progress or Progress(quiet=True)
    members: dict[str, Member] = {}
    meta_cache = root / ".grocker" / "metadata"
    dirs = _member_dirs(root, settings)
    untrusted = _untrusted_dirs(root, settings, dirs)
    loaded: list[tuple[Path, Config, Source, dict[str, Any] | None]] = []
    for path in dirs:
        own, where = read_file_layer(path)
        if "workspace" in own:
            own = {k: v for k, v in own.items() if k != "workspace"}
        config = load_config(path, environ=environ, overrides=overrides, file_table=_merge(shared, own),
                             warn=progress.warn)
        check_default_command(config)
        source = Source.scan(path)
        loaded.append((path, config, source, member_metadata(path, source, meta_cache, trusted=path not in untrusted)))
    isolated = [(source, config) for _, config, source, meta in loaded if meta is None]
    prepared = _prepare_isolated(isolated, [c for _, c, _, _ in loaded], environ, meta_cache, progress)
    for path, config, source, meta in loaded:
        meta = meta or prepared[path]
        name = canonicalize_name(meta["name"])
        if name in members:
            raise WorkspaceError(f"two workspace members are named {name}: {members[name].path} and {path}",
                                 "rename one, or exclude it with workspace.exclude")
        members[name] = Member(name=name, path=path, version=meta["version"], requires=meta["requires"],
                               optional=meta.get("optional", {}), config=config, source=source,
                               trusted=path not in untrusted)
    for m in members.values():
        m.fixed_kind = m.kind
    _link(members)
    order, levels = _order(members)
    return Workspace(root, settings, members, order, levels)


def _untrusted_dirs(root: Path, settings: WorkspaceSettings, dirs: list[Path]) -> set[Path]:
    found: set[Path] = set()
    for pattern in settings.untrusted:
        matched = {Path(p).resolve() for p in glob.glob(str(root / pattern))} & set(dirs)
        if not matched:
            # A pattern that matches nothing would leave a member trusted without a word.
            raise WorkspaceError(f"workspace.untrusted pattern '{pattern}' matches no member of {root}",
                                 "fix the pattern (globs relative to the root, as in workspace.members)")
        found |= matched
    return found


def shared_config(configs: list[Config]) -> Config:
    """One compiler image for the whole workspace: the union of every member's packages."""
    return dataclasses.replace(
        configs[0],
        run_packages=tuple(sorted({p for c in configs for p in c.run_packages})),
        build_packages=tuple(sorted({p for c in configs for p in c.build_packages})),
        # uv in the shared compiler image when any member uses it (pip is there in any case).
        installer="uv" if any(c.installer == "uv" for c in configs) else "pip",
    )


def _prepare_isolated(isolated: list[tuple[Source, Config]], configs: list[Config], environ: Mapping[str, str],
                      cache_dir: Path, progress: Progress) -> dict[Path, dict[str, Any]]:
    """Metadata of untrusted members, each prepared in a container of its own (cached by source hash)."""
    if not isolated:
        return {}
    from setuptools_grocker.engine import Engine
    from setuptools_grocker.image.recipes import ensure_base_images
    from setuptools_grocker.pipeline.caches import cache_home, pip_cache_dir
    from setuptools_grocker.pipeline.compile import container_metadata
    from setuptools_grocker.pipeline.pipconf import forward
    from setuptools_grocker.registry.sharedcache import shared_cache

    pip = forward(environ) if environ.get("GROCKER_NO_PIP_CONFIG") != "1" else forward({})
    prepared: dict[Path, dict[str, Any]] = {}
    with Engine(progress) as engine:
        shared = shared_config(configs)
        images = ensure_base_images(engine, shared, progress, pip=pip, work=cache_home(environ),
                                    shared=shared_cache(shared.build_cache, environ, cache=cache_home(environ)))
        for source, _ in isolated:
            # One container per member: untrusted members do not share a scratch tree or a cache.
            meta = container_metadata(engine, compiler=images.compiler, source=source, pip=pip,
                                      pip_cache=pip_cache_dir(environ, source.root), progress=progress)
            write_json_atomic(cache_dir / f"{source.digest}.json", meta)
            prepared[source.root] = meta
    return prepared


def member_metadata(path: Path, source: Source, cache_dir: Path, *, trusted: bool = True) -> dict[str, Any] | None:
    """Name, version, requirements (and per-extra requirements) of one member.

    None for an untrusted member whose metadata needs its build backend: it is prepared in a
    container (see ``_prepare_isolated``), never on the host.
    """
    project = static_metadata(path)
    if project is not None and "version" in project:
        return {
            "name": project["name"],
            "version": str(project["version"]),
            "requires": list(project.get("dependencies", [])),
            "optional": {canonicalize_name(k): list(v) for k, v in project.get("optional-dependencies", {}).items()},
        }
    cached = cache_dir / f"{source.digest}.json"
    if cached.is_file():
        try:
            return dict(json.loads(cached.read_text()))
        except ValueError:
            pass
    if not trusted:
        if uses_scm_version(path):
            raise WorkspaceError(
                f"untrusted member {path.name} takes its version from git through its build backend, which "
                "would have to run on the host (the compiler container has no git)",
                "give it a static version in [project], or remove it from workspace.untrusted")
        return None
    meta = prepare_metadata(path)
    write_json_atomic(cached, meta)
    return meta


def _applies(req: Requirement, extras: Iterable[str]) -> bool:
    if req.marker is None:
        return True
    for extra in [""] + list(extras):
        if req.marker.evaluate({**TARGET_ENV, "extra": extra}):
            return True
    return False


def _link(members: dict[str, Member]) -> None:
    """Fill ``deps`` with internal dependencies; fail on version conflicts."""

    def visit(owner: Member, requirements: Iterable[str], extras: Iterable[str], seen: set[tuple[str, str]]) -> None:
        for text in requirements:
            try:
                req = Requirement(text)
            except InvalidRequirement as exc:
                raise ProjectError(f"{owner.name}: invalid requirement {text!r}: {exc}",
                                   "fix the dependency list") from exc
            if not _applies(req, extras):
                continue
            dep = canonicalize_name(req.name)
            target = members.get(dep)
            if target is None or dep == owner.name:
                continue
            try:
                ok = req.specifier.contains(Version(target.version), prereleases=True)
            except InvalidVersion:
                ok = True
            if not ok:
                raise WorkspaceError(
                    f"{owner.name} requires {req.name}{req.specifier} but the workspace has {dep} {target.version}",
                    f"change the requirement in {owner.path.name} or the version of {target.path.name}",
                )
            owner.deps.add(dep)
            for extra in req.extras:
                key = (dep, canonicalize_name(extra))
                if key not in seen:
                    seen.add(key)
                    visit(owner, target.optional.get(canonicalize_name(extra), []), [], seen)

    for member in members.values():
        visit(member, member.requires, member.config.extras, set())
        for extra in member.config.extras:
            visit(member, member.optional.get(canonicalize_name(extra), []), [], set())


def _order(members: dict[str, Member]) -> tuple[list[str], list[list[str]]]:
    sorter = graphlib.TopologicalSorter({name: sorted(m.deps) for name, m in sorted(members.items())})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        raise WorkspaceError(f"dependency cycle between workspace members: {' -> '.join(cycle)}",
                             "break the cycle: move the shared code into a library both can depend on") from exc
    levels: list[list[str]] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        levels.append(ready)
        sorter.done(*ready)
    return [n for level in levels for n in level], levels


# -- keys and the plan ----------------------------------------------------------------------

def member_keys(ws: Workspace, env_key: str, locks: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Cache key of every member and the components it is made of (for the plan's reasons). ``locks``: the
    digest of each application's subset of the workspace lock (none without a lock: the keys as before)."""
    keys: dict[str, dict[str, Any]] = {}
    for name in ws.order:
        m = ws.members[name]
        parts = {
            "tool": tool_identity(),
            "source": m.source.digest,
            "config": m.config_digest(),
            "env": env_key,
            "deps": {d: keys[d]["key"] for d in sorted(m.deps)},
        }
        if locks and name in locks:
            parts["lock"] = locks[name]
        parts["key"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
        keys[name] = parts
    return keys


def member_state_path(ws: Workspace, name: str) -> Path:
    return ws.state_dir / "members" / f"{name}.json"


def load_member_state(ws: Workspace, name: str) -> dict[str, Any]:
    try:
        data = json.loads(member_state_path(ws, name).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_member_state(ws: Workspace, member: Member, parts: Mapping[str, Any], done: Mapping[str, Any]) -> None:
    """Write the member's state (atomically) after each finished stage."""
    wheel = done.get("wheel", {})
    write_json_atomic(member_state_path(ws, member.name), {
        "name": member.name, "version": member.version, "kind": member.kind, "key": parts["key"],
        "parts": parts, "stages": dict(done),
        # Flat copies for readers of the state file.
        "wheel": wheel.get("wheel"), "distributions": wheel.get("distributions", []),
        "image_id": done.get("image", {}).get("image_id"), "image": done.get("smoke", {}).get("image"),
        "digest": done.get("push", {}).get("digest"),
        "complete": all(s in done for s in member_stages(member.kind, has_tests=member.has_tests, push=False)),
    })


def why_rebuild(parts: Mapping[str, Any], state: Mapping[str, Any], rebuilt: set[str]) -> str | None:
    """None when up to date, else the reason, in the words of the plan."""
    old = state.get("parts")
    if not state or not old:
        return "never built"
    if old.get("key") == parts["key"]:
        return None
    if old.get("tool") != parts["tool"]:
        return "tool version changed"
    if old.get("source") != parts["source"]:
        return "source changed"
    if old.get("config") != parts["config"]:
        return "config changed"
    changed = sorted(d for d, k in parts["deps"].items() if old.get("deps", {}).get(d) != k)
    if changed:
        return "dependency rebuilt: " + ", ".join(changed)
    if old.get("env") != parts["env"]:
        return "base images or workspace settings changed"
    if old.get("lock") != parts.get("lock"):
        return "lock changed"
    return "inputs changed"
