"""The plugin manager and the hooks contract, without an engine."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from setuptools_grocker.config import load_config
from setuptools_grocker.errors import PluginError
from setuptools_grocker.plugin import ImageContribution, Stage, apply, impl, spec
from setuptools_grocker.plugin.manager import PluginManager

REPO = Path(__file__).resolve().parents[2]


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


def test_plugins_key_registration_order_and_stage_positions(tmp_path: Path) -> None:
    @impl
    def grocker_stages(config):  # type: ignore[no-untyped-def]
        return [Stage("late", "after-push", lambda ctx: None), Stage("early", "before-compile", lambda ctx: None)]

    module("tk_order_a", grocker_stages=grocker_stages)
    cfg = config(tmp_path, ["tk_order_a"])
    pm = PluginManager(extra=cfg.plugins, environ={})
    assert [p.name for p in pm.loaded][-1] == "tk_order_a"
    names = [(s.name, s.plugin) for s in apply.stages(pm, cfg)]
    builtin = "setuptools_grocker.plugin.builtin"
    assert names == [("early", "tk_order_a"), ("compile", builtin), ("image", builtin), ("smoke test", builtin),
                     ("push", builtin), ("late", "tk_order_a")]


def test_configure_changes_apply_in_order(tmp_path: Path) -> None:
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


def test_blocklist_and_trace(tmp_path: Path) -> None:
    @impl
    def grocker_smoke_tests(config):  # type: ignore[no-untyped-def]
        return [["run", "true"]]

    module("tk_trace", grocker_smoke_tests=grocker_smoke_tests)
    cfg = config(tmp_path, ["tk_trace"])
    lines: list[str] = []
    pm = PluginManager(extra=cfg.plugins, environ={"GROCKER_TRACE_PLUGINS": "1"}, write=lines.append)
    assert apply.smoke_commands(pm, cfg) == [["check"], ["run", "true"]]
    assert "plugin trace: grocker_smoke_tests -> tk_trace" in lines
    blocked = PluginManager(extra=cfg.plugins, environ={"GROCKER_DISABLE_PLUGINS": "tk_trace"})
    assert apply.smoke_commands(blocked, cfg) == [["check"]]
