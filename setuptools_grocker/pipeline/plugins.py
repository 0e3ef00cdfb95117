"""The plugin manager of one build: the built-in modules, the entry points, the ``plugins`` key.

The built-in behaviour is two modules registered as plugins, like any other: the single-project
pipeline (its stages) and the smoke test (the default smoke commands).
"""
from __future__ import annotations

from types import ModuleType
from typing import Callable, Mapping, Sequence

from setuptools_grocker.plugin.manager import PluginManager


def builtin_plugins() -> tuple[ModuleType, ...]:
    """The modules whose hook implementations are the built-in behaviour (imported when needed:
    the single-project pipeline itself asks for a plugin manager)."""
    from setuptools_grocker.pipeline import build, smoke

    return (build, smoke)


def plugin_manager(plugins: Sequence[str], environ: Mapping[str, str],
                   write: Callable[[str], None] | None = None) -> PluginManager:
    """The plugins of one build: the built-ins, the entry points, then ``plugins`` (the config key)."""
    return PluginManager(builtins=builtin_plugins(), extra=plugins, environ=environ, write=write)
