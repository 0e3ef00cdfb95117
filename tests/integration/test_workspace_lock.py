"""``grocker lock ROOT``: one PEP 751 lock for a workspace's shared third-party set.

A workspace of one library and two applications, all three using a package that one HTTP index holds at 1.0.
The workspace is locked (the library's wheel built first, as a workspace build makes it); 2.0 is published; the
workspace build installs 1.0 in both applications (``closure: locked``); one application's requirement changes:
that member alone fails as stale, naming the fix; ``--upgrade`` locks again (2.0) and builds from the new lock.
Then one application caps the package below 2.0: the other is resolved again with 1.0 (one set); when no
version fits both, the lock fails in one line naming the package and the applications.
"""
from __future__ import annotations

import hashlib
import json
import sys
import uuid
from pathlib import Path

import docker
import pytest

from tests.helpers import Run, empty_index, grocker, python_project, remove_images
from tests.integration.test_pylock import _publish

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.integration

APP = '[tool.grocker]\ndefault-command = "hello"\n[tool.grocker.commands]\nhello = "python -c pass"\n'


def _projects(run: Run) -> dict[str, dict]:
    assert run.report is not None, run.err[-3000:]
    return {p["name"]: p for p in run.report["projects"]}


def _locked(root: Path) -> dict:
    return tomllib.loads((root / "pylock.toml").read_text())


def test_one_lock_for_the_workspace(client: docker.DockerClient, tmp_path: Path) -> None:
    uid = uuid.uuid4().hex[:8]
    dep, lib, app_a, app_b = (f"wsl{uid}-{n}" for n in ("dep", "lib", "app-a", "app-b"))
    root = tmp_path / "ws"
    root.mkdir()
    (root / "pyproject.toml").write_text('[tool.grocker.workspace]\nmembers = ["lib", "app-a", "app-b"]\n')
    python_project(root / "lib", lib, deps=[dep])
    python_project(root / "app-a", app_a, deps=[lib], grocker=APP)
    python_project(root / "app-b", app_b, deps=[lib, dep], grocker=APP)
    _publish(tmp_path / "index", dep, "1.0")
    images: set[str] = set()
    with empty_index(client, tmp_path / "index") as index:
        env = {"PIP_EXTRA_INDEX_URL": f"http://{index}/simple/", "PIP_TRUSTED_HOST": index.split(":")[0],
               "GROCKER_CACHE_HOME": str(tmp_path / "cache"), "GROCKER_WARM_IDLE": "0"}

        def build(*extra: str, name: str) -> Run:
            run = grocker("workspace", "build", str(root), *extra, env=env, report=tmp_path / f"{name}.json")
            images.update(str(p["image"]) for p in (run.report or {}).get("projects", []) if p.get("image"))
            return run

        try:
            run = grocker("lock", str(root), env=env)
            assert run.code == 0, run.err[-3000:]
            assert "2 applications" in run.out + run.err
            lock = _locked(root)
            assert lock["lock-version"] == "1.0"
            [package] = [p for p in lock["packages"] if p["name"] == dep]
            assert package["version"] == "1.0" and package["tool"]["grocker"]["used-by"] == [app_a, app_b]
            assert all(len(w["hashes"]["sha256"]) == 64 for w in package["wheels"])
            assert not {p["name"] for p in lock["packages"]} & {lib, app_a, app_b}  # built, never locked
            apps = lock["tool"]["grocker"]["applications"]
            assert set(apps) == {app_a, app_b}
            assert all(a["inputs"].startswith("sha256:") and a["from-source"] == [lib] for a in apps.values())

            # A newer version published after the lock: both applications still install the locked one.
            _publish(tmp_path / "index", dep, "1.0", "2.0")
            run = build(name="r1")
            assert run.code == 0, run.err[-4000:]
            projects = _projects(run)
            for app in (app_a, app_b):
                assert projects[app]["closure"] == "locked", projects[app]
                assert f"{dep}==1.0" in projects[app]["distributions"]
            keys = {app: projects[app]["key"] for app in (app_a, app_b)}
            # The image's provenance names the workspace lock by the sha256 of its bytes.
            prov = grocker("provenance", str(projects[app_a]["image"]), "--from", "engine", env=env)
            assert prov.code == 0, prov.err[-2000:]
            deps = json.loads(prov.out)["predicate"]["buildDefinition"]["resolvedDependencies"]
            assert {"name": "lock", "uri": "project-file:../pylock.toml", "digest": {
                "sha256": hashlib.sha256((root / "pylock.toml").read_bytes()).hexdigest()}} in deps

            # app-b's requirements change: its part of the lock is stale, it alone fails; app-a is up to date.
            python_project(root / "app-b", app_b, deps=[lib, f"{dep}>=1.0"], grocker=APP)
            run = build(name="r2")
            assert run.code != 0
            projects = _projects(run)
            assert projects[app_b]["status"] == "failed"
            assert "pylock.toml is stale" in projects[app_b]["error"] and f"grocker lock {root}" in run.err
            assert projects[app_a]["status"] == "cached" and projects[app_a]["key"] == keys[app_a]
            assert projects[lib]["status"] == "cached"

            # --upgrade: the shared set is resolved again (2.0), the lock rewritten, both built from it.
            run = build("--upgrade", name="r3")
            assert run.code == 0, run.err[-4000:]
            assert "resolved again and rewritten" in run.err + run.out
            [package] = [p for p in _locked(root)["packages"] if p["name"] == dep]
            assert package["version"] == "2.0"
            projects = _projects(run)
            for app in (app_a, app_b):
                assert projects[app]["closure"] == "locked"
                assert f"{dep}==2.0" in projects[app]["distributions"]
            assert projects[app_a]["key"] != keys[app_a]  # its part of the lock changed: another key

            # One set for the workspace: app-a caps the package below 2, so app-b is resolved again with 1.0.
            python_project(root / "app-a", app_a, deps=[lib, f"{dep}<2"], grocker=APP)
            run = grocker("lock", str(root), env=env)
            assert run.code == 0, run.err[-3000:]
            assert f"resolving again with {dep}==1.0" in run.err + run.out
            [package] = [p for p in _locked(root)["packages"] if p["name"] == dep]
            assert package["version"] == "1.0" and package["tool"]["grocker"]["used-by"] == [app_a, app_b]
            # No version fits both: one line naming the package and each application's version; lock unchanged.
            before = (root / "pylock.toml").read_bytes()
            python_project(root / "app-b", app_b, deps=[lib, f"{dep}>=2"], grocker=APP)
            run = grocker("lock", str(root), env=env)
            assert run.code == 3, run.err[-3000:]
            line = run.err.strip().splitlines()[-1]
            assert f"need different versions of {dep}: {app_a} {dep} 1.0, {app_b} {dep} 2.0" in line
            assert (root / "pylock.toml").read_bytes() == before
        finally:
            remove_images(client, *images)
