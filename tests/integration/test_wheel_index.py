"""Sharing wheels through a real PyPI-compatible index (pypiserver on 127.0.0.1)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

import docker
import pytest

from benchmarks.make_workspace import generate
from setuptools_grocker.errors import WheelIndexError
from tests.integration.conftest import free_port, grocker, remove_images, wait_http


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    packages = tmp_path_factory.mktemp("pypiserver")
    port = free_port()
    server = Path(sys.executable).parent / "pypi-server"
    proc = subprocess.Popen([str(server), "run", "-i", "127.0.0.1", "-p", str(port), "-a", ".", "-P", ".",
                             str(packages)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/simple/", proc, "pypiserver")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_wheels_travel_through_the_index(client: docker.DockerClient, index: str, tmp_path: Path,
                                         run_id: str) -> None:
    prefix = f"ix{run_id[:5]}-"
    first = tmp_path / "machine-a" / "ws"
    graph = generate(first, libs=3, apps=1, levels=2, prefix=prefix)
    try:
        run = grocker("workspace", "build", str(first), "--wheel-index", index, report=tmp_path / "a.json")
        assert run.code == 0, run.err[-3000:]
        listing = urllib.request.urlopen(f"{index}/simple/{prefix}lib-00/").read().decode()
        assert f"{prefix.replace('-', '_')}lib_00-1.0.0-1" in listing  # the build tag carries the key
        # Another checkout (another machine) of the same sources: libraries come from the index.
        second = tmp_path / "machine-b" / "ws"
        shutil.copytree(first, second, ignore=shutil.ignore_patterns(".grocker"))
        remove_images(client, f"{prefix}app-00:2.0.0")
        run = grocker("workspace", "build", str(second), "--wheel-index", index, report=tmp_path / "b.json")
        assert run.code == 0, run.err[-3000:]
        by_name = {p["name"]: p for p in run.report["projects"]}
        for lib in graph["libraries"]:
            assert by_name[lib]["status"] == "cached"
            assert by_name[lib]["reason"] == "fetched from the wheel index"
            assert by_name[lib]["containers_started"] == 0
        app = by_name[f"{prefix}app-00"]
        assert app["status"] == "built"
        module = f"{prefix}app-00".replace("-", "_")
        out = client.containers.run(app["image"], ["run", "python", "-c",
                                                   f"import {module}.server as s; print(s.total())"], remove=True)
        assert int(out) == sum(graph["values"][d] for d in graph["applications"][f"{prefix}app-00"])
    finally:
        remove_images(client, f"{prefix}app-00:2.0.0")


def test_index_down_is_a_clear_error(tmp_path: Path, client: docker.DockerClient) -> None:
    root = tmp_path / "ws"
    generate(root, libs=1, apps=1, levels=1, prefix="down-")
    run = grocker("workspace", "build", str(root), "--wheel-index", f"http://127.0.0.1:{free_port()}")
    assert run.code == WheelIndexError.exit_code
    lines = [ln for ln in run.err.splitlines() if ln.startswith("grocker: error:")]
    assert len(lines) == 1 and "is unreachable" in lines[0] and "--wheel-index" in lines[0]
    assert not (root / ".grocker" / "members").exists()
