"""What does and does not rebuild: grocker's own reports, stray files, .grockerignore, the early cut-off.

One small application outside git, built again and again in order (each test starts where the last stopped).
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest

from tests.helpers import Run, grocker, python_project, remove_images

APP = '[tool.grocker]\ndefault-command = "hello"\n[tool.grocker.commands]\nhello = "python -c pass"\n'


class App:
    def __init__(self, root: Path, tag: str, reports: Path) -> None:
        self.root, self.tag, self.reports, self.runs = root, tag, reports, 0

    def build(self, *extra: str) -> tuple[Run, dict[str, Any]]:
        self.runs += 1
        run = grocker("build", str(self.root), "--tag", self.tag, *extra, report=self.reports / f"{self.runs}.json")
        assert run.code == 0, run.err[-4000:]
        return run, run.project


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, run_id: str, client: docker.DockerClient) -> Iterator[App]:
    root = python_project(tmp_path_factory.mktemp("rebuilds") / "app", "rebuild-app", grocker=APP)
    tag = f"grocker-test/rebuild-app:{run_id}"
    yield App(root, tag, tmp_path_factory.mktemp("rebuild-reports"))
    remove_images(client, tag)


def test_a_report_written_in_the_project_does_not_rebuild(app: App) -> None:
    # The report lands inside the project, as `grocker build . --report report.json` does.
    run = grocker("build", str(app.root), "--tag", app.tag, report=app.root / "report.json")
    assert run.code == 0, run.err[-4000:]
    assert run.project["status"] == "built"
    assert next(iter(json.loads((app.root / "report.json").read_text()))) == "generator"
    _, again = app.build()
    assert again["status"] == "cached" and again["reason"] is None
    assert again["containers_started"] == 0 and again["image_id"] == run.project["image_id"]


def test_a_stray_log_file_cuts_off_after_the_compile(app: App, client: docker.DockerClient) -> None:
    _, before = app.build()
    (app.root / "debug.log").write_text("a log the application wrote\n")
    run, after = app.build()
    assert (after["status"], after["reason"]) == ("cached", "wheels unchanged")
    assert after["key"] != before["key"]  # the source changed, the compile ran...
    # ... in the warm compile container of the first build (docker exec, test_warm_compile.py), and nothing
    # else: no smoke test, no container started.
    assert after["containers_started"] == 0
    assert "reusing the warm compile container" in run.out + run.err
    assert after["image_id"] == before["image_id"] == client.images.get(app.tag).id
    assert "cached (wheels unchanged)" in run.out + run.err
    # The next build with the same stray file is a plain cache hit.
    _, third = app.build()
    assert (third["status"], third["reason"], third["containers_started"]) == ("cached", None, 0)


def test_a_grockerignored_file_is_not_source(app: App) -> None:
    (app.root / ".grockerignore").write_text("*.tmp\nscratch/\n")
    _, first = app.build()  # the ignore file itself is source (it changes what is)...
    assert (first["status"], first["reason"]) == ("cached", "wheels unchanged")
    (app.root / "notes.tmp").write_text("scratch\n")
    (app.root / "scratch").mkdir()
    (app.root / "scratch" / "data.csv").write_text("1,2\n")
    _, second = app.build()  # ... what it names is not: no compile at all
    assert (second["status"], second["reason"], second["containers_started"]) == ("cached", None, 0)
    assert second["key"] == first["key"]


def test_a_new_untracked_module_rebuilds(app: App) -> None:
    _, before = app.build()
    (app.root / "src" / "rebuild_app" / "extra.py").write_text("VALUE = 1\n")
    _, after = app.build()
    assert after["status"] == "built" and after["reason"] is None
    assert after["image_id"] != before["image_id"]
    with zipfile.ZipFile(after["wheel"]) as wheel:
        assert "rebuild_app/extra.py" in wheel.namelist()


def test_the_runtime_user_can_write_the_data_directory(app: App, client: docker.DockerClient) -> None:
    app.build()
    script = ("import os, pathlib, sqlite3; d = pathlib.Path(os.environ['GROCKER_DATA_DIR']); "
              "sqlite3.connect(d / 'db.sqlite3').execute('create table t (x)'); print(d, os.getuid())")
    out = client.containers.run(app.tag, ["run", "python", "-c", script], remove=True)
    assert out.decode().split() == ["/data", "10001"]


# -- the same cut-off for a workspace member -------------------------------------------------------------------

def test_a_workspace_member_reuses_its_image_when_its_wheels_are_the_same(
        tmp_path: Path, run_id: str, client: docker.DockerClient) -> None:
    root = tmp_path / "ws"
    p = f"r{run_id[:5]}"
    root.mkdir()
    (root / "pyproject.toml").write_text('[tool.grocker.workspace]\nmembers = ["libs/*", "apps/*"]\n')
    python_project(root / "libs" / f"{p}core", f"{p}core", modules={"__init__.py": "VALUE = 1\n"})
    python_project(root / "apps" / f"{p}app", f"{p}app", deps=[f"{p}core"], grocker=APP)
    ref = f"{p}app:1.0.0"

    def build(n: int) -> dict[str, dict[str, Any]]:
        run = grocker("workspace", "build", str(root), report=tmp_path / f"{n}.json")
        assert run.code == 0, run.err[-4000:]
        assert run.report is not None
        return {x["name"]: x for x in run.report["projects"]}

    try:
        first = build(1)
        assert first[f"{p}app"]["status"] == "built"
        (root / "apps" / f"{p}app" / "debug.log").write_text("stray\n")
        stray = build(2)[f"{p}app"]
        assert (stray["status"], stray["reason"]) == ("cached", "wheels unchanged")
        assert stray["image_id"] == first[f"{p}app"]["image_id"] == client.images.get(ref).id
        # A stray file in the library: its wheel is built again, the same; the application above it too.
        (root / "libs" / f"{p}core" / "notes.txt").write_text("stray\n")
        third = build(3)
        assert third[f"{p}core"]["status"] == "built"
        assert (third[f"{p}app"]["status"], third[f"{p}app"]["reason"]) == ("cached", "wheels unchanged")
        assert third[f"{p}app"]["image_id"] == first[f"{p}app"]["image_id"]
    finally:
        remove_images(client, ref)
