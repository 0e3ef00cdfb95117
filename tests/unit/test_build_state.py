"""A stage sees the same typed build state in a single-project build and in a workspace member's build."""
from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from setuptools_grocker.config import RunOptions, load_config
from setuptools_grocker.engine import Engine
from setuptools_grocker.image.recipes import BaseImages
from setuptools_grocker.pipeline.build import SingleInputs, stage_context
from setuptools_grocker.pipeline.compile import Wheelhouse
from setuptools_grocker.pipeline.pipconf import forward
from setuptools_grocker.pipeline.project import Source
from setuptools_grocker.pipeline.workspace import load_workspace
from setuptools_grocker.pipeline.wsbuild import WorkspaceBuild, member_stage_context
from setuptools_grocker.plugin import BuildState, ImageContribution, Stage, StageContext, impl
from setuptools_grocker.progress import Progress
from setuptools_grocker.report import ProjectResult
from tests.helpers import python_project

IMAGES = BaseImages(root="grocker-root:x", compiler="grocker-compiler:x", root_key="rk")
CONTRIBUTED = {"/srv/site": Path("/tmp/site")}
ENVIRON = {"SOURCE_DATE_EPOCH": "315532800"}


def wheelhouse(root: Path) -> Wheelhouse:
    (root / "wheels").mkdir(parents=True)
    (root / "wheels" / "app-1.0.0-py3-none-any.whl").write_bytes(b"")
    (root / "manifest.json").write_text(json.dumps({"name": "app", "version": "1.0.0",
                                                    "wheel": "app-1.0.0-py3-none-any.whl", "closure": []}))
    found = Wheelhouse.load(root)
    assert found is not None
    return found


def single_context(tmp_path: Path) -> StageContext:
    project = python_project(tmp_path / "single", "app")
    config = load_config(project, environ={})
    inputs = SingleInputs(source=Source.scan(project), local_sources=[], pip=forward({}),
                          result=ProjectResult(name="app"), compile_env=({}, []), smoke_commands=[])
    return stage_context(config, RunOptions(), ENVIRON, Progress(quiet=True), Engine(Progress(quiet=True)),
                         key="k1", images=IMAGES, files=CONTRIBUTED, inputs=inputs)


def member_context(tmp_path: Path, done: dict[str, Any]) -> StageContext:
    root = tmp_path / "ws"
    (root / "apps").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.grocker.workspace]\nmembers = ["apps/*"]\n')
    python_project(root / "apps" / "app", "app", scripts={"app": "app:main"})
    ws = load_workspace(root, environ={})
    return member_stage_context(ws.members["app"], done, engine=Engine(Progress(quiet=True)),
                                progress=Progress(quiet=True), environ=ENVIRON, key="k1", images=IMAGES,
                                contributed=CONTRIBUTED, work_dir=tmp_path / "stages", run=RunOptions())


def seen(ctx: StageContext) -> dict[str, Any]:
    """What a plugin stage reads: every public field of the state."""
    return {f.name: getattr(ctx.state, f.name) for f in dataclasses.fields(BuildState) if f.name != "internal"}


def test_before_compile_both_modes_fill_the_same_fields(tmp_path: Path) -> None:
    single, member = seen(single_context(tmp_path)), seen(member_context(tmp_path, {}))
    assert single == member
    assert single["key"] == "k1" and single["images"] == IMAGES and single["files"] == CONTRIBUTED
    assert single["environ"] == ENVIRON
    assert single["wheels"] is single["image_id"] is single["ref"] is None


def test_after_smoke_both_modes_fill_the_same_fields(tmp_path: Path) -> None:
    wheels = wheelhouse(tmp_path / "wheelhouse")
    single = single_context(tmp_path)
    # What the single pipeline's compile, image and smoke stages set (they need the Docker Engine).
    single.state.wheels, single.state.image_id, single.state.ref = wheels, "sha256:abc", "app:1.0.0"
    member = member_context(tmp_path, {
        "wheel": {"wheel": str(wheels.project_wheel), "plugin_files": {"/srv/extra": "/tmp/extra"}},
        "image": {"image_id": "sha256:abc"}, "smoke": {"image": "app:1.0.0"}})
    single.state.files["/srv/extra"] = Path("/tmp/extra")  # what a plugin stage added, kept in the member state
    assert seen(single) == seen(member)
    assert member.image_id == "sha256:abc"


@pytest.mark.parametrize("make", [single_context, lambda p: member_context(p, {})])
def test_artifacts_is_a_read_only_view_of_the_state(tmp_path: Path, make: Any) -> None:
    ctx = make(tmp_path)
    assert set(ctx.artifacts) == {"key", "environ", "images", "files", "wheels", "image_id", "ref"}
    assert ctx.artifacts["key"] == "k1"
    with pytest.raises(TypeError):
        ctx.artifacts["image_id"] = "x"
    # Old plugins added files for the image through the dict: that still reaches the state.
    ctx.artifacts["files"]["/srv/more"] = Path("/tmp/more")
    assert ctx.state.files["/srv/more"] == Path("/tmp/more")


def test_workspace_plugin_stage_sees_the_contribution_and_keeps_what_it_adds(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a single build, a member's plugin stage starts from the grocker_runtime_image files; the member
    state keeps only the files stages added (the image stage adds the contribution's own again)."""
    site, extra = tmp_path / "site", tmp_path / "extra"
    site.mkdir()
    extra.mkdir()
    seen_files: list[dict[str, Path]] = []

    def add(ctx: StageContext) -> None:
        seen_files.append(dict(ctx.state.files))
        ctx.state.files["/srv/extra"] = extra

    plugin = types.ModuleType("tk_build_state_plugin")
    plugin.grocker_runtime_image = impl(lambda config: ImageContribution(files={"/srv/site": site}))  # type: ignore[attr-defined]
    plugin.grocker_stages = impl(lambda config: [Stage("add", "after-compile", add)])  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, plugin.__name__, plugin)
    root = tmp_path / "ws"
    (root / "apps").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.grocker.workspace]\nmembers = ["apps/*"]\n')
    python_project(root / "apps" / "app", "app", scripts={"app": "app:main"},
                   grocker='[tool.grocker]\nplugins = ["tk_build_state_plugin"]')
    build = WorkspaceBuild(load_workspace(root, environ={}), environ={}, progress=Progress(quiet=True))
    build.keys = {"app": {"key": "k1"}}
    wheels = wheelhouse(tmp_path / "wheelhouse")
    done: dict[str, Any] = {"wheel": {"wheel": str(wheels.project_wheel)}}
    build.members._custom_stages("after-compile", Engine(Progress(quiet=True)), build.ws.members["app"], IMAGES,
                                 done, Progress(quiet=True))
    assert seen_files == [{"/srv/site": site}]
    assert done["wheel"]["plugin_files"] == {"/srv/extra": str(extra)}
