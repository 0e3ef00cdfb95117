"""SBOM and provenance on real builds: what the image holds, reproducibility, the registry, --find."""
from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest
from packaging.utils import canonicalize_name

from setuptools_grocker.image import records
from setuptools_grocker.pipeline.project import Source
from tests.helpers import Run, empty_index, grocker, python_project, remove_images

pytestmark = pytest.mark.integration

SBOM_PATH = "/opt/app/grocker/sbom.cdx.json"
SECRET = "s3cr3t-t0ken"


@pytest.fixture(scope="module")
def pip_env(tmp_path_factory: pytest.TempPathFactory, client: docker.DockerClient) -> Iterator[dict[str, str]]:
    """An extra index with a credential in its user part and its query (an empty index: it has nothing)."""
    with empty_index(client, tmp_path_factory.mktemp("empty-index")) as index:
        yield {"PIP_EXTRA_INDEX_URL": f"http://ci:{SECRET}@{index}/simple?token={SECRET}",
               "PIP_RETRIES": "0", "PIP_TIMEOUT": "5"}


def in_image(client: docker.DockerClient, image: str, *command: str, entrypoint: str | None = None) -> str:
    out = client.containers.run(image, list(command), entrypoint=entrypoint, remove=True)
    return out.decode() if isinstance(out, bytes) else str(out)


def components(document: dict[str, Any], kind: str) -> set[tuple[str, str]]:
    found = set()
    for c in document["components"]:
        props = {p["name"]: p["value"] for p in c.get("properties", [])}
        if props.get("grocker:kind") == kind:
            found.add((c["name"], c["version"]))
    return found


def git_project(root: Path, name: str, deps: list[str]) -> Path:
    python_project(root, name, deps=deps, scripts={name: f"{name.replace('-', '_')}:main"},
                   modules={"__init__.py": "def main():\n    print('hi')\n"})
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    # Fixed dates: the same files give the same commit, hence the same revision label, in another directory.
    dates = {"GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z"}
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
                   check=True, env={**os.environ, **dates})
    return root


class Built:
    def __init__(self, run: Run, project: Path, home: Path, tag: str) -> None:
        self.run, self.project, self.home, self.tag = run, project, home, tag

    @property
    def image_id(self) -> str:
        return str(self.run.project["image_id"])

    @property
    def env(self) -> dict[str, str]:
        return {"GROCKER_CACHE_HOME": str(self.home)}


def build(tmp: Path, name: str, deps: list[str], tag: str, *extra: str, env: dict[str, str] | None = None) -> Built:
    project = git_project(tmp / name, name, deps)
    home = tmp / f"cache-{name}"
    run = grocker("build", str(project), "--tag", tag, "--no-cache", *extra, report=tmp / f"{name}.json",
                  env={"GROCKER_CACHE_HOME": str(home), "SOURCE_DATE_EPOCH": "1700000000", **(env or {})})
    assert run.code == 0, run.err[-4000:]
    return Built(run, project, home, tag)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, client: docker.DockerClient, registry: str,
           run_id: str, pip_env: dict[str, str]) -> Iterator[dict[str, Built]]:
    """Two applications pushed to the real registry: one with a third-party dependency, one without."""
    tmp = tmp_path_factory.mktemp("sbom")
    with_dep = build(tmp, "sbom-app", ["packaging"], f"{registry}/sbom-app-{run_id}:1", "--push", env=pip_env)
    without = build(tmp, "sbom-bare", [], f"{registry}/sbom-bare-{run_id}:1", "--push")
    yield {"with": with_dep, "without": without}
    # Every tag the builds gave (version and describe tags too).
    remove_images(client, *with_dep.run.project["tags"], *without.run.project["tags"])


def test_sbom_lists_exactly_what_the_image_holds(images: dict[str, Built], client: docker.DockerClient) -> None:
    image = images["with"].image_id
    raw = in_image(client, image, "cat", SBOM_PATH)  # readable without grocker
    document = json.loads(raw)
    seen = json.loads(in_image(client, image, "-c", "import importlib.metadata as m, json; print(json.dumps("
                               "[[d.metadata['Name'], d.version] for d in m.distributions()]))",
                               entrypoint="/opt/app/venv/bin/python"))
    assert components(document, "python") == {(canonicalize_name(n), v) for n, v in seen}
    assert {n for n, _ in components(document, "python")} == {"sbom-app", "packaging"}
    dpkg = in_image(client, image, "-W", "-f", "${db:Status-Status} ${Package} ${Version}\\n", entrypoint="dpkg-query")
    installed = {tuple(line.split()[1:3]) for line in dpkg.splitlines() if line.startswith("installed ")}
    assert components(document, "debian") == installed and len(installed) > 50
    python = {c["name"]: c for c in document["components"] if c.get("purl", "").startswith("pkg:pypi/")}
    internal = {n: {p["name"]: p["value"] for p in c["properties"]}["grocker:internal"] for n, c in python.items()}
    assert internal == {"sbom-app": "true", "packaging": "false"}
    assert python["packaging"]["hashes"][0]["alg"] == "SHA-256" and python["packaging"]["licenses"]
    assert SECRET not in raw

    shown = grocker("sbom", images["with"].tag, "--from", "engine", "--format", "table", env=images["with"].env)
    assert shown.code == 0, shown.err
    assert "packaging" in shown.out and "third-party" in shown.out


def test_two_builds_from_scratch_give_the_same_sbom_bytes(images: dict[str, Built], client: docker.DockerClient,
                                                          pip_env: dict[str, str],
                                                          tmp_path: Path) -> None:
    again = build(tmp_path, "sbom-app", ["packaging"], "grocker-test/sbom-again:1", env=pip_env)
    try:
        assert again.image_id == images["with"].image_id  # the same image, SBOM included
        first = in_image(client, images["with"].image_id, "cat", SBOM_PATH)
        assert in_image(client, again.image_id, "cat", SBOM_PATH) == first
    finally:
        remove_images(client, *again.run.project["tags"])


def test_provenance_names_the_source_commit_and_images(images: dict[str, Built], pip_env: dict[str, str],
                                                      client: docker.DockerClient) -> None:
    built = images["with"]
    local = grocker("provenance", built.tag, "--from", "engine", env=built.env)
    assert local.code == 0, local.err
    assert SECRET not in local.out
    statement = json.loads(local.out)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"][0]["digest"]["sha256"] == built.image_id.split(":")[1]
    deps = {d["name"]: d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]}
    commit = subprocess.run(["git", "-C", str(built.project), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert deps["source"]["digest"] == {"sha256": Source.scan(built.project).digest, "gitCommit": commit}
    record = records.find(built.home, built.image_id)
    assert record is not None
    assert deps["root-image"]["digest"]["sha256"] == str(record.root_image).split(":")[1]
    assert deps["compiler-image"]["digest"]["sha256"] == str(record.compiler_image).split(":")[1]
    pip = deps["pip-configuration"]["annotations"]
    # The index URL without its credential (user part and query): scheme, host, port and path.
    index = pip_env["PIP_EXTRA_INDEX_URL"].split("@", 1)[1].split("?", 1)[0]
    assert pip["PIP_EXTRA_INDEX_URL"] == f"http://{index}"
    layers = [b["digest"]["sha256"] for b in statement["predicate"]["runDetails"]["byproducts"]
              if b["name"].startswith("layer-")]
    inspected = client.images.get(built.image_id).attrs["RootFS"]["Layers"]
    assert ["sha256:" + h for h in layers] == inspected


def test_documents_are_in_the_registry_and_read_back(images: dict[str, Built], registry: str,
                                                     client: docker.DockerClient) -> None:
    built = images["with"]
    digest = str(built.run.project["digest"])
    repo = built.tag.split("/", 1)[1].rsplit(":", 1)[0]
    with urllib.request.urlopen(f"http://{registry}/v2/{repo}/tags/list") as answer:
        tags = set(json.load(answer)["tags"])
    hexdigest = digest.split(":")[1]
    assert {f"sha256-{hexdigest}.sbom", f"sha256-{hexdigest}.att", "1"} <= tags
    # Read as the docs say, with plain HTTP: the artifact's manifest, then its one layer.
    request = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/sha256-{hexdigest}.sbom",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(request) as answer:
        manifest = json.load(answer)
    assert manifest["artifactType"] == "application/vnd.cyclonedx+json"
    assert manifest["subject"]["digest"] == digest
    with urllib.request.urlopen(f"http://{registry}/v2/{repo}/blobs/{manifest['layers'][0]['digest']}") as answer:
        assert answer.read().decode() == in_image(client, built.image_id, "cat", SBOM_PATH)

    sbom = grocker("sbom", built.tag, env={"GROCKER_CACHE_HOME": "/nonexistent"})
    assert sbom.code == 0, sbom.err
    assert sbom.out == in_image(client, built.image_id, "cat", SBOM_PATH)  # the bytes as stored
    prov = grocker("provenance", f"{built.tag.rsplit(':', 1)[0]}@{digest}", env={"GROCKER_CACHE_HOME": "/nonexistent"})
    assert prov.code == 0, prov.err
    statement = json.loads(prov.out)
    assert {"sha256": hexdigest} in [s["digest"] for s in statement["subject"]]
    assert SECRET not in prov.out


def test_find_lists_exactly_the_images_holding_a_package(images: dict[str, Built], registry: str) -> None:
    with_dep, without = images["with"], images["without"]
    found = grocker("sbom", "--find", "packaging", with_dep.tag, without.tag, "--json")
    assert found.code == 0, found.err
    assert [m["image"] for m in json.loads(found.out)] == [with_dep.tag]
    repos = [t.rsplit(":", 1)[0] for t in (with_dep.tag, without.tag)]
    version = next(v for n, v in components(json.loads(grocker("sbom", with_dep.tag).out), "python")
                   if n == "packaging")
    pinned = grocker("sbom", "--find", f"packaging=={version}", "--repository", repos[0], "--repository", repos[1])
    assert pinned.code == 0, pinned.err
    lines = [line.split() for line in pinned.out.splitlines()]
    # Every tag of the application's repository (it is pushed under several), none of the other one.
    assert {line[0].rsplit(":", 1)[0] for line in lines} == {repos[0]} and with_dep.tag in {line[0] for line in lines}
    assert {tuple(line[1:]) for line in lines} == {("python", "packaging", version)}
    # A Debian package of the root: in both.
    deb = grocker("sbom", "--find", "libc6", "--repository", repos[0], "--repository", repos[1], "--json")
    assert {m["image"].rsplit(":", 1)[0] for m in json.loads(deb.out)} == set(repos)
    none = grocker("sbom", "--find", "packaging==0.0.1", with_dep.tag)
    assert none.code == 1 and none.out == ""


def test_an_image_without_sbom_is_a_clear_error(client: docker.DockerClient) -> None:
    base = os.environ.get("GROCKER_BASE_IMAGE", "debian:bookworm-slim")
    run = grocker("sbom", base)
    assert run.code == 19
    assert run.err.strip().splitlines()[-1].startswith(f"grocker: error: image {base} has no SBOM")
    assert "rebuild it" in run.err


def test_the_root_packages_are_read_once_per_root_image(images: dict[str, Built], tmp_path: Path) -> None:
    from setuptools_grocker.engine import Engine
    from setuptools_grocker.image import sbom
    from setuptools_grocker.progress import Progress

    record = records.find(images["with"].home, images["with"].image_id)
    assert record is not None and record.root_image
    root = record.root_image
    cached = tmp_path / f"dpkg-{root.split(':')[1]}.json"
    with Engine(Progress(quiet=True)) as engine:
        sbom._DPKG_MEMO.pop(root, None)
        first = sbom.debian_packages(engine, root, tmp_path)
        assert cached.is_file() and len(first) > 50
        # Another process: the file, not the image (a marker proves which was read).
        sbom._DPKG_MEMO.pop(root, None)
        data = json.loads(cached.read_text())
        cached.write_text(json.dumps([*data, {"name": "zz-marker", "version": "1", "architecture": "all",
                                              "source": None}]))
        assert sbom.debian_packages(engine, root, tmp_path)[-1].name == "zz-marker"
        # A damaged file is read again from the image.
        sbom._DPKG_MEMO.pop(root, None)
        cached.write_text("{not json")
        assert sbom.debian_packages(engine, root, tmp_path) == first
