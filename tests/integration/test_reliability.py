"""Bad input, faults and secrets (docs/reliability.md lists every case and its outcome).

Each bad input gets one ``grocker: error:`` line naming the problem and the fix, the exit code
of its class, and leaves nothing tagged or cached; each fault is followed by a normal build
that must succeed with a correct cache; no secret given to the compile stage reaches an image
layer, a label, the report or the output.
"""
from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import docker
import pytest

from setuptools_grocker.engine import engine_time
from setuptools_grocker.engine.ownership import (
    LEASE_LABEL,
    OWNER_LABEL,
    PID_LABEL,
    PROCESS_LABEL,
    RUN_LABEL,
    lease_name,
)
from setuptools_grocker.errors import (
    BaseImageError,
    CompileError,
    GrockerError,
    ProjectError,
    RegistryError,
    SmokeTestError,
)
from tests.helpers import (
    BASE_IMAGE,
    GROCKER,
    empty_index,
    free_port,
    generate,
    grocker,
    python_project,
    remove_images,
    start_registry,
)

SECRET = "s3cr3t-t0ken-4f9a1c"


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("grocker: error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def write_project(root: Path, name: str, *, deps: list[str] = (), commands: dict[str, str] | None = None,
                  extra: str = "") -> Path:
    cmds = "".join(f'{k} = "{v}"\n' for k, v in (commands or {"hello": "python -c pass"}).items())
    return python_project(root, name, deps=deps, grocker=f"[tool.grocker]\n{extra}\n[tool.grocker.commands]\n{cmds}")


def assert_not_tagged(client: docker.DockerClient, ref: str) -> None:
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(ref)


# -- secrets ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def secret_build(tmp_path_factory: pytest.TempPathFactory, examples_copy: Path, run_id: str,
                 client: docker.DockerClient):
    """demo-app built while the compile stage holds a credential (an extra index URL with a token)."""
    work = tmp_path_factory.mktemp("secret")
    shutil.copytree(examples_copy, work / "ex", ignore=shutil.ignore_patterns(".grocker"))
    tag = f"grocker-test/secret-app:{run_id}"
    with empty_index(client, work / "empty-index") as index:
        env = {"PIP_EXTRA_INDEX_URL": f"http://__token__:{SECRET}@{index}/simple/",
               "PIP_RETRIES": "0", "PIP_TIMEOUT": "5"}
        try:
            # -v: the engine's commands and pip's output on stderr as well as in the log file.
            run = grocker("build", str(work / "ex" / "demo-app"), "--tag", tag, "--no-cache", "-v", env=env,
                          report=work / "report.json")
            assert run.code == 0, run.err[-3000:]
            yield run, tag, work
        finally:
            remove_images(client, tag)


def image_files(client: docker.DockerClient, ref: str) -> tuple[list[tuple[str, bytes]], list[bytes]]:
    """Every file of every layer of ``ref`` (path, content), and the image's JSON documents."""
    data = b"".join(client.images.get(ref).save(named=True))
    files: list[tuple[str, bytes]] = []
    documents: list[bytes] = []
    with tarfile.open(fileobj=io.BytesIO(data)) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            blob = outer.extractfile(member).read()
            if member.name.endswith("layer.tar") or member.name.startswith("blobs/"):
                try:
                    with tarfile.open(fileobj=io.BytesIO(blob)) as layer:
                        for entry in layer.getmembers():
                            content = layer.extractfile(entry).read() if entry.isfile() else b""
                            files.append((entry.name, content))
                    continue
                except tarfile.TarError:
                    pass
            documents.append(blob)
    return files, documents


def test_no_layer_label_report_or_log_holds_the_secret(secret_build, client: docker.DockerClient) -> None:
    run, tag, work = secret_build
    files, documents = image_files(client, tag)
    assert len(files) > 1000
    leaking = [name for name, content in files if SECRET.encode() in content]
    assert leaking == []
    assert all(SECRET.encode() not in doc for doc in documents)  # image config: labels, env, history
    assert SECRET not in json.dumps(client.images.get(tag).attrs)
    assert SECRET not in (work / "report.json").read_text()
    assert SECRET not in run.out and SECRET not in run.err
    assert "__token__:***@" in run.err or "PIP_EXTRA_INDEX_URL=***" in run.err  # shown, redacted
    logs = list((work / "ex" / "demo-app" / ".grocker" / "logs").glob("*.log"))
    assert len(logs) == 1
    log = logs[0].read_text()
    assert SECRET not in log and ("__token__:***@" in log or "PIP_EXTRA_INDEX_URL=***" in log)


def test_runtime_image_holds_no_build_material(secret_build, client: docker.DockerClient) -> None:
    _, tag, _ = secret_build
    files, _ = image_files(client, tag)
    names = [name for name, _ in files]
    base = [n.rsplit("/", 1)[-1] for n in names]
    assert not [n for n in names if n.endswith(".whl")], "a wheel file in the image"
    assert not [n for n in base if n in ("pip.conf", "pip.ini", ".netrc", ".pypirc")]
    assert not [n for n in names if "/.cache/pip/" in n or n.startswith(("root/.cache/", "tmp/grocker"))]
    compilers = [n for n in names if n.startswith("usr/bin/") and
                 n.rsplit("/", 1)[-1].split("-")[-1] in ("gcc", "cc", "c++", "g++", "clang", "as", "ld")]
    assert compilers == []
    assert not [n for n in names if n.startswith("usr/include/python3")]
    # The user and the venv: not root, and the venv is not writable by the app.
    config = client.images.get(tag).attrs["Config"]
    assert config["User"] not in ("", "root", "0")
    out = client.containers.run(tag, ["run", "sh", "-c", "id -u; touch /opt/app/venv/x 2>&1 || echo denied"],
                                remove=True).decode()
    assert out.split()[0] != "0" and "denied" in out


# -- bad input ------------------------------------------------------------------------------------

def test_requirement_not_on_the_index(tmp_path: Path, client: docker.DockerClient) -> None:
    project = write_project(tmp_path / "p", "needs-ghost", deps=["grocker-no-such-distribution-xyz"])
    run = grocker("build", str(project), "--tag", "grocker-test/needs-ghost:1")
    assert run.code == CompileError.exit_code, run.err[-2000:]
    line = error_line(run.err)
    assert "grocker-no-such-distribution-xyz" in line
    assert_not_tagged(client, "grocker-test/needs-ghost:1")
    assert not (project / ".grocker" / "state.json").exists()


def test_command_whose_program_is_not_in_the_image(tmp_path: Path, client: docker.DockerClient) -> None:
    project = write_project(tmp_path / "p", "ghost-cmd", commands={"server": "grocker-no-such-program --port 1"})
    run = grocker("build", str(project), "--tag", "grocker-test/ghost-cmd:1")
    assert run.code == SmokeTestError.exit_code, run.err[-2000:]
    line = error_line(run.err)
    assert "grocker-no-such-program" in line and "not found in the image" in line
    assert_not_tagged(client, "grocker-test/ghost-cmd:1")


def test_smoke_test_port_taken_on_the_host_is_no_problem(tmp_path: Path, client: docker.DockerClient) -> None:
    """The probe runs inside the server's container, nothing is published: a server already on the app's port on the
    host does not matter."""
    project = tmp_path / "p"
    write_project(project, "port-taken", commands={"server": "python -m http.server 8000"},
                  extra="[tool.grocker.smoke-test]\nport = 8000\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        text = (project / "pyproject.toml").read_text().replace("8000", str(port))
        (project / "pyproject.toml").write_text(text)
        run = grocker("build", str(project), "--tag", "grocker-test/port-taken:1")
    try:
        assert run.code == 0, run.err[-2000:]
    finally:
        remove_images(client, "grocker-test/port-taken:1")


def test_metadata_that_cannot_be_prepared(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "setup.py").write_text("raise SystemExit('this setup.py is broken on purpose')\n")
    # One project: its metadata comes from the build in the compiler container.
    run = grocker("build", str(project))
    assert run.code == CompileError.exit_code, run.err[-2000:]
    assert "broken on purpose" in error_line(run.err)
    # A workspace member: the graph needs its metadata before anything is built.
    ws = tmp_path / "ws"
    (ws / "libs").mkdir(parents=True)
    shutil.copytree(project, ws / "libs" / "broken")
    (ws / "pyproject.toml").write_text('[tool.grocker.workspace]\nmembers = ["libs/*"]\n')
    run = grocker("workspace", "build", str(ws))
    assert run.code == ProjectError.exit_code, run.err[-2000:]
    assert "cannot prepare the metadata" in error_line(run.err)
    assert not (ws / ".grocker" / "members").exists()


def test_base_image_without_python(tmp_path: Path, client: docker.DockerClient, run_id: str) -> None:
    ref = f"grocker-test/no-python:{run_id}"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM debian:bookworm-slim\nRUN rm -f /usr/bin/python3* /usr/bin/apt*\n")
    client.images.build(path=str(ctx), tag=ref, rm=True)
    try:
        project = write_project(tmp_path / "p", "on-no-python")
        run = grocker("build", str(project), "--base-image", ref)
        assert run.code == BaseImageError.exit_code, run.err[-2000:]
        assert "no Python" in error_line(run.err)
    finally:
        remove_images(client, ref)


def test_registry_refusing_a_push(tmp_path: Path, examples_copy: Path, client: docker.DockerClient) -> None:
    """A registry in read-only (maintenance) mode refuses the push: one line, nothing moved."""
    port = free_port()
    store = tmp_path / "registry"
    store.mkdir()
    proc = start_registry(store, port)
    proc.terminate()
    proc.wait(timeout=20)
    config = store / "config.yml"
    config.write_text(config.read_text().replace("  delete:\n", "  maintenance:\n    readonly:\n      enabled: true\n"
                                                                 "  delete:\n"))
    assert "readonly" in config.read_text()
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    shutil.copytree(examples_copy, tmp_path / "ex", ignore=shutil.ignore_patterns(".grocker"))
    image = ""
    try:
        time.sleep(1.5)
        run = grocker("build", str(tmp_path / "ex" / "demo-app"), "--push",
                      env={"GROCKER_REGISTRY": f"127.0.0.1:{port}"}, report=tmp_path / "r.json")
        assert run.code == RegistryError.exit_code, run.err[-2000:]
        assert error_line(run.err).startswith("grocker: error: pushing ")
        image = run.project.get("image") or ""
        assert run.project["digest"] is None
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if image:
            remove_images(client, image)


# -- faults -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_point_then_a_normal_build(seed: int, tmp_path: Path,
                                                       client: docker.DockerClient) -> None:
    root = tmp_path / "ws"
    graph = generate(root, libs=2, apps=1, levels=2, prefix=f"kill{seed}-")
    delay = random.Random(seed).uniform(0.5, 25.0)
    proc = subprocess.Popen([*GROCKER, "workspace", "build", str(root), "--jobs", "2"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    try:
        again = grocker("workspace", "build", str(root), "--jobs", "2", report=tmp_path / "again.json")
        assert again.code == 0, (delay, again.err[-3000:])
        noop = grocker("workspace", "build", str(root), report=tmp_path / "noop.json")
        assert noop.code == 0
        assert {p["status"] for p in noop.report["projects"]} == {"cached"}
        assert noop.report["containers_started"] == 0
        app = next(iter(graph["applications"]))
        out = client.containers.run(f"{app}:2.0.0", ["check"], remove=True).decode()
        assert "check: passed" in out
        # Nothing of the killed build is left running.
        owned = client.containers.list(all=True, filters={"label": "io.grocker.owner=setuptools-grocker"})
        assert not [c for c in owned if c.labels.get("io.grocker.pid", "").endswith(f":{proc.pid}")]
    finally:
        remove_images(client, *(f"{a}:2.0.0" for a in graph["applications"]))


# -- the orphan reaper and other grocker processes sharing the engine --------------------------------

REAP = [sys.executable, "-c", "from setuptools_grocker.engine import Engine\n"
        "with Engine() as engine:\n    print(engine.reap_orphans())"]


def free_pid() -> int:
    """A pid that no process of this host has (nor the next one)."""
    taken = {int(p) for p in os.listdir("/proc") if p.isdigit()}
    return next(p for p in range(500, 4_000_000) if p not in taken and p + 1 not in taken)


def test_reaper_spares_a_live_build_of_another_pid_namespace(tmp_path: Path, client: docker.DockerClient,
                                                             run_id: str) -> None:
    """A grocker in another PID namespace (a containerised CI worker) has pids that are dead here.

    Its compile container must survive the reaper of a grocker of this namespace, and its
    build must finish.
    """
    project = write_project(tmp_path / "slow", "slow-build")
    (project / "setup.py").write_text("import sys, time\nfrom setuptools import setup\n"
                                      "if 'bdist_wheel' in sys.argv:\n    time.sleep(10)\nsetup()\n")
    tag = f"grocker-test/slow-build:{run_id}"
    pid = free_pid()
    owned = {"label": OWNER_LABEL}
    before = {c.id for c in client.containers.list(all=True, filters=owned)}
    # The grocker process gets pid PID in its namespace (ns_last_pid is the last pid handed out).
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c",
                             f'echo {pid - 1} > /proc/sys/kernel/ns_last_pid && "$@"; exit $?', "sh",
                             *GROCKER, "build", str(project), "--tag", tag],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            # A compile container of the run, not a warm one (which no reaper removes).
                            env={**os.environ, "GROCKER_WARM_IDLE": "0"})
    try:
        deadline = time.monotonic() + 300
        compile_container = None
        while compile_container is None and time.monotonic() < deadline and proc.poll() is None:
            for c in client.containers.list(filters=owned):
                if c.id not in before and c.labels.get(PID_LABEL) == f"{socket.gethostname()}:{pid}":
                    compile_container = c
            time.sleep(0.3)
        assert compile_container is not None, "the build in the other namespace started no container"
        assert not os.path.exists(f"/proc/{pid}"), "the other namespace's pid must be dead here"
        reaper = subprocess.run(REAP, capture_output=True, text=True, timeout=120)
        assert reaper.returncode == 0, reaper.stderr
        compile_container.reload()  # still there (NotFound otherwise)
        assert compile_container.status == "running"
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        assert client.images.get(tag)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        remove_images(client, tag)


def test_reaper_removes_exactly_the_runs_whose_lease_expired(client: docker.DockerClient) -> None:
    """Runs of another machine (same host name, pids that mean nothing here) are judged by their lease."""
    elsewhere = "00000000-0000-0000-0000-000000000000/pid:[4026531836]/4242/1"
    host_pid = f"{socket.gethostname()}:{free_pid()}"
    now = engine_time(client)
    runs = {what: uuid.uuid4().hex for what in ("fresh", "expired", "without-lease")}
    made: list[docker.models.containers.Container] = []

    def labels(**extra: str) -> dict[str, str]:
        return {OWNER_LABEL: "setuptools-grocker", PROCESS_LABEL: elsewhere, PID_LABEL: host_pid, **extra}

    try:
        leases = {
            "fresh": client.containers.create(BASE_IMAGE, ["true"], name=lease_name(runs["fresh"], now + 600),
                                              labels=labels(**{LEASE_LABEL: runs["fresh"]})),
            "expired": client.containers.create(BASE_IMAGE, ["true"], name=lease_name(runs["expired"], now - 5),
                                                labels=labels(**{LEASE_LABEL: runs["expired"]})),
        }
        made += leases.values()
        workers = {what: client.containers.run(BASE_IMAGE, ["sleep", "300"], detach=True,
                                               labels=labels(**{RUN_LABEL: run}))
                   for what, run in runs.items()}
        made += workers.values()
        reaper = subprocess.run(REAP, capture_output=True, text=True, timeout=120)
        assert reaper.returncode == 0, reaper.stderr

        def exists(c: docker.models.containers.Container) -> bool:
            try:
                c.reload()
                return True
            except docker.errors.NotFound:
                return False

        assert exists(workers["fresh"]) and exists(leases["fresh"]), reaper.stdout + reaper.stderr
        assert not exists(workers["expired"]) and not exists(leases["expired"])
        assert not exists(workers["without-lease"])
    finally:
        for c in made:
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass


def test_disk_full_in_the_cache(tmp_path: Path, examples_copy: Path, client: docker.DockerClient,
                                run_id: str) -> None:
    """The cache directory on a 48 KB filesystem: a clear error, then a normal build elsewhere succeeds."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(small)], capture_output=True)
    assert mounted.returncode == 0, mounted.stderr
    shutil.copytree(examples_copy, tmp_path / "ex", ignore=shutil.ignore_patterns(".grocker"))
    project = tmp_path / "ex" / "demo-app"
    tag = f"grocker-test/disk-full:{run_id}"
    try:
        run = grocker("build", str(project), "--tag", tag, env={"GROCKER_CACHE_DIR": str(small / "cache")})
        assert run.code != 0 and run.code in {cls.exit_code for cls in _error_classes()}, run.err[-3000:]
        line = error_line(run.err)
        assert "no space left" in line.lower(), line
        assert_not_tagged(client, tag)
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
    try:
        again = grocker("build", str(project), "--tag", tag, env={"GROCKER_CACHE_DIR": str(small / "cache")})
        assert again.code == 0, again.err[-3000:]
        assert "check: passed" in client.containers.run(tag, ["check"], remove=True).decode()
    finally:
        remove_images(client, tag)


def _error_classes() -> list[type[GrockerError]]:
    out, todo = [], [GrockerError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo += cls.__subclasses__()
    return out
