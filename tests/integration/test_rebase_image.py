"""The security refresh on real builds: ``grocker refresh-root`` and ``grocker rebase``.

A Debian security update cannot be waited for, so the test's base image stands for a base built before
one: ``debian:bookworm-slim`` whose dpkg status says ``hostname`` is at version 3.22 (the files are the
3.23+nmu1 ones; the mirror has 3.23+nmu1). For apt that is exactly an out-of-date package: the refresh's
check sees the newer version on the mirror, the refreshed root installs it, and dpkg in the rebased
image says 3.23+nmu1. The "other Python" root is the refreshed root with PyPy (Python 3.9, from the
mirror) as its ``python3``: the only other interpreter bookworm has.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest

from tests.helpers import BASE_IMAGE, Run, grocker, python_project

pytestmark = pytest.mark.integration

SBOM_PATH = "/opt/app/grocker/sbom.cdx.json"
STALE = "3.22"
CURRENT = "3.23+nmu1"


def run_in(client: docker.DockerClient, image: str, *command: str, entrypoint: str | None = None) -> str:
    out = client.containers.run(image, list(command), entrypoint=entrypoint, remove=True)
    return (out.decode() if isinstance(out, bytes) else str(out)).strip()


def layers(client: docker.DockerClient, ref: str) -> list[str]:
    return list(client.images.get(ref).attrs["RootFS"]["Layers"])


def descendants(client: docker.DockerClient, base: str) -> list[Any]:
    """Every image built on the test's own base (its second layer is this run's): app, roots, compilers;
    never another run's."""
    prefix = layers(client, base)
    found = []
    for summary in client.api.images(all=True):
        try:  # other runs remove their images meanwhile
            attrs = client.api.inspect_image(summary["Id"])
        except docker.errors.NotFound:
            continue
        if attrs["RootFS"].get("Layers", [])[:len(prefix)] == prefix:
            found.append(attrs)
    return found


def remove_descendants(client: docker.DockerClient, base: str) -> None:
    with contextlib.suppress(docker.errors.ImageNotFound):
        for image in sorted(descendants(client, base), key=lambda i: -len(i["RootFS"]["Layers"])):
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image["Id"], force=True)


class World:
    def __init__(self, tmp: Path, run_id: str) -> None:
        self.tmp = tmp
        self.base = f"grocker-test/rebase-{run_id}:base"
        self.app = f"grocker-test/rebase-{run_id}-app"
        self.env = {"GROCKER_CACHE_HOME": str(tmp / "home")}
        self.project = tmp / "rbapp"
        self.build: Run | None = None
        self.refresh: dict[str, Any] = {}

    def grocker(self, *args: str, report: Path | None = None) -> Run:
        return grocker(*args, env=self.env, report=report)


@pytest.fixture(scope="module")
def world(client: docker.DockerClient, run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("rebase"), run_id)
    context = w.tmp / "base"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\n"
        f"RUN sed -i '/^Package: hostname$/,/^$/ s/^Version: .*/Version: {STALE}/' /var/lib/dpkg/status "
        f"&& test \"$(dpkg-query -W -f '${{Version}}' hostname)\" = {STALE}\n")
    client.images.build(path=str(context), tag=w.base, rm=True, labels={"io.grocker.test": "rebase"})
    try:
        python_project(w.project, "rbapp", modules={"__init__.py": '"""The application a refresh rebases."""\n'},
                       grocker=f'[tool.grocker]\nbase-image = "{w.base}"\n')
        w.build = w.grocker("build", str(w.project), "--tag", f"{w.app}:1", report=w.tmp / "build.json")
        assert w.build.code == 0, w.build.err[-4000:]
        refresh = w.grocker("refresh-root", str(w.project), "--json")
        assert refresh.code == 0, refresh.err[-4000:]
        w.refresh = json.loads(refresh.out)
        yield w
    finally:
        remove_descendants(client, w.base)
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(w.base, force=True)


def test_refresh_root_finds_the_newer_package_and_gives_a_new_root_key(world: World,
                                                                       client: docker.DockerClient) -> None:
    from setuptools_grocker.config import load_config
    from setuptools_grocker.engine import Engine
    from setuptools_grocker.image.recipes import current_root_key, root_key
    from setuptools_grocker.progress import Progress

    change = {"name": "hostname", "old": STALE, "new": CURRENT}
    assert world.refresh["refreshed"] is True
    assert world.refresh["pending"] == [change]  # what the check saw on the mirror
    assert world.refresh["packages_changed"] == [change]  # what the new root holds (dpkg)
    root = world.refresh["root"]["tag"]
    assert root != world.refresh["previous_root"]["tag"]
    assert run_in(client, root, "dpkg-query", "-W", "-f", "${Version}\n", "hostname") == CURRENT
    # Builds now use the refreshed root, read from the engine (no network at build time).
    config = load_config(world.project)
    with Engine(Progress(quiet=True)) as engine:
        base_id = client.images.get(world.base).id
        assert f"grocker/root:{current_root_key(engine, config, base_id)}" == root
        assert f"grocker/root:{root_key(config, base_id)}" == world.refresh["previous_root"]["tag"]

    # The cheap path: nothing newer on the mirror, nothing built.
    before = {i["Id"] for i in descendants(client, world.base)}
    again = world.grocker("refresh-root", str(world.project), "--check", "--json")
    assert again.code == 0, again.err
    answer = json.loads(again.out)
    assert answer["refreshed"] is False and answer["pending"] == [] and answer["root"]["tag"] == root
    assert {i["Id"] for i in descendants(client, world.base)} == before


def test_rebase_swaps_the_root_under_the_same_application_layers(world: World, client: docker.DockerClient,
                                                                 registry: str, run_id: str) -> None:
    old, new = f"{world.app}:1", f"{registry}/rebase-{run_id}:2"
    report = world.tmp / "rebase.json"
    run = world.grocker("rebase", old, "--tag", new, "--push", "--report", str(report))
    assert run.code == 0, run.err[-4000:]
    result = json.loads(report.read_text())

    old_root = layers(client, world.refresh["previous_root"]["tag"])
    new_root = layers(client, world.refresh["root"]["tag"])
    before, after = layers(client, old), layers(client, new)
    app_layers = before[len(old_root):]
    assert before[:len(old_root)] == old_root
    assert after[:len(new_root)] == new_root  # the new root's layers
    assert after[len(new_root):-1] == app_layers  # the application's, byte for byte (same diff IDs)
    assert after[-1] == result["sbom_layer"] and len(after) == len(new_root) + len(app_layers) + 1
    assert result["application_layers"] == app_layers
    assert result["new_image_id"] == client.images.get(new).id and result["tag"] == new
    assert result["packages_changed"] == [{"name": "hostname", "old": STALE, "new": CURRENT}]
    assert result["python"] == {"old": result["python"]["new"], "new": result["python"]["old"]}
    assert result["smoke_test"] == "passed"

    dpkg = ("-W", "-f", "${Version}\n", "hostname")  # a last line without newline can be lost
    assert run_in(client, old, *dpkg, entrypoint="dpkg-query") == STALE
    assert run_in(client, new, *dpkg, entrypoint="dpkg-query") == CURRENT
    assert "check: passed" in run_in(client, new, "check")  # the application runs on the new root

    # The SBOM in the image: the same Python distributions, the new root's Debian packages.
    def components(image: str) -> dict[str, dict[tuple[str, str], Any]]:
        found: dict[str, dict[tuple[str, str], Any]] = {"python": {}, "debian": {}}
        for c in json.loads(run_in(client, image, "cat", SBOM_PATH))["components"]:
            kind = {p["name"]: p["value"] for p in c.get("properties", [])}.get("grocker:kind")
            if kind in found:
                found[kind][(c["name"], c["version"])] = c.get("hashes")
        return found

    was, now = components(old), components(new)
    assert now["python"] == was["python"]
    assert ("hostname", CURRENT) in now["debian"] and ("hostname", STALE) in was["debian"]
    assert set(now["debian"]) - {("hostname", CURRENT)} == set(was["debian"]) - {("hostname", STALE)}

    # Pushed with its SBOM and a provenance that names the new root and the image it was rebased from.
    assert result["digest"].startswith("sha256:")
    sbom = world.grocker("sbom", new, "--from", "registry", "--format", "table")
    assert sbom.code == 0, sbom.err
    assert any(line.split()[:3] == ["debian", "hostname", CURRENT] for line in sbom.out.splitlines()), sbom.out
    provenance = world.grocker("provenance", new, "--from", "registry")
    assert provenance.code == 0, provenance.err
    statement = json.loads(provenance.out)
    dependencies = {d["name"]: d.get("digest", {}).get("sha256") for d in
                    statement["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert dependencies["root-image"] == world.refresh["root"]["id"].split(":")[-1]
    assert dependencies["rebased-from"] == result["image_id"].split(":")[-1]
    assert {s["digest"]["sha256"] for s in statement["subject"]} == {
        result["new_image_id"].split(":")[-1], result["digest"].split(":")[-1]}

    # grocker verify: the provenance's layers are the rebased image's, the SBOM attached is the one in it.
    verified = world.grocker("verify", new, "--allow-unsigned", "--project", str(world.project))
    assert verified.code == 0, verified.out + verified.err
    assert [line.split()[:2] for line in verified.out.splitlines() if line.split()[1:2] in (["layers"],
            ["sbom-in-image"])] == [["ok", "layers"], ["ok", "sbom-in-image"]], verified.out

    # Already on its refreshed root: nothing to do.
    again = world.grocker("rebase", new, "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["rebased"] is False


def test_rebase_onto_another_python_is_refused(world: World, client: docker.DockerClient) -> None:
    context = world.tmp / "pypy"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {world.refresh['root']['tag']}\n"
        "RUN set -eu; export DEBIAN_FRONTEND=noninteractive; apt-get update -q; "
        "apt-get install -y -q --no-install-recommends pypy3; apt-get clean; rm -rf /var/lib/apt/lists/*; "
        "ln -sf /usr/bin/pypy3 /usr/bin/python3\n")
    other = f"{world.base.rsplit(':', 1)[0]}:pypy"
    client.images.build(path=str(context), tag=other, rm=True, labels={"io.grocker.test": "rebase"})
    refused = f"{world.app}:pypy"
    run = world.grocker("rebase", f"{world.app}:1", "--root", other, "--tag", refused)
    assert run.code == 19, run.err
    lines = [ln for ln in run.err.splitlines() if ln.startswith("grocker: error:")]
    assert len(lines) == 1 and "cannot rebase" in lines[0] and "Python version 3.11 -> 3.9" in lines[0]
    assert "rebuild the image on that root" in lines[0]
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(refused)


def test_the_nightly_refresh_on_a_real_buildbot_rebases_and_reports(world: World, client: docker.DockerClient,
                                                                   registry: str, run_id: str,
                                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    """``configure(refresh=True, rebase=[...])`` in a real master: its refresh builder, forced through the REST API,
    runs refresh-root (the root refreshed by the fixture is current: nothing newer), rebases the image (first
    built on the stale root) onto it, pushes it, and reports the image and the Debian package that changed."""
    from setuptools_grocker.registry.attach import read_artifact
    from tests.helpers import free_port
    from tests.integration.test_buildbot import BIN, SUCCESS, Api, run

    top = tmp_path_factory.mktemp("bb-refresh")
    ref = f"{registry}/rebase-{run_id}-nightly:1"
    assert world.build is not None
    original = world.build.project["image_id"]
    client.images.get(original).tag(ref.rsplit(":", 1)[0], "1")  # the deployed image, on the stale root
    pb, www = free_port(), free_port()
    master = top / "master"
    run(str(BIN / "buildbot"), "create-master", "-q", str(master))
    (master / "master.cfg").write_text(f"""\
import sys
from buildbot.plugins import worker
from buildbot_grocker import configure

c = BuildmasterConfig = {{"buildbotNetUsageData": None, "db": {{"db_url": "sqlite:///state.sqlite"}},
                         "protocols": {{"pb": {{"port": "tcp:{pb}:interface=127.0.0.1"}}}},
                         "www": {{"port": "tcp:{www}:interface=127.0.0.1", "plugins": {{}}}},
                         "buildbotURL": "http://127.0.0.1:{www}/", "workers": [worker.Worker("unused", "pw")]}}
configure(c, workers=["unused"], path={str(world.project)!r}, refresh=True, rebase=[{ref!r}],
          grocker=[sys.executable, "-m", "setuptools_grocker"], env={world.env!r})
""")
    run(str(BIN / "buildbot"), "start", str(master))
    try:
        api = Api(f"http://127.0.0.1:{www}")
        build = api.force("grocker-refresh", scheduler="grocker-refresh-force")
        steps = {s["name"]: s for s in api.get(f"builds/{build['buildid']}/steps")["steps"]}
        assert build["results"] == SUCCESS, (build["state_string"], {n: s["state_string"] for n, s in steps.items()})
        assert steps["refresh-root"]["state_string"] == "root current"
        rebase = steps[f"rebase {ref.rsplit('/', 1)[-1]}"]
        assert rebase["results"] == SUCCESS and rebase["state_string"].startswith(f"rebased {ref}")
        change = {"name": "hostname", "old": STALE, "new": CURRENT}
        [done] = build["properties"]["grocker_rebased"][0]
        assert done["image"] == ref and done["rebased"] and done["tag"] == ref
        assert done["packages_changed"] == [change]
        assert client.images.get(ref).id == done["new_image_id"] != original
        assert run_in(client, ref, "-W", "-f", "${Version}\n", "hostname", entrypoint="dpkg-query") == CURRENT
        # Pushed by the step, with its SBOM next to it in the registry.
        sbom = read_artifact(ref, "sbom")
        assert sbom is not None and b'"hostname"' in sbom and CURRENT.encode() in sbom
        report = build["properties"]["grocker_refresh_report"][0]
        assert report["refreshed"] is False and [r["image"] for r in report["rebased"]] == [ref]
        assert report["not_rebased"] == []
        assert steps["refresh-report"]["state_string"] == f"root current rebased {ref}"
        logs = {lg["name"]: lg for lg in api.get(f"steps/{steps['refresh-report']['stepid']}/logs")["logs"]}
        with urllib.request.urlopen(f"{api.url}/logs/{logs['refresh.json']['logid']}/raw", timeout=30) as resp:
            assert json.loads(resp.read()) == report
    finally:
        subprocess.run([str(BIN / "buildbot"), "stop", str(master)], capture_output=True)
