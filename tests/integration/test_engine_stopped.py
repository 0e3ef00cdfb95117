"""The Docker Engine killed in the middle of a build, then started again.

It restarts dockerd, so it is marked ``restarts_engine``: tests/conftest.py runs such tests
after every other test, whatever the file names and the order they are given in. The new
daemon's pid goes to the pid file that scripts/setup.sh keeps, so scripts/test.sh still stops
the engine it started.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import docker
import pytest

from setuptools_grocker.errors import EngineUnavailable
from tests.helpers import GROCKER, grocker, remove_images

pytestmark = pytest.mark.restarts_engine

STATE_DIR = Path(os.environ.get("DEV_STATE_DIR", "/var/tmp/setuptools-grocker"))


def engine_answers() -> bool:
    return subprocess.run(["docker", "version"], capture_output=True, timeout=20).returncode == 0


def dockerd_pid() -> int:
    out = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    assert out, "no dockerd process: this test stops and restarts the engine the suite runs on"
    return int(out[0])


def engine_processes() -> list[int]:
    """dockerd and the containerd it manages (the new daemon cannot start until both are gone)."""
    out = subprocess.run(["pgrep", "-f", r"^(dockerd|containerd --config /var/run/docker/containerd)"],
                         capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def start_dockerd() -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a new daemon can race the old containerd's exit: try again
        for _ in range(120):
            if not engine_processes():
                break
            time.sleep(0.5)
        Path("/var/run/docker.pid").unlink(missing_ok=True)
        # Started as scripts/setup.sh does (detached: it outlives this test).
        started = subprocess.run(["sh", "-c", f"nohup dockerd --host unix:///var/run/docker.sock "
                                              f">>'{STATE_DIR}/dockerd.log' 2>&1 & echo $!"],
                                 capture_output=True, text=True, check=True)
        pid = int(started.stdout.strip())
        (STATE_DIR / "dockerd.pid").write_text(f"{pid}\n")
        for _ in range(120):
            if engine_answers():
                return
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
    pytest.fail("dockerd did not come back")


def test_engine_stopped_during_a_build_then_a_normal_build(tmp_path: Path, examples_copy: Path,
                                                           run_id: str) -> None:
    shutil.copytree(examples_copy, tmp_path / "ex", ignore=shutil.ignore_patterns(".grocker"))
    project = tmp_path / "ex" / "demo-app"
    tag = f"grocker-test/engine-stop:{run_id}"
    client = docker.from_env()
    owned = {"label": "io.grocker.owner=setuptools-grocker"}
    before = {c.id for c in client.containers.list(all=True, filters=owned)}
    dockerd_pid_before = 0
    proc = subprocess.Popen([*GROCKER, "build", str(project), "--tag", tag, "--no-cache"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait for the compile container
            if [c for c in client.containers.list(filters=owned) if c.id not in before]:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the build never started a container")
        client.close()  # before the engine goes: nothing left to read on a dead socket
        dockerd_pid_before = dockerd_pid()
        # Killed, daemon and its containerd: the API is gone at once. (A SIGTERM lets dockerd serve while it
        # stops its containers, up to its shutdown timeout: a build of a few seconds then ends first.)
        for pid in engine_processes():
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    finally:
        client.close()
        for _ in range(120):  # let the daemon finish its shutdown before judging
            if not [p for p in engine_processes() if p == dockerd_pid_before]:
                break
            time.sleep(0.5)
        if not engine_answers():
            start_dockerd()
    assert proc.returncode == EngineUnavailable.exit_code, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("grocker: error:")]
    assert len(lines) == 1 and "Docker Engine" in lines[0] and "dockerd" in lines[0], err[-2000:]
    client = docker.from_env()  # a new connection: the first one died with the engine
    try:
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(tag)
        again = grocker("build", str(project), "--tag", tag, report=tmp_path / "again.json")
        assert again.code == 0, again.err[-3000:]
        assert again.project["status"] == "built"
        assert "check: passed" in client.containers.run(tag, ["check"], remove=True).decode()
    finally:
        remove_images(client, tag)
        client.close()
