"""``build-commands``: the application's own build step, in the compiler container, before its wheel.

A command that generates a file (with the project importable, as collectstatic needs) puts it in
the wheel and the image; a failing command stops the build with one line naming it and its exit
status; an unbalanced quote is refused when the configuration loads, before any container runs.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import docker
import pytest

from tests.helpers import grocker, python_project, remove_images

MAIN = '''from importlib.resources import files


def main():
    print(files("bc_app").joinpath("generated.txt").read_text().strip())
'''

GROCKER = '''
[tool.setuptools.package-data]
bc_app = ["*.txt"]

[tool.grocker.commands]
show = "bc-show"

[tool.grocker.smoke-test]
command = ["show"]

[tool.grocker]
build-commands = [
    "echo 'made at build time' > src/bc_app/generated.txt",
    "python -c 'import bc_app, sys; sys.stdout.write(bc_app.__name__)' >> src/bc_app/generated.txt",
%s]
'''


@pytest.fixture
def app(tmp_path: Path, client: docker.DockerClient, run_id: str):
    tag = f"grocker-test/bc-app:{run_id}"
    yield tmp_path / "bc-app", tag
    remove_images(client, tag)


def write(path: Path, extra: str = "") -> Path:
    return python_project(path, "bc-app", scripts={"bc-show": "bc_app:main"}, modules={"__init__.py": MAIN},
                          grocker=GROCKER % extra)


def test_generated_file_reaches_the_wheel_and_the_image(app, client: docker.DockerClient) -> None:
    path, tag = app
    write(path)
    run = grocker("build", str(path), "--tag", tag, report=path.parent / "report.json")
    assert run.code == 0, run.err[-4000:]
    with zipfile.ZipFile(run.project["wheel"]) as wheel:
        assert wheel.read("bc_app/generated.txt").decode() == "made at build time\nbc_app"
    out = client.containers.run(tag, ["show"], remove=True).decode()
    assert out.strip().splitlines() == ["made at build time", "bc_app"]
    # The host's source tree is untouched: the commands ran in the container's scratch copy.
    assert not (path / "src" / "bc_app" / "generated.txt").exists()


def test_failing_command_stops_the_build_with_one_line(app, client: docker.DockerClient) -> None:
    path, tag = app
    write(path, extra="    \"sh -c 'exit 3'\",\n    \"touch never\",\n")
    run = grocker("build", str(path), "--tag", tag, report=path.parent / "report.json")
    assert run.code == 7, run.err[-4000:]
    line = run.err.strip().splitlines()[-1]
    assert "build command `sh -c 'exit 3'` of bc-app 1.0.0 (bc-app) failed with exit status 3" in line, line
    output = run.out + run.err
    assert "[compile] + sh -c 'exit 3'" in output and "[compile] + touch never" not in output
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(tag)


def test_unbalanced_quote_is_refused_before_any_container(app, client: docker.DockerClient) -> None:
    path, tag = app
    write(path, extra="    \"echo 'unbalanced\",\n")
    run = grocker("build", str(path), "--tag", tag)
    assert run.code == 3, run.err[-4000:]
    assert run.err.strip().splitlines()[-1].endswith(
        "cannot be parsed: No closing quotation; close the quote, or escape it with a backslash")
    assert "docker run" not in run.out + run.err
