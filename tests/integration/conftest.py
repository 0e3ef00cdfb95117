"""Integration tests: the real Docker Engine, real builds of the example projects.

scripts/test.sh starts the engine and bootstraps the base image first; when either is
missing these tests fail (they are never skipped).
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

import docker
import pytest

from setuptools_grocker.pipeline.pipconf import read_pip_options
from tests.helpers import BASE_IMAGE, EXAMPLES, Run, free_port, grocker, remove_images, start_registry
from tests.second_engine import SecondEngine


@pytest.fixture(scope="session", autouse=True)
def _pip_rule_over_partial_mirrors() -> Iterator[None]:
    """Builds take each package from the best match across indexes when the machine's pip configuration
    lists extra indexes. The test machines list partial on-disk mirrors as extra indexes, ahead of the
    complete default index: under uv's first-index rule (the default index-strategy) a package those
    mirrors carry could only come from them, so a test pinning a version they lack (packaging==24.0)
    would test the mirrors. tests/integration/test_index_strategy.py tests both rules."""
    if "extra-index-url" not in read_pip_options(os.environ) or "GROCKER_INDEX_STRATEGY" in os.environ:
        yield
        return
    os.environ["GROCKER_INDEX_STRATEGY"] = "unsafe-best-match"
    try:
        yield
    finally:
        os.environ.pop("GROCKER_INDEX_STRATEGY", None)


@pytest.fixture(scope="session")
def client() -> Iterator[docker.DockerClient]:
    try:
        c = docker.from_env(version="auto", timeout=120)
        c.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker Engine answers ({exc}); run the suite through scripts/test.sh")
    try:
        c.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"base image {BASE_IMAGE} is missing; run `grocker bootstrap-base` (scripts/test.sh does)")
    yield c
    c.close()


@pytest.fixture(scope="session")
def examples_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example projects copied under a path with a space and a non-ASCII name."""
    root = tmp_path_factory.mktemp("ex") / "mes projets (dé mo)"
    shutil.copytree(EXAMPLES, root, ignore=shutil.ignore_patterns(".grocker", "build", "*.egg-info"))
    return root


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def demo_build(client: docker.DockerClient, examples_copy: Path, run_id: str,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One cold build of the demo application, shared by the tests that inspect it."""
    tag = f"grocker-test/demo-app:{run_id}"
    report = tmp_path_factory.mktemp("reports") / "demo.json"
    run = grocker("build", str(examples_copy / "demo-app"), "--tag", tag, report=report)
    assert run.code == 0, run.err[-4000:]
    yield run
    remove_images(client, tag)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real registry (Debian's docker-registry, CNCF Distribution) on 127.0.0.1."""
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    proc = start_registry(root, port)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=20)




@pytest.fixture(scope="session")
def engine_b() -> Iterator[SecondEngine]:
    """A second Docker Engine, empty, standing for a second machine (tests/second_engine.py); stopped, with
    its data, bridge and iptables rules removed, at the end of the session."""
    engine = SecondEngine()
    try:
        engine.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield engine
    engine.stop()
