"""``grocker lock``: the application's closure pinned by hash in its pylock.toml (PEP 751).

One HTTP index (reachable from the compile container, a credential in its URL) holds a package at 1.0; the
application is locked; 2.0 is published; the build still installs 1.0 (``closure: locked``). The lock's bytes
are part of the key; a changed requirement makes the lock stale (the build fails naming the fix); ``--upgrade``
resolves again and rewrites the lock; no credential ever reaches the lock.
"""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sys
import uuid
import zipfile
from pathlib import Path

import docker

from tests.helpers import empty_index, grocker, python_project, remove_images

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SECRET = "l0ck-s3cret-pw"


def _wheel(directory: Path, name: str, version: str) -> Path:
    module = name.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/top_level.txt": f"{module}\n".encode(),
    }
    record = "".join(
        f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
        for n, d in files.items()) + f"{dist}/RECORD,,\n"
    path = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in files.items():
            zf.writestr(n, d)
        zf.writestr(f"{dist}/RECORD", record)
    return path


def _publish(root: Path, name: str, *versions: str) -> None:
    """The PEP 503 pages of ``name`` under ``root/simple`` listing ``versions`` (wheels under ``root/files``)."""
    (root / "files").mkdir(parents=True, exist_ok=True)
    links = []
    for version in versions:
        # A published file never changes (as on a real index): an existing wheel is listed again, not rebuilt.
        known = root / "files" / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
        wheel = known if known.is_file() else _wheel(root / "files", name, version)
        links.append(f'<a href="../../files/{wheel.name}#sha256={hashlib.sha256(wheel.read_bytes()).hexdigest()}">'
                     f"{wheel.name}</a>")
    page = root / "simple" / name
    page.mkdir(parents=True, exist_ok=True)
    (page / "index.html").write_text("<html><body>" + "".join(links) + "</body></html>\n")
    (root / "simple" / "index.html").write_text(f'<html><body><a href="{name}/">{name}</a></body></html>\n')


def _lock(project: Path) -> dict:
    return tomllib.loads((project / "pylock.toml").read_text())


def _versions(lock: dict, name: str) -> list[str]:
    return [p["version"] for p in lock["packages"] if p["name"] == name]


def test_a_locked_application_installs_the_locked_files(client: docker.DockerClient, tmp_path: Path) -> None:
    uid = uuid.uuid4().hex[:8]
    dep = f"grocker-test-locked-{uid}"
    tag = f"grocker-test/locked-app:{uid}"
    _publish(tmp_path / "index", dep, "1.0")
    with empty_index(client, tmp_path / "index") as index:
        host = index.split(":")[0]
        env = {"PIP_EXTRA_INDEX_URL": f"http://locker:{SECRET}@{index}/simple/", "PIP_TRUSTED_HOST": host,
               "GROCKER_CACHE_HOME": str(tmp_path / "cache"), "GROCKER_WARM_IDLE": "0"}
        project = python_project(tmp_path / "app", f"locked-app-{uid}", deps=[dep])
        try:
            # No lock: resolved, and the build says how to pin it.
            run = grocker("build", str(project), "--tag", tag, env=env, report=tmp_path / "r0.json")
            assert run.code == 0, run.err[-3000:]
            assert run.project["closure"] == "resolved"
            assert "`grocker lock` pins it" in run.err + run.out

            run = grocker("lock", str(project), env=env)
            assert run.code == 0, run.err[-3000:]
            data = (project / "pylock.toml").read_bytes()
            lock = tomllib.loads(data.decode())
            assert lock["lock-version"] == "1.0"
            assert _versions(lock, dep) == ["1.0"]
            assert all(p["name"] != project.name for p in lock["packages"])  # built from source, never locked
            assert lock["tool"]["grocker"]["inputs"].startswith("sha256:")
            [package] = [p for p in lock["packages"] if p["name"] == dep]
            assert all(len(w["hashes"]["sha256"]) == 64 for w in package["wheels"])
            assert SECRET.encode() not in data and b"locker" not in data

            # A newer version published after the lock does not change the build.
            _publish(tmp_path / "index", dep, "1.0", "2.0")
            run = grocker("build", str(project), "--tag", tag, env=env, report=tmp_path / "r1.json")
            assert run.code == 0, run.err[-3000:]
            assert run.project["closure"] == "locked"
            assert f"{dep}==1.0" in run.project["distributions"]
            locked_key = run.project["key"]

            # The same lock: a cache hit; other lock bytes: another key.
            run = grocker("build", str(project), "--tag", tag, env=env, report=tmp_path / "r2.json")
            assert run.code == 0 and run.project["status"] == "cached" and run.project["key"] == locked_key
            (project / "pylock.toml").write_bytes(data + b"# reviewed\n")
            run = grocker("build", str(project), "--tag", tag, env=env, report=tmp_path / "r3.json")
            assert run.code == 0, run.err[-3000:]
            assert run.project["key"] != locked_key
            assert f"{dep}==1.0" in run.project["distributions"]

            # The project's requirements changed: the lock is stale, and the build says what to do.
            python_project(project, f"locked-app-{uid}", deps=[f"{dep}>=1.0"])
            run = grocker("build", str(project), "--tag", tag, env=env, report=tmp_path / "r4.json")
            assert run.code == 3, run.err[-3000:]
            line = run.err.strip().splitlines()[-1]
            assert "pylock.toml is stale" in line and "grocker lock" in line and "--upgrade" in line

            # --upgrade: resolved again, the lock rewritten, the build from it.
            run = grocker("build", str(project), "--tag", tag, "--upgrade", env=env, report=tmp_path / "r5.json")
            assert run.code == 0, run.err[-3000:]
            assert run.project["closure"] == "locked"
            assert f"{dep}==2.0" in run.project["distributions"]
            assert _versions(_lock(project), dep) == ["2.0"]
            assert SECRET not in (project / "pylock.toml").read_text()
            assert json.loads(client.images.get(tag).labels["io.grocker.distributions"]).count(f"{dep}==2.0") == 1
            # The image's provenance names the lock by the sha256 of its bytes.
            run = grocker("provenance", tag, "--from", "engine", env=env)
            assert run.code == 0, run.err[-2000:]
            deps = json.loads(run.out)["predicate"]["buildDefinition"]["resolvedDependencies"]
            assert {"name": "lock", "uri": "project-file:pylock.toml", "digest": {
                "sha256": hashlib.sha256((project / "pylock.toml").read_bytes()).hexdigest()}} in deps

            # A lock that is not one: one line, the configuration's exit code, no compile.
            (project / "pylock.toml").write_text("lock-version = [\n")
            run = grocker("build", str(project), "--tag", tag, env=env)
            assert run.code == 3
            assert "is not a valid lock: not TOML" in run.err.strip().splitlines()[-1]
            # ... which --upgrade replaces.
            run = grocker("build", str(project), "--tag", tag, "--upgrade", env=env, report=tmp_path / "r6.json")
            assert run.code == 0, run.err[-3000:]
            assert run.project["closure"] == "locked" and _versions(_lock(project), dep) == ["2.0"]
        finally:
            remove_images(client, tag)


def test_a_lock_leaves_the_local_packages_to_their_source(client: docker.DockerClient, examples_copy: Path,
                                                          tmp_path: Path, run_id: str) -> None:
    """demo-app builds demo-lib from source (local-packages): the lock names it as built from source and pins
    only the third-party packages; the locked build installs both."""
    shutil.copytree(examples_copy, tmp_path / "ex", ignore=shutil.ignore_patterns(".grocker"))
    project = tmp_path / "ex" / "demo-app"
    env = {"GROCKER_CACHE_HOME": str(tmp_path / "cache"), "GROCKER_WARM_IDLE": "0"}
    tag = f"grocker-test/locked-demo:{run_id}"
    try:
        run = grocker("lock", str(project), env=env)
        assert run.code == 0, run.err[-3000:]
        lock = _lock(project)
        assert lock["tool"]["grocker"]["from-source"] == ["grocker-demo-lib"]
        names = {p["name"] for p in lock["packages"]}
        assert "packaging" in names and not names & {"grocker-demo-lib", "grocker-demo-app"}
        run = grocker("build", str(project), "--tag", tag, env=env, report=tmp_path / "r.json")
        assert run.code == 0, run.err[-3000:]
        assert run.project["closure"] == "locked"
        installed = {d.split("==")[0]: d.split("==")[1] for d in run.project["distributions"]}
        assert installed["grocker-demo-lib"] and installed["packaging"] == _versions(lock, "packaging")[0]
    finally:
        remove_images(client, tag)
