"""Loading plugins and calling their hooks, through pluggy.

Plugins are registered in this order: the built-in modules the pipeline passes in
(``builtins``), the entry points of the group ``grocker`` (sorted by name), then the modules
of the ``plugins`` key. Every hook is called as ``pm.hook.<name>(...)``, so pluggy decides the
call order -- ``tryfirst`` implementations first, then the most recently registered first,
``trylast`` ones last -- and runs the wrappers (``wrapper=True``, ``hookwrapper=True``) around
them. There is one typed method per hook (:meth:`PluginManager.grocker_stages`, ...): it calls
the hook and checks and types what came back.

What pluggy does not say is which plugin returned what; grocker needs it to name the plugin in
errors, to know which plugin a stage belongs to, and to let each ``grocker_configure``
implementation see the changes of those called before it. So each implementation function
that is not a wrapper is decorated once, at registration (:func:`_attributed`): pluggy still
calls it, in its own order and inside the wrappers; the decoration checks the value it returns
and records its plugin.

``environ`` (passed in, never ``os.environ``): ``GROCKER_DISABLE_PLUGINS=name,name`` blocks
plugins by entry point name or module (pluggy's ``set_blocked``); ``GROCKER_TRACE_PLUGINS=1``
prints every hook call, its implementations in call order and its result (pluggy's
``add_hookcall_monitoring``). Implementations of hooks that do not exist are refused
(``check_pending``).
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import pluggy

from setuptools_grocker.config import Config
from setuptools_grocker.errors import GrockerError, PluginError
from setuptools_grocker.plugin import spec as spec_module
from setuptools_grocker.plugin.signing import Signature, SigningRequest
from setuptools_grocker.plugin.spec import NAME
from setuptools_grocker.plugin.stages import POSITIONS, ImageContribution, Stage

if TYPE_CHECKING:
    from setuptools_grocker.report import ProjectResult

if sys.version_info >= (3, 10):
    from importlib.metadata import entry_points
else:  # pragma: no cover
    from importlib_metadata import entry_points


@functools.lru_cache(maxsize=4)
def _installed_plugins(path: tuple[str, ...]) -> tuple[Any, ...]:
    """The entry points of the group, by name: read once per process and ``sys.path`` (a workspace makes one
    plugin manager per member; scanning every distribution's metadata each time was half a no-change rebuild)."""
    return tuple(sorted(entry_points(group=NAME), key=lambda e: e.name))


FIELDS = tuple(f.name for f in dataclasses.fields(Config))


@dataclass(frozen=True)
class LoadedPlugin:
    name: str
    origin: str  # "builtin", "entry point of DIST VERSION", "config"
    hooks: tuple[str, ...]


@dataclass
class _Call:
    """One typed hook call in progress (per thread: workspace members build in parallel)."""

    hook: str
    config: Config | None = None  # grocker_configure: the configuration as changed so far
    #: grocker_verify_signature: (plugin, verdict) of each implementation that answered
    verdicts: list[tuple[str, bool]] = dataclasses.field(default_factory=list)
    #: TOLERANT hooks: (plugin, one-line error) of each implementation that raised; the others still ran
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    #: FIRST_RESULT hooks: the plugin whose answer was used
    answered: str | None = None


#: Hooks whose implementations' exceptions are collected, not raised: they run while a rollback is under way.
TOLERANT = ("grocker_incident",)
#: Hooks declared ``firstresult``: pluggy returns the first answer that is not None, not a list.
FIRST_RESULT = ("grocker_release_metrics",)


_CALL: ContextVar[_Call | None] = ContextVar("grocker_plugin_call", default=None)


class PluginManager:
    """A pluggy manager with grocker's hook specs, loaded once per build (or workspace member)."""

    def __init__(self, *, builtins: Sequence[ModuleType] = (), extra: Sequence[str] = (),
                 environ: Mapping[str, str] | None = None, write: Callable[[str], None] | None = None) -> None:
        environ = environ or {}
        #: Given to the hooks that take it (``grocker_sign``, ``grocker_verify_signature``).
        self.environ: Mapping[str, str] = environ
        self.pm = pluggy.PluginManager(NAME)
        self.pm.add_hookspecs(spec_module)
        self.loaded: list[LoadedPlugin] = []
        for name in environ.get("GROCKER_DISABLE_PLUGINS", "").split(","):
            if name.strip():
                self.pm.set_blocked(name.strip())
        for module in builtins:
            self._register(module, module.__name__, "builtin")
        # Not pm.load_setuptools_entrypoints: it registers in the order distributions are found
        # (not reproducible), cannot say which entry point failed to import, and knows only
        # entry point names for blocking.
        for ep in _installed_plugins(tuple(sys.path)):
            if self.pm.is_blocked(ep.name) or self.pm.is_blocked(ep.value.split(":")[0]) or self.pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(f"plugin '{ep.name}' (entry point {ep.value}) failed to load: {exc}",
                                  f"fix it, or disable it with GROCKER_DISABLE_PLUGINS={ep.name}") from exc
            dist = getattr(ep, "dist", None)
            origin = f"entry point of {dist.name} {dist.version}" if dist else "entry point"
            self._register(plugin, ep.name, origin)
        for module_name in extra:
            if self.pm.is_blocked(module_name):
                continue
            try:
                plugin = importlib.import_module(module_name)
            except ImportError as exc:
                raise PluginError(f"plugin module '{module_name}' from the plugins key cannot be imported: {exc}",
                                  "install it in the same environment as grocker, or remove it from plugins") from exc
            self._register(plugin, module_name, "config")
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"a plugin implements a hook that does not exist: {exc}",
                              f"the hooks are: {', '.join(spec_module.HOOKS)}") from exc
        self._write = write or _stderr
        if environ.get("GROCKER_TRACE_PLUGINS") == "1":
            self.pm.add_hookcall_monitoring(self._trace_before, self._trace_after)

    def _register(self, plugin: Any, name: str, origin: str) -> None:
        if self.pm.is_blocked(name) or self.pm.has_plugin(name) or self.pm.is_registered(plugin):
            return
        try:
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f"plugin '{name}' cannot be registered: {exc}",
                              "check its hook implementations against the hooks reference") from exc
        callers = self.pm.get_hookcallers(plugin) or []
        for caller in callers:
            for hookimpl in caller.get_hookimpls():
                if hookimpl.plugin is plugin and not (hookimpl.wrapper or hookimpl.hookwrapper):
                    hookimpl.function = _attributed(caller.name, hookimpl)  # type: ignore[misc]
        self.loaded.append(LoadedPlugin(name, origin, tuple(sorted(c.name for c in callers))))

    def is_builtin(self, plugin: str) -> bool:
        return any(p.name == plugin and p.origin == "builtin" for p in self.loaded)

    # -- one typed method per hook --------------------------------------------------------

    def grocker_configure(self, config: Config) -> Config:
        """The configuration after every implementation's changes, applied in call order."""
        changes = self._call("grocker_configure", config=config)
        for change in changes:
            config = _replace(config, change, self._wrappers("grocker_configure"))
        return config

    def grocker_stages(self, config: Config) -> list[Stage]:
        """Every contributed stage, in call order, each naming its plugin (not yet sorted by position)."""
        stages: list[Stage] = []
        for value in self._call("grocker_stages", config=config):
            stages.extend(s if s.plugin else dataclasses.replace(s, plugin=self._wrappers("grocker_stages"))
                          for s in value)
        return stages

    def grocker_compile_environment(self, config: Config) -> tuple[dict[str, str], list[str]]:
        """Environment (a later call overrides an earlier one's variable) and commands, in call order."""
        env: dict[str, str] = {}
        commands: list[str] = []
        for value in self._call("grocker_compile_environment", config=config):
            env.update({str(k): str(v) for k, v in dict(value.get("env", {})).items()})
            commands.extend(value.get("commands", []))
        return env, commands

    def grocker_runtime_image(self, config: Config) -> list[ImageContribution]:
        return list(self._call("grocker_runtime_image", config=config))

    def grocker_smoke_tests(self, config: Config) -> list[list[str]]:
        return [list(map(str, command)) for value in self._call("grocker_smoke_tests", config=config)
                for command in value]

    def grocker_after_publish(self, config: Config, result: ProjectResult) -> None:
        self._call("grocker_after_publish", config=config, result=result)

    def grocker_sign(self, config: Config, request: SigningRequest) -> list[Signature]:
        """Every signature the plugins made of ``request.payload``, each naming its plugin (``signer``)."""
        return list(self._call("grocker_sign", config=config, request=request, environ=self.environ))

    def has_implementations(self, hook: str) -> bool:
        """Whether some plugin implements ``hook`` (``grocker verify`` says when none checks signatures)."""
        return bool(getattr(self.pm.hook, hook).get_hookimpls())

    def grocker_verify_signature(self, payload: bytes, signature: Signature) -> list[tuple[str, bool]]:
        """The verdict of every plugin that knows the signature's key: ``(plugin, valid)``, in call order."""
        state = _Call("grocker_verify_signature")
        self._call("grocker_verify_signature", state=state, payload=payload, signature=signature,
                   environ=self.environ)
        return state.verdicts

    def grocker_incident(self, report: Mapping[str, Any], paths: Mapping[str, Path]) -> list[tuple[str, str]]:
        """Every implementation, each called even if another raised: ``(plugin, error)`` of those that failed."""
        state = _Call("grocker_incident")
        self._call("grocker_incident", state=state, report=report, paths=paths)
        return state.failures

    def grocker_release_metrics(self, service: str, start: float, end: float) -> tuple[str, Mapping[str, Any]] | None:
        """The first plugin's figures of ``service`` over [start, end): ``(plugin, figures)``, or None."""
        state = _Call("grocker_release_metrics")
        results = self._call("grocker_release_metrics", state=state, service=service, start=start, end=end)
        return (state.answered or self._wrappers("grocker_release_metrics"), results[0]) if results else None

    # -- calling --------------------------------------------------------------------------

    def _call(self, hook: str, state: _Call | None = None, **kwargs: Any) -> list[Any]:
        """``pm.hook.<hook>(**kwargs)``, then check what the wrappers (if any) made of the results."""
        state = state or _Call(hook, config=kwargs["config"] if hook == "grocker_configure" else None)
        token = _CALL.set(state)
        try:
            results = getattr(self.pm.hook, hook)(**kwargs)
        except GrockerError:
            raise
        except Exception as exc:
            # Implementations' exceptions were converted where they were raised: this came from a wrapper.
            name = _raiser(exc.__traceback__, getattr(self.pm.hook, hook).get_hookimpls()) or self._wrappers(hook)
            raise PluginError(f"plugin '{name}' failed in {hook}: {type(exc).__name__}: {exc}",
                              f"fix the plugin, or disable it with GROCKER_DISABLE_PLUGINS={name}") from exc
        finally:
            _CALL.reset(token)
        if hook in FIRST_RESULT:
            results = [] if results is None else [results]
        # Each implementation's value was checked when it returned; what fails now, a wrapper made.
        if not isinstance(results, list):
            raise bad_return(self._wrappers(hook), hook, "the list of results", results)
        for value in results:
            expected = _CHECKS[hook](value)
            if expected:
                raise bad_return(self._wrappers(hook), hook, expected, value)
        return results

    def _wrappers(self, hook: str) -> str:
        """The plugins wrapping ``hook``, to name them when they made a bad result."""
        names = [i.plugin_name for i in getattr(self.pm.hook, hook).get_hookimpls() if i.wrapper or i.hookwrapper]
        return ",".join(dict.fromkeys(names)) or "?"

    def _trace_before(self, hook: str, hookimpls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        for hookimpl in call_order(hookimpls):
            marks = [m for m in ("wrapper", "hookwrapper", "tryfirst", "trylast") if getattr(hookimpl, m)]
            self._write(f"plugin trace: {hook} -> {hookimpl.plugin_name}" + (f" [{', '.join(marks)}]" if marks else ""))

    def _trace_after(self, outcome: pluggy.Result[Any], hook: str, hookimpls: Sequence[pluggy.HookImpl],
                     kwargs: Mapping[str, Any]) -> None:
        if outcome.exception is not None:
            self._write(f"plugin trace: {hook} raised {type(outcome.exception).__name__}: {outcome.exception}")
        else:
            self._write(f"plugin trace: {hook} <- {_traced(hook, outcome.get_result())!r}")


def call_order(hookimpls: Sequence[pluggy.HookImpl]) -> list[pluggy.HookImpl]:
    """The order in which pluggy calls ``hookimpls`` (as a HookCaller lists them): from the end.

    Wrappers come last in the list (tryfirst ones at the very end), so they are entered first;
    then the other implementations, tryfirst first, most recently registered first, trylast last.
    """
    return list(reversed(hookimpls))


def _attributed(hook: str, hookimpl: pluggy.HookImpl) -> Callable[..., Any]:
    """``hookimpl.function``, checking and recording what it returns during a typed call."""
    function, plugin = hookimpl.function, hookimpl.plugin_name
    config_at = hookimpl.argnames.index("config") if "config" in hookimpl.argnames else None

    def call(*args: Any, **kwargs: Any) -> Any:
        state = _CALL.get()
        if state is not None and state.hook != hook:
            state = None  # called outside a typed call of this hook (a plugin calling pm.hook itself)
        if state is not None and state.config is not None and config_at is not None:
            # grocker_configure: this implementation sees the changes of those pluggy called before it.
            args = (*args[:config_at], state.config, *args[config_at + 1:])
        try:
            value: Any = function(*args, **kwargs)
        except Exception as exc:
            if state is not None and hook in TOLERANT:
                state.failures.append((plugin, f"{type(exc).__name__}: {exc}"))
                return None
            if isinstance(exc, GrockerError):
                raise
            raise PluginError(f"plugin '{plugin}' failed in {hook}: {type(exc).__name__}: {exc}",
                              f"fix the plugin, or disable it with GROCKER_DISABLE_PLUGINS={plugin}") from exc
        if value is None or state is None:
            return value
        expected = _CHECKS[hook](value)
        if expected:
            raise bad_return(plugin, hook, expected, value)
        if hook == "grocker_stages":  # each stage names its plugin from here on, in wrappers too
            value = [dataclasses.replace(s, plugin=plugin) for s in value]
        elif hook == "grocker_sign":
            value = dataclasses.replace(value, signer=plugin)
        elif hook == "grocker_verify_signature":
            state.verdicts.append((plugin, value))
        elif hook in FIRST_RESULT:
            state.answered = plugin
        elif state.config is not None:
            state.config = _replace(state.config, value, plugin)
        return value

    call.__wrapped__ = function  # type: ignore[attr-defined]
    return call


def _replace(config: Config, changes: Mapping[str, Any], plugin: str) -> Config:
    try:
        return dataclasses.replace(config, **changes)
    except (TypeError, ValueError) as exc:
        raise PluginError(f"plugin '{plugin}' returned configuration changes that do not apply: {exc}",
                          "fix the plugin's return value (see the hooks reference)") from exc


def _raiser(tb: TracebackType | None, hookimpls: Iterable[pluggy.HookImpl]) -> str | None:
    """The plugin whose hook function raised, found by its code in the traceback."""
    codes = {getattr(getattr(i.function, "__wrapped__", i.function), "__code__", None): i.plugin_name
             for i in hookimpls}
    name = None
    while tb is not None:
        name = codes.get(tb.tb_frame.f_code, name)
        tb = tb.tb_next
    return name


# -- what each hook may return (None always may); a text saying what was expected, or None ------

def _check_configure(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return "a mapping of Config fields"
    for key in value:
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), FIELDS, n=1)
            return f"Config fields (not {key!r}" + (f"; did you mean {close[0]!r}?)" if close else ")")
    return None


def _check_stages(value: Any) -> str | None:
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, Stage) for s in value):
        return "a list of Stage"
    for stage in value:
        if stage.position not in POSITIONS:
            return f"a position among {', '.join(POSITIONS)} (not {stage.position!r})"
    return None


def _check_compile_environment(value: Any) -> str | None:
    if not isinstance(value, Mapping) or not set(value) <= {"env", "commands"} \
            or not isinstance(value.get("env", {}), Mapping):
        return 'a mapping with "env" (a mapping) and/or "commands"'
    commands = value.get("commands", [])
    if not isinstance(commands, (list, tuple)) or not all(isinstance(c, str) for c in commands):
        return "commands as a list of strings"
    return None


def _check_runtime_image(value: Any) -> str | None:
    if not isinstance(value, ImageContribution):
        return "an ImageContribution"
    for dest, src in value.files.items():
        if not str(dest).startswith("/"):
            return f"absolute destinations (not {dest!r})"
        if not Path(src).exists():
            return f"existing files (not {src})"
    return None


def _check_smoke_tests(value: Any) -> str | None:
    if not isinstance(value, (list, tuple)) or not all(isinstance(c, (list, tuple)) for c in value):
        return "a list of argument lists"
    return None


def _check_sign(value: Any) -> str | None:
    if not isinstance(value, Signature):
        return "a Signature"
    if not isinstance(value.signature, bytes) or not value.signature or not value.key_id:
        return "a Signature with signature bytes and a key_id"
    return None


def _check_release_metrics(value: Any) -> str | None:
    expected = 'a mapping {"requests": N, "errors": E, "times_ms": [...]} with 0 <= E <= N'
    if not isinstance(value, Mapping):
        return expected
    requests, errors, times = value.get("requests"), value.get("errors"), value.get("times_ms", ())
    if not isinstance(requests, int) or not isinstance(errors, int) or isinstance(requests, bool) \
            or isinstance(errors, bool) or not 0 <= errors <= requests:
        return expected
    if not isinstance(times, (list, tuple)) or not all(isinstance(t, (int, float)) and not isinstance(t, bool)
                                                       and t >= 0 for t in times):
        return "times_ms as a list of milliseconds (numbers >= 0)"
    return None


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "grocker_configure": _check_configure,
    "grocker_stages": _check_stages,
    "grocker_compile_environment": _check_compile_environment,
    "grocker_runtime_image": _check_runtime_image,
    "grocker_smoke_tests": _check_smoke_tests,
    "grocker_after_publish": lambda value: None,  # its return value means nothing
    "grocker_sign": _check_sign,
    "grocker_verify_signature": lambda value: None if isinstance(value, bool) else "True, False or None",
    "grocker_incident": lambda value: None,  # its return value means nothing
    "grocker_release_metrics": _check_release_metrics,
}


def _traced(hook: str, results: Any) -> Any:
    """What the trace shows of a hook's results: compile environment values are secrets (tokens, index URLs)."""
    if hook != "grocker_compile_environment" or not isinstance(results, list):
        return results
    return [{**value, "env": {k: "***" for k in value["env"]}}
            if isinstance(value, Mapping) and isinstance(value.get("env"), Mapping) else value
            for value in results]


def bad_return(plugin: str, hook: str, expected: str, value: Any) -> PluginError:
    return PluginError(f"plugin '{plugin}' returned {type(value).__name__} from {hook}, expected {expected}",
                       "fix the plugin's return value (see the hooks reference)")


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
