"""Bad input and faults of a single-project build: one-line cause, distinct exit code,
nothing tagged, no wheelhouse entry claiming success."""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
import zipfile
from pathlib import Path

import docker
import pytest

from setuptools_grocker.errors import (
    BaseImageError,
    CompileError,
    EngineUnavailable,
    ImageBuildError,
    SmokeTestError,
)
from tests.helpers import grocker, python_project, remove_images

PACKAGES = Path(__file__).resolve().parent.parent / "packages"


@pytest.fixture()
def package(tmp_path: Path):
    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(PACKAGES / name, target)
        return target
    return copy


def error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("grocker: error: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def assert_nothing_claims_success(project: Path) -> None:
    wheelhouse = project / ".grocker" / "wheelhouse"
    if wheelhouse.exists():
        assert not list(wheelhouse.glob("*/manifest.json"))
        assert not list((wheelhouse / ".tmp").glob("*")) if (wheelhouse / ".tmp").exists() else True
    assert not (project / ".grocker" / "state.json").exists()


def assert_untagged(client: docker.DockerClient, ref: str) -> None:
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(ref)


def test_compile_failure_shows_the_compiler_error(client: docker.DockerClient, package, tmp_path: Path) -> None:
    project = package("bad-ext")
    run = grocker("build", str(project), "--tag", "grocker-test/bad-ext:1", report=tmp_path / "r.json")
    assert run.code == CompileError.exit_code
    line = error_line(run.err)
    assert "compiling wheels for bad-ext 1.0 (bad-ext) failed" in line
    assert "grocker_header_that_no_package_provides.h" in line
    assert "system-packages.build" in line and "see uv's output in " in line
    assert run.project["status"] == "failed" and run.report["ok"] is False
    assert_untagged(client, "grocker-test/bad-ext:1")
    assert_nothing_claims_success(project)


def test_failing_check_leaves_the_image_untagged(client: docker.DockerClient, package, tmp_path: Path) -> None:
    project = package("broken-import")
    run = grocker("build", str(project), "--tag", "grocker-test/broken-import:1", report=tmp_path / "r.json")
    assert run.code == SmokeTestError.exit_code
    line = error_line(run.err)
    assert "failed `check`" in line and "module_that_does_not_exist" in line
    assert_untagged(client, "grocker-test/broken-import:1")
    assert not (project / ".grocker" / "state.json").exists()


def _owner_alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    return True


def test_failing_http_probe_leaves_the_image_untagged(client: docker.DockerClient, package,
                                                     tmp_path: Path) -> None:
    project = package("http-fails")
    owned = {"label": "io.grocker.owner=setuptools-grocker"}
    before = {c.id for c in client.containers.list(all=True, filters=owned)}
    run = grocker("build", str(project), "--tag", "grocker-test/http-fails:1", report=tmp_path / "r.json")
    assert run.code == SmokeTestError.exit_code
    line = error_line(run.err)
    assert "HTTP probe of /health-that-does-not-exist" in line and "HTTP 404" in line
    assert "GET /health-that-does-not-exist" in run.err  # the probe's output is shown
    assert_untagged(client, "grocker-test/http-fails:1")
    # No probe container is left behind.
    # (Containers of other grocker processes still running on this machine are theirs; the project's warm
    # compile container stays on purpose, test_warm_compile.py.)
    leftovers = [c for c in client.containers.list(all=True, filters=owned) if c.id not in before
                 and not _owner_alive(c.labels.get("io.grocker.pid", "")) and "io.grocker.warm" not in c.labels]
    assert leftovers == []


def test_a_hostile_wheel_in_the_closure_fails_the_build_and_writes_nothing(client: docker.DockerClient,
                                                                           tmp_path: Path) -> None:
    """A dependency served by a find-links directory whose wheel climbs out of site-packages."""
    target = Path(tempfile.gettempdir()) / f"pwned-{uuid.uuid4().hex}"
    member = "../" * 16 + str(target).lstrip("/")
    links = tmp_path / "links"
    links.mkdir()
    with zipfile.ZipFile(links / "grocker_test_evil-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("grocker_test_evil/__init__.py", "")
        zf.writestr(member, "pwned\n")
        dist = "grocker_test_evil-1.0.dist-info"
        zf.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: grocker-test-evil\nVersion: 1.0\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/top_level.txt", "grocker_test_evil\n")
        zf.writestr(f"{dist}/RECORD", f"grocker_test_evil/__init__.py,,\n{member},,\n{dist}/RECORD,,\n")
    project = python_project(tmp_path / "trusting", "trusting-app", deps=["grocker-test-evil"])
    tag = f"grocker-test/trusting-app:{uuid.uuid4().hex[:8]}"
    find_links = " ".join(filter(None, [os.environ.get("PIP_FIND_LINKS", ""), str(links)]))
    try:
        run = grocker("build", str(project), "--tag", tag, env={"PIP_FIND_LINKS": find_links},
                      report=tmp_path / "r.json")
        assert run.code == ImageBuildError.exit_code, run.err[-3000:]
        line = error_line(run.err)
        assert "wheel grocker_test_evil-1.0-py3-none-any.whl would write outside" in line
        assert repr(member) in line
        assert not target.exists()
        assert_untagged(client, tag)
        assert not (project / ".grocker" / "state.json").exists()
    finally:
        target.unlink(missing_ok=True)
        remove_images(client, tag)  # only there when the test fails


def test_missing_base_image_names_bootstrap_base(client: docker.DockerClient, package) -> None:
    project = package("broken-import")
    run = grocker("build", str(project), "--base-image", "grocker-test/no-such-base:1")
    assert run.code == BaseImageError.exit_code
    line = error_line(run.err)
    assert "base image 'grocker-test/no-such-base:1' is not in the engine and could not be pulled" in line
    assert "grocker bootstrap-base" in line


def test_engine_unreachable(package, tmp_path: Path) -> None:
    project = package("broken-import")
    run = grocker("build", str(project), env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    assert run.code == EngineUnavailable.exit_code
    line = error_line(run.err)
    assert "no Docker Engine answers" in line and "dockerd" in line


def test_system_package_that_does_not_exist(client: docker.DockerClient, package) -> None:
    project = package("broken-import")
    (project / "grocker.toml").write_text('[system-packages]\nrun = ["grocker-no-such-package"]\n')
    (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text())
    run = grocker("build", str(project))
    assert run.code == ImageBuildError.exit_code
    line = error_line(run.err)
    assert "system package grocker-no-such-package does not exist" in line


@pytest.mark.parametrize("name, script", [("hatch-app", "hatch-app"), ("flit-app", "flit-app"),
                                          ("poetry-app", "poetry-app")])
def test_any_pep517_backend(client: docker.DockerClient, package, tmp_path: Path, name: str, script: str) -> None:
    project = package(name)
    tag = f"grocker-test/{name}:1"
    run = grocker("build", str(project), "--tag", tag, report=tmp_path / "r.json")
    try:
        assert run.code == 0, run.err[-3000:]
        assert run.project["status"] == "built"
        assert f"{script} works" in client.containers.run(tag, [script], remove=True).decode()
    finally:
        try:
            client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass


def test_vcs_versioned_project_gets_its_git_version(client: docker.DockerClient, package, tmp_path: Path) -> None:
    import subprocess

    project = package("scm-app")
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    subprocess.run([*git, "tag", "v1.4.2"], check=True)
    run = grocker("build", str(project), report=tmp_path / "r.json")
    try:
        assert run.code == 0, run.err[-3000:]
        assert run.project["version"] == "1.4.2"
        assert run.project["image"] == "scm-app:1.4.2"
        revision = subprocess.run(["git", "-C", str(project), "rev-parse", "HEAD"], capture_output=True,
                                  text=True, check=True).stdout.strip()
        assert run.project["tags"] == ["scm-app:1.4.2", f"scm-app:1.4.2-g{revision[:12]}"]
        assert client.containers.run("scm-app:1.4.2", ["scm-app"], remove=True).decode().strip() == "scm-app 1.4.2"
    finally:
        for tag in client.images.list(name="scm-app"):
            client.images.remove(tag.id, force=True)


NEEDS_NETWORK = '''"""A server that needs a network to start (a route out of its container), then serves."""
import socket
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, the kernel only needs a route
except OSError as exc:
    sys.exit(f"no network: {exc}")
ThreadingHTTPServer(("0.0.0.0", 8000), SimpleHTTPRequestHandler).serve_forever()
'''


def test_a_server_listening_on_loopback_alone_fails_its_smoke_test(client: docker.DockerClient,
                                                                  tmp_path: Path) -> None:
    """It answers a probe made from inside its container, and no user: the smoke test says so."""
    project = python_project(tmp_path / "p", "loopback-app", grocker=(
        '[tool.grocker.commands]\nserver = "python -m http.server 8000 --bind 127.0.0.1"\n'
        "[tool.grocker.smoke-test]\nport = 8000\n"))
    tag = f"grocker-test/loopback-app:{uuid.uuid4().hex[:8]}"
    run = grocker("build", str(project), "--tag", tag, report=tmp_path / "r.json")
    assert run.code == SmokeTestError.exit_code, run.err[-3000:]
    line = error_line(run.err)
    assert "answered the probe but the server listens on 127.0.0.1:8000 only" in line, line
    assert "make it listen on 0.0.0.0:8000" in line
    assert_untagged(client, tag)


def test_the_smoke_test_server_has_no_network_unless_configured(client: docker.DockerClient,
                                                               tmp_path: Path) -> None:
    """``smoke-test.network``: none by default (the server cannot reach anything), a Docker network when set."""
    grocker_table = ('[tool.grocker.commands]\nserver = "python -m needs_network.serve"\n'
                     "[tool.grocker.smoke-test]\nport = 8000\ntimeout = 20\n")
    project = python_project(tmp_path / "p", "needs-network", grocker=grocker_table,
                             modules={"__init__.py": "", "serve.py": NEEDS_NETWORK})
    tag = f"grocker-test/needs-network:{uuid.uuid4().hex[:8]}"
    try:
        run = grocker("build", str(project), "--tag", tag, report=tmp_path / "r.json")
        assert run.code == SmokeTestError.exit_code, run.err[-3000:]
        assert "'server' command exited with code 1 before answering the HTTP probe" in error_line(run.err)
        assert "no network: [Errno 101] Network is unreachable" in run.err
        assert_untagged(client, tag)
        (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text().replace(
            "timeout = 20\n", 'timeout = 20\nnetwork = "bridge"\n'))
        run = grocker("build", str(project), "--tag", tag, report=tmp_path / "r.json")
        assert run.code == 0, run.err[-3000:]
        assert client.images.get(tag)
    finally:
        remove_images(client, tag)
