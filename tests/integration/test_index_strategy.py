"""index-strategy: a package on two indexes (a private one and a "public" one that shadows it with a higher
version). uv's first-index rule, the default, takes the private one; unsafe-best-match (pip's rule) the higher."""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import uuid
import zipfile
from pathlib import Path

import docker
import pytest

from tests.helpers import grocker, python_project, remove_images

NAME = "grocker-test-shadowed"


def _wheel(directory: Path, version: str) -> Path:
    module = NAME.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/top_level.txt": f"{module}\n".encode(),
    }
    record = "".join(
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for name, data in files.items()) + f"{dist}/RECORD,,\n"
    path = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{dist}/RECORD", record)
    return path


def _simple_index(root: Path, version: str) -> str:
    """A PEP 503 index on disk holding NAME at ``version``; its ``file://`` URL."""
    (root / "files").mkdir(parents=True)
    wheel = _wheel(root / "files", version)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    page = root / "simple" / NAME
    page.mkdir(parents=True)
    (page / "index.html").write_text(f'<html><body><a href="../../files/{wheel.name}#sha256={digest}">'
                                     f"{wheel.name}</a></body></html>\n")
    (root / "simple" / "index.html").write_text(f'<html><body><a href="{NAME}/">{NAME}</a></body></html>\n')
    return f"file://{root / 'simple'}"


@pytest.fixture
def indexes(tmp_path: Path) -> str:
    private = _simple_index(tmp_path / "private", "1.0")
    public = _simple_index(tmp_path / "public", "9.0")
    # The private index is listed first, as a company lists its own index before a public mirror.
    return f"{private} {public}"


@pytest.mark.parametrize("strategy, installer, expected", [
    (None, None, "1.0"),                          # the default: uv, first-index
    ("unsafe-best-match", None, "9.0"),           # pip's rule, asked for
    (None, "pip", "9.0"),                         # pip itself: best match across all indexes
])
def test_the_index_strategy_decides_which_index_a_package_comes_from(
        client: docker.DockerClient, tmp_path: Path, indexes: str, strategy: str | None, installer: str | None,
        expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROCKER_INDEX_STRATEGY", raising=False)  # conftest's, for the machine's mirrors
    project = python_project(tmp_path / "app", "shadow-app", deps=[NAME])
    tag = f"grocker-test/shadow-app:{uuid.uuid4().hex[:8]}"
    env = {"PIP_EXTRA_INDEX_URL": indexes}
    if strategy:
        env["GROCKER_INDEX_STRATEGY"] = strategy
    if installer:
        env["GROCKER_INSTALLER"] = installer
    try:
        run = grocker("build", str(project), "--tag", tag, env=env, report=tmp_path / "r.json")
        assert run.code == 0, run.err[-3000:]
        distributions = json.loads(client.images.get(tag).labels["io.grocker.distributions"])
        assert f"{NAME}=={expected}" in distributions
    finally:
        remove_images(client, tag)


def test_uv_and_pip_give_the_demo_app_the_same_distributions(client: docker.DockerClient, examples_copy: Path,
                                                              tmp_path: Path, run_id: str) -> None:
    """With the same index rule (conftest's over the machine's mirrors, or a single index), the image
    holds the same distributions at the same versions whichever installer compiled it."""
    tags = {inst: f"grocker-test/demo-{inst}:{run_id}" for inst in ("uv", "pip")}
    try:
        found = {}
        for installer, tag in tags.items():
            project = tmp_path / installer
            shutil.copytree(examples_copy, project, ignore=shutil.ignore_patterns(".grocker"))
            run = grocker("build", str(project / "demo-app"), "--tag", tag, env={"GROCKER_INSTALLER": installer},
                          report=tmp_path / f"{installer}.json")
            assert run.code == 0, run.err[-3000:]
            found[installer] = json.loads(client.images.get(tag).labels["io.grocker.distributions"])
        assert found["uv"] == found["pip"]
        assert any(d.startswith("grocker-demo-lib==") for d in found["uv"])
    finally:
        remove_images(client, *tags.values())
