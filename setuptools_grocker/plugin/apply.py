"""Applying plugin contributions to a build: configuration, compile environment, image, stages.

The hooks are called through the manager's typed methods (pluggy's order, wrappers included);
this module folds what they return into the build's configuration and inputs.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Mapping

from setuptools_grocker.config import Config
from setuptools_grocker.plugin.manager import PluginManager
from setuptools_grocker.plugin.stages import ImageContribution, Stage


def configure(plugins: PluginManager, config: Config) -> Config:
    """Apply ``grocker_configure`` then merge ``grocker_runtime_image`` packages/labels/commands."""
    config = plugins.grocker_configure(config)
    contributions = plugins.grocker_runtime_image(config)
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
    return plugins.grocker_runtime_image(config)


def image_files(plugins: PluginManager, config: Config) -> dict[str, Path]:
    return {dest: Path(src) for c in image_contributions(plugins, config) for dest, src in c.files.items()}


def compile_environment(plugins: PluginManager, config: Config) -> tuple[dict[str, str], list[str]]:
    return plugins.grocker_compile_environment(config)


def stages(plugins: PluginManager, config: Config) -> list[Stage]:
    """The stages by position; within a position, in the order pluggy called their implementations."""
    return sorted(plugins.grocker_stages(config), key=lambda s: s.order())  # sorted() is stable


def smoke_commands(plugins: PluginManager, config: Config) -> list[list[str]]:
    return plugins.grocker_smoke_tests(config)


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
