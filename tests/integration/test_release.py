"""Workspace releases against a real registry: all or nothing, verified by digest; registry down."""
from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import docker
import pytest

from benchmarks.make_workspace import generate, mod
from setuptools_grocker.errors import RegistryError, WorkspaceError
from setuptools_grocker.registry import manifest_digest, read_document
from tests.integration.conftest import free_port, grocker, remove_images, start_registry


def tags_of(registry: str, repo: str) -> set[str]:
    try:
        with urllib.request.urlopen(f"http://{registry}/v2/{repo}/tags/list", timeout=10) as resp:
            return set(json.loads(resp.read()).get("tags") or [])
    except OSError:
        return set()


@pytest.fixture(scope="module")
def release_ws(tmp_path_factory: pytest.TempPathFactory, client: docker.DockerClient, registry: str, run_id: str):
    root = tmp_path_factory.mktemp("release") / "shop"
    prefix = f"r{run_id[:5]}-"
    graph = generate(root, libs=1, apps=2, levels=1, prefix=prefix)
    with (root / "pyproject.toml").open("a") as fh:
        fh.write(f'\n[tool.grocker]\nregistry = "{registry}"\nmoving-tags = ["latest"]\n')
    yield root, graph, prefix
    remove_images(client, *(f"{registry}/{a}:{t}" for a in graph["applications"] for t in ("2.0.0", "latest", "r1")))


@pytest.fixture(scope="module")
def first_release(release_ws, registry: str, tmp_path_factory: pytest.TempPathFactory):
    root, graph, _ = release_ws
    run = grocker("workspace", "build", str(root), "--push", "--release", "r1",
                  report=tmp_path_factory.mktemp("r") / "release.json")
    assert run.code == 0, run.err[-4000:]
    return run


def test_release_moves_every_tag_to_the_pushed_digest(release_ws, first_release, registry: str) -> None:
    root, graph, _ = release_ws
    release = first_release.report["release"]
    assert release["published"] is True and release["release"] == "r1"
    pushed = {p["name"]: p["digest"] for p in first_release.report["projects"] if p["kind"] == "application"}
    assert set(release["applications"]) == set(graph["applications"]) == set(pushed)
    for app, entry in release["applications"].items():
        assert entry["digest"] == pushed[app]
        assert entry["version"] == "2.0.0"
        for tag in ("2.0.0", "latest", "r1"):
            assert manifest_digest(f"{registry}/{app}:{tag}") == entry["digest"], (app, tag)
    assert release["libraries"] == {n: f"1.{i}.0" for i, n in enumerate(graph["libraries"])}
    # The document is in the registry, under the release name and latest, and written locally.
    doc_ref = release["document"]["image"]
    assert doc_ref == f"{registry}/shop-release:r1"
    stored = read_document(doc_ref)
    assert stored["applications"] == release["applications"]
    assert manifest_digest(f"{registry}/shop-release:latest") == release["document"]["digest"]
    local = json.loads((root / ".grocker" / "releases" / "r1.json").read_text())
    assert local["applications"] == release["applications"]


def test_pull_back_by_digest(release_ws, first_release, registry: str, client: docker.DockerClient) -> None:
    app = next(p for p in first_release.report["projects"] if p["kind"] == "application")
    repo = f"{registry}/{app['name']}"
    client.images.remove(f"{repo}:2.0.0", noprune=True)
    pulled = client.images.pull(f"{repo}@{app['digest']}")
    assert pulled.id == app["image_id"]
    assert f"{repo}@{app['digest']}" in pulled.attrs["RepoDigests"]
    # The release document is a real image too: docker pulls it and reads its label.
    doc = client.images.pull(first_release.report["release"]["document"]["image"])
    assert json.loads(doc.labels["io.grocker.release"])["release"] == "r1"


def test_a_failing_application_moves_no_release_tag(release_ws, first_release, registry: str,
                                                    tmp_path: Path) -> None:
    root, graph, _ = release_ws
    good, bad = sorted(graph["applications"])
    before = {(a, t): manifest_digest(f"{registry}/{a}:{t}") for a in graph["applications"] for t in ("2.0.0", "latest")}
    # good changes (its new image is built and pushed under its key tag), bad no longer starts.
    good_server = root / "apps" / good / "src" / mod(good) / "server.py"
    good_server.write_text(good_server.read_text() + "\n# a new comment\n")
    bad_server = root / "apps" / bad / "src" / mod(bad) / "server.py"
    bad_server.write_text(bad_server.read_text().replace("assert total() ==", "assert -1 =="))
    run = grocker("workspace", "build", str(root), "--push", "--release", "r2", report=tmp_path / "r.json")
    assert run.code == WorkspaceError.exit_code, run.err[-3000:]
    status = {p["name"]: p for p in run.report["projects"]}
    assert status[bad]["status"] == "failed" and status[good]["status"] == "built"
    assert manifest_digest(status[good]["image"].rsplit(":", 1)[0] + ":k" + status[good]["key"][:16]) \
        == status[good]["digest"] != before[(good, "2.0.0")]
    assert run.report["release"]["published"] is False
    assert "no release tag was moved" in run.err
    after = {(a, t): manifest_digest(f"{registry}/{a}:{t}") for a in graph["applications"] for t in ("2.0.0", "latest")}
    assert after == before
    assert all("r2" not in tags_of(registry, a) for a in graph["applications"])
    assert "r2" not in tags_of(registry, "shop-release")
    bad_server.write_text(bad_server.read_text().replace("assert -1 ==", "assert total() =="))


def test_registry_down_during_push_moves_nothing(tmp_path: Path, examples_copy: Path,
                                                 client: docker.DockerClient) -> None:
    port = free_port()
    store = tmp_path / "registry"
    store.mkdir()
    proc = start_registry(store, port)
    ref = ""
    try:
        env = {"GROCKER_REGISTRY": f"127.0.0.1:{port}", "GROCKER_MOVING_TAGS": "latest"}
        # The session's copy stays cold for other tests; no state of earlier builds.
        shutil.copytree(examples_copy, tmp_path / "ex", ignore=shutil.ignore_patterns(".grocker"))
        project = tmp_path / "ex" / "demo-app"
        first = grocker("build", str(project), "--push", env=env, report=tmp_path / "one.json")
        assert first.code == 0, first.err[-3000:]
        digest = first.project["digest"]
        ref = first.project["image"].rsplit(":", 1)[0]
        assert ref.startswith(f"127.0.0.1:{port}/")
        assert manifest_digest(f"{ref}:latest") == digest
        proc.terminate()
        proc.wait(timeout=20)
        down = grocker("build", str(project), "--push", "--no-cache", env=env, report=tmp_path / "two.json")
        assert down.code == RegistryError.exit_code, down.err[-3000:]
        line = down.err.strip().splitlines()[-1]
        assert line.startswith("grocker: error: pushing ") and "registry" in line
        assert down.project["status"] == "failed" and down.project["digest"] is None
        proc = start_registry(store, port)
        assert manifest_digest(f"{ref}:latest") == digest
        assert manifest_digest(f"{ref}:{first.project['version']}") == digest
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if ref:
            remove_images(client, f"{ref}:{first.project['version']}", f"{ref}:latest")


def test_registry_down_during_a_workspace_release(release_ws, first_release, registry: str,
                                                  tmp_path: Path) -> None:
    root, graph, _ = release_ws
    with (root / "pyproject.toml").open() as fh:
        text = fh.read()
    dead = f"127.0.0.1:{free_port()}"
    run = grocker("workspace", "release", str(root), env={"GROCKER_REGISTRY": dead})
    assert run.code == RegistryError.exit_code
    last = run.err.strip().splitlines()[-1]
    assert last.startswith("grocker: error: ") and "no release tag was moved" in last
    assert (root / "pyproject.toml").read_text() == text
