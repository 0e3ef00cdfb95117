"""Loading plugins: the built-ins, entry points of the group ``grocker``, the ``plugins`` key.

``GROCKER_DISABLE_PLUGINS=name,name`` blocks plugins by name (entry point name or module);
``GROCKER_TRACE_PLUGINS=1`` prints every hook call and its result. Implementations of
hooks that do not exist are refused (``check_pending``). A plugin that raises, or returns
something of the wrong type, fails the build with a message naming plugin and hook.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import pluggy

from setuptools_grocker.errors import PluginError
from setuptools_grocker.plugin import spec as spec_module
from setuptools_grocker.plugin.spec import NAME

if sys.version_info >= (3, 10):
    from importlib.metadata import entry_points
else:  # pragma: no cover
    from importlib_metadata import entry_points

BUILTIN = "setuptools_grocker.plugin.builtin"


@dataclass(frozen=True)
class LoadedPlugin:
    name: str
    origin: str  # "builtin", "entry point DIST VERSION", "config"
    hooks: tuple[str, ...]


class PluginManager:
    """A pluggy manager with grocker's specs, loaded once per build."""

    def __init__(self, *, extra: Sequence[str] = (), environ: Mapping[str, str] | None = None,
                 write: Callable[[str], None] | None = None) -> None:
        environ = environ or {}
        self.pm = pluggy.PluginManager(NAME)
        self.pm.add_hookspecs(spec_module)
        self.loaded: list[LoadedPlugin] = []
        blocked = {b.strip() for b in environ.get("GROCKER_DISABLE_PLUGINS", "").split(",") if b.strip()}
        self._register(BUILTIN, "builtin", importlib.import_module(BUILTIN), blocked)
        for ep in sorted(entry_points(group=NAME), key=lambda e: e.name):
            if ep.name in blocked or ep.value.split(":")[0] in blocked:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(f"plugin '{ep.name}' (entry point {ep.value}) failed to load: {exc}",
                                  f"fix it, or disable it with GROCKER_DISABLE_PLUGINS={ep.name}") from exc
            dist = getattr(ep, "dist", None)
            origin = f"entry point of {dist.name} {dist.version}" if dist else "entry point"
            self._register(ep.name, origin, plugin, blocked)
        for module in extra:
            if module in blocked:
                continue
            try:
                plugin = importlib.import_module(module)
            except ImportError as exc:
                raise PluginError(f"plugin module '{module}' from the plugins key cannot be imported: {exc}",
                                  "install it in the same environment as grocker, or remove it from plugins") from exc
            self._register(module, "config", plugin, blocked)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"a plugin implements a hook that does not exist: {exc}",
                              f"the hooks are: {', '.join(spec_module.HOOKS)}") from exc
        self.trace: Callable[[str], None] | None = None
        if environ.get("GROCKER_TRACE_PLUGINS") == "1":
            self.trace = write or _stderr

    def _register(self, name: str, origin: str, plugin: Any, blocked: set[str]) -> None:
        if name in blocked or self.pm.has_plugin(name):
            return
        try:
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f"plugin '{name}' cannot be registered: {exc}",
                              "check its hook implementations against the hooks reference") from exc
        hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or []))
        self.loaded.append(LoadedPlugin(name, origin, hooks))

    def call(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every implementation (in registration order); return (plugin, result) pairs."""
        caller = getattr(self.pm.hook, hook)
        results = []
        # pluggy would call the last registered first; grocker promises registration order
        # (get_hookimpls lists them first registered first).
        for impl in caller.get_hookimpls():
            if self.trace:
                self.trace(f"plugin trace: {hook} -> {impl.plugin_name}")
            try:
                value = impl.function(**{k: kwargs[k] for k in impl.argnames})
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(f"plugin '{impl.plugin_name}' failed in {hook}: {type(exc).__name__}: {exc}",
                                  f"fix the plugin, or disable it with GROCKER_DISABLE_PLUGINS={impl.plugin_name}"
                                  ) from exc
            if self.trace:
                self.trace(f"plugin trace: {hook} <- {impl.plugin_name}: {_traced(hook, value)!r}")
            if value is not None:
                results.append((impl.plugin_name, value))
        return results


def _traced(hook: str, value: Any) -> Any:
    """What the trace shows of a result: compile environment values are secrets (tokens, index URLs)."""
    if hook == "grocker_compile_environment" and isinstance(value, Mapping) and isinstance(value.get("env"), Mapping):
        return {**value, "env": {k: "***" for k in value["env"]}}
    return value


def bad_return(plugin: str, hook: str, expected: str, value: Any) -> PluginError:
    return PluginError(f"plugin '{plugin}' returned {type(value).__name__} from {hook}, expected {expected}",
                       "fix the plugin's return value (see the hooks reference)")


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
