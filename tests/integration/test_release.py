"""Workspace releases against a real registry: one immutable document, one pointer moved last.

The first tests build a real workspace once (module fixture) and drive the CLI. The tests of
each release step call the library on tiny images pushed straight to the registry, through
``Stub``: a proxy on 127.0.0.1 in front of the real registry that can refuse, delay or
interleave one chosen request, to fail the release at an exact step.
"""
from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest

from setuptools_grocker.errors import RegistryError, ReleaseConflict, ReleaseIncomplete, WorkspaceError
from setuptools_grocker.ref import ImageRef
from setuptools_grocker.registry.client import (
    digest_of,
    manifest_digest,
    push_document,
    push_image,
    read_document,
    retag,
)
from setuptools_grocker.registry.release import AppRelease, publish_release
from tests.helpers import GROCKER, free_port, generate, grocker, mod, remove_images, start_registry


def tags_of(registry: str, repo: str) -> set[str]:
    try:
        with urllib.request.urlopen(f"http://{registry}/v2/{repo}/tags/list", timeout=10) as resp:
            return set(json.loads(resp.read()).get("tags") or [])
    except OSError:
        return set()


@pytest.fixture(scope="module")
def release_ws(tmp_path_factory: pytest.TempPathFactory, client: docker.DockerClient, registry: str, run_id: str):
    root = tmp_path_factory.mktemp("release") / "shop"
    prefix = f"r{run_id[:5]}-"
    graph = generate(root, libs=1, apps=2, levels=1, prefix=prefix)
    with (root / "pyproject.toml").open("a") as fh:
        fh.write(f'\n[tool.grocker]\nregistry = "{registry}"\nmoving-tags = ["latest"]\n')
    yield root, graph, prefix
    remove_images(client, *(f"{registry}/{a}:{t}" for a in graph["applications"] for t in ("2.0.0", "latest", "r1")))


@pytest.fixture(scope="module")
def first_release(release_ws, registry: str, tmp_path_factory: pytest.TempPathFactory):
    root, graph, _ = release_ws
    run = grocker("workspace", "build", str(root), "--push", "--release", "r1",
                  report=tmp_path_factory.mktemp("r") / "release.json")
    assert run.code == 0, run.err[-4000:]
    return run


def test_release_moves_every_tag_to_the_pushed_digest(release_ws, first_release, registry: str) -> None:
    root, graph, _ = release_ws
    release = first_release.report["release"]
    assert release["published"] is True and release["release"] == "r1"
    pushed = {p["name"]: p["digest"] for p in first_release.report["projects"] if p["kind"] == "application"}
    assert set(release["applications"]) == set(graph["applications"]) == set(pushed)
    for app, entry in release["applications"].items():
        assert entry["digest"] == pushed[app]
        assert entry["version"] == "2.0.0"
        for tag in ("2.0.0", "latest", "r1"):
            assert manifest_digest(f"{registry}/{app}:{tag}") == entry["digest"], (app, tag)
    assert release["libraries"] == {n: f"1.{i}.0" for i, n in enumerate(graph["libraries"])}
    # The document is in the registry, under the release name and latest, and written locally.
    doc_ref = release["document"]["image"]
    assert doc_ref == f"{registry}/shop-release:r1"
    stored = read_document(doc_ref)
    assert stored["applications"] == release["applications"]
    assert manifest_digest(f"{registry}/shop-release:latest") == release["document"]["digest"]
    local = json.loads((root / ".grocker" / "releases" / "r1.json").read_text())
    assert local["applications"] == release["applications"]


def test_the_release_links_each_application_to_its_sbom_and_provenance(release_ws, first_release,
                                                                       registry: str) -> None:
    from setuptools_grocker.registry.client import get_blob, get_manifest

    root, graph, _ = release_ws
    applications = first_release.report["release"]["applications"]
    for app, entry in applications.items():
        documents = {}
        for key in ("sbom", "provenance"):
            ref = entry[key]
            assert ref.startswith(f"{registry}/{app}@sha256:"), ref  # pinned by digest, in the image's repository
            manifest = json.loads(get_manifest(ref)[0])
            assert manifest["subject"]["digest"] == entry["digest"]
            documents[key] = json.loads(get_blob(ref, manifest["layers"][0]["digest"]))
        assert {s["digest"]["sha256"] for s in documents["provenance"]["subject"]} >= {entry["digest"][7:]}
        names = {c["name"] for c in documents["sbom"]["components"]}
        assert app in names and set(graph["libraries"]) & names
    # --find over the release: exactly the application that holds the distribution.
    first = sorted(applications)[0]
    found = grocker("sbom", "--find", first, "--release", f"{registry}/shop-release", "--json")
    assert found.code == 0, found.err[-2000:]
    assert [m["image"] for m in json.loads(found.out)] == [f"{registry}/{first}@{applications[first]['digest']}"]
    named = grocker("sbom", "--find", first, "--release", f"{registry}/shop-release:r1", "--json")
    assert json.loads(named.out) == json.loads(found.out)
    none = grocker("sbom", "--find", "no-such-distribution", "--release", f"{registry}/shop-release")
    assert none.code == 1 and "0 of 2 image(s) hold no-such-distribution" in none.err


def test_pull_back_by_digest(release_ws, first_release, registry: str, client: docker.DockerClient) -> None:
    app = next(p for p in first_release.report["projects"] if p["kind"] == "application")
    repo = f"{registry}/{app['name']}"
    client.images.remove(f"{repo}:2.0.0", noprune=True)
    pulled = client.images.pull(f"{repo}@{app['digest']}")
    assert pulled.id == app["image_id"]
    assert f"{repo}@{app['digest']}" in pulled.attrs["RepoDigests"]
    # The release document is a real image too: docker pulls it and reads its label.
    doc = client.images.pull(first_release.report["release"]["document"]["image"])
    assert json.loads(doc.labels["io.grocker.release"])["release"] == "r1"


def test_a_failing_application_moves_no_release_tag(release_ws, first_release, registry: str,
                                                    tmp_path: Path) -> None:
    root, graph, _ = release_ws
    good, bad = sorted(graph["applications"])
    before = {(a, t): manifest_digest(f"{registry}/{a}:{t}")
              for a in graph["applications"] for t in ("2.0.0", "latest")}
    # good changes (its new image is built and pushed under its key tag), bad no longer starts.
    good_server = root / "apps" / good / "src" / mod(good) / "server.py"
    good_server.write_text(good_server.read_text() + "\n# a new comment\n")
    bad_server = root / "apps" / bad / "src" / mod(bad) / "server.py"
    bad_server.write_text(bad_server.read_text().replace("assert total() ==", "assert -1 =="))
    run = grocker("workspace", "build", str(root), "--push", "--release", "r2", report=tmp_path / "r.json")
    assert run.code == WorkspaceError.exit_code, run.err[-3000:]
    status = {p["name"]: p for p in run.report["projects"]}
    assert status[bad]["status"] == "failed" and status[good]["status"] == "built"
    assert manifest_digest(str(ImageRef.parse(status[good]["image"]).with_tag("k" + status[good]["key"][:16]))) \
        == status[good]["digest"] != before[(good, "2.0.0")]
    assert run.report["release"]["published"] is False
    assert "no release tag was moved" in run.err
    after = {(a, t): manifest_digest(f"{registry}/{a}:{t}") for a in graph["applications"] for t in ("2.0.0", "latest")}
    assert after == before
    assert all("r2" not in tags_of(registry, a) for a in graph["applications"])
    assert "r2" not in tags_of(registry, "shop-release")
    bad_server.write_text(bad_server.read_text().replace("assert -1 ==", "assert total() =="))


def test_registry_down_during_push_moves_nothing(tmp_path: Path, examples_copy: Path,
                                                 client: docker.DockerClient) -> None:
    port = free_port()
    store = tmp_path / "registry"
    store.mkdir()
    proc = start_registry(store, port)
    ref = ""
    try:
        env = {"GROCKER_REGISTRY": f"127.0.0.1:{port}", "GROCKER_MOVING_TAGS": "latest"}
        # The session's copy stays cold for other tests; no state of earlier builds.
        shutil.copytree(examples_copy, tmp_path / "ex", ignore=shutil.ignore_patterns(".grocker"))
        project = tmp_path / "ex" / "demo-app"
        first = grocker("build", str(project), "--push", env=env, report=tmp_path / "one.json")
        assert first.code == 0, first.err[-3000:]
        digest = first.project["digest"]
        ref = ImageRef.parse(first.project["image"]).repository
        assert ref.startswith(f"127.0.0.1:{port}/")
        assert manifest_digest(f"{ref}:latest") == digest
        proc.terminate()
        proc.wait(timeout=20)
        down = grocker("build", str(project), "--push", "--no-cache", env=env, report=tmp_path / "two.json")
        assert down.code == RegistryError.exit_code, down.err[-3000:]
        line = down.err.strip().splitlines()[-1]
        assert line.startswith("grocker: error: pushing ") and "registry" in line
        assert down.project["status"] == "failed" and down.project["digest"] is None
        proc = start_registry(store, port)
        assert manifest_digest(f"{ref}:latest") == digest
        assert manifest_digest(f"{ref}:{first.project['version']}") == digest
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if ref:
            remove_images(client, f"{ref}:{first.project['version']}", f"{ref}:latest")


def test_registry_down_during_a_workspace_release(release_ws, first_release, registry: str,
                                                  tmp_path: Path) -> None:
    root, graph, _ = release_ws
    with (root / "pyproject.toml").open() as fh:
        text = fh.read()
    dead = f"127.0.0.1:{free_port()}"
    run = grocker("workspace", "release", str(root), env={"GROCKER_REGISTRY": dead})
    assert run.code == RegistryError.exit_code
    last = run.err.strip().splitlines()[-1]
    assert last.startswith("grocker: error: ") and "no release tag was moved" in last
    assert (root / "pyproject.toml").read_text() == text


# -- the release steps, one failure at a time ------------------------------------------------


@dataclass
class Stub:
    """A proxy on 127.0.0.1 in front of the real registry that acts on chosen requests.

    ``rules`` map ``(METHOD, path regex)`` to an HTTP status to answer instead of the registry,
    or to a function run just before the request is forwarded (to interleave another writer,
    or to delay). ``log`` records ``(METHOD, path, status)`` of every request.
    """

    upstream: str
    rules: dict[tuple[str, str], Any] = field(default_factory=dict)
    log: list[tuple[str, str, int]] = field(default_factory=list)
    port: int = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _ in self.log if m in ("PUT", "POST", "PATCH", "DELETE")]

    def action(self, method: str, path: str) -> Any:
        for (m, pattern), act in list(self.rules.items()):
            if m == method and re.fullmatch(pattern, path.split("?", 1)[0]):
                return act
        return None


def _handler(stub: Stub) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def answer(self, status: int, headers: Any, body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() in ("content-length", "transfer-encoding", "connection", "date", "server"):
                    continue
                if key.lower() == "location":
                    value = value.replace(stub.upstream, stub.host)
                self.send_header(key, value)
            if self.command == "HEAD":
                self.send_header("Content-Length", headers.get("Content-Length", "0"))
                self.end_headers()
            else:
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            action = stub.action(self.command, self.path)
            if isinstance(action, int):
                stub.log.append((self.command, self.path, action))
                error = {"errors": [{"code": "UNAVAILABLE", "message": "refused by the test"}]}
                self.answer(action, {"Content-Type": "application/json"}, json.dumps(error).encode())
                return
            if action is not None:
                action()
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "content-type")}
            req = urllib.request.Request(f"http://{stub.upstream}{self.path}", method=self.command, headers=headers,
                                         data=body if self.command in ("PUT", "POST", "PATCH") else None)
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    status, rheaders, rbody = resp.status, resp.headers, resp.read()
            except urllib.error.HTTPError as exc:
                status, rheaders, rbody = exc.code, exc.headers, exc.read()
                exc.close()
            stub.log.append((self.command, self.path, status))
            self.answer(status, rheaders, rbody)

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = forward

    return Handler


@pytest.fixture
def stub(registry: str) -> Iterator[Stub]:
    proxy = Stub(registry)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    server.daemon_threads = True
    proxy.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield proxy
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def push_app(registry: str, repo: str, seed: str) -> tuple[str, str]:
    """A tiny real image (one file) pushed under a key tag; returns (key tag, digest)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = seed.encode()
        info = tarfile.TarInfo("app.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers",
                                    "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()]}}).encode()
    tag = "k" + hashlib.sha256(seed.encode()).hexdigest()[:16]
    digest, _ = push_image(f"{registry}/{repo}:{tag}", [], config,
                           [("sha256:" + hashlib.sha256(layer).hexdigest(), layer)])
    return tag, digest


TAGS = ("1.0.0", "2.0.0", "latest", "r1", "r2")


@dataclass
class Lab:
    """Two applications (web, api) released once as r1, through ``stub``; r2 would bring web 2.0.0."""

    registry: str
    stub: Stub
    prefix: str
    lock: Path
    images: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def doc_repo(self) -> str:
        return f"{self.prefix}shop-release"

    def repo(self, app: str) -> str:
        return f"{self.prefix}{app}"

    def app(self, app: str, image: str, version: str, release: str) -> AppRelease:
        tag, digest = self.images[image]
        return AppRelease(app, version, f"{self.stub.host}/{self.repo(app)}:{tag}", digest,
                          [version, "latest", release])

    def r1(self) -> list[AppRelease]:
        return [self.app("web", "web1", "1.0.0", "r1"), self.app("api", "api1", "1.0.0", "r1")]

    def r2(self) -> list[AppRelease]:
        return [self.app("web", "web2", "2.0.0", "r2"), self.app("api", "api1", "1.0.0", "r2")]

    def publish(self, apps: list[AppRelease], release: str, carried: tuple[str, ...] = ()) -> dict[str, Any]:
        return publish_release(apps, document_repo=f"{self.stub.host}/{self.doc_repo}", release=release,
                               libraries={"core": "1.0.0"}, workspace="shop", tool_version="test",
                               lock_path=self.lock, carried=carried)

    def state(self) -> dict[str, str | None]:
        """Every tag that matters, read from the registry itself (not through the stub)."""
        found = {f"{self.doc_repo}:{t}": digest_of(f"{self.registry}/{self.doc_repo}:{t}") for t in ("latest", "r2")}
        for app in ("web", "api"):
            found.update({f"{app}:{t}": digest_of(f"{self.registry}/{self.repo(app)}:{t}") for t in TAGS})
        return found


@pytest.fixture
def lab(registry: str, stub: Stub, tmp_path: Path) -> Lab:
    lab = Lab(registry, stub, f"l{uuid.uuid4().hex[:8]}-", tmp_path / ".grocker" / "release.lock")
    for image, seed in (("web1", "web 1"), ("web2", "web 2"), ("api1", "api 1")):
        lab.images[image] = push_app(registry, lab.repo(image[:3]), f"{lab.prefix}{seed}")
    r1 = lab.publish(lab.r1(), "r1")
    assert r1["lagging"] == []
    stub.log.clear()
    return lab


def released_r1(lab: Lab) -> dict[str, str | None]:
    """The state after r1 and nothing else (the state every failed r2 must leave)."""
    web1, api1 = lab.images["web1"][1], lab.images["api1"][1]
    doc = digest_of(f"{lab.registry}/{lab.doc_repo}:r1")
    return {f"{lab.doc_repo}:latest": doc, f"{lab.doc_repo}:r2": None,
            "web:1.0.0": web1, "web:2.0.0": None, "web:latest": web1, "web:r1": web1, "web:r2": None,
            "api:1.0.0": api1, "api:2.0.0": None, "api:latest": api1, "api:r1": api1, "api:r2": None}


def test_a_release_names_every_application_by_digest_under_the_pointer(lab: Lab) -> None:
    assert lab.state() == released_r1(lab)
    document = read_document(f"{lab.registry}/{lab.doc_repo}:latest")
    assert document["release"] == "r1"
    assert {a: e["digest"] for a, e in document["applications"].items()} == \
        {"web": lab.images["web1"][1], "api": lab.images["api1"][1]}


def test_a_release_of_some_applications_keeps_the_others_in_the_document(lab: Lab) -> None:
    """``--only web``: the pointer still names every application (api as released in r1)."""
    r1 = read_document(f"{lab.registry}/{lab.doc_repo}:r1")
    document = lab.publish([lab.app("web", "web2", "2.0.0", "r2")], "r2", carried=("api", "core"))
    assert document["applications"]["api"] == r1["applications"]["api"]
    assert document["applications"]["web"]["digest"] == lab.images["web2"][1]
    current = read_document(f"{lab.registry}/{lab.doc_repo}:latest")
    assert current["release"] == "r2" and set(current["applications"]) == {"web", "api"}
    assert lab.state()["api:r2"] is None  # api's tags are its release's (r1), not moved again


def test_a_missing_key_tag_moves_nothing(lab: Lab) -> None:
    apps = lab.r2()
    apps[1].key_ref = str(ImageRef.parse(apps[1].key_ref).with_tag("k0000000000000000"))
    with pytest.raises(RegistryError, match="api is not in the registry as .*; no release tag was moved"):
        lab.publish(apps, "r2")
    assert lab.state() == released_r1(lab)


def test_a_key_tag_with_another_digest_moves_nothing(lab: Lab) -> None:
    apps = lab.r2()
    apps[1].digest = lab.images["web2"][1]  # what "the build pushed" is not what the tag holds
    with pytest.raises(RegistryError, match="has digest .*, the build pushed .*no release tag was moved"):
        lab.publish(apps, "r2")
    assert lab.state() == released_r1(lab)


def test_an_unreadable_key_tag_is_an_error_not_a_missing_one(lab: Lab) -> None:
    lab.stub.rules[("GET", f"/v2/{lab.repo('api')}/manifests/k.*")] = 500
    with pytest.raises(RegistryError, match="HTTP 500.*no release tag was moved"):
        lab.publish(lab.r2(), "r2")
    assert lab.state() == released_r1(lab)


def test_an_unreadable_pointer_stops_the_release(lab: Lab) -> None:
    """A pointer that cannot be read could not be checked later: the release does not start."""
    lab.stub.rules[("GET", f"/v2/{lab.doc_repo}/manifests/latest")] = 500
    with pytest.raises(RegistryError, match="reading the release pointer failed: .*HTTP 500"):
        lab.publish(lab.r2(), "r2")
    assert lab.state() == released_r1(lab)
    assert not lab.stub.writes()


def test_a_refused_document_leaves_the_previous_release_current(lab: Lab) -> None:
    lab.stub.rules[("PUT", f"/v2/{lab.doc_repo}/manifests/r2")] = 503
    with pytest.raises(RegistryError, match="publishing the release document .* the previous release is still current"):
        lab.publish(lab.r2(), "r2")
    assert lab.state() == released_r1(lab)


def test_a_refused_pointer_moves_no_application_tag(lab: Lab) -> None:
    lab.stub.rules[("PUT", f"/v2/{lab.doc_repo}/manifests/latest")] = 503
    with pytest.raises(RegistryError, match="moving the release pointer .* the previous release is still current, "
                                            "no application tag was moved"):
        lab.publish(lab.r2(), "r2")
    # The immutable document r2 is there (harmless: nothing points at it); everything else is r1.
    assert lab.state() == {**released_r1(lab), f"{lab.doc_repo}:r2": digest_of(f"{lab.registry}/{lab.doc_repo}:r2")}
    assert lab.state()[f"{lab.doc_repo}:r2"] is not None
    # Once the registry takes it, the same release run again completes.
    lab.stub.rules.clear()
    document = lab.publish(lab.r2(), "r2")
    assert document["lagging"] == []
    assert digest_of(f"{lab.registry}/{lab.doc_repo}:latest") == document["document"]["digest"]
    assert lab.state()["web:latest"] == lab.images["web2"][1]


def test_a_pointer_moved_under_you_is_left_alone(lab: Lab) -> None:
    """Another release (another machine: the lock cannot see it) moves the pointer mid-release."""
    other: dict[str, str] = {}

    def another_release() -> None:
        if other:
            return
        ref = f"{lab.registry}/{lab.doc_repo}:elsewhere"
        other["digest"] = push_document(ref, "release.json", {"release": "elsewhere"})
        retag(ref, f"{lab.registry}/{lab.doc_repo}:latest")

    lab.stub.rules[("PUT", f"/v2/{lab.doc_repo}/manifests/r2")] = another_release
    with pytest.raises(ReleaseConflict, match=r"^the release pointer moved under you \(another release\?\)"):
        lab.publish(lab.r2(), "r2")
    state = lab.state()
    assert state.pop(f"{lab.doc_repo}:latest") == other["digest"]
    expected = released_r1(lab)
    del expected[f"{lab.doc_repo}:latest"]
    assert state == {**expected, f"{lab.doc_repo}:r2": digest_of(f"{lab.registry}/{lab.doc_repo}:r2")}
    assert not [w for w in lab.stub.writes() if w[1] == f"/v2/{lab.doc_repo}/manifests/latest"]


def test_a_refused_convenience_tag_lags_and_a_rerun_moves_it(lab: Lab) -> None:
    lab.stub.rules[("PUT", f"/v2/{lab.repo('web')}/manifests/2.0.0")] = 503
    document = lab.publish(lab.r2(), "r2")
    web2, api1 = lab.images["web2"][1], lab.images["api1"][1]
    r2_doc = digest_of(f"{lab.registry}/{lab.doc_repo}:r2")
    assert document["document"]["digest"] == r2_doc
    assert [e["tag"] for e in document["lagging"]] == [f"{lab.stub.host}/{lab.repo('web')}:2.0.0"]
    assert "HTTP 503" in document["lagging"][0]["error"]
    published = {**released_r1(lab), f"{lab.doc_repo}:latest": r2_doc, f"{lab.doc_repo}:r2": r2_doc,
                 "web:latest": web2, "web:r2": web2, "api:r2": api1}
    assert lab.state() == published  # the release is current; only web:2.0.0 lags
    # Run again: the same document (not rewritten), only the lagging tag written.
    del lab.stub.rules[("PUT", f"/v2/{lab.repo('web')}/manifests/2.0.0")]
    lab.stub.log.clear()
    again = lab.publish(lab.r2(), "r2")
    assert again["lagging"] == [] and again["created"] == document["created"]
    assert lab.stub.writes() == [("PUT", f"/v2/{lab.repo('web')}/manifests/2.0.0")]
    assert lab.state() == {**published, "web:2.0.0": web2}
    lab.stub.log.clear()
    assert lab.publish(lab.r2(), "r2")["lagging"] == []
    assert lab.stub.writes() == []


def test_running_a_superseded_release_again_does_not_go_back(lab: Lab) -> None:
    """Re-running r1 (say, for its lagging tags) once r2 is current must not undo r2."""
    lab.publish(lab.r2(), "r2")
    after_r2 = lab.state()
    with pytest.raises(ReleaseConflict, match="release r1 is older than the current release r2 .*nothing was moved"):
        lab.publish(lab.r1(), "r1")
    assert lab.state() == after_r2


def test_a_release_document_never_changes(lab: Lab) -> None:
    first = read_document(f"{lab.registry}/{lab.doc_repo}:r1")
    lab.stub.log.clear()
    with pytest.raises(ReleaseConflict, match="release r1 already exists .* with other content"):
        lab.publish([lab.app("web", "web2", "2.0.0", "r1"), lab.app("api", "api1", "1.0.0", "r1")], "r1")
    assert lab.stub.writes() == []
    assert lab.state() == released_r1(lab)
    # The same release again is a re-run: nothing written, the document as it was.
    again = lab.publish(lab.r1(), "r1")
    assert lab.stub.writes() == []
    assert again["created"] == first["created"]


# -- the command: exit codes, re-runs, two releases at once ------------------------------------

def test_a_release_again_is_idempotent_and_its_name_immutable(release_ws, first_release, registry: str) -> None:
    root, graph, _ = release_ws
    first = grocker("workspace", "release", str(root), "--release", "r3", "--json")
    assert first.code == 0, first.err[-3000:]
    again = grocker("workspace", "release", str(root), "--release", "r3", "--json")
    assert again.code == 0, again.err[-3000:]
    one, two = json.loads(first.out), json.loads(again.out)
    assert two["document"] == one["document"] and two["created"] == one["created"] and two["lagging"] == []
    assert "already there: a re-run" in again.err
    assert manifest_digest(f"{registry}/shop-release:latest") == one["document"]["digest"]
    # r1 named other digests (an application changed since): that name is taken for good.
    taken = grocker("workspace", "release", str(root), "--release", "r1")
    assert taken.code == ReleaseConflict.exit_code, taken.err[-3000:]
    last = taken.err.strip().splitlines()[-1]
    assert last.startswith("grocker: error: release r1 already exists") and "--release NAME" in last
    assert manifest_digest(f"{registry}/shop-release:latest") == one["document"]["digest"]


def test_lagging_tags_fail_the_command_and_a_rerun_moves_them(release_ws, first_release, registry: str,
                                                              stub: Stub) -> None:
    root, graph, _ = release_ws
    app = sorted(graph["applications"])[0]
    stub.rules[("PUT", f"/v2/{app}/manifests/r4")] = 503
    env = {"GROCKER_REGISTRY": stub.host}
    run = grocker("workspace", "release", str(root), "--release", "r4", "--json", env=env)
    assert run.code == ReleaseIncomplete.exit_code, run.err[-3000:]
    document = json.loads(run.out)
    assert [e["tag"] for e in document["lagging"]] == [f"{stub.host}/{app}:r4"]
    last = run.err.strip().splitlines()[-1]
    assert last == (f"grocker: error: release r4 is published ({stub.host}/shop-release:latest names it) but 1 "
                    f"convenience tag(s) lag: {stub.host}/{app}:r4; run the release again to move them "
                    "(it is idempotent)")
    assert manifest_digest(f"{registry}/shop-release:latest") == document["document"]["digest"]
    assert manifest_digest(f"{registry}/{app}:r4") is None
    del stub.rules[("PUT", f"/v2/{app}/manifests/r4")]
    again = grocker("workspace", "release", str(root), "--release", "r4", "--json", env=env)
    assert again.code == 0, again.err[-3000:]
    assert manifest_digest(f"{registry}/{app}:r4") == document["applications"][app]["digest"]


def test_two_releases_at_once_run_one_after_the_other(release_ws, first_release, registry: str,
                                                      stub: Stub) -> None:
    """Two real processes; the first is slowed down at its pointer PUT, with the lock held."""
    root, graph, _ = release_ws
    stub.rules[("PUT", "/v2/shop-release/manifests/latest")] = lambda: time.sleep(3)
    argv = [*GROCKER, "workspace", "release", str(root), "--json"]
    first = subprocess.Popen([*argv, "--release", "r5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "GROCKER_REGISTRY": stub.host})
    deadline = time.monotonic() + 120
    while not stub.log:  # its first registry request: it holds the lock
        assert first.poll() is None and time.monotonic() < deadline, "the first release did not start"
        time.sleep(0.05)
    second = subprocess.Popen([*argv, "--release", "r6"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ended: list[str] = []
    while len(ended) < 2:
        for name, proc in (("first", first), ("second", second)):
            if name not in ended and proc.poll() is not None:
                ended.append(name)
        assert time.monotonic() < deadline + 120, "the releases did not end"
        time.sleep(0.05)
    (out1, err1), (out2, err2) = first.communicate(), second.communicate()
    assert first.returncode == 0 and second.returncode == 0, err1[-2000:] + err2[-2000:]
    assert ended == ["first", "second"]
    assert f"waiting for another release of this workspace (pid {first.pid}) to finish" in err2
    # The second started from what the first made current, and is current now.
    assert manifest_digest(f"{registry}/shop-release:latest") == json.loads(out2)["document"]["digest"]
    assert json.loads(out1)["document"]["digest"] != json.loads(out2)["document"]["digest"]
