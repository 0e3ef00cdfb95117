"""A one-line change: the project wheel's bytecode comes from its compile container, not a container of its own.

The same image as the bytecode container makes (reproducible), kept out of the shared bytecode cache, and
only when the compile container's interpreter is the root image's and its files are the wheel's bytecode.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.helpers import grocker, python_project, remove_images


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, run_id: str, client: docker.DockerClient) -> Any:
    root = tmp_path_factory.mktemp("bccc")
    name = f"bcc{run_id[:6]}"
    project = python_project(root / name, name, deps=["six"],
                             modules={"__init__.py": "import six\n\nVALUE = 1\n", "other.py": "X = 2\n",
                                      "py2only.py": "print 'python 2'\n"})
    # No warm compile container (test_warm_compile.py): the containers counted are the compile's own.
    env = {"GROCKER_CACHE_HOME": str(root / "cache"), "SOURCE_DATE_EPOCH": "1700000000", "GROCKER_WARM_IDLE": "0"}
    tag = f"grocker-test/{name}:{run_id}"
    first = grocker("build", str(project), "--tag", tag, env=env, report=root / "first.json")
    assert first.code == 0, first.err[-3000:]
    yield {"root": root, "name": name, "project": project, "env": env, "tag": tag, "first": first}
    remove_images(client, tag, f"{tag}-ref")


def one_line_change(app: dict[str, Any], text: str) -> None:
    init = app["project"] / "src" / app["name"] / "__init__.py"
    init.write_text(init.read_text() + text)


def test_a_one_line_change_takes_the_bytecode_from_the_compile_container_and_gives_the_same_image(
        app: dict[str, Any], client: docker.DockerClient, tmp_path: Path) -> None:
    cache = app["root"] / "cache" / "bytecode"
    archives = sorted(p.name for p in cache.glob("*.tar"))
    assert len(archives) == 2, archives  # the first build: six and the application, in the bytecode container
    assert len(list(cache.glob("interpreter-*.json"))) == 1  # the root image's interpreter, recorded
    one_line_change(app, "VALUE = 2\n")
    second = grocker("build", str(app["project"]), "--tag", app["tag"], env=app["env"],
                     report=app["root"] / "second.json")
    assert second.code == 0, second.err[-3000:]
    assert second.project["status"] == "built"
    # The root's package list, read while the compile ran (image/runtime.py's prepare_image), is cached where the
    # image stage reads it, and nowhere else.
    assert list((app["root"] / "cache" / "sbom").glob("dpkg-*.json"))
    assert not list((app["root"] / "cache").glob("dpkg-*.json"))
    output = second.out + second.err
    assert "bytecode: 0 wheel(s) compiled, 1 from the cache, 1 from the compile container" in output, output[-3000:]
    # Two containers: the compile and the smoke test; no bytecode container.
    assert second.project["containers_started"] == 2, second.project
    # The shared cache did not get the application's new bytecode: the compile container's stays in the
    # project's wheelhouse.
    assert sorted(p.name for p in cache.glob("*.tar")) == archives
    wheelhouse = Path(second.project["wheel"]).parent.parent
    listing = json.loads((wheelhouse / "bytecode" / "0.json").read_text())
    assert sorted(Path(p).name for p in listing["compiled"]) == [
        "__init__.cpython-311.pyc", "other.cpython-311.pyc"], listing
    assert [Path(p).name for p in listing["skipped"]] == ["py2only.py"], listing  # no bytecode, as with pip
    # The bytecode container's path, from scratch (another cache home: no record of the root's
    # interpreter, every wheel compiled there): the same image ID.
    env = {**app["env"], "GROCKER_CACHE_HOME": str(tmp_path / "cache")}
    reference = grocker("build", str(app["project"]), "--tag", f"{app['tag']}-ref", "--no-cache", env=env,
                        report=tmp_path / "ref.json")
    assert reference.code == 0, reference.err[-3000:]
    assert "bytecode: 2 wheel(s) compiled, 0 from the cache" in reference.out + reference.err
    assert reference.project["image_id"] == second.project["image_id"]


def test_bytecode_that_is_not_the_wheels_is_not_used(app: dict[str, Any], client: docker.DockerClient,
                                                     tmp_path: Path) -> None:
    """Bytecode in the wheelhouse whose header does not match its module (what a build could plant) is not
    used: the bytecode container compiles the wheel; the image is the same."""
    one_line_change(app, "VALUE = 3\n")
    good = grocker("build", str(app["project"]), "--tag", app["tag"], env=app["env"],
                   report=tmp_path / "good.json")
    assert good.code == 0, good.err[-3000:]
    assert "1 from the compile container" in good.out + good.err
    wheelhouse = Path(good.project["wheel"]).parent.parent
    pyc = next((wheelhouse / "bytecode").rglob("other.cpython-311.pyc"))
    data = bytearray(pyc.read_bytes())
    data[8] ^= 0xFF  # the header's source hash no longer matches other.py
    pyc.write_bytes(bytes(data))
    # The image gone, the same source: the wheelhouse is reused and the image made again from it.
    client.images.remove(good.project["image_id"], force=True)
    again = grocker("build", str(app["project"]), "--tag", app["tag"], env=app["env"],
                    report=tmp_path / "again.json")
    assert again.code == 0, again.err[-3000:]
    output = again.out + again.err
    assert "bytecode: 1 wheel(s) compiled, 1 from the cache" in output, output[-3000:]
    assert "from the compile container" not in output
    assert again.project["image_id"] == good.project["image_id"]
