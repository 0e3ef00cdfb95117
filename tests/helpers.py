"""Helpers shared by the tests (and the generated workspace the benchmarks use too).

Tests import helpers from here only; conftest.py files hold fixtures, not helpers.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import docker
import pytest

# The workspace generator is the benchmarks' workload; the tests build the same workspaces.
from benchmarks.make_workspace import dependents, generate, mod

__all__ = ["BASE_IMAGE", "EXAMPLES", "GROCKER", "REPO", "Run", "container_starts", "dependents", "free_port",
           "generate", "grocker", "mod", "python_project", "remove_images", "setup_py", "start_registry", "wait_http"]

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
BASE_IMAGE = os.environ.get("GROCKER_BASE_IMAGE", "debian:bookworm-slim")
GROCKER = [sys.executable, "-m", "setuptools_grocker"]


@dataclass
class Run:
    code: int
    out: str
    err: str
    report: dict[str, Any] | None

    @property
    def project(self) -> dict[str, Any]:
        assert self.report is not None, self.err
        return self.report["projects"][0]


def grocker(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            report: Path | None = None, timeout: float = 900) -> Run:
    """Run the real CLI in a subprocess, as a user would."""
    argv = [*GROCKER, *args]
    if report is not None:
        argv += ["--report", str(report)]
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    data = json.loads(report.read_text()) if report is not None and report.exists() else None
    return Run(proc.returncode, proc.stdout, proc.stderr, data)


def install_plugin(tmp_path_factory: pytest.TempPathFactory, package: str) -> str:
    """pip-installs a plugin package of tests/packages into its own directory (for PYTHONPATH); returns that
    directory."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / package  # pip builds in-tree: keep the repository clean
    shutil.copytree(REPO / "tests" / "packages" / package, source)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    str(source)], check=True, capture_output=True)
    return str(target)


def pythonpath(*targets: str) -> dict[str, str]:
    """The environment that puts ``targets`` (installed plugins) first on the subprocess's path."""
    return {"PYTHONPATH": os.pathsep.join([*targets, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def setup_py(project: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "setup.py", "docker_image", *args], cwd=project, capture_output=True,
                          text=True, timeout=timeout)


def remove_images(client: docker.DockerClient, *refs: str) -> None:
    for ref in refs:
        try:
            client.images.remove(ref, force=True)
        except docker.errors.ImageNotFound:
            pass


def container_starts(client: docker.DockerClient, since: float) -> int:
    """How many containers the engine started since ``since`` (from its event log)."""
    events = client.events(since=int(since), until=int(time.time()) + 1, decode=True,
                           filters={"type": "container", "event": "start"})
    return sum(1 for _ in events)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"{what} did not start")
            time.sleep(0.2)


def start_registry(root: Path, port: int) -> subprocess.Popen[bytes]:
    """Start docker-registry on 127.0.0.1:PORT storing in ROOT (again on the same data, if started before)."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed; scripts/setup.sh installs it")
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n"
                      f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/v2/", proc, "docker-registry")
    return proc


def python_project(root: Path, name: str, *, version: str = "1.0.0", deps: Sequence[str] = (),
                   scripts: Mapping[str, str] | None = None, grocker: str = "",
                   modules: Mapping[str, str] | None = None) -> Path:
    """Write a small setuptools project (PEP 621): ``src/NAME/`` with ``modules`` (file -> text)."""
    package = name.replace("-", "_")
    (root / "src" / package).mkdir(parents=True, exist_ok=True)
    for filename, text in (modules or {"__init__.py": '"""A test project."""\n'}).items():
        (root / "src" / package / filename).write_text(text)
    entry_points = "".join(f'{k} = "{v}"\n' for k, v in (scripts or {}).items())
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = {json.dumps(list(deps))}\n'
        + (f"\n[project.scripts]\n{entry_points}" if entry_points else "")
        + (f"\n{grocker.strip()}\n" if grocker.strip() else ""))
    return root


@contextlib.contextmanager
def empty_index(client: docker.DockerClient, directory: Path) -> Iterator[str]:
    """An HTTP package index that answers 404 to everything, reachable from the compile container: ``host:port``
    on the Docker bridge's gateway (this machine's side of the bridge, not a public address). uv, unlike pip,
    fails a build whose index does not answer at all, so a test index with a credential must answer."""
    ipam = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    # Some engines leave the default bridge's Gateway out of IPAM: it is then the subnet's first address.
    gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
    directory.mkdir(parents=True, exist_ok=True)
    server = http.server.ThreadingHTTPServer((gateway, 0), functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"{gateway}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
