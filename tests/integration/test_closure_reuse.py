"""A one-line change reuses the closure of the previous compile; a changed dependency resolves again.

The application compiles against a private ``file://`` index holding only what it needs (setuptools for
the PEP 517 build environment, six, idna). Before the one-line rebuild, that index is emptied: the build
still succeeds with the same distributions, so its closure came from the previous compile and its build
environment was the one the first compile prepared, neither from an index.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest

from tests.helpers import Run, grocker, python_project, remove_images

SOURCE_INDEX = Path("/opt/pypi")
APP = '[tool.grocker]\ndefault-command = "hello"\n[tool.grocker.commands]\nhello = "python -c pass"\n'
CODE = '"""The application."""\nimport six\n'


def publish(index: Path, project: str) -> None:
    """Put the newest pure-Python wheel of ``project`` from the machine's file index on ``index``."""
    page = (SOURCE_INDEX / "simple" / project / "index.html").read_text()
    links = re.findall(r'href="\.\./\.\./files/([^"#]+-(?:py2\.)?py3-none-any\.whl)(#[^"]*)?"', page)
    if not links:
        pytest.skip(f"no pure-Python wheel of {project} on the machine's file index {SOURCE_INDEX}")
    filename, fragment = links[-1]
    (index / "files").mkdir(parents=True, exist_ok=True)
    shutil.copy2(SOURCE_INDEX / "files" / filename, index / "files" / filename)
    (index / "simple" / project).mkdir(parents=True, exist_ok=True)
    (index / "simple" / project / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="../../files/{filename}{fragment}">{filename}</a></body></html>\n')


class App:
    def __init__(self, root: Path, tag: str, index: Path, reports: Path) -> None:
        self.root, self.tag, self.index, self.reports, self.runs = root, tag, index, reports, 0

    def build(self, *extra: str) -> tuple[Run, dict[str, Any]]:
        self.runs += 1
        env = {"PIP_CONFIG_FILE": "/dev/null", "PIP_INDEX_URL": f"file://{self.index}/simple",
               "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": ""}
        run = grocker("build", str(self.root), "--tag", self.tag, *extra, env=env,
                      report=self.reports / f"{self.runs}.json")
        assert run.code == 0, run.err[-4000:] + run.out[-4000:]
        return run, run.project


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, run_id: str, client: docker.DockerClient) -> Iterator[App]:
    if not (SOURCE_INDEX / "simple").is_dir():
        pytest.skip(f"needs the machine's file index {SOURCE_INDEX}")
    index = tmp_path_factory.mktemp("closure-index")
    for project in ("setuptools", "six", "idna"):
        publish(index, project)
    root = python_project(tmp_path_factory.mktemp("closure") / "app", "closure-app", deps=["six"], grocker=APP,
                         modules={"__init__.py": CODE})
    tag = f"grocker-test/closure-app:{run_id}"
    yield App(root, tag, index, tmp_path_factory.mktemp("closure-reports"))
    remove_images(client, tag)


def in_image(client: docker.DockerClient, tag: str, code: str) -> str:
    return client.containers.run(tag, ["run", "python", "-c", code], remove=True).decode().strip()


def test_first_build_resolves(app: App) -> None:
    run, first = app.build()
    assert first["status"] == "built" and first["closure"] == "resolved"
    assert [d.split("==")[0] for d in first["distributions"]] == ["closure-app", "six"]


def test_a_one_line_change_reuses_the_closure_without_the_index(app: App, client: docker.DockerClient) -> None:
    _, before = app.build()  # cached: the previous test's image
    # From now on the index is empty: resolving anything (six, or setuptools for an isolated build
    # environment) would fail. The project's prepared build environment and its previous closure serve.
    shutil.rmtree(app.index / "simple")
    (app.index / "simple").mkdir()
    with (app.root / "src" / "closure_app" / "__init__.py").open("a") as fh:
        fh.write("ANSWER = 42\n")
    run, after = app.build()
    assert after["status"] == "built" and after["closure"] == "reused"
    assert after["key"] != before["key"] and after["image_id"] != before["image_id"]
    assert after["distributions"] == before["distributions"]
    assert "closure of closure-app: reused (2 wheels, metadata unchanged)" in run.out + run.err
    assert in_image(client, app.tag, "import closure_app, six; print(closure_app.ANSWER)") == "42"


def test_a_changed_dependency_resolves_again(app: App, client: docker.DockerClient) -> None:
    for project in ("setuptools", "six", "idna"):
        publish(app.index, project)
    pyproject = app.root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('dependencies = ["six"]', 'dependencies = ["six", "idna"]'))
    run, after = app.build()
    assert after["status"] == "built" and after["closure"] == "resolved"
    assert [d.split("==")[0] for d in after["distributions"]] == ["closure-app", "idna", "six"]
    assert "metadata changed, resolved again" in run.out + run.err
    assert in_image(client, app.tag, "import idna, six; print(idna.__name__)") == "idna"


def test_upgrade_resolves_even_when_the_metadata_did_not_change(app: App) -> None:
    with (app.root / "src" / "closure_app" / "__init__.py").open("a") as fh:
        fh.write("ANSWER = 43\n")
    _, after = app.build("--upgrade")
    assert after["status"] == "built" and after["closure"] == "resolved"
    assert [d.split("==")[0] for d in after["distributions"]] == ["closure-app", "idna", "six"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, run_id: str, client: docker.DockerClient
              ) -> Iterator[tuple[Path, Path, str]]:
    if not (SOURCE_INDEX / "simple").is_dir():
        pytest.skip(f"needs the machine's file index {SOURCE_INDEX}")
    index = tmp_path_factory.mktemp("ws-closure-index")
    for project in ("setuptools", "six", "idna"):
        publish(index, project)
    root = tmp_path_factory.mktemp("ws-closure")
    prefix = f"c{run_id[:5]}-"
    (root / "pyproject.toml").write_text('[tool.grocker.workspace]\nmembers = ["libs/*", "apps/*"]\n')
    python_project(root / "libs" / "lib", f"{prefix}lib", deps=["six"], modules={"__init__.py": "VALUE = 1\n"})
    python_project(root / "apps" / "app", f"{prefix}app", deps=[f"{prefix}lib"], grocker=APP)
    yield root, index, prefix
    for image in client.images.list(name=f"{prefix}app"):
        for tag in image.tags:
            remove_images(client, tag)


def ws_build(root: Path, index: Path, prefix: str) -> dict[str, Any]:
    env = {"PIP_CONFIG_FILE": "/dev/null", "PIP_INDEX_URL": f"file://{index}/simple", "PIP_FIND_LINKS": "",
           "PIP_EXTRA_INDEX_URL": ""}
    run = grocker("workspace", "build", str(root), env=env, report=root / "report.json")
    assert run.code == 0, run.err[-4000:]
    assert run.report is not None
    return {p["name"]: p for p in run.report["projects"]}[f"{prefix}app"]


def test_a_workspace_application_reuses_its_closure_with_its_librarys_new_wheel(
        workspace: tuple[Path, Path, str], client: docker.DockerClient) -> None:
    root, index, prefix = workspace
    first = ws_build(root, index, prefix)
    assert first["status"] == "built" and first["closure"] == "resolved"
    # The library's code changes, not its metadata: the application's closure is reused, with the new
    # library wheel (never the previous closure's), and without the index.
    (root / "libs" / "lib" / "src" / f"{prefix}lib".replace("-", "_") / "__init__.py").write_text("VALUE = 2\n")
    shutil.rmtree(index / "simple" / "six")
    second = ws_build(root, index, prefix)
    assert second["status"] == "built" and second["closure"] == "reused"
    assert second["distributions"] == first["distributions"]
    module = f"{prefix}lib".replace("-", "_")
    assert in_image(client, second["image_id"], f"import {module}; print({module}.VALUE)") == "2"
    # The library needs one more distribution: its metadata changed, the application resolves again.
    publish(index, "six")
    pyproject = root / "libs" / "lib" / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('dependencies = ["six"]', 'dependencies = ["six", "idna"]'))
    third = ws_build(root, index, prefix)
    assert third["status"] == "built" and third["closure"] == "resolved"
    assert "idna" in [d.split("==")[0] for d in third["distributions"]]
