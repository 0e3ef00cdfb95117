"""The plugin manager and the hooks contract, without an engine."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from setuptools_grocker.config import load_config
from setuptools_grocker.errors import PluginError
from setuptools_grocker.pipeline import build, smoke
from setuptools_grocker.pipeline.plugins import plugin_manager
from setuptools_grocker.plugin import ImageContribution, Stage, apply, impl, spec
from setuptools_grocker.plugin.manager import PluginManager

REPO = Path(__file__).resolve().parents[2]
BUILD = "setuptools_grocker.pipeline.build"
SMOKE = "setuptools_grocker.pipeline.smoke"


@pytest.mark.parametrize("hook", spec.HOOKS)
def test_every_hook_is_documented_and_exercised(hook: str) -> None:
    """Fails when a hook is added without documentation or a test that uses it."""
    function = getattr(spec, hook)
    assert function.__doc__ and len(function.__doc__.strip()) > 40
    assert f"### `{hook}(" in (REPO / "docs" / "hooks.md").read_text()
    testkit = (REPO / "tests" / "packages" / "grocker-plugin-testkit" / "grocker_testkit" / "__init__.py").read_text()
    assert f"def {hook}(" in testkit  # the integration tests run the testkit through real builds


def test_hooks_listed_are_the_hooks_defined() -> None:
    defined = {name for name in dir(spec) if name.startswith("grocker_")}
    assert defined == set(spec.HOOKS)


def module(name: str, **attrs: object) -> types.ModuleType:
    mod = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(mod, key, value)
    sys.modules[name] = mod
    return mod


def config(tmp_path: Path, plugins: list[str]):  # type: ignore[no-untyped-def]
    (tmp_path / "pyproject.toml").write_text(f"[tool.grocker]\nplugins = {plugins!r}\n".replace("'", '"'))
    return load_config(tmp_path, environ={})


def appender(word: str, **opts: Any):  # type: ignore[no-untyped-def]
    """A grocker_configure implementation adding ``word`` to the label com.example.chain."""
    def grocker_configure(config):  # type: ignore[no-untyped-def]
        seen = config.labels.get("com.example.chain")
        return {"labels": {**config.labels, "com.example.chain": f"{seen},{word}" if seen else word}}
    return impl(**opts)(grocker_configure) if opts else impl(grocker_configure)


def test_builtins_are_the_modules_that_implement_them(tmp_path: Path) -> None:
    pm = plugin_manager((), environ={})
    assert pm.pm.get_plugin(BUILD) is build and pm.pm.get_plugin(SMOKE) is smoke
    assert [(p.name, p.origin, p.hooks) for p in pm.loaded] == [
        (BUILD, "builtin", ("grocker_stages",)), (SMOKE, "builtin", ("grocker_smoke_tests",))]
    assert [(s.name, s.plugin) for s in apply.stages(pm, config(tmp_path, []))] == [
        ("compile", BUILD), ("image", BUILD), ("smoke test", BUILD), ("push", BUILD)]


def test_the_plugin_package_does_not_import_the_pipeline() -> None:
    """No hidden cycle: build imports the plugin package, never the other way round."""
    code = ("import sys, setuptools_grocker.plugin.manager, setuptools_grocker.plugin.apply;"
            f"print(sorted(m for m in sys.modules if m in ({BUILD!r}, {SMOKE!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_stage_positions_and_pluggy_call_order(tmp_path: Path) -> None:
    @impl
    def grocker_stages(config):  # type: ignore[no-untyped-def]
        return [Stage("late", "after-push", lambda ctx: None), Stage("early", "before-compile", lambda ctx: None),
                Stage("a-compile", "compile", lambda ctx: None)]

    @impl
    def grocker_stages_b(config):  # type: ignore[no-untyped-def]
        return [Stage("b-compile", "compile", lambda ctx: None)]

    @impl(tryfirst=True)
    def grocker_stages_c(config):  # type: ignore[no-untyped-def]
        return [Stage("c-compile", "compile", lambda ctx: None)]

    module("tk_order_a", grocker_stages=grocker_stages)
    module("tk_order_b", grocker_stages=grocker_stages_b)
    module("tk_order_c", grocker_stages=grocker_stages_c)
    cfg = config(tmp_path, ["tk_order_a", "tk_order_b", "tk_order_c"])
    pm = plugin_manager(cfg.plugins, environ={})
    assert [p.name for p in pm.loaded][-3:] == ["tk_order_a", "tk_order_b", "tk_order_c"]
    names = [(s.name, s.plugin) for s in apply.stages(pm, cfg)]
    # Within a position, pluggy's order: tryfirst (the one registered last first, so tk_order_c
    # before the built-in), then the most recently registered first.
    assert names == [("early", "tk_order_a"), ("c-compile", "tk_order_c"), ("compile", BUILD),
                     ("b-compile", "tk_order_b"), ("a-compile", "tk_order_a"), ("image", BUILD),
                     ("smoke test", BUILD), ("push", BUILD), ("late", "tk_order_a")]


def test_configure_chains_in_pluggy_order_tryfirst_first(tmp_path: Path) -> None:
    """The issue's case: two plugins append to one label, one tryfirst; both values, tryfirst's first."""
    module("tk_chain_first", grocker_configure=appender("first", tryfirst=True))
    module("tk_chain_plain", grocker_configure=appender("plain"))
    module("tk_chain_last", grocker_configure=appender("last", trylast=True))
    cfg = config(tmp_path, ["tk_chain_first", "tk_chain_plain", "tk_chain_last"])
    out = apply.configure(PluginManager(extra=cfg.plugins, environ={}), cfg)
    assert out.labels["com.example.chain"] == "first,plain,last"


def test_configure_without_marks_is_last_registered_first(tmp_path: Path) -> None:
    module("tk_lifo_a", grocker_configure=appender("a"))
    module("tk_lifo_b", grocker_configure=appender("b"))
    cfg = config(tmp_path, ["tk_lifo_a", "tk_lifo_b"])
    out = apply.configure(PluginManager(extra=cfg.plugins, environ={}), cfg)
    assert out.labels["com.example.chain"] == "b,a"


def test_configure_and_runtime_image_merge(tmp_path: Path) -> None:
    @impl
    def grocker_configure(config):  # type: ignore[no-untyped-def]
        return {"run_packages": (*config.run_packages, "libpq5")}

    @impl
    def grocker_runtime_image(config):  # type: ignore[no-untyped-def]
        return ImageContribution(system_packages=("nginx-light",), commands={"web": "nginx -g 'daemon off;'"})

    module("tk_cfg", grocker_configure=grocker_configure, grocker_runtime_image=grocker_runtime_image)
    cfg = config(tmp_path, ["tk_cfg"])
    out = apply.configure(PluginManager(extra=cfg.plugins, environ={}), cfg)
    assert out.run_packages == ("libpq5", "nginx-light")
    assert out.commands["web"] == "nginx -g 'daemon off;'"


def test_new_style_wrapper_changes_the_runtime_image_contribution(tmp_path: Path) -> None:
    @impl
    def grocker_runtime_image(config):  # type: ignore[no-untyped-def]
        return ImageContribution(labels={"com.example.team": "payments"})

    seen: list[object] = []

    @impl(wrapper=True, specname="grocker_runtime_image")
    def wrap_runtime_image(config):  # type: ignore[no-untyped-def]
        contributions = yield
        seen.append(contributions)
        return [dataclasses.replace(c, labels={**c.labels, "com.example.team": "platform"}) for c in contributions]

    module("tk_contrib", grocker_runtime_image=grocker_runtime_image)
    module("tk_wrap", wrap_runtime_image=wrap_runtime_image)
    cfg = config(tmp_path, ["tk_contrib", "tk_wrap"])
    out = apply.configure(PluginManager(extra=cfg.plugins, environ={}), cfg)
    assert seen == [[ImageContribution(labels={"com.example.team": "payments"})]]  # the wrapper saw the result
    assert out.labels["com.example.team"] == "platform"  # and what it returned is what applies


def test_old_style_hookwrapper_forces_the_result(tmp_path: Path) -> None:
    @impl(hookwrapper=True)
    def grocker_smoke_tests(config):  # type: ignore[no-untyped-def]
        outcome = yield
        outcome.force_result([*outcome.get_result(), [["run", "old-style"]]])

    module("tk_oldwrap", grocker_smoke_tests=grocker_smoke_tests)
    cfg = config(tmp_path, ["tk_oldwrap"])
    pm = plugin_manager(cfg.plugins, environ={})
    assert apply.smoke_commands(pm, cfg) == [["check"], ["run", "old-style"]]


def test_wrapper_around_configure_sees_the_original_and_can_add_a_change(tmp_path: Path) -> None:
    seen: list[object] = []

    @impl(wrapper=True)
    def grocker_configure(config):  # type: ignore[no-untyped-def]
        changes = yield
        seen.append((config.labels.get("com.example.chain"), changes))
        return [*changes, {"labels": {}}]  # a wrapper may veto: the last change clears the labels

    module("tk_cfgwrap", grocker_configure=grocker_configure)
    module("tk_cfg_inner", grocker_configure=appender("inner"))
    cfg = config(tmp_path, ["tk_cfg_inner", "tk_cfgwrap"])
    out = apply.configure(PluginManager(extra=cfg.plugins, environ={}), cfg)
    assert seen == [(None, [{"labels": {"com.example.chain": "inner"}}])]
    assert dict(out.labels) == {}


def test_a_wrapper_that_returns_garbage_is_named(tmp_path: Path) -> None:
    @impl
    def grocker_runtime_image(config):  # type: ignore[no-untyped-def]
        return ImageContribution(labels={"a": "1"})

    @impl(wrapper=True)
    def grocker_runtime_image_wrapper(config):  # type: ignore[no-untyped-def]
        yield
        return ["not a contribution"]

    module("tk_garb_inner", grocker_runtime_image=grocker_runtime_image)
    module("tk_garb_wrap", grocker_runtime_image=grocker_runtime_image_wrapper)
    cfg = config(tmp_path, ["tk_garb_inner", "tk_garb_wrap"])
    with pytest.raises(PluginError, match="plugin 'tk_garb_wrap' returned str from grocker_runtime_image, expected "
                                          "an ImageContribution"):
        apply.configure(PluginManager(extra=cfg.plugins, environ={}), cfg)


def test_a_raising_wrapper_is_named(tmp_path: Path) -> None:
    @impl(wrapper=True)
    def grocker_compile_environment(config):  # type: ignore[no-untyped-def]
        yield
        raise ValueError("wrapper boom")

    module("tk_wrap_raise", grocker_compile_environment=grocker_compile_environment)
    module("tk_plain_env", grocker_compile_environment=impl(lambda config: {"env": {"A": "1"}}))
    cfg = config(tmp_path, ["tk_plain_env", "tk_wrap_raise"])
    with pytest.raises(PluginError, match="plugin 'tk_wrap_raise' failed in grocker_compile_environment: "
                                          "ValueError: wrapper boom"):
        apply.compile_environment(PluginManager(extra=cfg.plugins, environ={}), cfg)


def test_garbage_from_an_implementation_names_it_even_inside_a_wrapper(tmp_path: Path) -> None:
    @impl(wrapper=True)
    def grocker_stages(config):  # type: ignore[no-untyped-def]
        return (yield)

    module("tk_pass_wrap", grocker_stages=grocker_stages)
    module("tk_bad_stage", grocker_stages=impl(lambda config: [Stage("x", "sideways", lambda ctx: None)]))
    cfg = config(tmp_path, ["tk_pass_wrap", "tk_bad_stage"])
    with pytest.raises(PluginError, match="plugin 'tk_bad_stage' returned list from grocker_stages, expected a "
                                          "position among .* \\(not 'sideways'\\)"):
        apply.stages(PluginManager(extra=cfg.plugins, environ={}), cfg)


def test_a_stage_made_by_a_wrapper_is_the_wrappers(tmp_path: Path) -> None:
    @impl(wrapper=True)
    def grocker_stages(config):  # type: ignore[no-untyped-def]
        stages = yield
        return [*stages, [Stage("added", "after-image", lambda ctx: None)]]

    module("tk_stage_wrap", grocker_stages=grocker_stages)
    cfg = config(tmp_path, ["tk_stage_wrap"])
    pm = plugin_manager(cfg.plugins, environ={})
    assert [(s.name, s.plugin) for s in apply.stages(pm, cfg) if s.name == "added"] == [("added", "tk_stage_wrap")]


def test_unknown_hook_is_refused(tmp_path: Path) -> None:
    @impl
    def grocker_no_such_hook(config):  # type: ignore[no-untyped-def]
        return None

    module("tk_unknown", grocker_no_such_hook=grocker_no_such_hook)
    with pytest.raises(PluginError, match="implements a hook that does not exist"):
        PluginManager(extra=["tk_unknown"], environ={})


def test_missing_plugin_module(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="'tk_absent_xyz' from the plugins key cannot be imported"):
        PluginManager(extra=["tk_absent_xyz"], environ={})


def test_raising_hook_names_plugin_and_hook(tmp_path: Path) -> None:
    @impl
    def grocker_configure(config):  # type: ignore[no-untyped-def]
        raise KeyError("boom")

    module("tk_raise", grocker_configure=grocker_configure)
    cfg = config(tmp_path, ["tk_raise"])
    with pytest.raises(PluginError, match="plugin 'tk_raise' failed in grocker_configure: KeyError"):
        apply.configure(PluginManager(extra=cfg.plugins, environ={}), cfg)


def test_unknown_config_field_names_the_closest(tmp_path: Path) -> None:
    module("tk_typo", grocker_configure=impl(lambda config: {"run_package": ("x",)}))
    cfg = config(tmp_path, ["tk_typo"])
    with pytest.raises(PluginError, match="plugin 'tk_typo' returned dict from grocker_configure, expected Config "
                                          "fields \\(not 'run_package'; did you mean 'run_packages'\\?\\)"):
        apply.configure(PluginManager(extra=cfg.plugins, environ={}), cfg)


def test_blocklist_and_trace(tmp_path: Path) -> None:
    @impl
    def grocker_smoke_tests(config):  # type: ignore[no-untyped-def]
        return [["run", "true"]]

    @impl(wrapper=True)
    def grocker_smoke_tests_wrapper(config):  # type: ignore[no-untyped-def]
        return (yield)

    module("tk_trace", grocker_smoke_tests=grocker_smoke_tests)
    module("tk_trace_wrap", grocker_smoke_tests=grocker_smoke_tests_wrapper)
    cfg = config(tmp_path, ["tk_trace", "tk_trace_wrap"])
    lines: list[str] = []
    pm = plugin_manager(cfg.plugins, {"GROCKER_TRACE_PLUGINS": "1"}, lines.append)
    assert apply.smoke_commands(pm, cfg) == [["check"], ["run", "true"]]
    # Every implementation in the order pluggy calls it, then the result.
    assert lines == ["plugin trace: grocker_smoke_tests -> tk_trace_wrap [wrapper]",
                     "plugin trace: grocker_smoke_tests -> setuptools_grocker.pipeline.smoke [tryfirst]",
                     "plugin trace: grocker_smoke_tests -> tk_trace",
                     "plugin trace: grocker_smoke_tests <- [[['check']], [['run', 'true']]]"]
    blocked = plugin_manager(cfg.plugins, {"GROCKER_DISABLE_PLUGINS": "tk_trace, tk_trace_wrap"})
    assert blocked.pm.is_blocked("tk_trace") and blocked.pm.get_plugin("tk_trace") is None
    assert apply.smoke_commands(blocked, cfg) == [["check"]]
    no_builtin = plugin_manager((), {"GROCKER_DISABLE_PLUGINS": SMOKE})
    assert apply.smoke_commands(no_builtin, cfg) == []


def test_configure_chaining_is_per_thread(tmp_path: Path) -> None:
    """Workspace members configure in threads: one member's chain never leaks into another's."""
    import concurrent.futures as cf
    import threading

    barrier = threading.Barrier(2, timeout=10)

    @impl(tryfirst=True)
    def grocker_configure(config):  # type: ignore[no-untyped-def]
        barrier.wait()  # both calls are in progress at once
        return {"labels": {**config.labels, "first": config.project_dir.name}}

    module("tk_thread_first", grocker_configure=grocker_configure)
    module("tk_thread_second", grocker_configure=impl(lambda config: {"env": {"SEEN": config.labels["first"]}}))
    cfgs = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        cfgs.append(config(tmp_path / name, ["tk_thread_first", "tk_thread_second"]))
    pm = PluginManager(extra=cfgs[0].plugins, environ={})
    with cf.ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda c: pm.grocker_configure(c), cfgs))
    assert [dict(o.env) for o in outs] == [{"SEEN": "one"}, {"SEEN": "two"}]
