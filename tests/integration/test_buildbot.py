"""The nightly full build on a real Buildbot master with two real workers.

Everything on 127.0.0.1 with free ports: the master (``master.cfg.example`` as shipped),
two ``buildbot-worker`` processes, a pypiserver wheel index, a docker-registry, and a git
repository holding a generated workspace of 8 libraries and 2 applications.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest

from tests.helpers import REPO, dependents, free_port, generate, remove_images, wait_http

BIN = Path(sys.executable).parent
SUCCESS, FAILURE, RETRY = 0, 2, 5


def run(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    assert proc.returncode == 0, f"{argv}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout


def git(repo: Path, *args: str) -> None:
    run("git", "-C", str(repo), "-c", "user.name=ci", "-c", "user.email=ci@example.invalid", *args)


class Api:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + "/api/v2"

    def get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/{path}", timeout=30) as resp:
            return dict(json.loads(resp.read()))

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(f"{self.url}/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return dict(json.loads(resp.read()))

    def builder_id(self, name: str) -> int:
        return int(self.get(f"builders?name={name}")["builders"][0]["builderid"])

    def force(self, builder: str, scheduler: str = "grocker-force") -> dict[str, Any]:
        """Force a build of ``builder`` through ``scheduler``; wait for it; return the build with its properties."""
        answer = self.post(f"forceschedulers/{scheduler}", {
            "jsonrpc": "2.0", "method": "force", "id": 1,
            "params": {"builderid": str(self.builder_id(builder))}})
        assert "result" in answer, answer
        bsid, brids = answer["result"]
        brid = list(brids.values())[0]
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            builds = self.get(f"buildrequests/{brid}/builds")["builds"]
            if builds and builds[0]["complete"]:
                build = builds[0]
                build["properties"] = self.get(f"builds/{build['buildid']}/properties")["properties"][0]
                return build
            time.sleep(1)
        pytest.fail("the forced build did not finish within 15 minutes")

    def member_builds(self, since_buildid: int = 0) -> list[dict[str, Any]]:
        bid = self.builder_id("grocker-member")
        builds = self.get(f"builders/{bid}/builds?property=*")["builds"]
        return [b for b in builds if b["buildid"] > since_buildid]


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory, client: docker.DockerClient, registry: str,
         run_id: str) -> Iterator[dict[str, Any]]:
    top = tmp_path_factory.mktemp("buildbot")
    prefix = f"bb{run_id[:5]}-"
    # The workspace, in a git repository the workers clone.
    repo = top / "workspace"
    graph = generate(repo, libs=8, apps=2, levels=4, prefix=prefix)
    with (repo / "pyproject.toml").open("a") as fh:
        fh.write(f'\n[tool.grocker]\nregistry = "{registry}"\n')
    (repo / ".gitignore").write_text(".grocker/\n")
    run("git", "init", "-q", "-b", "main", str(repo))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "workspace")
    # The wheel index.
    index_port = free_port()
    index = subprocess.Popen([str(BIN / "pypi-server"), "run", "-i", "127.0.0.1", "-p", str(index_port), "-a", ".",
                              "-P", ".", str(top / "packages")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (top / "packages").mkdir()
    wait_http(f"http://127.0.0.1:{index_port}/simple/", index, "pypiserver")
    pb, www = free_port(), free_port()
    env = {
        "NIGHTLY_WORKSPACE_REPO": f"file://{repo}", "NIGHTLY_WHEEL_INDEX": f"http://127.0.0.1:{index_port}",
        "NIGHTLY_REGISTRY": registry, "NIGHTLY_GROCKER": str(BIN / "grocker"),
        "NIGHTLY_PB_PORT": str(pb), "NIGHTLY_WWW_PORT": str(www), "NIGHTLY_WORKER_PASSWORD": "pw",
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    master = top / "master"
    run(str(BIN / "buildbot"), "create-master", "-q", str(master), env=env)
    shutil.copy(REPO / "master.cfg.example", master / "master.cfg")
    run(str(BIN / "buildbot"), "checkconfig", str(master), env=env)
    started: list[tuple[str, Path]] = []
    try:
        run(str(BIN / "buildbot"), "start", str(master), env=env)
        started.append(("buildbot", master))
        for name in ("worker1", "worker2"):
            wdir = top / name
            run(str(BIN / "buildbot-worker"), "create-worker", "-q", str(wdir), f"127.0.0.1:{pb}", name, "pw", env=env)
            run(str(BIN / "buildbot-worker"), "start", str(wdir), env=env)
            started.append(("buildbot-worker", wdir))
        api = Api(f"http://127.0.0.1:{www}")
        deadline = time.monotonic() + 60
        while len([w for w in api.get("workers")["workers"] if w["connected_to"]]) < 3:
            assert time.monotonic() < deadline, "workers did not connect"
            time.sleep(0.5)
        yield {"api": api, "repo": repo, "graph": graph, "prefix": prefix, "registry": registry, "top": top,
               "index": f"http://127.0.0.1:{index_port}"}
    finally:
        for tool, path in reversed(started):
            subprocess.run([str(BIN / tool), "stop", str(path)], capture_output=True)
        index.terminate()
        index.wait(timeout=20)
        remove_images(client, *(f"{registry}/{a}:2.0.0" for a in graph["applications"]))


def results_of(build: dict[str, Any]) -> dict[str, str]:
    return dict(build["properties"]["grocker_results"][0]["status"])


@pytest.fixture(scope="module")
def first(farm: dict[str, Any]) -> dict[str, Any]:
    build = farm["api"].force("grocker-nightly")
    return {"build": build, "members": farm["api"].member_builds()}


def test_every_member_built_in_graph_order_on_both_workers(farm: dict[str, Any], first: dict[str, Any]) -> None:
    build, members = first["build"], first["members"]
    graph = farm["graph"]
    assert build["results"] == SUCCESS, build["state_string"]
    everyone = {**graph["libraries"], **graph["applications"]}
    assert results_of(build) == {name: "built" for name in everyone}
    by_member = {b["properties"]["grocker_member"][0]: b for b in members}
    assert set(by_member) == set(everyone)
    assert all(b["results"] == SUCCESS for b in members)
    for name, deps in everyone.items():
        for dep in deps:
            assert by_member[dep]["complete_at"] <= by_member[name]["started_at"], f"{name} before {dep}"
    # Members ran at the same time on the two workers.
    workers = {b["workerid"] for b in members}
    assert len(workers) == 2
    overlap = [(a, b) for a in members for b in members if a["workerid"] < b["workerid"]
               and a["started_at"] < b["complete_at"] and b["started_at"] < a["complete_at"]]
    assert overlap


def test_steps_set_properties_and_keep_logs(farm: dict[str, Any], first: dict[str, Any]) -> None:
    api = farm["api"]
    app = next(b for b in first["members"] if b["properties"]["grocker_kind"][0] == "application")
    props = api.get(f"builds/{app['buildid']}/properties")["properties"][0]
    assert props["grocker_status"][0] == "built"
    assert props["grocker_digest"][0].startswith("sha256:")
    assert props["grocker_image"][0].startswith(farm["registry"] + "/")
    steps = {s["name"]: s for s in api.get(f"builds/{app['buildid']}/steps")["steps"]}
    assert {"wheel", "image", "smoke", "push"} <= set(steps)
    logs = api.get(f"steps/{steps['smoke']['stepid']}/logs")["logs"]
    stdio = next(lg for lg in logs if lg["name"] == "stdio")
    with urllib.request.urlopen(f"{api.url}/logs/{stdio['logid']}/raw", timeout=30) as resp:
        text = resp.read().decode()
    assert re.search(r"probe healthy: GET /\S* on port \d+ answered 200", text), text[-3000:]
    assert "NIGHTLY_WORKER_PASSWORD" not in text  # the environment is never logged
    assert "warning:" not in text


def test_release_moves_the_version_tags_after_every_member(farm: dict[str, Any], first: dict[str, Any]) -> None:
    from setuptools_grocker.registry.client import manifest_digest, read_document

    api = farm["api"]
    steps = {s["name"]: s for s in api.get(f"builds/{first['build']['buildid']}/steps")["steps"]}
    assert steps["release"]["results"] == SUCCESS
    assert steps["release"]["started_at"] >= max(b["complete_at"] for b in first["members"])
    document = first["build"]["properties"]["grocker_release"][0]
    assert set(document["applications"]) == set(farm["graph"]["applications"])
    for app, entry in document["applications"].items():
        assert manifest_digest(f"{farm['registry']}/{app}:2.0.0") == entry["digest"]
    # The printed document is the stored one plus what this run did (where it is, tags that lag).
    assert document["lagging"] == []
    assert read_document(document["document"]["image"]) == \
        {k: v for k, v in document.items() if k not in ("document", "lagging")}
    assert manifest_digest(document["document"]["pointer"]) == document["document"]["digest"]


def test_second_build_does_no_work(farm: dict[str, Any], first: dict[str, Any]) -> None:
    api = farm["api"]
    last = max(b["buildid"] for b in api.member_builds())
    build = api.force("grocker-nightly")
    assert build["results"] == SUCCESS
    assert set(results_of(build).values()) == {"up to date"}
    assert api.member_builds(since_buildid=last) == []


def test_the_nightly_ships_its_release_to_the_swarm(farm: dict[str, Any], first: dict[str, Any],
                                                   client: docker.DockerClient, run_id: str) -> None:
    """``configure(push=True, ship=True)`` in a second real master on the farm's workspace, index and registry
    (every member up to date: no member build): the forced nightly releases, then ships one application as a
    new Swarm service (``deployed``: no canary for a first release) running the release's digest, behind its
    edge on 127.0.0.1; a second nightly with no change ships the same digest: ``unchanged``."""
    from tests.helpers import BASE_IMAGE

    app = sorted(farm["graph"]["applications"])[0]
    service = f"bbship-{run_id[:8]}"
    port, pb, www = free_port(), free_port(), free_port()
    master = farm["top"] / "ship-master"
    run(str(BIN / "buildbot"), "create-master", "-q", str(master))
    ship_args = ["--health-interval", "1", "--start-period", "3", "--monitor", "1", "--timeout", "60", "--bake", "0",
                 "--edge-base", BASE_IMAGE]
    (master / "master.cfg").write_text(f"""\
import sys
from buildbot.plugins import worker
from buildbot_grocker import configure

c = BuildmasterConfig = {{"buildbotNetUsageData": None, "db": {{"db_url": "sqlite:///state.sqlite"}},
                         "protocols": {{"pb": {{"port": "tcp:{pb}:interface=127.0.0.1"}}}},
                         "www": {{"port": "tcp:{www}:interface=127.0.0.1", "plugins": {{}}}},
                         "buildbotURL": "http://127.0.0.1:{www}/", "workers": [worker.LocalWorker("ship-local")]}}
configure(c, workers=["ship-local"], repourl={f"file://{farm['repo']}"!r}, wheel_index={farm["index"]!r},
          registry={farm["registry"]!r}, push=True, grocker=[sys.executable, "-m", "setuptools_grocker"],
          ship=True, ship_applications=[{app!r}], ship_services={{{app!r}: {service!r}}}, ship_args={ship_args!r},
          ship_app_args={{{app!r}: ["--publish", "127.0.0.1:{port}:8000"]}})
""")
    run(str(BIN / "buildbot"), "start", str(master))
    try:
        api = Api(f"http://127.0.0.1:{www}")
        verdicts = []
        for expected in ("deployed", "unchanged"):
            build = api.force("grocker-nightly")
            steps = {s["name"]: s for s in api.get(f"builds/{build['buildid']}/steps")["steps"]}
            states = {n: s["state_string"] for n, s in steps.items()}
            assert build["results"] == SUCCESS, (build["state_string"], states)
            assert set(results_of(build).values()) == {"up to date"}
            release = build["properties"]["grocker_release"][0]["applications"][app]
            pinned = f"{farm['registry']}/{app}@{release['digest']}"
            ship = build["properties"]["grocker_ship"][0]
            assert ship == {app: {"service": service, "image": pinned, "status": expected, "error": None}}
            assert steps["ship"]["results"] == SUCCESS and steps["ship"]["state_string"] == f"{app} {expected}"
            logs = {lg["name"]: lg for lg in api.get(f"steps/{steps['ship']['stepid']}/logs")["logs"]}
            with urllib.request.urlopen(f"{api.url}/logs/{logs['ship.json']['logid']}/raw", timeout=30) as resp:
                assert json.loads(resp.read()) == ship
            # The Swarm runs the release's digest; the edge answers on 127.0.0.1.
            spec = client.services.get(service).attrs["Spec"]
            assert spec["TaskTemplate"]["ContainerSpec"]["Image"].endswith("@" + release["digest"])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
                assert resp.status == 200
            assert {s.name for s in client.services.list(filters={"name": service})} == {service}  # no canary left
            verdicts.append(release["digest"])
        assert verdicts[0] == verdicts[1]
    finally:
        subprocess.run([str(BIN / "buildbot"), "stop", str(master)], capture_output=True)
        subprocess.run([sys.executable, "-m", "setuptools_grocker", "stop", service], capture_output=True)
        assert not client.services.list(filters={"name": service})  # nor its -canary, -staging
        assert not client.containers.list(all=True, filters={"name": f"{service}-edge"})
        assert not client.networks.list(names=[f"grocker-{service}"])


def test_broken_library_skips_exactly_its_dependents(farm: dict[str, Any], first: dict[str, Any]) -> None:
    from setuptools_grocker.registry.client import manifest_digest

    api, repo, graph, prefix = farm["api"], farm["repo"], farm["graph"], farm["prefix"]
    broken = next(n for n in graph["libraries"] if dependents(graph, n) and int(n.rsplit("-", 1)[1]) % 2 == 0
                  and n != f"{prefix}lib-00")
    init = repo / "libs" / broken / "src" / broken.replace("-", "_") / "__init__.py"
    broken_value = "def value() -> int:\n    return -1\n\n\ndef _v():"
    init.write_text(init.read_text().replace("def value() -> int:", broken_value))
    git(repo, "commit", "-qam", f"break {broken}")
    tags_before = {app: manifest_digest(f"{farm['registry']}/{app}:2.0.0") for app in graph["applications"]}
    build = api.force("grocker-nightly")
    assert build["results"] == FAILURE
    steps = {s["name"] for s in api.get(f"builds/{build['buildid']}/steps")["steps"]}
    assert "release" not in steps or "grocker_release" not in build["properties"]
    assert {app: manifest_digest(f"{farm['registry']}/{app}:2.0.0") for app in graph["applications"]} == tags_before
    status = results_of(build)
    assert status[broken] == "failed"
    assert {n for n, s in status.items() if s == "skipped"} == dependents(graph, broken)
    assert all(s == "up to date" for n, s in status.items() if n != broken and n not in dependents(graph, broken))
    reasons = build["properties"]["grocker_results"][0]["reasons"]
    assert all(reasons[n].startswith("dependency ") for n in dependents(graph, broken))


def test_worker_killed_mid_build_its_member_is_retried(farm: dict[str, Any], first: dict[str, Any]) -> None:
    """SIGKILL one worker while member builds run on it: Buildbot retries them on the other one."""
    import signal

    api, repo, graph, prefix, top = farm["api"], farm["repo"], farm["graph"], farm["prefix"], farm["top"]
    git(repo, "revert", "--no-edit", "HEAD")  # undo the broken library of the previous test, if any
    root_lib = f"{prefix}lib-00"
    init = repo / "libs" / root_lib / "src" / root_lib.replace("-", "_") / "__init__.py"
    init.write_text(init.read_text() + "\n# rebuild everything\n")
    git(repo, "commit", "-qam", "touch the root library")
    last = max(b["buildid"] for b in api.member_builds())
    answer = api.post("forceschedulers/grocker-force", {
        "jsonrpc": "2.0", "method": "force", "id": 1,
        "params": {"builderid": str(api.builder_id("grocker-nightly"))}})
    brid = list(answer["result"][1].values())[0]
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and time.monotonic() < deadline:
        running = [b for b in api.member_builds(since_buildid=last) if not b["complete"]]
        if running:
            workers = {w["workerid"]: w["name"] for w in api.get("workers")["workers"]}
            victim = workers[running[0]["workerid"]]
        time.sleep(0.3)
    assert victim in ("worker1", "worker2"), "no member build started"
    wdir = top / victim
    pid = int((wdir / "twistd.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            builds = api.get(f"buildrequests/{brid}/builds")["builds"]
            if builds and builds[0]["complete"]:
                break
            time.sleep(1)
        build = builds[0]
        build["properties"] = api.get(f"builds/{build['buildid']}/properties")["properties"][0]
        members = api.member_builds(since_buildid=last)
        retried = [b for b in members if b["results"] == RETRY]  # lost with the worker, requeued
        assert retried, ("no member build was interrupted by the kill",
                         [(b["properties"]["grocker_member"][0], b["results"], b["workerid"]) for b in members])
        assert build["results"] == SUCCESS, build["state_string"]
        everyone = {**graph["libraries"], **graph["applications"]}
        assert set(results_of(build)) == set(everyone)
        assert set(results_of(build).values()) <= {"built", "up to date"}
        by_member = {}
        for b in members:
            by_member.setdefault(b["properties"]["grocker_member"][0], []).append(b)
        for b in retried:  # the member of every interrupted build was built again, to success
            name = b["properties"]["grocker_member"][0]
            assert any(x["results"] == SUCCESS and x["buildid"] > b["buildid"] for x in by_member[name]), name
    finally:
        (wdir / "twistd.pid").unlink(missing_ok=True)
        run(str(BIN / "buildbot-worker"), "start", str(wdir))
