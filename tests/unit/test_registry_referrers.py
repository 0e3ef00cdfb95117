"""Reading attached documents: the OCI 1.1 referrers API where the registry has it, the cosign-style tags
otherwise (Distribution 2.8, the registry the integration tests run, answers 404: those tests show the
fallback). A local HTTP registry (tests/unit/registry_stub.py) with and without the API."""
from __future__ import annotations

import json
from typing import Iterator

import pytest

from setuptools_grocker.errors import RegistryError
from setuptools_grocker.registry import client as registry
from setuptools_grocker.registry.attach import OCI_MANIFEST, artifact_type, attach, find_artifact, read_artifact
from tests.unit.registry_stub import StubRegistry, sha256

IMAGE = {"schemaVersion": 2, "mediaType": registry.MANIFEST_V2,
         "config": {"mediaType": registry.IMAGE_CONFIG, "size": 2, "digest": sha256(b"{}")}, "layers": []}


@pytest.fixture()
def reg(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> Iterator[StubRegistry]:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    registry._reset()
    r = StubRegistry()
    yield r
    r.close()
    registry._reset()


def untagged(reg: StubRegistry, subject: str, kind: str, payload: bytes) -> dict[str, object]:
    """A document attached without a tag, as an OCI 1.1 tool does (``oras attach``): its descriptor."""
    repo = f"{reg.host}/shop"
    layer = registry.upload_blob(repo, payload)
    config = registry.upload_blob(repo, b"{}")
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type(kind),
                       "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
                       "layers": [{"mediaType": artifact_type(kind), "digest": layer, "size": len(payload)}],
                       "subject": {"mediaType": registry.MANIFEST_V2, "digest": subject, "size": 1}}).encode()
    digest = registry.put_manifest(f"{repo}@{sha256(body)}", body, OCI_MANIFEST)
    return {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body), "artifactType": artifact_type(kind)}


def referrer_requests(reg: StubRegistry) -> int:
    return sum("/referrers/" in s.path for s in reg.seen)


def test_without_the_api_the_tag_is_read_and_the_host_asked_once(reg: StubRegistry) -> None:
    digest = reg.put("shop", "1.0", IMAGE)
    attach(f"{reg.host}/shop:1.0", digest, "sbom", b'{"sbom": 1}')
    assert registry.referrers(f"{reg.host}/shop", digest) is None  # 404, as Distribution 2.8
    assert read_artifact(f"{reg.host}/shop:1.0", "sbom") == b'{"sbom": 1}'
    assert read_artifact(f"{reg.host}/shop:1.0", "att") is None
    assert referrer_requests(reg) == 1  # remembered for the host
    registry._reset()
    assert read_artifact(f"{reg.host}/shop@{digest}", "sbom") == b'{"sbom": 1}'
    assert referrer_requests(reg) == 2


def test_with_the_api_a_document_attached_without_a_tag_is_found(reg: StubRegistry) -> None:
    digest = reg.put("shop", "1.0", IMAGE)
    reg.referrers = {digest: []}
    assert registry.referrers(f"{reg.host}/shop", digest) == []  # the API, nothing refers to it yet
    assert read_artifact(f"{reg.host}/shop:1.0", "sbom") is None
    other = untagged(reg, digest, "att", b'{"statement": 1}')
    sbom = untagged(reg, digest, "sbom", b'{"sbom": "by oras"}')
    reg.referrers[digest] = [other, sbom]
    assert find_artifact(f"{reg.host}/shop:1.0", digest, "sbom") == f"{reg.host}/shop@{sbom['digest']}"
    assert read_artifact(f"{reg.host}/shop:1.0", "sbom") == b'{"sbom": "by oras"}'
    assert read_artifact(f"{reg.host}/shop:1.0", "att") == b'{"statement": 1}'
    assert read_artifact(f"{reg.host}/shop:1.0", "sig") is None


def test_the_tagged_document_wins_over_older_referrers_and_pages_are_followed(reg: StubRegistry) -> None:
    digest = reg.put("shop", "1.0", IMAGE)
    reg.referrers = {digest: []}
    older = untagged(reg, digest, "sbom", b'{"sbom": "older"}')
    pushed = attach(f"{reg.host}/shop:1.0", digest, "sbom", b'{"sbom": "pushed"}')
    reg.referrers[digest] = [older, {"mediaType": OCI_MANIFEST, "digest": pushed, "size": 1,
                                     "artifactType": artifact_type("sbom")}]
    reg.page_size = 1
    assert [d["digest"] for d in registry.referrers(f"{reg.host}/shop", digest) or []] == [older["digest"], pushed]
    assert read_artifact(f"{reg.host}/shop:1.0", "sbom") == b'{"sbom": "pushed"}'


def test_several_untagged_documents_of_one_kind_are_an_error_not_a_guess(reg: StubRegistry) -> None:
    digest = reg.put("shop", "1.0", IMAGE)
    reg.referrers = {digest: [untagged(reg, digest, "sbom", b'{"a": 1}'), untagged(reg, digest, "sbom", b'{"b": 1}')]}
    with pytest.raises(RegistryError, match="2 sbom documents refer to .* and none is under the tag sha256-"):
        read_artifact(f"{reg.host}/shop:1.0", "sbom")


@pytest.mark.parametrize("status", [200, 405, 502])
def test_an_answer_that_is_not_an_index_falls_back_to_the_tag(reg: StubRegistry, status: int) -> None:
    digest = reg.put("shop", "1.0", IMAGE)
    attach(f"{reg.host}/shop:1.0", digest, "sbom", b'{"sbom": 1}')
    reg.referrers_refusal = status
    assert read_artifact(f"{reg.host}/shop:1.0", "sbom") == b'{"sbom": 1}'
    assert registry.referrers(f"{reg.host}/shop", digest) is None and referrer_requests(reg) == 1
