"""Workspace builds on the real engine, with a small generated workspace (6 libraries, 2 apps)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from setuptools_grocker.errors import WorkspaceError
from setuptools_grocker.pipeline.compile import build_requirements
from tests.helpers import Run, container_starts, dependents, generate, grocker, remove_images


def statuses(run: Run) -> dict[str, str]:
    assert run.report is not None, run.err[-3000:]
    return {p["name"]: p["status"] for p in run.report["projects"]}


def member_state(root: Path, name: str) -> dict:
    return json.loads((root / ".grocker" / "members" / f"{name}.json").read_text())


def touch_line(path: Path, text: str) -> None:
    path.write_text(path.read_text() + f"\n# {text}\n")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, client: docker.DockerClient, run_id: str):
    root = tmp_path_factory.mktemp("workspace")
    prefix = f"t{run_id[:5]}-"
    graph = generate(root, libs=6, apps=2, levels=3, prefix=prefix)
    yield root, graph, prefix
    remove_images(client, *(f"{a}:2.0.0" for a in graph["applications"]))


@pytest.fixture(scope="module")
def first_build(workspace, tmp_path_factory: pytest.TempPathFactory) -> Run:
    root, graph, _ = workspace
    run = grocker("workspace", "build", str(root), "--jobs", "2",
                  report=tmp_path_factory.mktemp("r") / "first.json")
    assert run.code == 0, run.err[-5000:]
    return run


def test_plan_before_and_after(workspace, first_build: Run) -> None:
    root, graph, prefix = workspace
    plan = subprocess.run([sys.executable, "-m", "setuptools_grocker", "workspace", "plan", str(root), "--json"],
                          capture_output=True, text=True, check=True)
    data = json.loads(plan.stdout)
    assert len(data["members"]) == 8
    assert all(m["up_to_date"] and m["reason"] is None for m in data["members"])
    assert data["levels"][0] == [f"{prefix}lib-00", f"{prefix}lib-01"]


def test_everything_built_in_an_order_that_respects_the_graph(workspace, first_build: Run) -> None:
    _, graph, _ = workspace
    assert set(statuses(first_build).values()) == {"built"}
    by_name = {p["name"]: p for p in first_build.report["projects"]}
    for name, p in by_name.items():
        for dep in p["depends_on"]:
            assert by_name[dep]["ended_at"] <= p["started_at"], f"{name} started before {dep} ended"
    edges = {**graph["libraries"], **graph["applications"]}
    assert {n: sorted(p["depends_on"]) for n, p in by_name.items()} == {n: sorted(d) for n, d in edges.items()}


def test_independent_members_overlap_with_two_jobs(first_build: Run) -> None:
    projects = first_build.report["projects"]
    overlapping = [(a["name"], b["name"]) for i, a in enumerate(projects) for b in projects[i + 1:]
                   if a["started_at"] < b["ended_at"] and b["started_at"] < a["ended_at"]]
    assert overlapping


def test_application_holds_the_internal_libraries_of_this_run(
        client: docker.DockerClient, workspace, first_build: Run) -> None:
    _, graph, prefix = workspace
    app = f"{prefix}app-00"
    image = client.images.get(f"{app}:2.0.0")
    dists = json.loads(image.labels["io.grocker.distributions"])
    deps = graph["applications"][app]
    closure = set(deps)
    for d in deps:
        closure |= {x for x in graph["libraries"] if d in dependents(graph, x) or x == d}
    internal = sorted(d for d in dists if d.startswith(f"{prefix}lib-"))
    expected = sorted(f"{n}=={graph_version(n)}" for n in closure)
    assert internal == expected
    module = app.replace("-", "_")
    out = client.containers.run(image.id, ["run", "python", "-c",
                                           f"import {module}.server as s; print(s.total())"], remove=True)
    assert int(out) == sum(graph["values"][d] for d in deps)


def graph_version(name: str) -> str:
    return f"1.{int(name.rsplit('-', 1)[1])}.0"


def test_libraries_share_one_prepared_build_environment(workspace, first_build: Run) -> None:
    root, graph, _ = workspace
    # One environment per distinct set of build requirements (the generated libraries use setuptools, hatchling
    # or a bare setup.py), prepared by the first library built with it (or the first two, at once: one is kept),
    # then mounted read-only for every other.
    sets = {json.dumps(build_requirements(root / "libs" / lib)) for lib in graph["libraries"]}
    shared = [p for p in (root / ".grocker" / "build-env" / "libraries").iterdir() if not p.name.startswith(".")]
    assert 1 <= len(sets) < len(graph["libraries"])
    assert len(shared) == len(sets), shared
    assert all((env / "ready").is_file() for env in shared)
    logs = sorted((root / ".grocker" / "logs").glob("*.log"))
    text = logs[0].read_text()
    assert text.count("project wheel (prepared build environment") >= len(graph["libraries"])


def test_noop_rebuild_starts_no_container(client: docker.DockerClient, workspace, first_build: Run,
                                          tmp_path: Path) -> None:
    root, _, _ = workspace
    time.sleep(1.1)
    since = time.time()
    run = grocker("workspace", "build", str(root), "--jobs", "2", report=tmp_path / "r.json")
    assert run.code == 0, run.err[-3000:]
    assert set(statuses(run).values()) == {"cached"}
    assert run.report["containers_started"] == 0
    assert container_starts(client, since) == 0


def test_leaf_change_rebuilds_only_it_and_its_dependents(workspace, first_build: Run, tmp_path: Path) -> None:
    root, graph, prefix = workspace
    libs = graph["libraries"]
    leaf = min(libs, key=lambda n: (len(dependents(graph, n)), -int(n.rsplit("-", 1)[1])))
    touch_line(root / "libs" / leaf / "src" / leaf.replace("-", "_") / "__init__.py", "leaf change")
    plan = subprocess.run([sys.executable, "-m", "setuptools_grocker", "workspace", "plan", str(root), "--json"],
                          capture_output=True, text=True, check=True)
    reasons = {m["name"]: m["reason"] for m in json.loads(plan.stdout)["members"]}
    assert reasons[leaf] == "source changed"
    run = grocker("workspace", "build", str(root), "--jobs", "2", report=tmp_path / "r.json")
    assert run.code == 0, run.err[-3000:]
    rebuilt = {n for n, s in statuses(run).items() if s == "built"}
    assert rebuilt == {leaf} | dependents(graph, leaf)
    assert {n for n, s in statuses(run).items() if s == "cached"} == set(statuses(run)) - rebuilt
    for name in dependents(graph, leaf):
        assert reasons[name].startswith("dependency rebuilt")


def test_root_change_rebuilds_everything_depending_on_it(workspace, first_build: Run, tmp_path: Path) -> None:
    root, graph, prefix = workspace
    base = f"{prefix}lib-00"
    libraries = sorted(dependents(graph, base) & set(graph["libraries"]))
    assert libraries, "the generated graph has libraries depending on the root"
    before = {n: member_state(root, n) for n in libraries}
    touch_line(root / "libs" / base / "src" / base.replace("-", "_") / "__init__.py", "root change")
    run = grocker("workspace", "build", str(root), "--jobs", "2", report=tmp_path / "r.json")
    assert run.code == 0, run.err[-3000:]
    rebuilt = {n for n, s in statuses(run).items() if s == "built"}
    assert rebuilt == {base} | dependents(graph, base)
    # The dependent libraries' own sources did not change: their wheels are the same files (same bytes, now
    # under the new key), and their tests ran again, against the new root library.
    for name in libraries:
        after = member_state(root, name)
        assert after["key"] != before[name]["key"]
        assert after["stages"]["wheel"].get("reused") is True, name
        assert Path(after["wheel"]).read_bytes() == Path(before[name]["wheel"]).read_bytes()
        assert Path(after["wheel"]) != Path(before[name]["wheel"])
        assert ("test" in after["stages"]) == ("test" in before[name]["stages"])
    assert "reused: only dependencies changed" in run.err


def test_failing_library_skips_exactly_its_dependents(workspace, first_build: Run, tmp_path: Path) -> None:
    root, graph, prefix = workspace
    broken = f"{prefix}lib-02"  # has tests; depends on level 0
    init = root / "libs" / broken / "src" / broken.replace("-", "_") / "__init__.py"
    original = init.read_text()
    init.write_text(original.replace("def value() -> int:",
                                     "def value() -> int:\n    return -1\n\n\ndef _old() -> int:"))
    try:
        run = grocker("workspace", "build", str(root), "--jobs", "2", report=tmp_path / "r.json")
    finally:
        init.write_text(original)
    assert run.code == WorkspaceError.exit_code
    st = statuses(run)
    assert st[broken] == "failed"
    assert {n for n, s in st.items() if s == "skipped"} == dependents(graph, broken)
    assert all(s in ("built", "cached") for n, s in st.items() if n != broken and n not in dependents(graph, broken))
    by_name = {p["name"]: p for p in run.report["projects"]}
    assert "tests of" in by_name[broken]["error"] and "failed" in by_name[broken]["error"]
    # Named by name and version (and where it is), as in the closing line.
    version = by_name[broken]["version"]
    assert f"the tests of {broken} {version} (libs/{broken}) failed" in by_name[broken]["error"]
    assert f"1 member(s) failed ({broken} {version})" in run.err
    assert by_name[broken]["tests"] == "failed"
    for name in dependents(graph, broken):
        assert by_name[name]["error"].startswith("dependency ")
    assert "1 member(s) failed" in run.err


def test_build_killed_midway_then_a_normal_build_succeeds(client: docker.DockerClient, workspace, first_build: Run,
                                                          tmp_path: Path) -> None:
    root, graph, prefix = workspace
    base = f"{prefix}lib-01"
    touch_line(root / "libs" / base / "src" / base.replace("-", "_") / "__init__.py", "before kill")
    proc = subprocess.Popen([sys.executable, "-m", "setuptools_grocker", "workspace", "build", str(root),
                             "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    seen = []
    for line in proc.stdout:  # wait until a member is being built, then kill mid-way
        seen.append(line)
        if "building (" in line or time.monotonic() > deadline:
            break
    time.sleep(2.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert any("building (" in line for line in seen), "".join(seen)
    # Every member state that exists points at a complete result.
    for state in (root / ".grocker" / "members").glob("*.json"):
        data = json.loads(state.read_text())
        if data["kind"] == "library":
            assert Path(data["wheel"]).is_file()
            assert (Path(data["wheel"]).parent.parent / "manifest.json").is_file()
    run = grocker("workspace", "build", str(root), "--jobs", "2", report=tmp_path / "r.json")
    assert run.code == 0, run.err[-3000:]
    assert set(statuses(run).values()) <= {"built", "cached"}
    again = grocker("workspace", "build", str(root), report=tmp_path / "r2.json")
    assert set(statuses(again).values()) == {"cached"}
    # The containers the killed build left behind were removed by the next build.
    orphans = client.containers.list(all=True, filters={"label": f"io.grocker.pid={socket.gethostname()}:{proc.pid}"})
    assert orphans == []


def test_two_builds_at_once_neither_corrupt_nor_mix(client: docker.DockerClient, workspace, first_build: Run,
                                                    tmp_path: Path) -> None:
    root, graph, prefix = workspace
    lib = f"{prefix}lib-03"
    touch_line(root / "libs" / lib / "src" / lib.replace("-", "_") / "__init__.py", "concurrent change")
    procs = [subprocess.Popen([sys.executable, "-m", "setuptools_grocker", "-q", "workspace", "build", str(root),
                               "--jobs", "2", "--report", str(tmp_path / f"c{i}.json")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    errors = [p.communicate(timeout=900)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    for i in range(2):
        report = json.loads((tmp_path / f"c{i}.json").read_text())
        assert report["ok"]
    after = grocker("workspace", "build", str(root), report=tmp_path / "after.json")
    assert set(statuses(after).values()) == {"cached"}
    for state_file in (root / ".grocker" / "members").glob("*.json"):
        state = json.loads(state_file.read_text())
        wheel = Path(state["wheel"])
        manifest = json.loads((wheel.parent.parent / "manifest.json").read_text())
        assert manifest["wheel"] == wheel.name and wheel.parent.parent.name == state["key"]
        if state["kind"] == "application":
            labels = client.images.get(state["image_id"]).labels
            assert json.loads(labels["io.grocker.distributions"]) == state["distributions"]
            assert labels["io.grocker.key"] == state["key"]


def test_stages_one_at_a_time_without_dependencies(tmp_path: Path, client: docker.DockerClient, run_id: str) -> None:
    """What a Buildbot member build does: one stage per step, dependencies taken from disk."""
    root = tmp_path / "ws"
    prefix = f"s{run_id[:5]}-"
    graph = generate(root, libs=2, apps=1, levels=2, prefix=prefix)
    lib0, lib1, app = f"{prefix}lib-00", f"{prefix}lib-01", f"{prefix}app-00"

    def stage(member: str, *stages: str) -> Run:
        args = ["workspace", "build", str(root), "--only", member, "--no-deps"]
        for s in stages:
            args += ["--stage", s]
        return grocker(*args, report=tmp_path / f"{member}-{'-'.join(stages)}.json")

    try:
        early = stage(lib1, "wheel")
        assert early.code == WorkspaceError.exit_code
        assert f"dependency {lib0} is not built" in early.project["error"]
        out_of_order = stage(lib0, "test")
        assert "needs stage 'wheel' first" in out_of_order.project["error"]
        assert stage(lib0, "wheel").code == 0
        tested = stage(lib0, "test")
        # By exec in the libraries' shared test container, which the wheel stage started (test_level_tests.py).
        assert tested.code == 0 and tested.project["status"] == "built" and tested.project["containers_started"] == 0
        assert "in the shared test container" in tested.out + tested.err
        for s in ("wheel", "test"):
            assert stage(lib1, s).code == 0
        for s in ("wheel", "image", "smoke"):
            run = stage(app, s)
            assert run.code == 0, run.err[-3000:]
        assert run.project["image"] == f"{app}:2.0.0"
        full = grocker("workspace", "build", str(root), report=tmp_path / "full.json")
        assert set(statuses(full).values()) == {"cached"}
        assert len(graph["libraries"]) == 2
    finally:
        remove_images(client, f"{app}:2.0.0")


def test_untrusted_member_runs_its_build_code_only_in_containers(tmp_path: Path, client: docker.DockerClient,
                                                                  run_id: str) -> None:
    """workspace.untrusted: the member's setup.py never runs on the host, and its pip cache is its own.

    Its setup.py writes a marker to the host's /tmp (and a plant in $PIP_CACHE_DIR) whenever
    it runs. Without the key, preparing the workspace's metadata runs it on the host.
    """
    import shutil
    import uuid

    from setuptools_grocker.pipeline.caches import pip_cache_dir

    marker = Path(f"/tmp/grocker-pwned-{uuid.uuid4().hex}")
    prefix = f"u{run_id[:5]}-"

    def make(root: Path, untrusted: str) -> None:
        core = root / "libs" / "core"
        (core / "src" / f"{prefix}core".replace("-", "_")).mkdir(parents=True)
        (core / "src" / f"{prefix}core".replace("-", "_") / "__init__.py").write_text("VALUE = 1\n")
        (core / "pyproject.toml").write_text(f'[project]\nname = "{prefix}core"\nversion = "1.0"\n'
                                             'dependencies = []\n')
        evil = root / "libs" / "evil"
        evil.mkdir(parents=True)
        (evil / (f"{prefix}evil".replace("-", "_") + ".py")).write_text("VALUE = 2\n")
        (evil / "setup.py").write_text(
            "import os, pathlib\nfrom setuptools import setup\n"
            f"pathlib.Path({str(marker)!r}).write_text('ran here')\n"
            "if os.environ.get('PIP_CACHE_DIR'):\n"
            "    pathlib.Path(os.environ['PIP_CACHE_DIR'], 'planted-by-evil').write_text('x')\n"
            f"setup(name='{prefix}evil', version='0.7', install_requires=['{prefix}core>=1.0'], "
            f"py_modules=['{prefix}evil'.replace('-', '_')])\n")
        (root / "pyproject.toml").write_text(f'[tool.grocker.workspace]\nmembers = ["libs/*"]\n{untrusted}')

    env = {"GROCKER_CACHE_HOME": str(tmp_path / "cache")}
    try:
        # The control: a trusted member's backend runs on the host, the marker proves it.
        make(tmp_path / "trusting", "")
        control = grocker("workspace", "plan", str(tmp_path / "trusting"), env=env)
        assert control.code == 0, control.err[-3000:]
        assert marker.is_file()
        marker.unlink()

        root = tmp_path / "ws"
        make(root, 'untrusted = ["libs/evil"]\n')
        plan = grocker("workspace", "plan", str(root), "--json", env=env)
        assert plan.code == 0, plan.err[-3000:]
        assert not marker.exists(), "the untrusted member's setup.py ran on the host"
        members = {m["name"]: m for m in json.loads(plan.out)["members"]}
        assert members[f"{prefix}evil"]["version"] == "0.7"
        assert members[f"{prefix}evil"]["depends_on"] == [f"{prefix}core"]
        assert "prepared in the compiler container" in plan.err
        # Cached by source hash: the next plan prepares nothing (other builds share this engine, so
        # the engine's start events cannot be counted here).
        again = grocker("workspace", "plan", str(root), env=env)
        assert again.code == 0 and "prepared in the compiler container" not in again.err
        assert "+ docker run" not in again.err

        build = grocker("workspace", "build", str(root), env=env, report=tmp_path / "r.json")
        assert build.code == 0, build.err[-3000:]
        assert not marker.exists()
        own, shared = pip_cache_dir(env, root / "libs" / "evil"), pip_cache_dir(env, root)
        assert (own / "planted-by-evil").is_file()
        assert shared.is_dir() and not list(shared.rglob("planted-by-evil"))
    finally:
        marker.unlink(missing_ok=True)
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)
