"""The warm compile container: a project's consecutive builds compile in one container, by docker exec."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from setuptools_grocker.engine.ownership import WARM_LABEL, WARM_SCOPE_LABEL
from setuptools_grocker.pipeline.warm import scope_label
from tests.helpers import grocker, python_project, remove_images


def warm_of(client: docker.DockerClient, project: Path) -> list[Any]:
    """The warm compile containers of ``project``'s scope (filtered by its own label, never engine-wide)."""
    return client.containers.list(all=True, filters={"label": f"{WARM_SCOPE_LABEL}={scope_label(project)}"})


def change(project: Path, name: str, line: str) -> None:
    init = project / "src" / name / "__init__.py"
    init.write_text(init.read_text() + line)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, run_id: str, client: docker.DockerClient) -> Any:
    root = tmp_path_factory.mktemp("warm")
    name = f"warm{run_id[:6]}"
    project = python_project(root / name, name, deps=["six"], modules={"__init__.py": "import six\n"})
    env = {"GROCKER_CACHE_HOME": str(root / "cache"), "SOURCE_DATE_EPOCH": "1700000000"}
    tag = f"grocker-test/{name}:{run_id}"
    first = grocker("build", str(project), "--tag", tag, env=env, report=root / "first.json")
    assert first.code == 0, first.err[-3000:]
    yield {"root": root, "name": name, "project": project, "env": env, "tag": tag, "first": first}
    for c in warm_of(client, project):
        c.remove(force=True)
    remove_images(client, tag)


def build(app: dict[str, Any], report: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    run = grocker("build", str(app["project"]), "--tag", app["tag"], *args, env={**app["env"], **(env or {})},
                  report=report)
    assert run.code == 0, run.err[-3000:]
    return run


def test_the_second_build_compiles_in_the_first_builds_container_and_leftovers_are_killed(
        app: dict[str, Any], client: docker.DockerClient, tmp_path: Path) -> None:
    first = warm_of(client, app["project"])
    assert len(first) == 1 and first[0].status == "running", first
    warm = first[0]
    assert WARM_LABEL in warm.labels
    assert warm.attrs["HostConfig"]["SecurityOpt"] == ["no-new-privileges"]
    user = f"{os.getuid()}:{os.getgid()}"
    # What a build could leave behind: a process of the build user, a file in /tmp.
    warm.exec_run(["sh", "-c", "sleep 600"], user=user, detach=True)
    warm.exec_run(["sh", "-c", "echo planted > /tmp/leftover"], user=user)
    time.sleep(0.5)
    assert "sleep 600" in str(warm.top()["Processes"])
    change(app["project"], app["name"], "VALUE = 1\n")
    second = build(app, tmp_path / "second.json")
    assert "reusing the warm compile container" in second.out + second.err
    assert second.project["status"] == "built"
    assert second.project["containers_started"] == 1  # the smoke test's; the compile was an exec
    assert [c.id for c in warm_of(client, app["project"])] == [warm.id]
    assert "sleep 600" not in str(warm.top()["Processes"])
    listing = warm.exec_run(["ls", "-A", "/tmp"], user=user)
    assert listing.output.decode().strip() == ""
    # The image is the one a fresh container makes: --no-cache never uses the warm container.
    clean = build(app, tmp_path / "clean.json", "--no-cache")
    assert "warm compile container" not in clean.out + clean.err
    assert clean.project["image_id"] == second.project["image_id"]
    assert [c.id for c in warm_of(client, app["project"])] == [warm.id]


def hooks(warm: Any) -> list[str]:
    """The build hooks in the warm container (build_hook.py --serve), as ``PID NAME``."""
    listing = warm.exec_run(["sh", "-c", "for p in /proc/[0-9]*; do c=$(cat $p/comm); case $c in grocker-*) "
                                         "echo ${p#/proc/} $c;; esac; done"])
    return listing.output.decode().split("\n")[:-1]


def test_the_next_compile_finds_its_build_backend_imported_and_makes_the_same_image(
        app: dict[str, Any], client: docker.DockerClient, tmp_path: Path) -> None:
    """After a compile, a hook that imported setuptools waits for the next one; it builds the same wheel, and a
    compile that finds none, or another process beside it, builds as before."""
    (warm,) = warm_of(client, app["project"])
    waiting = hooks(warm)
    assert len(waiting) == 1 and waiting[0].endswith(" grocker-idle"), waiting
    change(app["project"], app["name"], "VALUE = 10\n")
    run = build(app, tmp_path / "hooked.json", "-v")
    assert "prepared build environment, setuptools.build_meta, backend imported beforehand" in run.out + run.err
    after = hooks(warm)
    assert len(after) == 1 and after != waiting, after  # the used one is gone, the next one waits
    clean = build(app, tmp_path / "clean.json", "--no-cache")
    assert clean.project["image_id"] == run.project["image_id"]
    # A process beside the hook (what a compile could leave): everything is killed, the hook with it.
    user = f"{os.getuid()}:{os.getgid()}"
    warm.exec_run(["sh", "-c", "sleep 600"], user=user, detach=True)
    time.sleep(0.5)
    change(app["project"], app["name"], "VALUE = 11\n")
    run = build(app, tmp_path / "unhooked.json", "-v")
    assert "backend imported beforehand" not in run.out + run.err
    assert "sleep 600" not in str(warm.top()["Processes"])
    assert len(hooks(warm)) == 1


def test_a_configuration_change_gets_a_new_container_and_another_scope_its_own(
        app: dict[str, Any], client: docker.DockerClient, tmp_path: Path, run_id: str) -> None:
    before = warm_of(client, app["project"])
    assert len(before) == 1
    # Another pip option: another environment, another key; the scope's old container is removed.
    change(app["project"], app["name"], "VALUE = 2\n")
    run = build(app, tmp_path / "changed.json", env={"PIP_DEFAULT_TIMEOUT": "33"})
    assert "started a warm compile container" in run.out + run.err
    after = warm_of(client, app["project"])
    assert len(after) == 1 and after[0].id != before[0].id
    # Another project directory is another trust scope: a container of its own, the first one untouched.
    other = tmp_path / f"other{run_id[:4]}"
    shutil.copytree(app["project"], other, ignore=shutil.ignore_patterns(".grocker"))
    theirs = grocker("build", str(other), "--tag", f"{app['tag']}-other", env={**app["env"],
                     "PIP_DEFAULT_TIMEOUT": "33"}, report=tmp_path / "other.json")
    assert theirs.code == 0, theirs.err[-3000:]
    assert "started a warm compile container" in theirs.out + theirs.err
    assert [c.id for c in warm_of(client, app["project"])] == [after[0].id]
    assert len(warm_of(client, other)) == 1 and warm_of(client, other)[0].id != after[0].id
    # gc removes warm containers (theirs and ours).
    gc = grocker("gc", env=app["env"])
    assert gc.code == 0, gc.err[-2000:]
    assert warm_of(client, app["project"]) == [] and warm_of(client, other) == []
    remove_images(client, f"{app['tag']}-other")


def test_an_idle_warm_container_ends_itself(app: dict[str, Any], client: docker.DockerClient,
                                             tmp_path: Path) -> None:
    change(app["project"], app["name"], "VALUE = 3\n")
    build(app, tmp_path / "idle.json", env={"GROCKER_WARM_IDLE": "0.05"})  # 3 s
    warm = warm_of(client, app["project"])
    assert len(warm) == 1
    deadline = time.time() + 30
    while time.time() < deadline and warm[0].status == "running":
        time.sleep(1)
        warm[0].reload()
    assert warm[0].status == "exited", warm[0].status


def test_a_bad_idle_value_is_one_line_naming_the_fix(app: dict[str, Any]) -> None:
    change(app["project"], app["name"], "VALUE = 4\n")
    run = grocker("build", str(app["project"]), "--tag", app["tag"], env={**app["env"], "GROCKER_WARM_IDLE": "soon"})
    assert run.code != 0
    assert "GROCKER_WARM_IDLE='soon' is not a number of minutes" in run.err


def test_a_state_directory_removed_between_builds_gets_a_new_container(
        app: dict[str, Any], client: docker.DockerClient, tmp_path: Path) -> None:
    """`rm -rf .grocker` between two builds: the warm container's bind mounts name the removed directories, so
    the next build must not exec in it (it would not see its job); it starts a new one and succeeds."""
    build(app, tmp_path / "before.json")
    before = {c.id for c in warm_of(client, app["project"])}
    assert len(before) == 1
    shutil.rmtree(app["project"] / ".grocker")
    change(app["project"], app["name"], "\n# after rm -rf .grocker\n")
    build(app, tmp_path / "after.json")
    after = [c for c in warm_of(client, app["project"]) if c.status == "running"]
    assert len(after) == 1 and after[0].id not in before
