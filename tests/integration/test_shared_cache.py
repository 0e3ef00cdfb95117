"""The shared build cache (``build-cache``): root and compiler images found in the registry by key.

The project's runtime user is named after this test run (``user`` is part of the root image's key),
so its root and compiler images are this module's alone: removing them never disturbs another
test's build. Each build has a cache home of its own; nothing engine-wide is listed or pruned.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import docker
import pytest

from setuptools_grocker.config import load_config
from setuptools_grocker.engine import Engine
from setuptools_grocker.errors import RegistryError
from setuptools_grocker.image.recipes import compiler_key, ensure_base_images, root_key
from setuptools_grocker.progress import Progress
from setuptools_grocker.registry.client import digest_of, get_blob, get_manifest, retag
from setuptools_grocker.registry.sharedcache import KEY_LABEL, SharedCache
from tests.helpers import Run, free_port, grocker, python_project, remove_images, wait_http
from tests.second_engine import SecondEngine


@dataclass
class Scenario:
    project: Path
    tag: str
    repo: str
    env: dict[str, str]
    root: str
    compiler: str
    pip_compiler: str
    rkey: str
    ckey: str
    written: Run
    ids: dict[str, str]
    user: str


def _remove_local(client: docker.DockerClient, s: Scenario) -> None:
    """This test's runtime image, then its compiler images, then its root (children before parents)."""
    remove_images(client, s.tag, s.compiler, s.pip_compiler, s.root)


@pytest.fixture(scope="module")
def scenario(client: docker.DockerClient, registry: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """A build with writing on: the root and compiler images it built are pushed to the shared cache."""
    uid = uuid.uuid4().hex[:8]
    root_dir = tmp_path_factory.mktemp("shared")
    project = python_project(root_dir / "app", f"shared-app-{uid}", grocker=f'[tool.grocker]\nuser = "u{uid}"\n')
    repo = f"{registry}/grocker-cache-{uid}"
    env = {"GROCKER_CACHE_HOME": str(root_dir / "cache"), "GROCKER_WARM_IDLE": "0", "GROCKER_BUILD_CACHE": repo}
    config = load_config(project, environ={**os.environ, **env})
    rkey = root_key(config, client.images.get(config.base_image).id)
    pip_key, ckey = compiler_key(rkey, config.build_packages, config.installer)
    s = Scenario(project=project, tag=f"grocker-test/shared-app:{uid}", repo=repo, env=env,
                 root=f"grocker/root:{rkey}", compiler=f"grocker/compiler:{ckey}",
                 pip_compiler=f"grocker/compiler:{pip_key}", rkey=rkey, ckey=ckey,
                 written=Run(1, "", "", None), ids={}, user=f"u{uid}")
    try:
        s.written = grocker("build", str(project), "--tag", s.tag, "--cache-write", env=env,
                            report=root_dir / "written.json")
        assert s.written.code == 0, s.written.err[-3000:]
        s.ids = {"root": client.images.get(s.root).id, "compiler": client.images.get(s.compiler).id}
        yield s
    finally:
        _remove_local(client, s)


def test_a_trusted_build_pushes_its_root_and_compiler_images(scenario: Scenario) -> None:
    s = scenario
    assert s.written.project["base_images"] == {"root": "built", "compiler": "built"}
    for kind, key in (("root", s.rkey), ("compiler", s.ckey)):
        ref = f"{s.repo}:{kind}-{key}"
        assert f"shared cache: pushed {ref}@" in s.written.err
        digest = digest_of(ref)
        assert digest is not None
        body, _ = get_manifest(f"{s.repo}@{digest}")
        config = get_blob(ref, json.loads(body)["config"]["digest"])
        # The registry holds the engine's own config: pulled, the image has the same ID.
        assert "sha256:" + hashlib.sha256(config).hexdigest() == s.ids[kind]
        assert json.loads(config)["config"]["Labels"][KEY_LABEL] == f"{kind}-{key}"


def test_another_machine_pulls_them_instead_of_building(client: docker.DockerClient, scenario: Scenario,
                                                        tmp_path: Path) -> None:
    s = scenario
    _remove_local(client, s)
    env = {**s.env, "GROCKER_CACHE_HOME": str(tmp_path / "cache")}  # another machine: an empty cache home
    run = grocker("build", str(s.project), "--tag", s.tag, "-v", env=env, report=tmp_path / "pulled.json")
    assert run.code == 0, run.err[-3000:]
    assert run.project["base_images"] == {"root": "pulled", "compiler": "pulled"}
    assert "apt-get" not in run.out + run.err  # nothing installed: no root or compiler recipe ran
    assert f"pulled {s.repo}@sha256:" in run.err
    assert {"root": client.images.get(s.root).id, "compiler": client.images.get(s.compiler).id} == s.ids
    assert client.images.get(s.root).labels[KEY_LABEL] == f"root-{s.rkey}"
    # Reading only: nothing pushed without --cache-write.
    assert "shared cache: pushed" not in run.err


def test_a_workspace_build_pulls_them_too(client: docker.DockerClient, scenario: Scenario, tmp_path: Path) -> None:
    s = scenario
    _remove_local(client, s)
    # The same runtime user and no system packages: the workspace's shared root and compiler have the same keys.
    (tmp_path / "pyproject.toml").write_text(f'[tool.grocker]\nuser = "{s.user}"\n'
                                             '[tool.grocker.workspace]\nmembers = ["libs/*"]\n')
    python_project(tmp_path / "libs" / "lib", f"shared-lib-{s.user}")
    env = {**s.env, "GROCKER_CACHE_HOME": str(tmp_path / "cache")}
    run = grocker("workspace", "build", str(tmp_path), env=env, report=tmp_path / "report.json")
    assert run.code == 0, run.err[-3000:]
    assert run.report is not None and run.report["base_images"] == {"root": "pulled", "compiler": "pulled"}
    assert {"root": client.images.get(s.root).id, "compiler": client.images.get(s.compiler).id} == s.ids


def test_a_second_engine_pulls_them_and_builds_the_same_image(client: docker.DockerClient, engine_b: SecondEngine,
                                                             scenario: Scenario, tmp_path: Path) -> None:
    """Engine B stands for a second machine: it has only the base image (with the same ID, as a pull by
    digest or a reproducible bootstrap gives it), and builds the project reading the shared cache."""
    s = scenario
    client_b = docker.DockerClient(base_url=engine_b.url, timeout=300)
    config = load_config(s.project, environ={**os.environ, **s.env})
    try:
        if not _has(client_b, config.base_image):
            client_b.images.load(b"".join(client.api.get_image(config.base_image)))
        # A fresh machine: its own cache home and build state (no wheelhouse of engine A's build).
        env = {**s.env, **engine_b.env(), "GROCKER_CACHE_HOME": str(tmp_path / "cache"),
               "GROCKER_CACHE_DIR": str(tmp_path / "state")}
        run = grocker("build", str(s.project), "--tag", s.tag, "-v", env=env, report=tmp_path / "b.json")
        assert run.code == 0, run.err[-3000:]
        assert run.project["base_images"] == {"root": "pulled", "compiler": "pulled"}
        assert "apt-get" not in run.out + run.err
        assert {"root": client_b.images.get(s.root).id, "compiler": client_b.images.get(s.compiler).id} == s.ids
        # The same root, wheels and configuration: the same runtime image as engine A's.
        assert run.project["image_id"] == s.written.project["image_id"]
    finally:
        for ref in (s.tag, s.compiler, s.root):
            if _has(client_b, ref):
                client_b.images.remove(ref, force=True)
        client_b.close()


def _has(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def test_a_tag_pointing_at_another_image_is_refused(client: docker.DockerClient, scenario: Scenario,
                                                    tmp_path: Path) -> None:
    s = scenario
    _remove_local(client, s)
    # The registry (an attacker) points the root's tag at the compiler image: its key label says so.
    retag(f"{s.repo}:compiler-{s.ckey}", f"{s.repo}:root-{s.rkey}")
    env = {**s.env, "GROCKER_CACHE_HOME": str(tmp_path / "cache")}
    run = grocker("build", str(s.project), "--tag", s.tag, env=env)
    assert run.code == RegistryError.exit_code, run.err[-3000:]
    errors = [line for line in run.err.splitlines() if line.startswith("grocker: error:")]
    assert len(errors) == 1, run.err[-3000:]
    assert f"shared cache entry {s.repo}:root-{s.rkey} (sha256:" in errors[0]
    assert f"refused: it is labelled {KEY_LABEL}='compiler-{s.ckey}', not root-{s.rkey}" in errors[0]
    with pytest.raises(docker.errors.ImageNotFound):  # nothing of it was used
        client.images.get(s.root)


def test_an_unreachable_registry_builds_locally_with_one_line(client: docker.DockerClient, tmp_path: Path) -> None:
    # A root of its own (a runtime user named after the test); the base has python3 and tini: no apt.
    project = python_project(tmp_path / "app", "unreachable-app")
    config = load_config(project, environ={**os.environ, "GROCKER_USER": f"u{uuid.uuid4().hex[:8]}"})
    port = free_port()  # nobody listens there
    out = io.StringIO()
    progress = Progress(out)
    shared = SharedCache(f"127.0.0.1:{port}/cache", write=True, cache=tmp_path / "cache")
    with Engine(progress) as engine:
        images = ensure_base_images(engine, config, progress, need_compiler=False, shared=shared)
    try:
        assert images.origins == {"root": "built"}
        lines = [line for line in out.getvalue().splitlines() if "shared cache" in line]
        assert len(lines) == 1, out.getvalue()
        assert lines[0].endswith(f"shared cache 127.0.0.1:{port}/cache unreachable: building locally")
        assert client.images.get(images.root).labels[KEY_LABEL] == f"root-{images.root_key}"
    finally:
        remove_images(client, images.root)


def test_a_push_that_fails_is_one_warning(client: docker.DockerClient, tmp_path: Path) -> None:
    # A registry in read-only maintenance mode: it answers reads, refuses every upload.
    port = free_port()
    (tmp_path / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path}/data\n"
        f"  maintenance:\n    readonly:\n      enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n")
    binary = shutil.which("docker-registry") or "docker-registry"
    proc = subprocess.Popen([binary, "serve", str(tmp_path / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/", proc, "docker-registry")
        project = python_project(tmp_path / "app", "readonly-app")
        config = load_config(project, environ={**os.environ, "GROCKER_USER": f"u{uuid.uuid4().hex[:8]}"})
        out = io.StringIO()
        progress = Progress(out)
        shared = SharedCache(f"127.0.0.1:{port}/cache", write=True, cache=tmp_path / "cache")
        with Engine(progress) as engine:
            images = ensure_base_images(engine, config, progress, need_compiler=False, shared=shared)
        try:
            assert images.origins == {"root": "built"}
            warnings = [line for line in out.getvalue().splitlines() if "warning:" in line]
            assert len(warnings) == 1, out.getvalue()
            assert f"shared cache: pushing 127.0.0.1:{port}/cache:root-{images.root_key} failed" in warnings[0]
            assert warnings[0].endswith("the image is used locally")
        finally:
            remove_images(client, images.root)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
