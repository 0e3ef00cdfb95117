"""A build farm of two machines: engine A and engine B (tests/second_engine.py) share one registry, one
wheel index and the shared build cache (``build-cache``), and nothing else.

Engine A builds a workspace, pushes its applications, publishes its libraries' wheels and writes the
shared cache. Engine B, a fresh checkout with its own cache home and build state and an engine holding only
the base image, then finds every member up to date or fetched; and when the applications' key tags are gone
from the registry, it builds them itself and pushes the same digests as engine A.

The runtime user is named after this module's run (``user`` is part of the root image's key), so the root
and compiler images are this module's alone and removed at the end; nothing engine-wide is listed or pruned.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import docker
import pytest

from setuptools_grocker.errors import RegistryError
from setuptools_grocker.image.recipes import compiler_key, root_key
from setuptools_grocker.pipeline.workspace import load_workspace, shared_config
from setuptools_grocker.registry.client import digest_of, get_blob, get_manifest
from tests.helpers import Run, free_port, generate, grocker, remove_images, wait_http
from tests.second_engine import SecondEngine


@dataclass
class Farm:
    uid: str
    registry: str
    index: str
    cache_repo: str
    graph: dict
    workspace: Path
    a: Run
    client_b: docker.DockerClient
    env: dict[str, str]
    engine_b: SecondEngine


def _by_name(run: Run) -> dict[str, dict]:
    assert run.report is not None
    return {p["name"]: p for p in run.report["projects"]}


def _images_of(client: docker.DockerClient, *prefixes: str) -> list[str]:
    """The references on one engine that start with one of ``prefixes`` (this module's images)."""
    return [tag for image in client.api.images() for tag in image.get("RepoTags") or ()
            if tag.startswith(prefixes)]


def _layers_and_config(registry: str, repo: str, manifest_digest: str, config_digest: str) -> tuple[list, dict]:
    """An application image as the registry holds it: its layer digests and its config."""
    ref = f"{registry}/{repo}"
    layers = []
    try:
        body, _ = get_manifest(f"{ref}@{manifest_digest}")
        layers = [layer["digest"] for layer in json.loads(body)["layers"]]
    except RegistryError:
        pass  # a deleted manifest: its blobs are still there
    return layers, json.loads(get_blob(ref, config_digest))


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    packages = tmp_path_factory.mktemp("farm-index")
    port = free_port()
    server = Path(sys.executable).parent / "pypi-server"
    proc = subprocess.Popen([str(server), "run", "-i", "127.0.0.1", "-p", str(port), "-a", ".", "-P", ".",
                             str(packages)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/simple/", proc, "pypiserver")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def farm(client: docker.DockerClient, engine_b: SecondEngine, registry: str, index: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    """Engine A's nightly: the workspace built with --push, --wheel-index and --cache-write."""
    uid = uuid.uuid4().hex[:8]
    top = tmp_path_factory.mktemp("farm")
    ws = top / "machine-a" / "ws"
    prefix = f"fm{uid[:5]}-"
    graph = generate(ws, libs=3, apps=2, levels=2, prefix=prefix)
    with (ws / "pyproject.toml").open("a") as fh:
        fh.write(f'\n[tool.grocker]\nregistry = "{registry}"\nuser = "u{uid}"\n')
    cache_repo = f"{registry}/grocker-cache-{uid}"
    env = {"GROCKER_WARM_IDLE": "0", "GROCKER_BUILD_CACHE": cache_repo}
    client_b = docker.DockerClient(base_url=engine_b.url, timeout=300)
    refs = [f"{registry}/{app}" for app in graph["applications"]]
    try:
        a = grocker("workspace", "build", str(ws), "--push", "--wheel-index", index, "--cache-write",
                    env={**env, "GROCKER_CACHE_HOME": str(top / "a-cache")}, report=top / "a.json")
        assert a.code == 0, a.err[-4000:]
        yield Farm(uid=uid, registry=registry, index=index, cache_repo=cache_repo, graph=graph, workspace=ws,
                   a=a, client_b=client_b, env=env, engine_b=engine_b)
    finally:
        base_refs = _base_refs(client, ws, env)
        for c in (client, client_b):
            remove_images(c, *_images_of(c, *refs), *base_refs)
        client_b.close()


def _base_refs(client: docker.DockerClient, ws: Path, env: dict[str, str]) -> list[str]:
    """This module's root and compiler images (children first): its runtime user is its own."""
    loaded = load_workspace(ws, environ={**os.environ, **env})
    config = shared_config([m.config for m in loaded.members.values()])
    rkey = root_key(config, client.images.get(config.base_image).id)
    pip_key, ckey = compiler_key(rkey, config.build_packages, config.installer)
    return [f"grocker/compiler:{ckey}", f"grocker/compiler:{pip_key}", f"grocker/root:{rkey}"]


def _machine_b(farm: Farm, client: docker.DockerClient, where: Path) -> dict[str, str]:
    """A second machine: the base image only (with the same ID, as a pull by digest or a reproducible
    bootstrap gives it), a fresh checkout (no .grocker), its own cache home and build state."""
    base = client.images.get(os.environ.get("GROCKER_BASE_IMAGE", "debian:bookworm-slim"))
    try:
        farm.client_b.images.get(base.id)
    except docker.errors.ImageNotFound:
        farm.client_b.images.load(b"".join(client.api.get_image(base.tags[0])))
    return _checkout_b(farm, where)


def _checkout_b(farm: Farm, where: Path) -> dict[str, str]:
    """Machine B's fresh checkout (no .grocker) and environment: its engine, cache home and build state."""
    shutil.copytree(farm.workspace, where / "ws", ignore=shutil.ignore_patterns(".grocker", "*.egg-info", "build"))
    return {**farm.env, **farm.engine_b.env(), "GROCKER_CACHE_HOME": str(where / "cache"),
            "GROCKER_CACHE_DIR": str(where / "state")}


def test_engine_a_built_pushed_and_published_everything(farm: Farm) -> None:
    by_name = _by_name(farm.a)
    assert {n for n, p in by_name.items() if p["status"] != "built"} == set()
    for app in farm.graph["applications"]:
        assert by_name[app]["digest"].startswith("sha256:")
    assert farm.a.report is not None and farm.a.report["base_images"] == {"root": "built", "compiler": "built"}
    for lib in farm.graph["libraries"]:
        listing = urllib.request.urlopen(f"{farm.index}/simple/{lib}/").read().decode()
        assert lib.replace("-", "_") in listing


def test_engine_b_finds_everything_up_to_date_or_fetched(farm: Farm, client: docker.DockerClient,
                                                         tmp_path: Path) -> None:
    env = _machine_b(farm, client, tmp_path)
    run = grocker("workspace", "build", str(tmp_path / "ws"), "--push", "--wheel-index", farm.index, env=env,
                  report=tmp_path / "b.json")
    assert run.code == 0, run.err[-4000:]
    by_name, by_name_a = _by_name(run), _by_name(farm.a)
    for lib in farm.graph["libraries"]:
        assert (by_name[lib]["status"], by_name[lib]["reason"]) == ("cached", "fetched from the wheel index")
        assert by_name[lib]["key"] == by_name_a[lib]["key"]
    for app in farm.graph["applications"]:
        assert (by_name[app]["status"], by_name[app]["reason"]) == ("cached", "in the registry"), by_name[app]
        assert by_name[app]["key"] == by_name_a[app]["key"]
        assert by_name[app]["digest"] == by_name_a[app]["digest"]
    assert run.report is not None and run.report["containers_started"] == 0
    # Nothing to build: no root or compiler image was needed, let alone built.
    assert run.report.get("base_images", {}) in ({}, {"root": "pulled", "compiler": "pulled"})
    assert "apt-get" not in run.out + run.err


def test_engine_b_builds_the_applications_to_the_same_digests(farm: Farm, client: docker.DockerClient,
                                                              tmp_path: Path) -> None:
    """The applications' key tags deleted from the registry: engine B builds them (its wheels from the index,
    its root and compiler images from the shared cache) and pushes exactly engine A's manifests."""
    by_name_a = _by_name(farm.a)
    for app in farm.graph["applications"]:
        _delete_manifest(farm.registry, app, by_name_a[app]["digest"])
        assert digest_of(f"{farm.registry}/{app}:2.0.0") is None
    apps = [f"{farm.registry}/{a}" for a in farm.graph["applications"]]
    remove_images(farm.client_b, *_images_of(farm.client_b, *apps))
    env = _machine_b(farm, client, tmp_path)
    run = grocker("workspace", "build", str(tmp_path / "ws"), "--push", "--wheel-index", farm.index, "-v", env=env,
                  report=tmp_path / "b.json")
    assert run.code == 0, run.err[-4000:]
    by_name = _by_name(run)
    for lib in farm.graph["libraries"]:
        assert (by_name[lib]["status"], by_name[lib]["reason"]) == ("cached", "fetched from the wheel index")
    # The base image's layers were never pulled by B: the push takes the registry's gzip blobs (recorded
    # when the root came from the shared cache) instead of compressing them with this machine's zlib.
    assert "the registry's blob reused" in run.out + run.err, run.err[-4000:]
    assert run.report is not None and run.report["base_images"] == {"root": "pulled", "compiler": "pulled"}
    assert "apt-get" not in run.out + run.err
    for app in farm.graph["applications"]:
        assert by_name[app]["status"] == "built"
        # The same config (pytest shows what differs), then the same image and manifest.
        _, config_a = _layers_and_config(farm.registry, app, by_name_a[app]["digest"], by_name_a[app]["image_id"])
        _, config_b = _layers_and_config(farm.registry, app, by_name[app]["digest"], by_name[app]["image_id"])
        assert config_b == config_a
        assert by_name[app]["image_id"] == by_name_a[app]["image_id"], app
        assert by_name[app]["digest"] == by_name_a[app]["digest"], app


def _delete_manifest(registry: str, repo: str, digest: str) -> None:
    req = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{digest}", method="DELETE")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 202


def test_engine_b_pulls_the_base_by_digest_and_builds_the_same_images(farm: Farm, client: docker.DockerClient,
                                                                     tmp_path: Path) -> None:
    """The documented way to share a base (docs/buildbot.md, "Adding a worker machine"): engine A pushes it
    once with ``grocker bootstrap-base --push`` and pins the printed ``REPO@sha256:...``; engine B, without
    the base, the root or the compiler image, pulls the base by that digest during the build, gets the same
    root and compiler keys as A (they follow the base's content, not its name), pulls those images and builds
    A's application images again, digest for digest."""
    base = os.environ.get("GROCKER_BASE_IMAGE", "debian:bookworm-slim")
    base_id = client.images.get(base).id
    repo = f"{farm.registry}/grocker-base-{farm.uid}"
    push = grocker("bootstrap-base", "--tag", base, "--push", repo,
                   env={"GROCKER_CACHE_HOME": str(tmp_path / "a-cache")})
    assert push.code == 0, push.err[-4000:]
    pinned = re.search(r'base-image = "(\S+@sha256:[0-9a-f]{64})"', push.out + push.err)
    assert pinned is not None, push.out + push.err
    pinned_ref = pinned.group(1)
    assert pinned_ref.startswith(repo + "@")
    assert digest_of(f"{repo}:{base.rsplit(':', 1)[-1]}") == pinned_ref.split("@", 1)[1]

    # Machine B: nothing of this module's but what it will pull (the applications' key tags deleted too,
    # so that the root and compiler images are needed).
    by_name_a = _by_name(farm.a)
    for app in farm.graph["applications"]:
        _delete_manifest(farm.registry, app, by_name_a[app]["digest"])
    apps = [f"{farm.registry}/{a}" for a in farm.graph["applications"]]
    remove_images(farm.client_b, *_images_of(farm.client_b, *apps), *_base_refs(client, farm.workspace, farm.env))
    remove_images(farm.client_b, base_id)
    with pytest.raises(docker.errors.ImageNotFound):
        farm.client_b.images.get(base_id)
    env = {**_checkout_b(farm, tmp_path), "GROCKER_BASE_IMAGE": pinned_ref}
    start = time.monotonic()
    run = grocker("workspace", "build", str(tmp_path / "ws"), "--push", "--wheel-index", farm.index, env=env,
                  report=tmp_path / "b.json")
    took = time.monotonic() - start
    assert run.code == 0, run.err[-4000:]
    output = run.out + run.err
    assert len(re.findall(rf"base image {re.escape(pinned_ref)} pulled by digest", output)) == 1, output[-4000:]
    assert "a tag can move" not in output
    assert farm.client_b.images.get(pinned_ref).id == base_id
    assert run.report is not None and run.report["base_images"] == {"root": "pulled", "compiler": "pulled"}
    assert "apt-get" not in output
    by_name = _by_name(run)
    for app in farm.graph["applications"]:
        assert by_name[app]["status"] == "built"
        assert by_name[app]["key"] == by_name_a[app]["key"]
        _, config_a = _layers_and_config(farm.registry, app, by_name_a[app]["digest"], by_name_a[app]["image_id"])
        _, config_b = _layers_and_config(farm.registry, app, by_name[app]["digest"], by_name[app]["image_id"])
        assert config_b == config_a
        assert by_name[app]["image_id"] == by_name_a[app]["image_id"], app
        assert by_name[app]["digest"] == by_name_a[app]["digest"], app
    manifest, _ = get_manifest(pinned_ref)
    pulled = sum(layer["size"] for layer in json.loads(manifest)["layers"])
    print(f"\nengine B, base pulled by digest: workspace build {took:.1f} s, base layers {pulled} bytes")


def test_a_base_digest_the_registry_lacks_is_an_error_with_the_fix(farm: Farm, tmp_path: Path) -> None:
    missing = f"{farm.registry}/grocker-base-{farm.uid}@sha256:{'0' * 64}"
    before = sorted(i.id for i in farm.client_b.images.list(all=True))
    env = {**_checkout_b(farm, tmp_path), "GROCKER_BASE_IMAGE": missing}
    run = grocker("workspace", "build", str(tmp_path / "ws"), "--push", "--wheel-index", farm.index, env=env)
    assert run.code != 0
    errors = [line for line in run.err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, run.err[-4000:]
    assert missing in errors[0] and "grocker bootstrap-base --push" in errors[0], errors[0]
    assert "docker build" not in run.out + run.err
    assert sorted(i.id for i in farm.client_b.images.list(all=True)) == before


def test_a_base_pulled_by_a_registry_tag_warns_and_keeps_the_keys(farm: Farm, client: docker.DockerClient,
                                                                  tmp_path: Path) -> None:
    """The same base by a tag of the registry: one warning that the tag can move, the same keys (the base's
    content, not its name), so everything is up to date from the previous test's push."""
    base = os.environ.get("GROCKER_BASE_IMAGE", "debian:bookworm-slim")
    tagged = f"{farm.registry}/grocker-base-{farm.uid}:{base.rsplit(':', 1)[-1]}"
    if digest_of(tagged) is None:
        pytest.skip("the base was not pushed (the digest test did not run)")
    remove_images(farm.client_b, tagged)
    env = {**_checkout_b(farm, tmp_path), "GROCKER_BASE_IMAGE": tagged}
    run = grocker("workspace", "build", str(tmp_path / "ws"), "--push", "--wheel-index", farm.index, env=env,
                  report=tmp_path / "b.json")
    assert run.code == 0, run.err[-4000:]
    output = run.out + run.err
    warning = rf"warning: base image {re.escape(tagged)} is pulled by tag, and a tag can move"
    assert len(re.findall(warning, output)) == 1, output[-4000:]
    by_name, by_name_a = _by_name(run), _by_name(farm.a)
    for app in farm.graph["applications"]:
        assert (by_name[app]["status"], by_name[app]["reason"]) == ("cached", "in the registry"), by_name[app]
        assert by_name[app]["key"] == by_name_a[app]["key"]
        assert by_name[app]["digest"] == by_name_a[app]["digest"]
