"""Applying plugin contributions to a build: configuration, compile environment, image, stages."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Mapping

from setuptools_grocker.config import Config
from setuptools_grocker.plugin.manager import PluginManager, bad_return
from setuptools_grocker.plugin.stages import POSITIONS, ImageContribution, Stage

FIELDS = {f.name for f in dataclasses.fields(Config)}


def configure(plugins: PluginManager, config: Config) -> Config:
    """Apply ``grocker_configure`` then merge ``grocker_runtime_image`` packages/labels/commands."""
    for name, changes in plugins.call("grocker_configure", config=config):
        if not isinstance(changes, Mapping):
            raise bad_return(name, "grocker_configure", "a mapping of Config fields", changes)
        unknown = sorted(set(changes) - FIELDS)
        if unknown:
            raise bad_return(name, "grocker_configure", f"Config fields (not {unknown[0]!r})", changes)
        config = dataclasses.replace(config, **changes)
    contributions = image_contributions(plugins, config)
    if contributions:
        config = dataclasses.replace(
            config,
            run_packages=tuple(dict.fromkeys([*config.run_packages,
                                              *(p for c in contributions for p in c.system_packages)])),
            labels={**config.labels, **{k: v for c in contributions for k, v in c.labels.items()}},
            commands={**config.commands, **{k: v for c in contributions for k, v in c.commands.items()}},
        )
    return config


def image_contributions(plugins: PluginManager, config: Config) -> list[ImageContribution]:
    out = []
    for name, value in plugins.call("grocker_runtime_image", config=config):
        if not isinstance(value, ImageContribution):
            raise bad_return(name, "grocker_runtime_image", "an ImageContribution", value)
        for dest, src in value.files.items():
            if not str(dest).startswith("/"):
                raise bad_return(name, "grocker_runtime_image", f"absolute destinations (not {dest!r})", value)
            if not Path(src).exists():
                raise bad_return(name, "grocker_runtime_image", f"existing files (not {src})", value)
        out.append(value)
    return out


def image_files(plugins: PluginManager, config: Config) -> dict[str, Path]:
    return {dest: Path(src) for c in image_contributions(plugins, config) for dest, src in c.files.items()}


def compile_environment(plugins: PluginManager, config: Config) -> tuple[dict[str, str], list[str]]:
    env: dict[str, str] = {}
    commands: list[str] = []
    for name, value in plugins.call("grocker_compile_environment", config=config):
        if not isinstance(value, Mapping) or not set(value) <= {"env", "commands"}:
            raise bad_return(name, "grocker_compile_environment", 'a mapping with "env" and/or "commands"', value)
        env.update({str(k): str(v) for k, v in dict(value.get("env", {})).items()})
        cmds = value.get("commands", [])
        if isinstance(cmds, str) or not all(isinstance(c, str) for c in cmds):
            raise bad_return(name, "grocker_compile_environment", "commands as a list of strings", value)
        commands.extend(cmds)
    return env, commands


def stages(plugins: PluginManager, config: Config) -> list[Stage]:
    found: list[Stage] = []
    for name, value in plugins.call("grocker_stages", config=config):
        if isinstance(value, Stage) or not all(isinstance(s, Stage) for s in value):
            raise bad_return(name, "grocker_stages", "a list of Stage", value)
        for stage in value:
            if stage.position not in POSITIONS:
                raise bad_return(name, "grocker_stages", f"a position among {', '.join(POSITIONS)} "
                                 f"(not {stage.position!r})", value)
            found.append(dataclasses.replace(stage, plugin=name))
    return sorted(found, key=lambda s: s.order())  # stable: registration order within a position


def smoke_commands(plugins: PluginManager, config: Config) -> list[list[str]]:
    commands: list[list[str]] = []
    for name, value in plugins.call("grocker_smoke_tests", config=config):
        if isinstance(value, (str, bytes)) or not all(isinstance(c, (list, tuple)) for c in value):
            raise bad_return(name, "grocker_smoke_tests", "a list of argument lists", value)
        commands.extend([list(map(str, c)) for c in value])
    return commands


def identity(plugins: PluginManager, files: Mapping[str, Path], compile_env: Any) -> str:
    """What the plugins change in an image, for cache keys."""
    h = hashlib.sha256()
    for p in plugins.loaded:
        h.update(f"{p.name}|{p.origin}|{','.join(p.hooks)}\n".encode())
    for dest, src in sorted(files.items()):
        h.update(dest.encode())
        paths = sorted(src.rglob("*")) if src.is_dir() else [src]
        for path in paths:
            if path.is_file():
                h.update(str(path.relative_to(src) if src.is_dir() else path.name).encode())
                h.update(path.read_bytes())
    h.update(repr(compile_env).encode())
    return h.hexdigest()
