"""Reproducible images with one layer per internal library, against the real engine and registry."""
from __future__ import annotations

import json
import shutil
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.helpers import grocker, python_project, remove_images


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def library(root: Path, name: str, deps: list[str], body: str) -> None:
    python_project(root / "libs" / name, name, deps=deps, modules={"__init__.py": body})


def application(root: Path, name: str, deps: list[str]) -> None:
    imports = "".join(f"import {d}\n" for d in deps)
    python_project(root / "apps" / name, name, deps=deps, scripts={name: f"{name}:main"},
                   modules={"__init__.py": imports + "\n\ndef main():\n    print('ok')\n"},
                   grocker=f'[tool.grocker.commands]\nhello = "{name}"')


def layers(client: docker.DockerClient, ref: str) -> list[str]:
    return list(client.images.get(ref).attrs["RootFS"]["Layers"])


def manifest_layers(registry: str, repo: str, tag: str) -> list[str]:
    req = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{tag}",
                                 headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return [layer["digest"] for layer in json.loads(resp.read())["layers"]]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, registry: str, run_id: str, client: docker.DockerClient):
    """core (depends on six) <- extra; apps: till (core), kiosk (core, extra): same third-party set."""
    root = tmp_path_factory.mktemp("layers") / "shop"
    p = f"l{run_id[:5]}"
    write(root / "pyproject.toml", f"""
        [tool.grocker]
        registry = "{registry}"

        [tool.grocker.workspace]
        members = ["libs/*", "apps/*"]
    """)
    library(root, f"{p}core", ["six"], "import six\n\nVALUE = 1\n")
    library(root, f"{p}extra", [f"{p}core"], f"import {p}core\n\nVALUE = 2\n")
    application(root, f"{p}till", [f"{p}core"])
    application(root, f"{p}kiosk", [f"{p}core", f"{p}extra"])
    first = grocker("workspace", "build", str(root), "--push", report=root.parent / "first.json")
    assert first.code == 0, first.err[-3000:]
    yield {"root": root, "prefix": p, "first": first}
    remove_images(client, *(f"{registry}/{p}{a}:1.0.0" for a in ("till", "kiosk")))


def app_result(run: Any, name: str) -> dict[str, Any]:
    return next(x for x in run.report["projects"] if x["name"] == name)


def test_one_layer_per_internal_library_and_shared_third_party(shop: dict[str, Any], registry: str,
                                                              client: docker.DockerClient) -> None:
    p = shop["prefix"]
    till, kiosk = (f"{registry}/{p}till:1.0.0", f"{registry}/{p}kiosk:1.0.0")
    history = [h["CreatedBy"] for h in client.images.get(kiosk).history()][::-1]
    ours = [h for h in history if h.startswith("setuptools-grocker: ")]
    assert len(ours) == 4, history
    assert ours[0].startswith("setuptools-grocker: venv and third-party: six ")
    assert ours[1:] == [f"setuptools-grocker: internal library {p}core 1.0.0",
                        f"setuptools-grocker: internal library {p}extra 1.0.0",
                        f"setuptools-grocker: application {p}kiosk 1.0.0"]
    t, k = layers(client, till), layers(client, kiosk)
    # Same root, same third-party layer, same core layer: shared; the application layers differ.
    assert t[:-1] == k[:-2] and t[-1] != k[-1]
    # In the registry too: the same blob digests.
    tm, km = manifest_layers(registry, f"{p}till", "1.0.0"), manifest_layers(registry, f"{p}kiosk", "1.0.0")
    assert tm[:-1] == km[:-2]
    # The images still work: non-root, the entrypoint, the check.
    assert "check: passed" in client.containers.run(kiosk, ["check"], remove=True).decode()
    assert client.containers.run(kiosk, ["run", "id", "-u"], remove=True).decode().strip() == "10001"


def test_a_library_change_changes_its_layers_only_and_pushes_only_them(shop: dict[str, Any], registry: str,
                                                                      client: docker.DockerClient) -> None:
    root, p = shop["root"], shop["prefix"]
    kiosk = f"{registry}/{p}kiosk:1.0.0"
    till = f"{registry}/{p}till:1.0.0"
    before_k, before_t = layers(client, kiosk), layers(client, till)
    init = root / "libs" / f"{p}extra" / "src" / f"{p}extra" / "__init__.py"
    init.write_text(init.read_text() + "# one more line\n")
    run = grocker("workspace", "build", str(root), "--push", report=root.parent / "second.json")
    assert run.code == 0, run.err[-3000:]
    status = {x["name"]: x["status"] for x in run.report["projects"]}
    assert status == {f"{p}core": "cached", f"{p}till": "cached", f"{p}extra": "built", f"{p}kiosk": "built"}
    after_k = layers(client, kiosk)
    changed = [i for i, (a, b) in enumerate(zip(before_k, after_k)) if a != b]
    # Only extra's layer and kiosk's own layer (its wheel's RECORD of dependencies is unchanged,
    # but the application layer holds app.json with the distributions list: same here).
    assert changed == [len(after_k) - 2] or changed == [len(after_k) - 2, len(after_k) - 1]
    assert layers(client, till) == before_t
    pushed = app_result(run, f"{p}kiosk")["pushed_bytes"]
    assert 0 < pushed < 64_000, pushed  # a few kilobytes of layer and config, no root or third-party layer


def test_two_builds_from_scratch_give_the_same_image_and_digest(tmp_path: Path, examples_copy: Path,
                                                              registry: str, client: docker.DockerClient,
                                                              run_id: str) -> None:
    ref = f"{registry}/grocker-test/repro:{run_id}"
    results = []
    for attempt in ("one", "two"):
        work = tmp_path / attempt
        shutil.copytree(examples_copy, work, ignore=shutil.ignore_patterns(".grocker"))  # no project state
        env = {"GROCKER_CACHE_HOME": str(tmp_path / f"cache-{attempt}"), "SOURCE_DATE_EPOCH": "1700000000"}
        run = grocker("build", str(work / "demo-app"), "--tag", ref, "--push", env=env,
                      report=tmp_path / f"{attempt}.json")
        assert run.code == 0, run.err[-3000:]
        # Each build compiled its bytecode afresh (its own cache home): the pycs are reproducible too.
        assert len(list((tmp_path / f"cache-{attempt}" / "bytecode").glob("*.tar"))) >= 3
        results.append((run.project["image_id"], run.project["digest"]))
        remove_images(client, ref, run.project["image_id"])  # the second build starts with no image
    assert results[0] == results[1]


def test_concurrent_pushes_through_one_blob_cache_and_a_damaged_blob(shop: dict[str, Any], registry: str,
                                                                     client: docker.DockerClient,
                                                                     tmp_path: Path) -> None:
    """The threads of `workspace build --jobs N --push` share one cache: no error, no corrupt layer."""
    from concurrent.futures import ThreadPoolExecutor

    from setuptools_grocker.engine import Engine
    from setuptools_grocker.progress import Progress
    from setuptools_grocker.registry.blobcache import diff_id_of
    from setuptools_grocker.registry.client import digest_of
    from setuptools_grocker.registry.push import push_runtime_image

    p = shop["prefix"]
    till = f"{registry}/{p}till:1.0.0"
    image_id = client.images.get(till).id
    cache = tmp_path / "cache"  # cold: every thread makes and writes every blob
    with Engine(Progress(quiet=True)) as engine, ThreadPoolExecutor(4) as pool:
        pushes = [pool.submit(push_runtime_image, engine, image_id, [f"{registry}/{p}till:race"], cache,
                              Progress(quiet=True)) for _ in range(4)]
        digests = {push.result()[0] for push in pushes}
        # The same image, the same blobs: the digest the workspace build pushed.
        assert digests == {digest_of(till)}
        # A blob cut short on disk is noticed, made again from the engine, and the push is the same.
        layer = max((cache / "blobs").glob("*.tar.gz"), key=lambda path: path.stat().st_size)
        whole = layer.read_bytes()
        layer.write_bytes(whole[: len(whole) // 3])
        assert push_runtime_image(engine, image_id, [f"{registry}/{p}till:race"], cache,
                                  Progress(quiet=True)) == (digest_of(till), 0)
        assert layer.read_bytes() == whole
        assert diff_id_of(whole) == "sha256:" + layer.name.split(".")[0]
