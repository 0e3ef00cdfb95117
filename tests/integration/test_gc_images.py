"""``grocker gc`` and ``grocker images`` on real builds; containers leave no anonymous volume.

Other builds run on the same engine at the same time: every gc here that removes anything is
scoped to this test's project (``--project``) and cache home (``GROCKER_CACHE_HOME``); the one
engine-wide gc is a dry run.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest

from setuptools_grocker.errors import RegistryError, SmokeTestError
from setuptools_grocker.image import records
from tests.helpers import Run, grocker, python_project, remove_images

PACKAGES = Path(__file__).resolve().parent.parent / "packages"


@dataclass
class Scenario:
    uid: str
    project: Path
    env: dict[str, str]
    tag: str
    released: Run
    superseded: Run
    current: Run
    volume: str
    mounted: list[str]
    foreign: str


def _build(project: Path, tag: str, env: dict[str, str], report: Path, *extra: str) -> Run:
    run = grocker("build", str(project), "--tag", tag, *extra, env=env, report=report)
    assert run.code == 0, run.err[-3000:]
    assert run.project["status"] == "built"
    return run


def _foreign_image(client: docker.DockerClient, uid: str) -> str:
    """An untagged image of another tool (no grocker label): gc never touches it."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", f"FROM scratch\nCOPY f /f\nLABEL test.gc={uid}\n".encode()),
                           ("f", uid.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    image, _ = client.images.build(fileobj=context, custom_context=True, rm=True)
    return str(image.id)


@pytest.fixture(scope="module")
def scenario(client: docker.DockerClient, registry: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """Three builds of one project under one tag: the first pushed and released, then two rebuilds."""
    uid = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("gc")
    volume = f"/data-{uid}"
    project = python_project(root / "app", f"gc-app-{uid}", modules={"__init__.py": "VERSION = 1\n"}, grocker=f"""
[tool.grocker]
volumes = ["{volume}"]
[tool.grocker.commands]
server = "python -m http.server 8000"
[tool.grocker.smoke-test]
port = 8000
path = "/"
""")
    env = {"GROCKER_CACHE_HOME": str(root / "cache")}
    tag = f"{registry}/grocker-test/gc-app-{uid}:1"
    released = _build(project, tag, env, root / "a.json", "--push")
    assert released.project["digest"]
    # What `grocker workspace release` does once the release document names the digest.
    assert records.mark_released(root / "cache", [released.project["digest"]], f"gc-{uid}") == 1
    (project / "src" / f"gc_app_{uid}" / "__init__.py").write_text("VERSION = 2\n")
    superseded = _build(project, tag, env, root / "b.json")
    (project / "src" / f"gc_app_{uid}" / "__init__.py").write_text("VERSION = 3\n")
    since = time.time() - 1
    current = _build(project, tag, env, root / "c.json")
    events = client.events(since=int(since), until=int(time.time()) + 1, decode=True,
                           filters={"type": "volume", "event": "mount"})
    mounted = [e["Actor"]["ID"] for e in events if e["Actor"]["Attributes"].get("destination") == volume]
    foreign = _foreign_image(client, uid)
    yield Scenario(uid, project, env, tag, released, superseded, current, volume, mounted, foreign)
    remove_images(client, tag, released.project["image_id"], superseded.project["image_id"],
                  current.project["image_id"], foreign)


def _exists(client: docker.DockerClient, image_id: str) -> bool:
    try:
        client.images.get(image_id)
        return True
    except docker.errors.ImageNotFound:
        return False


def _gc(s: Scenario, *args: str) -> dict[str, Any]:
    run = grocker("gc", "--json", *args, env=s.env)
    assert run.code == 0, run.err[-3000:]
    return dict(json.loads(run.out))


def test_containers_leave_no_anonymous_volume(client: docker.DockerClient, scenario: Scenario) -> None:
    # The smoke test's container (the HTTP probe's, where `check` runs by exec) mounted the image's volume
    # and did not leave it behind. One mount per build: a second one in the window is the previous build's.
    assert len(scenario.mounted) >= 1, scenario.mounted
    left = [v for v in scenario.mounted if v in {vol.name for vol in client.volumes.list()}]
    assert left == []


def test_images_lists_when_and_from_what(scenario: Scenario) -> None:
    run = grocker("images", "--json", env=scenario.env)
    assert run.code == 0, run.err
    rows = {r["image_id"]: r for r in json.loads(run.out)}
    current = rows[scenario.current.project["image_id"]]
    assert current["status"] == "built" and current["present"]
    assert current["current_tags"] == [scenario.tag]
    assert current["key"] == scenario.current.project["key"]
    assert current["version"] == "1.0.0" and current["project"] == str(scenario.project.resolve())
    assert current["root_image"] and current["compiler_image"] and current["base_image"]
    assert abs(records.parse_time(current["when"]) - time.time()) < 3600
    superseded = rows[scenario.superseded.project["image_id"]]
    assert superseded["status"] == "built" and superseded["current_tags"] == []
    assert rows[scenario.released.project["image_id"]]["releases"] == [f"gc-{scenario.uid}"]
    table = grocker("images", env=scenario.env)
    assert scenario.current.project["image_id"].split(":")[1][:12] in table.out


def test_dry_run_removes_nothing_and_never_a_foreign_image(client: docker.DockerClient, scenario: Scenario) -> None:
    scoped = _gc(scenario, "--dry-run", "--project", str(scenario.project))
    assert scoped["dry_run"] and [r["target"] for r in scoped["removed"]] == [scenario.superseded.project["image_id"]]
    assert scoped["bytes"] == scoped["removed"][0]["bytes"]
    # Engine-wide (a dry run: other people's builds share this engine): never the foreign image.
    wide = _gc(scenario, "--dry-run", "--untracked", "--base-images")
    assert scenario.foreign not in {r["target"] for r in wide["removed"]}
    assert scenario.current.project["image_id"] not in {r["target"] for r in wide["removed"]}
    assert scenario.released.project["image_id"] not in {r["target"] for r in wide["removed"]}
    for image_id in (scenario.superseded.project["image_id"], scenario.current.project["image_id"], scenario.foreign):
        assert _exists(client, image_id)


def test_gc_removes_the_superseded_image_keeps_current_and_released(client: docker.DockerClient,
                                                                   scenario: Scenario) -> None:
    caches = _gc(scenario, "--dry-run", "--project", str(scenario.project), "--max-cache-size", "0")
    wheelhouses = [r for r in caches["removed"] if r["kind"] == "wheelhouse"]
    assert wheelhouses and all(r["target"].startswith(str(scenario.project / ".grocker")) for r in wheelhouses)
    done = _gc(scenario, "--project", str(scenario.project))
    assert not done["dry_run"] and done["failed"] == []
    assert [r["target"] for r in done["removed"]] == [scenario.superseded.project["image_id"]]
    assert not _exists(client, scenario.superseded.project["image_id"])
    assert _exists(client, scenario.current.project["image_id"])
    assert _exists(client, scenario.released.project["image_id"])  # its release document names it
    assert _exists(client, scenario.foreign)
    # The current image still answers a no-change build from the cache.
    again = grocker("build", str(scenario.project), "--tag", scenario.tag, env=scenario.env,
                    report=scenario.project.parent / "d.json")
    assert again.code == 0 and again.project["status"] == "cached", again.err[-2000:]
    assert _gc(scenario, "--project", str(scenario.project))["removed"] == []


def test_an_image_that_failed_its_smoke_test_is_recorded_and_removed(client: docker.DockerClient,
                                                                     tmp_path: Path) -> None:
    project = tmp_path / "http-fails"
    shutil.copytree(PACKAGES / "http-fails", project)
    env = {"GROCKER_CACHE_HOME": str(tmp_path / "cache")}
    tag = f"grocker-test/gc-http-fails:{uuid.uuid4().hex[:8]}"
    run = grocker("build", str(project), "--tag", tag, env=env, report=tmp_path / "r.json")
    assert run.code == SmokeTestError.exit_code, run.err[-2000:]
    [record] = records.load_all(tmp_path / "cache")
    try:
        assert record.status == "failed" and record.tags == [] and _exists(client, record.image_id)
        listed = grocker("images", env=env)
        assert "failed" in listed.out and "<untagged>" in listed.out
        done = grocker("gc", "--json", "--project", str(project), env=env)
        assert done.code == 0, done.err
        assert [(r["target"], r["reason"]) for r in json.loads(done.out)["removed"]] == [
            (record.image_id, "failed its smoke test")]
        assert not _exists(client, record.image_id)
    finally:
        remove_images(client, record.image_id)


def test_gc_keeps_the_registry_documents_of_kept_images(client: docker.DockerClient, scenario: Scenario,
                                                        tmp_path: Path) -> None:
    """``grocker gc`` works on the engine and the cache home only: the ``sha256-<hex>.sbom``/``.att`` tags of
    a kept image stay, also through the registry's own garbage collection (``--delete-untagged``), which
    removes only untagged manifests (shown by one put there by digest alone)."""
    from setuptools_grocker.registry.attach import artifact_tag, read_artifact
    from setuptools_grocker.registry.client import get_manifest, list_tags, put_manifest, upload_blob
    from tests.helpers import free_port, start_registry

    port = free_port()
    (tmp_path / "reg").mkdir()
    proc = start_registry(tmp_path / "reg", port)
    try:
        repo = f"127.0.0.1:{port}/grocker-test/gc-docs-{scenario.uid}"
        pushed = grocker("build", str(scenario.project), "--tag", f"{repo}:1", "--push", env=scenario.env,
                         report=tmp_path / "push.json")
        assert pushed.code == 0 and pushed.project["status"] == "cached", pushed.err[-2000:]
        digest = pushed.project["digest"]
        documents = {kind: read_artifact(f"{repo}:1", kind) for kind in ("sbom", "att")}
        assert all(documents.values())
        tags = list_tags(repo)
        assert {artifact_tag(digest, "sbom"), artifact_tag(digest, "att"), "1"} <= set(tags)
        # An untagged manifest: what the registry's gc is expected to remove.
        config = upload_blob(repo, b"{}")
        loose = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config,
                                       "size": 2}, "layers": [],
                            "annotations": {"test": scenario.uid}}).encode()
        loose_digest = "sha256:" + hashlib.sha256(loose).hexdigest()
        put_manifest(f"{repo}@{loose_digest}", loose, "application/vnd.oci.image.manifest.v1+json")
        # grocker gc with the pushed image kept (it holds the tag): it removes the superseded image, never
        # a registry tag.
        done = _gc(scenario, "--project", str(scenario.project))
        assert done["failed"] == [] and all(r["kind"] == "runtime image" for r in done["removed"])
        assert _exists(client, scenario.current.project["image_id"])
        assert list_tags(repo) == tags
        # Distribution's garbage collection, registry stopped (as its documentation asks).
        proc.terminate()
        proc.wait(timeout=20)
        collected = subprocess.run([str(shutil.which("docker-registry")), "garbage-collect", "--delete-untagged",
                                    str(tmp_path / "reg" / "config.yml")], capture_output=True, text=True)
        assert collected.returncode == 0, collected.stderr[-2000:]
        proc = start_registry(tmp_path / "reg", port)
        assert list_tags(repo) == tags
        assert {kind: read_artifact(f"{repo}:1", kind) for kind in ("sbom", "att")} == documents
        get_manifest(f"{repo}:1")
        with pytest.raises(RegistryError):
            get_manifest(f"{repo}@{loose_digest}")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        remove_images(client, f"{repo}:1")
