"""Runtime images ship bytecode compiled by their own interpreter, reproducibly, cached per wheel."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.helpers import grocker, python_project, remove_images

# Run in the image: for each module, its pyc next to it (unchecked hash, the final path as file
# name), then Python's own account of the import (-v) says it loaded the pyc.
PROBE = r"""
import importlib.util, json, marshal, sys
out = {}
for name in sys.argv[1:]:
    spec = importlib.util.find_spec(name)
    cached = importlib.util.cache_from_source(spec.origin)
    data = open(cached, "rb").read()
    code = marshal.loads(data[16:])
    out[name] = {"origin": spec.origin, "cached": cached, "flags": int.from_bytes(data[4:8], "little"),
                 "filename": code.co_filename}
print(json.dumps(out))
"""


def probe(client: docker.DockerClient, image: str, *modules: str) -> dict[str, Any]:
    raw = client.containers.run(image, ["run", "python", "-c", PROBE, *modules], remove=True)
    return dict(json.loads(raw.decode().strip().splitlines()[-1]))


def archive_files(path: Path) -> str:
    """The manifest of a bytecode cache archive, as text."""
    with tarfile.open(path) as tar:
        manifest = tar.extractfile("BYTECODE.json")
        assert manifest is not None
        return manifest.read().decode()


def import_trace(client: docker.DockerClient, image: str, module: str) -> str:
    return client.containers.run(image, ["run", "python", "-v", "-c", f"import {module}"], remove=True,
                                 stdout=False, stderr=True).decode()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, run_id: str, client: docker.DockerClient) -> Any:
    root = tmp_path_factory.mktemp("bytecode")
    name = f"bc{run_id[:6]}"
    project = python_project(root / name, name, deps=["six"], scripts={name: f"{name}:main"},
                             modules={"__init__.py": "import six\n\n\ndef main():\n    print(six.PY3)\n"},
                             grocker=f'[tool.grocker.commands]\nhello = "{name}"')
    env = {"GROCKER_CACHE_HOME": str(root / "cache"), "SOURCE_DATE_EPOCH": "1700000000"}
    tag = f"grocker-test/{name}:{run_id}"
    first = grocker("build", str(project), "--tag", tag, env=env, report=root / "first.json")
    assert first.code == 0, first.err[-3000:]
    yield {"root": root, "name": name, "project": project, "env": env, "tag": tag, "first": first}
    remove_images(client, tag, f"{tag}-nobc")


def test_the_app_and_its_dependencies_have_unchecked_hash_bytecode_that_python_uses(
        app: dict[str, Any], client: docker.DockerClient) -> None:
    name, image = app["name"], app["first"].project["image_id"]
    found = probe(client, image, name, "six")
    for module, info in found.items():
        assert info["cached"].startswith("/opt/app/venv/lib/python3.11/site-packages/"), info
        assert "/__pycache__/" in info["cached"] and info["cached"].endswith(".cpython-311.pyc"), info
        assert info["flags"] == 0b01, (module, info)  # PEP 552: hash-based, source not checked
        assert info["filename"] == info["origin"], info  # tracebacks show the path in the image
    trace = import_trace(client, image, name)
    for module, info in found.items():
        assert f"code object from '{info['cached']}'" in trace, (module, trace[-2000:])
    # Nothing is written at import (read-only venv, PYTHONDONTWRITEBYTECODE kept): the image's files only.
    diff = client.containers.run(image, ["run", "python", "-c", f"import {name}, os; "
                                         f"print(os.environ['PYTHONDONTWRITEBYTECODE'])"], remove=True)
    assert diff.decode().strip() == "1"


def test_a_second_build_reuses_the_cached_bytecode_and_a_damaged_archive_is_compiled_again(
        app: dict[str, Any], client: docker.DockerClient) -> None:
    cache = app["root"] / "cache" / "bytecode"
    archives = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.tar")}
    assert len(archives) == 2, archives  # six and the application
    init = app["project"] / "src" / app["name"] / "__init__.py"
    init.write_text(init.read_text() + "# changed\n")
    second = grocker("build", str(app["project"]), "--tag", app["tag"], env=app["env"],
                     report=app["root"] / "second.json")
    assert second.code == 0, second.err[-3000:]
    assert second.project["status"] == "built"
    now = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.tar")}
    assert {k: now.get(k) for k in archives} == archives  # reused, not rewritten
    # No new archive: the changed application wheel's bytecode came from its compile container, which stays
    # out of the shared cache (test_bytecode_compile_container.py).
    assert len(now) == 2
    six_archive = next(p for p in cache.glob("*.tar") if "/__pycache__/six." in archive_files(p))
    whole = six_archive.read_bytes()
    six_archive.write_bytes(whole[: len(whole) // 2])
    init.write_text(init.read_text() + "# changed again\n")
    third = grocker("build", str(app["project"]), "--tag", app["tag"], env=app["env"],
                    report=app["root"] / "third.json")
    assert third.code == 0, third.err[-3000:]
    assert six_archive.read_bytes() == whole  # compiled again, to the same bytes
    assert probe(client, third.project["image_id"], "six")["six"]["flags"] == 0b01
    # --no-cache, a clean build: everything compiled again (the archives rewritten), the same image.
    before = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.tar")}
    clean = grocker("build", str(app["project"]), "--tag", app["tag"], "--no-cache", env=app["env"],
                    report=app["root"] / "clean.json")
    assert clean.code == 0, clean.err[-3000:]
    assert clean.project["image_id"] == third.project["image_id"]
    after = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.tar")}
    assert after[six_archive.name] != before[six_archive.name] and six_archive.read_bytes() == whole


def test_without_bytecode_the_image_has_none_and_another_id(app: dict[str, Any], client: docker.DockerClient,
                                                           tmp_path: Path) -> None:
    env = {**app["env"], "GROCKER_NO_BYTECODE": "1"}
    run = grocker("build", str(app["project"]), "--tag", f"{app['tag']}-nobc", env=env,
                  report=tmp_path / "nobc.json")
    assert run.code == 0, run.err[-3000:]
    with_bc = client.images.get(app["tag"])
    assert run.project["image_id"] != with_bc.id
    listing = client.containers.run(run.project["image_id"],
                                    ["run", "find", "/opt/app/venv", "-name", "*.pyc"], remove=True)
    assert listing.decode().strip() == ""
    assert client.images.get(run.project["image_id"]).attrs["Size"] < with_bc.attrs["Size"]
