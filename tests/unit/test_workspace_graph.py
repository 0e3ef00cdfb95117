"""The workspace graph from real (tiny) projects on disk; no engine involved."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from setuptools_grocker.errors import ConfigError, WorkspaceError
from setuptools_grocker.pipeline.workspace import load_workspace, why_rebuild


def project(root: Path, name: str, version: str = "1.0", deps: tuple[str, ...] = (), extra: str = "",
            optional: str = "") -> Path:
    path = root / name
    path.mkdir(parents=True)
    opt = f"\n[project.optional-dependencies]\n{optional}\n" if optional else ""
    (path / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = {json.dumps(list(deps))}\n{opt}{extra}')
    return path


def workspace_root(tmp_path: Path, members: str = '["libs/*", "apps/*"]', extra: str = "") -> Path:
    (tmp_path / "pyproject.toml").write_text(f"[tool.grocker.workspace]\nmembers = {members}\n{extra}")
    return tmp_path


def test_order_levels_kinds_and_normalised_names(tmp_path: Path) -> None:
    root = workspace_root(tmp_path)
    project(root / "libs", "Base_Lib")
    project(root / "libs", "mid", deps=("base-lib>=1", "requests>=2"))
    project(root / "apps", "web", deps=("MID",), extra='[tool.grocker.commands]\nserver = "web"\n')
    ws = load_workspace(root, environ={})
    assert ws.order == ["base-lib", "mid", "web"]
    assert ws.levels == [["base-lib"], ["mid"], ["web"]]
    assert ws.members["mid"].deps == {"base-lib"}
    assert ws.members["web"].kind == "application" and ws.members["mid"].kind == "library"
    assert ws.closure("web") == ["base-lib", "mid"]
    assert ws.dependents("base-lib") == {"mid", "web"}


def test_markers_and_extras_are_honoured(tmp_path: Path) -> None:
    root = workspace_root(tmp_path)
    project(root / "libs", "a")
    project(root / "libs", "b")
    project(root / "libs", "c", optional='pg = ["b"]')
    project(root / "libs", "winonly")
    project(root / "apps", "app", deps=("a; python_version >= '3'", "winonly; sys_platform == 'win32'",
                                       "c[pg]"), extra="[tool.grocker]\nimage = true\n")
    ws = load_workspace(root, environ={})
    assert ws.members["app"].deps == {"a", "b", "c"}


def test_cycle_names_its_members(tmp_path: Path) -> None:
    root = workspace_root(tmp_path, '["libs/*"]')
    project(root / "libs", "x", deps=("y",))
    project(root / "libs", "y", deps=("z",))
    project(root / "libs", "z", deps=("x",))
    with pytest.raises(WorkspaceError) as info:
        load_workspace(root, environ={})
    message = info.value.message
    assert message.startswith("dependency cycle between workspace members: ")
    assert {"x", "y", "z"} <= set(message.split(": ", 1)[1].split(" -> "))


def test_version_conflict_names_both(tmp_path: Path) -> None:
    root = workspace_root(tmp_path, '["libs/*"]')
    project(root / "libs", "core", version="1.4")
    project(root / "libs", "user", deps=("core>=2",))
    with pytest.raises(WorkspaceError, match=r"user requires core>=2 but the workspace has core 1.4"):
        load_workspace(root, environ={})


def test_glob_matching_nothing(tmp_path: Path) -> None:
    root = workspace_root(tmp_path, '["libs/*", "nowhere/*"]')
    project(root / "libs", "a")
    with pytest.raises(WorkspaceError, match="'nowhere/\\*' matches no directory"):
        load_workspace(root, environ={})


def test_no_workspace_declared(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.grocker]\n")
    with pytest.raises(WorkspaceError, match="declares no workspace"):
        load_workspace(tmp_path, environ={})


def test_unknown_workspace_key(tmp_path: Path) -> None:
    root = workspace_root(tmp_path, '["libs/*"]', extra="member = 1\n")
    with pytest.raises(ConfigError, match="did you mean 'workspace.members'"):
        load_workspace(root, environ={})


def test_root_settings_are_member_defaults(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.grocker]\nbase-image = "corp/debian:12"\nregistry = "reg.local:5000"\n'
        '[tool.grocker.commands]\nserver = "not-inherited"\n'
        '[tool.grocker.workspace]\nmembers = ["libs/*"]\n')
    project(tmp_path / "libs", "a")
    project(tmp_path / "libs", "b", extra='[tool.grocker]\nbase-image = "own:1"\n')
    ws = load_workspace(tmp_path, environ={})
    assert ws.members["a"].config.base_image == "corp/debian:12"
    assert ws.members["a"].config.registry == "reg.local:5000"
    assert ws.members["a"].config.commands == {}
    assert ws.members["b"].config.base_image == "own:1"


def test_setup_py_member_metadata_via_pep517(tmp_path: Path) -> None:
    root = workspace_root(tmp_path, '["libs/*"]')
    project(root / "libs", "core")
    legacy = root / "libs" / "legacy"
    legacy.mkdir()
    (legacy / "setup.py").write_text('from setuptools import setup\nsetup(name="Legacy.Lib", version="0.9", '
                                     'install_requires=["core>=1.0"], py_modules=[])\n')
    ws = load_workspace(root, environ={})
    assert ws.members["legacy-lib"].version == "0.9"
    assert ws.members["legacy-lib"].deps == {"core"}
    # The metadata is cached by source hash: a second load does not run the backend again.
    assert list((root / ".grocker" / "metadata").glob("*.json"))


def test_plan_reasons() -> None:
    parts = {"key": "k2", "tool": "1", "source": "s2", "config": "c", "env": "e", "deps": {"a": "ka2"}}
    assert why_rebuild(parts, {}, set()) == "never built"
    old = {"parts": {"key": "k1", "tool": "1", "source": "s1", "config": "c", "env": "e", "deps": {"a": "ka2"}}}
    assert why_rebuild(parts, old, set()) == "source changed"
    old["parts"].update(source="s2", config="c0")
    assert why_rebuild(parts, old, set()) == "config changed"
    old["parts"].update(config="c", deps={"a": "ka1"})
    assert why_rebuild(parts, old, set()) == "dependency rebuilt: a"
    old["parts"].update(deps={"a": "ka2"}, key="k2")
    assert why_rebuild(parts, old, set()) is None


def test_untrusted_members_never_run_their_backend_on_the_host(tmp_path: Path) -> None:
    root = workspace_root(tmp_path, '["libs/*"]', 'untrusted = ["libs/vendored"]\n')
    project(root / "libs", "core")
    project(root / "libs", "vendored", deps=("core",))
    # Static metadata needs no backend (and no engine: this unit test cannot reach one).
    ws = load_workspace(root, environ={})
    assert ws.members["vendored"].trusted is False and ws.members["core"].trusted is True
    assert ws.members["vendored"].deps == {"core"}
    # A version from git needs the backend, and git: not in the compiler container.
    scm = root / "libs" / "scm"
    scm.mkdir()
    (scm / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools", "setuptools-scm"]\n'
                                        'build-backend = "setuptools.build_meta"\n[project]\nname = "scm"\n'
                                        'dynamic = ["version"]\n')
    (root / "pyproject.toml").write_text('[tool.grocker.workspace]\nmembers = ["libs/*"]\nuntrusted = ["libs/scm"]\n')
    with pytest.raises(WorkspaceError, match="untrusted member scm takes its version from git"):
        load_workspace(root, environ={})


def test_untrusted_patterns_are_checked(tmp_path: Path) -> None:
    root = workspace_root(tmp_path, '["libs/*"]', 'untrusted = ["libs/vendord"]\n')
    project(root / "libs", "vendored")
    # A typo must not leave the member trusted without a word.
    with pytest.raises(WorkspaceError, match="pattern 'libs/vendord' matches no member"):
        load_workspace(root, environ={})
    (root / "pyproject.toml").write_text('[tool.grocker.workspace]\nmembers = ["libs/*"]\nuntrusted = "libs/*"\n')
    with pytest.raises(ConfigError, match="workspace.untrusted .* must be a list"):
        load_workspace(root, environ={})


def test_pip_cache_per_trust_scope(tmp_path: Path) -> None:
    from setuptools_grocker.pipeline.caches import pip_cache_dir

    env = {"GROCKER_CACHE_HOME": str(tmp_path / "cache")}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = pip_cache_dir(env, tmp_path / "a")
    assert a.parent == tmp_path / "cache" / "pip"
    assert a == pip_cache_dir(env, tmp_path / "b" / ".." / "a")  # the same directory, however named
    assert a != pip_cache_dir(env, tmp_path / "b")
