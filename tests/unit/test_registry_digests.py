"""Digests from a registry are checked against the bytes, not believed (a stub registry that lies)."""
from __future__ import annotations

import gzip
import json
from typing import Iterator

import pytest

from setuptools_grocker.errors import RegistryError
from setuptools_grocker.registry import client as registry
from tests.unit.registry_stub import StubRegistry, sha256

MANIFEST = {
    "schemaVersion": 2,
    "mediaType": registry.MANIFEST_V2,
    "config": {"mediaType": registry.IMAGE_CONFIG, "size": 2, "digest": sha256(b"{}")},
    "layers": [],
}


@pytest.fixture()
def reg(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> Iterator[StubRegistry]:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    registry._reset()
    r = StubRegistry()
    yield r
    r.close()


def test_an_honest_registry_gives_the_digest_of_the_bytes(reg: StubRegistry) -> None:
    digest = reg.put("shop", "1.0", MANIFEST)
    assert registry.digest_of(f"{reg.host}/shop:1.0") == digest
    assert registry.digest_of(f"{reg.host}/shop@{digest}") == digest
    assert registry.retag(f"{reg.host}/shop@{digest}", f"{reg.host}/shop:2.0") == digest
    assert registry.digest_of(f"{reg.host}/shop:nothing") is None


@pytest.mark.parametrize("lie", ["manifest-header", "manifest-body"])
def test_a_manifest_that_does_not_hash_to_its_digest_is_refused(reg: StubRegistry, lie: str) -> None:
    digest = reg.put("shop", "1.0", MANIFEST)
    reg.lies.add(lie)
    for ref in (f"{reg.host}/shop:1.0", f"{reg.host}/shop@{digest}"):
        # digest_of pins deploys and verifies releases: a lie there must not pass.
        with pytest.raises(RegistryError, match=f"the registry lies about {ref}"):
            registry.digest_of(ref)
        with pytest.raises(RegistryError, match="the registry lies"):
            registry.get_manifest(ref)
        # The plan's "is it there?" reads a lie as "not there": it builds rather than trusting it.
        assert registry.manifest_digest(ref) is None
    with pytest.raises(RegistryError, match="the registry lies"):
        registry.retag(f"{reg.host}/shop@{digest}", f"{reg.host}/shop:2.0")
    assert ("shop", "2.0") not in reg.manifests


def test_a_manifest_put_answered_with_another_digest_is_refused(reg: StubRegistry) -> None:
    reg.lies.add("put-manifest")
    with pytest.raises(RegistryError, match=f"the registry lies about {reg.host}/shop:1.0: it stored the manifest"):
        registry.put_manifest(f"{reg.host}/shop:1.0", json.dumps(MANIFEST).encode(), registry.MANIFEST_V2)
    with pytest.raises(RegistryError, match="the registry lies"):
        registry.push_image(f"{reg.host}/shop:1.0", [], b"{}", [])


def test_a_blob_upload_answered_with_another_digest_is_refused(reg: StubRegistry) -> None:
    reg.lies.add("upload")
    layer = gzip.compress(b"layer", mtime=0)
    with pytest.raises(RegistryError, match="it stored a blob as"):
        registry.push_image(f"{reg.host}/shop:1.0", [], b"{}", [(sha256(layer), layer)])
    assert ("shop", "1.0") not in reg.manifests


def test_a_blob_that_does_not_hash_to_its_digest_is_refused(reg: StubRegistry) -> None:
    registry.push_document(f"{reg.host}/shop-release:r1", "release.json", {"release": "r1"})
    reg.lies.add("blob")
    with pytest.raises(RegistryError, match="the blob it sent hashes to"):
        registry.read_document(f"{reg.host}/shop-release:r1")
