"""Signing at push and `grocker verify` on real builds in the real registry: the example Ed25519 plugin
(installed, found through its entry point) signs; a moved tag, a replaced SBOM or provenance, a wrong key,
and no verifying plugin each fail verify with their own message."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest

from setuptools_grocker.registry.attach import artifact_ref, attach, read_artifact
from setuptools_grocker.registry.client import digest_of, get_manifest, put_manifest, retag
from tests.helpers import EXAMPLES, Run, grocker, python_project, remove_images

pytestmark = pytest.mark.integration

PLUGIN = "grocker-plugin-sign-ed25519"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The example plugin pip-installed (its entry point) into a directory of its own, for PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / PLUGIN  # pip builds in-tree: keep the repository clean
    shutil.copytree(EXAMPLES / PLUGIN, source)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(source)],
                   check=True, capture_output=True)
    return str(target)


def keypair(site: str, directory: Path) -> tuple[Path, Path]:
    out = subprocess.run([sys.executable, "-m", "grocker_sign_ed25519", "generate", str(directory)], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": site}).stdout
    assert "key ID" in out and "PRIVATE" not in out
    return directory / "signing.key", directory / "signing.pub"


class Signed:
    def __init__(self, registry: str, repo: str, site: str, keys: Path, other_pub: Path, runs: list[Run]) -> None:
        self.registry, self.repo, self.site, self.runs = registry, repo, site, runs
        self.key, self.pub, self.other_pub = keys / "signing.key", keys / "signing.pub", other_pub
        self.ref = f"{repo}:1"
        self.digest = digest_of(self.ref)

    def verify(self, *args: str, trusted: Path | None = None, plugin: bool = True,
               report: Path | None = None, env: dict[str, str] | None = None) -> Run:
        """``grocker verify``, trusting ``trusted`` (default: the public key the image was signed with)."""
        env = {**({"PYTHONPATH": self.site} if plugin else {}), **(env or {})}
        if "ED25519_SIGNING_KEY" not in env:
            env["ED25519_TRUSTED_KEYS"] = str(trusted or self.pub)
        argv = ["verify", *args]
        if report is not None:
            argv += ["--report", str(report)]
        return grocker(*argv, env=env)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, client: docker.DockerClient, registry: str, run_id: str,
           plugin_site: str) -> Iterator[Signed]:
    """An application pushed and signed with key A, and another image pushed unsigned to the same repository."""
    tmp = tmp_path_factory.mktemp("verify")
    keys, (_, other_pub) = tmp / "keys-a", keypair(plugin_site, tmp / "keys-b")
    keypair(plugin_site, keys)
    repo = f"{registry}/verify-app-{run_id}"
    runs, tags = [], []
    for name, tag, env in (("verify-app", "1", {"ED25519_SIGNING_KEY": str(keys / "signing.key")}),
                           ("verify-other", "other", {})):
        project = python_project(tmp / name, "verify-app", version="1.0.0" if tag == "1" else "2.0.0",
                                 modules={"__init__.py": f"WHO = {name!r}\n"})
        run = grocker("build", str(project), "--tag", f"{repo}:{tag}", "--push", report=tmp / f"{name}.json",
                      env={"PYTHONPATH": plugin_site, "GROCKER_CACHE_HOME": str(tmp / f"cache-{name}"), **env})
        assert run.code == 0, run.err[-4000:]
        runs.append(run)
        tags += run.project["tags"]
    yield Signed(registry, repo, plugin_site, keys, other_pub, runs)
    remove_images(client, *tags)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sig_manifest(s: Signed, digest: str) -> dict[str, Any]:
    return json.loads(get_manifest(artifact_ref(s.ref, digest, "sig"))[0])


def test_push_signs_and_verify_passes(signed: Signed, tmp_path: Path) -> None:
    run = signed.runs[0]
    assert f"signed {signed.ref}@{signed.digest}" in run.err + run.out
    manifest = sig_manifest(signed, signed.digest)
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert layer["annotations"]["io.grocker.algorithm"] == "ed25519"
    assert manifest["subject"]["digest"] == signed.digest
    # The other image was pushed without a key: not signed.
    assert digest_of(artifact_ref(signed.ref, str(digest_of(f"{signed.repo}:other")), "sig")) is None

    report = tmp_path / "verify.json"
    result = signed.verify(signed.ref, report=report)
    assert result.code == 0, result.err
    data = json.loads(report.read_text())
    assert data["ok"] is True and data["digest"] == signed.digest
    assert {c["name"]: c["ok"] for c in data["checks"]} == {
        "signature": True, "sbom": True, "provenance": True, "layers": True, "sbom-in-image": True}
    # By digest too, trusting the public key of the signing key (no ED25519_TRUSTED_KEYS).
    by_digest = signed.verify(f"{signed.repo}@{signed.digest}", env={"ED25519_SIGNING_KEY": str(signed.key)})
    assert by_digest.code == 0, by_digest.err

    # The private key is nowhere: not in the output of the push or verify, not in what the registry holds.
    secret = signed.key.read_text().splitlines()[1]
    with urllib.request.urlopen(f"http://{signed.registry}/v2/{signed.repo.split('/', 1)[1]}/blobs/"
                                f"{layer['digest']}") as answer:
        pushed = answer.read()
    for text in (run.out, run.err, result.out, result.err, json.dumps(manifest), pushed.decode()):
        assert secret not in text


def test_a_moved_tag_fails(signed: Signed) -> None:
    """The tag moved to another image of the repository (pushed by grocker with its SBOM and provenance)."""
    other = str(digest_of(f"{signed.repo}:other"))
    retag(f"{signed.repo}:other", signed.ref)
    try:
        run = signed.verify(signed.ref)
        assert run.code == 19
        assert f"signature: {signed.repo}@{other} has no signature" in run.err
        assert len(run.err.strip().splitlines()) == 1
        # The first image's signature copied next to it: it covers the first digest, not this one.
        # (Serialised again, so that deleting the copy by its digest leaves the original's tag.)
        body, media_type = get_manifest(artifact_ref(signed.ref, str(signed.digest), "sig"))
        copy = put_manifest(artifact_ref(signed.ref, other, "sig"), json.dumps(json.loads(body), indent=1).encode(),
                            media_type)
        try:
            assert copy != sha256(body)
            run = signed.verify(signed.ref)
            assert run.code == 19
            assert f"the trusted signature covers {signed.repo}@{signed.digest}, not this image" in run.err
        finally:
            repo_path = signed.repo.split("/", 1)[1]
            urllib.request.urlopen(urllib.request.Request(
                f"http://{signed.registry}/v2/{repo_path}/manifests/{copy}", method="DELETE")).close()
    finally:
        retag(f"{signed.repo}@{signed.digest}", signed.ref)
    assert signed.verify(signed.ref).code == 0


@pytest.mark.parametrize("kind", ["sbom", "att"])
def test_a_replaced_document_fails(signed: Signed, kind: str, tmp_path: Path) -> None:
    original = read_artifact(signed.ref, kind)
    assert original is not None
    document = json.loads(original)
    if kind == "sbom":
        document["components"] = document["components"][1:]  # a component hidden
    else:
        document["predicate"]["runDetails"]["metadata"]["finishedOn"] = "2000-01-01T00:00:00Z"
    attach(signed.ref, str(signed.digest), kind, (json.dumps(document, indent=2) + "\n").encode())
    try:
        report = tmp_path / "r.json"
        run = signed.verify(signed.ref, report=report)
        assert run.code == 19
        name, what = ("sbom", "SBOM") if kind == "sbom" else ("provenance", "provenance")
        assert f"{name}: the {what} attached (sha256:" in run.err and "replaced after signing" in run.err
        checks = {c["name"]: c["ok"] for c in json.loads(report.read_text())["checks"]}
        assert checks["signature"] is True and checks[name] is False
        if kind == "sbom":
            assert checks["sbom-in-image"] is False
    finally:
        attach(signed.ref, str(signed.digest), kind, original)
    assert signed.verify(signed.ref).code == 0


def test_a_wrong_key_fails(signed: Signed) -> None:
    run = signed.verify(signed.ref, trusted=signed.other_pub)
    assert run.code == 19
    assert "signature: no signature is by a key the installed plugins trust (signed by ed25519 key" in run.err


def test_a_tampered_signature_fails(signed: Signed) -> None:
    body, media_type = get_manifest(artifact_ref(signed.ref, str(signed.digest), "sig"))
    manifest = json.loads(body)
    annotations = manifest["layers"][0]["annotations"]
    original = annotations["dev.cosignproject.cosign/signature"]
    annotations["dev.cosignproject.cosign/signature"] = ("B" if original[0] != "B" else "C") + original[1:]
    put_manifest(artifact_ref(signed.ref, str(signed.digest), "sig"), json.dumps(manifest).encode(), media_type)
    try:
        run = signed.verify(signed.ref)
        assert run.code == 19 and "does not verify (sign-ed25519)" in run.err, run.err
    finally:
        put_manifest(artifact_ref(signed.ref, str(signed.digest), "sig"), body, media_type)


def test_without_a_verifying_plugin_the_signature_is_not_checked(signed: Signed) -> None:
    run = signed.verify(signed.ref, plugin=False)
    assert run.code == 19
    assert "not checked: no installed plugin implements grocker_verify_signature" in run.err + run.out
    run = signed.verify(signed.ref, "--allow-unsigned", plugin=False)
    assert run.code == 0, run.err
    assert "--    signature" in run.out
    # The unsigned image: fails, passes with --allow-unsigned (its documents still checked).
    other = f"{signed.repo}:other"
    assert "has no signature" in signed.verify(other).err
    assert signed.verify(other, "--allow-unsigned").code == 0
