"""The nightly on a build farm of two machines: one Buildbot worker on engine A, one on engine B.

``master.cfg.example`` as shipped, worker1 with the main engine and ``GROCKER_CACHE_WRITE=1`` (the
trusted builder), worker2 with ``DOCKER_HOST`` on the second engine (tests/second_engine.py); both
share the registry, the wheel index and the shared build cache, nothing else. The first nightly builds
every member once in total, on both machines; a nightly whose plan runs on engine B alone (worker1
stopped) finds every member up to date, also those only engine A built.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest

from tests.helpers import BASE_IMAGE, REPO, free_port, generate, remove_images, wait_http
from tests.integration.test_buildbot import BIN, SUCCESS, Api, git, results_of, run
from tests.integration.test_two_engines_workspace import _base_refs, _images_of
from tests.second_engine import SecondEngine


@pytest.fixture(scope="module")
def farm2(tmp_path_factory: pytest.TempPathFactory, client: docker.DockerClient, registry: str,
          engine_b: SecondEngine) -> Iterator[dict[str, Any]]:
    top = tmp_path_factory.mktemp("bb2")
    uid = uuid.uuid4().hex[:8]
    prefix = f"b2{uid[:5]}-"
    repo = top / "workspace"
    graph = generate(repo, libs=3, apps=2, levels=2, prefix=prefix)
    with (repo / "pyproject.toml").open("a") as fh:  # a runtime user of its own: root and compiler of its own
        fh.write(f'\n[tool.grocker]\nregistry = "{registry}"\nuser = "u{uid}"\n')
    (repo / ".gitignore").write_text(".grocker/\n")
    run("git", "init", "-q", "-b", "main", str(repo))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "workspace")
    client_b = docker.DockerClient(base_url=engine_b.url, timeout=300)
    base = client.images.get(BASE_IMAGE)
    try:
        client_b.images.get(base.id)
    except docker.errors.ImageNotFound:  # a second machine with the same base (pulled by digest)
        client_b.images.load(b"".join(client.api.get_image(BASE_IMAGE)))
    (top / "packages").mkdir()
    index_port = free_port()
    index = subprocess.Popen([str(BIN / "pypi-server"), "run", "-i", "127.0.0.1", "-p", str(index_port), "-a", ".",
                              "-P", ".", str(top / "packages")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{index_port}/simple/", index, "pypiserver")
    pb, www = free_port(), free_port()
    env = {
        "NIGHTLY_WORKSPACE_REPO": f"file://{repo}", "NIGHTLY_WHEEL_INDEX": f"http://127.0.0.1:{index_port}",
        "NIGHTLY_REGISTRY": registry, "NIGHTLY_GROCKER": str(BIN / "grocker"),
        "NIGHTLY_PB_PORT": str(pb), "NIGHTLY_WWW_PORT": str(www), "NIGHTLY_WORKER_PASSWORD": "pw",
        "PATH": f"{BIN}:{os.environ['PATH']}", "GROCKER_BUILD_CACHE": f"{registry}/grocker-cache-{uid}",
        "GROCKER_WARM_IDLE": "0",
    }
    machines = {"worker1": {"GROCKER_CACHE_WRITE": "1", "GROCKER_CACHE_HOME": str(top / "cache-a")},
                "worker2": {"DOCKER_HOST": engine_b.url, "GROCKER_CACHE_HOME": str(top / "cache-b")}}
    master = top / "master"
    run(str(BIN / "buildbot"), "create-master", "-q", str(master), env=env)
    shutil.copy(REPO / "master.cfg.example", master / "master.cfg")
    started: list[tuple[str, Path]] = []
    try:
        run(str(BIN / "buildbot"), "start", str(master), env=env)
        started.append(("buildbot", master))
        for name, own in machines.items():
            wdir = top / name
            run(str(BIN / "buildbot-worker"), "create-worker", "-q", str(wdir), f"127.0.0.1:{pb}", name, "pw",
                env={**env, **own})
            run(str(BIN / "buildbot-worker"), "start", str(wdir), env={**env, **own})
            started.append(("buildbot-worker", wdir))
        api = Api(f"http://127.0.0.1:{www}")
        deadline = time.monotonic() + 60
        while len([w for w in api.get("workers")["workers"] if w["connected_to"]]) < 2:
            assert time.monotonic() < deadline, "workers did not connect"
            time.sleep(0.5)
        yield {"api": api, "graph": graph, "top": top, "client_b": client_b}
    finally:
        for tool, path in reversed(started):
            subprocess.run([str(BIN / tool), "stop", str(path)], capture_output=True)
        index.terminate()
        index.wait(timeout=20)
        base_refs = _base_refs(client, repo, {})
        for c in (client, client_b):
            remove_images(c, *_images_of(c, *(f"{registry}/{a}:" for a in graph["applications"])), *base_refs)
        client_b.close()


def test_the_first_nightly_builds_each_member_once_on_both_machines(farm2: dict[str, Any]) -> None:
    api, graph = farm2["api"], farm2["graph"]
    build = api.force("grocker-nightly")
    assert build["results"] == SUCCESS, build["state_string"]
    everyone = {**graph["libraries"], **graph["applications"]}
    assert results_of(build) == {name: "built" for name in everyone}
    members = api.member_builds()
    built = [b["properties"]["grocker_member"][0] for b in members]
    assert sorted(built) == sorted(everyone)  # once each, in total
    assert all(b["results"] == SUCCESS for b in members)
    assert len({b["workerid"] for b in members}) == 2, "both machines took member builds"
    farm2["last"] = max(b["buildid"] for b in members)


def test_a_nightly_planned_on_engine_b_alone_finds_everything_up_to_date(farm2: dict[str, Any]) -> None:
    api, top = farm2["api"], farm2["top"]
    assert "last" in farm2, "the first nightly did not run"
    subprocess.run([str(BIN / "buildbot-worker"), "stop", str(top / "worker1")], capture_output=True)
    deadline = time.monotonic() + 60
    while any(w["name"] == "worker1" and w["connected_to"] for w in api.get("workers")["workers"]):
        assert time.monotonic() < deadline, "worker1 did not disconnect"
        time.sleep(0.5)
    build = api.force("grocker-nightly")
    assert build["results"] == SUCCESS, build["state_string"]
    assert set(results_of(build).values()) == {"up to date"}
    assert api.member_builds(since_buildid=farm2["last"]) == []
