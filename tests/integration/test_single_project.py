"""The single-project pipeline on the real engine, with the example application."""
from __future__ import annotations

import io
import json
import tarfile
import time
import urllib.request
from pathlib import Path

import docker
import pytest

from tests.helpers import Run, container_starts, grocker, remove_images, setup_py


def http_get(url: str, timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return resp.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_report_describes_the_build(demo_build: Run, run_id: str) -> None:
    report = demo_build.report
    assert report is not None and report["ok"] is True and report["seconds"] > 0
    p = demo_build.project
    assert p["name"] == "grocker-demo-app" and p["version"] == "0.3.0"
    assert (p["kind"], p["status"], p["error"]) == ("application", "built", None)
    assert p["image"] == f"grocker-test/demo-app:{run_id}"
    assert p["image_id"].startswith("sha256:")
    assert p["wheel"].endswith("grocker_demo_app-0.3.0-py3-none-any.whl") and Path(p["wheel"]).is_file()
    assert p["depends_on"] == [] and p["digest"] is None and p["seconds"] > 0
    names = [d.split("==")[0] for d in p["distributions"]]
    assert names == ["grocker-demo-app", "grocker-demo-lib", "packaging"]
    assert {"compile", "image", "smoke test"} <= set(p["stages"])


def test_labels_name_contents(client: docker.DockerClient, demo_build: Run) -> None:
    labels = client.images.get(demo_build.project["image"]).labels
    assert labels["org.opencontainers.image.title"] == "grocker-demo-app"
    assert labels["org.opencontainers.image.version"] == "0.3.0"
    assert json.loads(labels["io.grocker.distributions"]) == demo_build.project["distributions"]
    assert labels["io.grocker.default-command"] == "server"


def test_server_answers_runs_as_non_root_and_reads_env_files(
        client: docker.DockerClient, demo_build: Run, tmp_path: Path) -> None:
    config = tmp_path / "conf"
    config.mkdir()
    (config / "10-app.env").write_text("# mounted from outside\nexport GREETING='Bonjour'\n")
    container = client.containers.run(demo_build.project["image"], detach=True,
                                      ports={"8000/tcp": ("127.0.0.1", None)},
                                      volumes={str(config): {"bind": "/config", "mode": "ro"}})
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostPort"]
        data = json.loads(http_get(f"http://127.0.0.1:{port}/"))
        assert data["greeting"] == "Bonjour"
        assert data["uid"] != 0
        assert data["libyaml"].startswith("0.2")
        assert http_get(f"http://127.0.0.1:{port}/health") == b"ok\n"
        start = time.monotonic()
        container.stop(timeout=10)
        assert time.monotonic() - start < 10
        container.reload()
        # 143 = SIGTERM reached the server; 137 would mean docker had to SIGKILL it.
        assert container.attrs["State"]["ExitCode"] in (0, 143)
    finally:
        container.remove(force=True)


def test_env_given_to_the_container_wins_over_env_files(
        client: docker.DockerClient, demo_build: Run, tmp_path: Path) -> None:
    config = tmp_path / "conf"
    config.mkdir()
    (config / "a.env").write_text("GREETING=from-file\nWORK_ITEMS=1\n")
    out = client.containers.run(demo_build.project["image"], ["run", "sh", "-c", "echo $GREETING $WORK_ITEMS"],
                                environment={"GREETING": "from-env"}, remove=True,
                                volumes={str(config): {"bind": "/config", "mode": "ro"}})
    assert out.decode().split() == ["from-env", "1"]


def test_entrypoint_commands(client: docker.DockerClient, demo_build: Run) -> None:
    image = demo_build.project["image"]
    assert b"check: passed" in client.containers.run(image, ["check"], remove=True)
    assert b"demo-app-server --port ${PORT}" in client.containers.run(image, ["help"], remove=True)
    assert b"worker: item 2" in client.containers.run(image, ["worker"], remove=True)
    assert b"Hello, Hello!" in client.containers.run(image, ["run", "demo-app"], remove=True)
    assert client.containers.run(image, ["id", "-u"], remove=True).strip() == b"10001"
    with pytest.raises(docker.errors.ContainerError) as info:
        client.containers.run(image, ["no-such-program"], remove=True)
    assert info.value.exit_status == 127


def test_runtime_user_cannot_write_the_venv(client: docker.DockerClient, demo_build: Run) -> None:
    with pytest.raises(docker.errors.ContainerError):
        client.containers.run(demo_build.project["image"], ["sh", "-c", "touch /opt/app/venv/x"], remove=True)


def test_config_dir_is_roots_so_the_app_cannot_drop_an_env_file(client: docker.DockerClient,
                                                               demo_build: Run) -> None:
    image = demo_build.project["image"]
    # As the image's user (the app): /config is readable, but not writable.
    assert client.containers.run(image, ["stat", "-c", "%U %G %a", "/config"], remove=True).split() == \
        [b"root", b"root", b"755"]
    with pytest.raises(docker.errors.ContainerError) as info:
        client.containers.run(image, ["sh", "-c", "echo PATH=/tmp > /config/99-evil.env"], remove=True)
    assert b"Permission denied" in info.value.stderr


FORBIDDEN = ("bin/gcc", "bin/cc", "bin/x86_64-linux-gnu-gcc-12", "bin/c++", "bin/ld")


def test_no_compiler_wheel_pip_cache_or_pip_config_in_any_layer(
        client: docker.DockerClient, demo_build: Run) -> None:
    image = client.images.get(demo_build.project["image"])
    archive = io.BytesIO(b"".join(image.save()))
    names: list[str] = []
    with tarfile.open(fileobj=archive) as outer:
        layers = [m for m in outer.getmembers() if m.name.endswith("layer.tar") or m.name.startswith("blobs/")]
        assert layers
        for member in layers:
            fh = outer.extractfile(member)
            if fh is None:
                continue
            try:
                with tarfile.open(fileobj=io.BytesIO(fh.read())) as layer:
                    names += layer.getnames()
            except tarfile.ReadError:
                continue  # a config blob, not a layer
    assert any(n.endswith("site-packages/grocker_demo_lib/__init__.py") for n in names)
    assert not [n for n in names if n.endswith(".whl")]
    assert not [n for n in names if n.endswith(FORBIDDEN)]
    assert not [n for n in names if "/.cache/pip" in n or n.endswith(("pip.conf", ".netrc"))]
    assert not [n for n in names if "opt/app/venv/bin/pip" in n]


def test_second_build_is_cached_without_starting_a_container(
        client: docker.DockerClient, demo_build: Run, examples_copy: Path, tmp_path: Path) -> None:
    time.sleep(1.1)
    since = time.time()
    start = time.monotonic()
    run = grocker("build", str(examples_copy / "demo-app"), "--tag", demo_build.project["image"],
                  report=tmp_path / "r.json")
    elapsed = time.monotonic() - start
    assert run.code == 0, run.err
    assert run.project["status"] == "cached"
    assert run.project["image_id"] == demo_build.project["image_id"]
    assert run.project["containers_started"] == 0
    assert container_starts(client, since) == 0
    assert elapsed < 30  # a sanity bound; the real figure is in the benchmark


def test_setup_py_command_gives_the_same_image(
        client: docker.DockerClient, demo_build: Run, examples_copy: Path, tmp_path: Path) -> None:
    project = examples_copy / "demo-app"
    # Same inputs: the setuptools command finds the image grocker build made.
    proc = setup_py(project, "--tag", demo_build.project["image"], "--report", str(tmp_path / "a.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    same = json.loads((tmp_path / "a.json").read_text())["projects"][0]
    assert same["status"] == "cached" and same["image_id"] == demo_build.project["image_id"]
    assert same["key"] == demo_build.project["key"]
    # Forced rebuild through setup.py: same contents and labels as grocker build's image.
    other = "grocker-test/demo-app-setuppy:1"
    try:
        proc = setup_py(project, "--tag", other, "--no-cache", "--report", str(tmp_path / "b.json"))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        rebuilt = json.loads((tmp_path / "b.json").read_text())["projects"][0]
        assert rebuilt["status"] == "built"
        assert rebuilt["distributions"] == demo_build.project["distributions"]
        a = client.images.get(demo_build.project["image"]).labels
        b = client.images.get(other).labels
        assert a == b
        listing = ["sh", "-c", "cd /opt/app && find . -type f ! -name '*.pyc' | sort | xargs sha256sum"]
        assert (client.containers.run(demo_build.project["image"], listing, remove=True)
                == client.containers.run(other, listing, remove=True))
    finally:
        remove_images(client, other)


def test_push_reports_the_registry_digest(client: docker.DockerClient, demo_build: Run, examples_copy: Path,
                                          registry: str, tmp_path: Path) -> None:
    ref = f"{registry}/grocker-test/demo-app:pushed"
    run = grocker("build", str(examples_copy / "demo-app"), "--tag", ref, "--push", report=tmp_path / "r.json")
    try:
        assert run.code == 0, run.err[-3000:]
        digest = run.project["digest"]
        assert digest and digest.startswith("sha256:")
        assert run.project["status"] in ("cached", "built")
        req = urllib.request.Request(f"http://{registry}/v2/grocker-test/demo-app/manifests/pushed", method="HEAD",
                                     headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.headers["Docker-Content-Digest"] == digest
    finally:
        remove_images(client, ref)


def test_restrictive_umask_still_gives_a_readable_entrypoint(client: docker.DockerClient, examples_copy: Path,
                                                             tmp_path: Path) -> None:
    """Daemonised CI workers run with umask 077; the image must not inherit it."""
    import subprocess
    import sys

    ref = "grocker-test/umask:1"
    proc = subprocess.run(["sh", "-c", f'umask 077 && exec "{sys.executable}" -m setuptools_grocker build '
                           f'"{examples_copy / "demo-app"}" --tag {ref} --no-cache'], capture_output=True, text=True)
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert b"check: passed" in client.containers.run(ref, ["check"], remove=True)
    finally:
        remove_images(client, ref)


def test_diff_between_two_real_images(client: docker.DockerClient, demo_build: Run, examples_copy: Path,
                                      tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "examples"
    shutil.copytree(examples_copy, other, ignore=shutil.ignore_patterns(".grocker"))
    (other / "demo-app" / "constraints.txt").write_text("packaging==24.0\n")
    with (other / "demo-app" / "grocker.toml").open("r+") as fh:
        text = fh.read()
        fh.seek(0)
        fh.write('constraints = "constraints.txt"\n' + text)
    ref = "grocker-test/demo-app:older-packaging"
    run = grocker("build", str(other / "demo-app"), "--tag", ref, report=tmp_path / "r.json")
    try:
        assert run.code == 0, run.err[-3000:]
        out = grocker("diff", demo_build.project["image"], ref, "--json")
        assert out.code == 0, out.err
        data = json.loads(out.out)
        new = dict(d.split("==") for d in demo_build.project["distributions"])
        assert data["changed"] == {"packaging": {"from": new["packaging"], "to": "24.0"}}
        assert data["added"] == {} and data["removed"] == {} and data["unchanged"] == 2
        # Read from the two SBOMs: the same source gives the same wheel (no rebuild), the same root.
        assert data["source"] == "sbom" and data["rebuilt"] == {}
        debian = data["debian"]
        assert debian["added"] == debian["removed"] == debian["changed"] == {} and debian["unchanged"] > 50
        missing = grocker("diff", ref, "grocker-test/no-such:1")
        assert missing.code == 1 and "grocker-test/no-such:1 is not in the engine" in missing.err
    finally:
        remove_images(client, ref)


def test_moving_tags_follow_the_image(client: docker.DockerClient, demo_build: Run, examples_copy: Path,
                                      tmp_path: Path) -> None:
    import datetime

    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
    run = grocker("build", str(examples_copy / "demo-app"), "--tag", demo_build.project["image"],
                  report=tmp_path / "r.json", env={"GROCKER_MOVING_TAGS": "latest,nightly-{date}"})
    repo = demo_build.project["image"].rsplit(":", 1)[0]
    try:
        assert run.code == 0, run.err[-3000:]
        assert run.project["tags"] == [demo_build.project["image"], f"{repo}:latest", f"{repo}:nightly-{today}"]
        for tag in run.project["tags"]:
            assert client.images.get(tag).id == run.project["image_id"]
    finally:
        remove_images(client, f"{repo}:latest", f"{repo}:nightly-{today}")


def test_build_code_of_one_project_cannot_reach_the_pip_cache_of_another(client: docker.DockerClient,
                                                                         tmp_path: Path, run_id: str) -> None:
    """The compile container's pip cache is writable: it must belong to one trust scope only.

    Project A's setup.py (build code, run in A's compile container) plants a file in
    $PIP_CACHE_DIR, where a real attack would swap a cached wheel; project B's setup.py fails
    its build when it can see any of it.
    """
    from setuptools_grocker.pipeline.caches import pip_cache_dir
    from tests.helpers import python_project

    cache_home = tmp_path / "cache-home"
    plant = f"planted-{run_id}"
    app = '[tool.grocker.commands]\nhello = "python -c pass"\n'
    a = python_project(tmp_path / "a", "plant-a", grocker=app)
    (a / "setup.py").write_text(
        "import os, pathlib\nfrom setuptools import setup\n"
        "cache = os.environ['PIP_CACHE_DIR']\n"
        f"pathlib.Path(cache, {plant!r}).write_text('a wheel of my choosing')\n"
        f"pathlib.Path(cache, 'wheels', {plant!r}).mkdir(parents=True, exist_ok=True)\n"
        "setup()\n")
    b = python_project(tmp_path / "b", "victim-b", grocker=app)
    (b / "setup.py").write_text(
        "import os, pathlib\nfrom setuptools import setup\n"
        "cache = pathlib.Path(os.environ['PIP_CACHE_DIR'])\n"
        f"seen = sorted(str(p) for p in cache.rglob({plant!r}))\n"
        "if seen:\n    raise SystemExit('the other project planted ' + seen[0])\n"
        "setup()\n")
    env = {"GROCKER_CACHE_HOME": str(cache_home)}
    tags = [f"grocker-test/plant-a:{run_id}", f"grocker-test/victim-b:{run_id}"]
    try:
        run_a = grocker("build", str(a), "--tag", tags[0], env=env)
        assert run_a.code == 0, run_a.err[-3000:]
        # The plant is there, in A's own cache.
        assert (pip_cache_dir(env, a) / plant).is_file()
        run_b = grocker("build", str(b), "--tag", tags[1], env=env)
        assert run_b.code == 0, run_b.err[-3000:]
        assert pip_cache_dir(env, b) != pip_cache_dir(env, a)
        assert pip_cache_dir(env, b).is_dir() and not list(pip_cache_dir(env, b).rglob(plant))
    finally:
        remove_images(client, *tags)
