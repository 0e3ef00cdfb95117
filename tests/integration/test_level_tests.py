"""The trusted libraries of a workspace compile and test in one shared container, each by ``docker exec`` in its
own environment, each with its own result (issue 17).

Level 0 holds three libraries: one whose tests leave a detached background process and files in /tmp and in
their home, one whose tests fail if any of that reaches them, one whose tests fail. Level 1 holds a library
that depends on the failing one. Exactly the failing library fails, its dependent is skipped, the other two
pass with their own results; the level used one container, started once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import docker
import pytest

from setuptools_grocker.engine.ownership import LEVEL_LABEL, WARM_SCOPE_LABEL
from setuptools_grocker.pipeline.warm import scope_label
from tests.helpers import Run, grocker, python_project

MARKER = "613.77"  # the leftover process: `sleep 613.77`

LEAKY_TEST = f'''
import os, subprocess, tempfile


def test_leaves_things_behind():
    # Its own home and temporary directory, below its own staging directory.
    assert os.environ["HOME"].startswith("/stage/") and tempfile.gettempdir().startswith("/stage/")
    # A daemon that double-forks into its own session: not a child of the test, not of pytest.
    subprocess.run(["sh", "-c", "setsid sleep {MARKER} >/dev/null 2>&1 < /dev/null &"], check=True)
    with open("/tmp/grocker-level-leak", "w") as fh:
        fh.write("leaked")
    with open(os.path.join(os.environ["HOME"], "leak"), "w") as fh:
        fh.write("leaked")
    with open(os.path.join(tempfile.gettempdir(), "leak"), "w") as fh:
        fh.write("leaked")
'''

VICTIM_TEST = f'''
import os, tempfile


def running():
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as fh:
                found.append(fh.read().replace(b"\\0", b" ").decode())
        except OSError:
            pass
    return found


def test_nothing_of_the_other_library_reaches_this_one():
    assert not os.path.exists("/tmp/grocker-level-leak")
    assert not [c for c in running() if "{MARKER}" in c]
    assert not os.path.exists(os.path.join(os.environ["HOME"], "leak"))
    assert not os.path.exists(os.path.join(tempfile.gettempdir(), "leak"))
'''


def shared_containers(client: docker.DockerClient, root: Path) -> list[Any]:
    """The shared test containers of this workspace (by its own scope label, never engine-wide)."""
    return [c for c in client.containers.list(all=True, filters={"label": f"{WARM_SCOPE_LABEL}={scope_label(root)}"})
            if LEVEL_LABEL in c.labels]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, run_id: str,
              client: docker.DockerClient) -> Iterator[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("level")
    prefix = f"l{run_id[:5]}-"
    (root / "pyproject.toml").write_text('[tool.grocker.workspace]\nmembers = ["libs/*"]\n')
    for name, test, deps in (("a-leaky", LEAKY_TEST, []), ("b-victim", VICTIM_TEST, []),
                             ("c-failing", "def test_fails():\n    assert 1 + 1 == 3\n", []),
                             ("d-user", "def test_ok():\n    assert True\n", [f"{prefix}c-failing"])):
        lib = python_project(root / "libs" / name, f"{prefix}{name}", deps=deps)
        (lib / "tests").mkdir()
        (lib / "tests" / f"test_{name.replace('-', '_')}.py").write_text(test)
    yield root, prefix
    for c in shared_containers(client, root):
        c.remove(force=True, v=True)


@pytest.fixture(scope="module")
def first(workspace: tuple[Path, str]) -> Run:
    root, _ = workspace
    # One library at a time: the leaky library's exec ends before the victim's starts (sorted order of a level).
    return grocker("workspace", "build", str(root), "--jobs", "1", report=root / "first.json")


def test_a_failing_library_fails_only_itself(workspace: tuple[Path, str], first: Run) -> None:
    _, prefix = workspace
    assert first.report is not None, first.err[-4000:]
    assert first.report["levels"][0] == [f"{prefix}a-leaky", f"{prefix}b-victim", f"{prefix}c-failing"]
    projects = {p["name"][len(prefix):]: p for p in first.report["projects"]}
    assert {n: p["status"] for n, p in projects.items()} == {
        "a-leaky": "built", "b-victim": "built", "c-failing": "failed", "d-user": "skipped"}, first.err[-4000:]
    assert first.code != 0
    assert projects["a-leaky"]["tests"] == projects["b-victim"]["tests"] == "passed"
    assert projects["c-failing"]["tests"] == "failed"
    assert "1 failed" in projects["c-failing"]["error"]
    assert projects["d-user"]["error"] == f"dependency {prefix}c-failing failed"
    # Each its own result and test time.
    assert projects["a-leaky"]["test_seconds"] > 0 and projects["b-victim"]["test_seconds"] > 0
    # The victim ran after the leaky library had finished.
    assert projects["a-leaky"]["ended_at"] <= projects["b-victim"]["started_at"]


def test_the_level_used_one_container(workspace: tuple[Path, str], first: Run,
                                      client: docker.DockerClient) -> None:
    root, prefix = workspace
    assert first.report is not None, first.err[-4000:]
    projects = {p["name"][len(prefix):]: p for p in first.report["projects"]}
    # One container started for the whole level (by the first library), none by the others.
    assert [projects[n]["containers_started"] for n in ("a-leaky", "b-victim", "c-failing")] == [1, 0, 0]
    assert first.report["containers_started"] == 1
    containers = shared_containers(client, root)
    assert len(containers) == 1 and containers[0].status == "running"
    assert (first.out + first.err).count("started the shared test container") == 1
    assert (first.out + first.err).count(f"in the shared test container {containers[0].id[:12]}") == 2


def test_leftovers_of_a_library_are_gone(workspace: tuple[Path, str], first: Run,
                                         client: docker.DockerClient) -> None:
    root, _ = workspace
    assert first.report is not None, first.err[-4000:]
    (container,) = shared_containers(client, root)
    assert MARKER not in str(container.top()["Processes"])
    listing = container.exec_run(["ls", "-A", "/tmp"], user=container.attrs["Config"]["User"])
    assert listing.output.decode().split() == [".grocker-level.lock"]
    # Each compile's home, tmp and scratch went with its staging directory.
    assert not any((root / ".grocker" / "stage").iterdir())


def test_the_next_run_reuses_it(workspace: tuple[Path, str], first: Run, client: docker.DockerClient) -> None:
    root, prefix = workspace
    assert first.report is not None, first.err[-4000:]
    (before,) = shared_containers(client, root)
    test = root / "libs" / "c-failing" / "tests" / "test_c_failing.py"
    test.write_text("def test_fails():\n    assert 1 + 1 == 2\n")
    leaky = root / "libs" / "a-leaky" / "tests" / "test_a_leaky.py"
    leaky.write_text(leaky.read_text() + "\n# again\n")
    # Two at once: the leaky library and the fixed one run side by side in the container.
    again = grocker("workspace", "build", str(root), "--jobs", "2", report=root / "again.json")
    assert again.code == 0, again.err[-4000:]
    assert again.report is not None
    projects = {p["name"][len(prefix):]: p for p in again.report["projects"]}
    assert {n: p["status"] for n, p in projects.items()} == {
        "a-leaky": "built", "b-victim": "cached", "c-failing": "built", "d-user": "built"}
    assert projects["c-failing"]["tests"] == projects["d-user"]["tests"] == projects["a-leaky"]["tests"] == "passed"
    a, c = projects["a-leaky"], projects["c-failing"]
    assert a["started_at"] < c["ended_at"] and c["started_at"] < a["ended_at"]  # they overlapped
    assert again.report["containers_started"] == 0
    assert [c.id for c in shared_containers(client, root)] == [before.id]
    # The daemon went with the leaky library's exec; /tmp was emptied after the last one.
    assert MARKER not in str(before.top()["Processes"])
    listing = before.exec_run(["ls", "-A", "/tmp"], user=before.attrs["Config"]["User"])
    assert listing.output.decode().split() == [".grocker-level.lock"]


def test_off_switch(workspace: tuple[Path, str], first: Run, client: docker.DockerClient) -> None:
    """GROCKER_LEVEL_TESTS=0: each library in a container of its own, as before."""
    root, prefix = workspace
    assert first.report is not None, first.err[-4000:]
    test = root / "libs" / "b-victim" / "tests" / "test_b_victim.py"
    test.write_text(test.read_text() + "\n\ndef test_more():\n    assert True\n")
    off = grocker("workspace", "build", str(root), env={"GROCKER_LEVEL_TESTS": "0"}, report=root / "off.json")
    assert off.code == 0, off.err[-4000:]
    assert off.report is not None
    projects = {p["name"][len(prefix):]: p for p in off.report["projects"]}
    assert projects["b-victim"]["status"] == "built" and projects["b-victim"]["containers_started"] == 1
    assert "shared test container" not in off.out + off.err
    bad = grocker("workspace", "build", str(root), env={"GROCKER_LEVEL_TESTS": "maybe"})
    assert bad.code != 0 and "GROCKER_LEVEL_TESTS='maybe' is neither 0 nor 1" in bad.err
