"""A one-line change in a web application: only the application's layer reaches the engine, and the smoke
test's server leaves no container behind.

The engine loads a layer of a ``docker load`` archive only when it lacks the chain of layers ending with
it: the rebuild sends the layers the previous image does not start with, and falls back to every layer
when the engine lacks one it left out (tested here against the engine itself).
"""
from __future__ import annotations

import hashlib
import shutil
from typing import Any, Iterator

import docker
import pytest

from setuptools_grocker.engine import Engine
from setuptools_grocker.errors import ImageBuildError
from setuptools_grocker.image.assemble import Entry, Layer, image_config, load_archive
from tests.helpers import REPO, grocker, remove_images

FLASK_APP = REPO / "benchmarks" / "realworld" / "projects" / "flask-app"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, run_id: str, client: docker.DockerClient) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("oneline")
    project = root / "flask-app"
    shutil.copytree(FLASK_APP, project, ignore=shutil.ignore_patterns(".grocker", "build", "*.egg-info"))
    env = {"GROCKER_CACHE_HOME": str(root / "cache"), "SOURCE_DATE_EPOCH": "1700000000"}
    tag = f"grocker-test/oneline:{run_id}"
    first = grocker("build", str(project), "--tag", tag, env=env, report=root / "first.json")
    assert first.code == 0, first.err[-3000:]
    yield {"root": root, "project": project, "env": env, "tag": tag, "first": first}
    remove_images(client, tag)
    # The project's warm compile container (it would end itself after its idle minutes).
    for c in client.containers.list(all=True, filters={"label": "io.grocker.warm"}):
        if any(str(m.get("Source", "")).startswith(str(root)) for m in c.attrs.get("Mounts") or []):
            c.remove(force=True)


def test_a_one_line_change_sends_only_the_application_layer_and_leaves_no_container(
        app: dict[str, Any], client: docker.DockerClient) -> None:
    before = app["first"].project["image_id"]
    init = app["project"] / "flask_app" / "__init__.py"
    init.write_text(init.read_text() + "# a one-line change\n")
    second = grocker("-v", "build", str(app["project"]), "--tag", app["tag"], env=app["env"],
                     report=app["root"] / "second.json")
    assert second.code == 0, second.err[-3000:]
    assert second.project["status"] == "built"
    output = second.out + second.err
    assert f"1 of the 2 layers already in the engine (image {before}): not sent" in output, output[-3000:]
    new = second.project["image_id"]
    assert new != before
    old_layers = client.images.get(before).attrs["RootFS"]["Layers"]
    new_layers = client.images.get(new).attrs["RootFS"]["Layers"]
    assert new_layers[:-1] == old_layers[:-1] and new_layers[-1] != old_layers[-1]
    # The smoke test ran (the image is tagged only after it) in one container, removed before the process ended.
    assert client.images.get(app["tag"]).id == new
    assert second.project["containers_started"] == 1, second.project
    assert "+ docker rm -f" in output
    assert client.containers.list(all=True, filters={"ancestor": new}) == []


def test_an_archive_leaving_out_a_layer_the_engine_lacks_fails_and_one_with_every_layer_loads(
        app: dict[str, Any], client: docker.DockerClient) -> None:
    """What the fallback relies on: the engine refuses an archive without a layer it lacks (a typed error),
    and loads the one left out when the chain up to it is in the engine."""
    base = client.images.get(app["tag"]).attrs
    salt = hashlib.sha256(str(app["root"]).encode()).hexdigest()[:12]  # layers no other run has
    lower = Layer("lower", [Entry(f"/opt/oneline-{salt}/lower.txt", b"lower\n")], epoch=1700000000)
    upper = Layer("upper", [Entry(f"/opt/oneline-{salt}/upper.txt", b"upper\n")], epoch=1700000000)
    other = Layer("other", [Entry(f"/opt/oneline-{salt}/other.txt", b"other\n")], epoch=1700000000)
    made = []
    with Engine() as engine:
        try:
            blob = image_config(base, [lower, upper], settings={}, epoch=1700000000)
            with pytest.raises(ImageBuildError, match="loading the test image failed"):
                engine.load(load_archive(blob, base["RootFS"]["Layers"], [lower, upper], present=1), "test image")
            engine.load(load_archive(blob, base["RootFS"]["Layers"], [lower, upper]), "test image")
            made.append("sha256:" + hashlib.sha256(blob).hexdigest())
            # Now the engine has the chain up to ``lower``: an image on it loads without it.
            blob = image_config(base, [lower, other], settings={}, epoch=1700000000)
            engine.load(load_archive(blob, base["RootFS"]["Layers"], [lower, other], present=1), "test image")
            made.append("sha256:" + hashlib.sha256(blob).hexdigest())
            layers = client.images.get(made[-1]).attrs["RootFS"]["Layers"]
            assert layers == [*base["RootFS"]["Layers"], lower.diff_id, other.diff_id]
        finally:
            for image_id in reversed(made):
                client.images.remove(image_id, force=True)


def test_a_rebuild_whose_previous_image_is_gone_sends_every_layer(app: dict[str, Any],
                                                                   client: docker.DockerClient) -> None:
    tagged = client.images.get(app["tag"]).id
    client.images.remove(app["tag"], force=True)  # the image the state names is gone
    init = app["project"] / "flask_app" / "__init__.py"
    init.write_text(init.read_text() + "# another one-line change\n")
    third = grocker("-v", "build", str(app["project"]), "--tag", app["tag"], env=app["env"],
                    report=app["root"] / "third.json")
    assert third.code == 0, third.err[-3000:]
    assert third.project["status"] == "built" and third.project["image_id"] != tagged
    assert "already in the engine" not in third.out + third.err
    assert client.images.get(app["tag"]).id == third.project["image_id"]

