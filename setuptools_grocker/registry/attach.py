"""SBOM and provenance next to an image in its registry, the way cosign attaches them.

Distribution 2.8 (the registry here) has no referrers API, and its garbage collection removes
untagged manifests: each document is therefore stored as a small OCI artifact (an OCI image manifest
whose only layer is the JSON, ``artifactType`` its media type, the empty config) under a *tag* derived
from the image's manifest digest, in the image's repository:

- ``sha256-<hex>.sbom``: the CycloneDX JSON (``application/vnd.cyclonedx+json``), the same bytes as the
  file in the image;
- ``sha256-<hex>.att``: the in-toto statement (``application/vnd.in-toto+json``), its subjects the image
  ID and the manifest digest. Unsigned: not a DSSE envelope as cosign writes (signing is a later part).

The manifest also names the image in its ``subject`` field: a registry that implements the OCI 1.1
referrers API indexes it there too (Distribution 2.8 ignores the field; the tag is what finds it).
"""
from __future__ import annotations

import json
from typing import Any

from setuptools_grocker.errors import RegistryError
from setuptools_grocker.ref import ImageRef
from setuptools_grocker.registry.client import digest_of, get_blob, get_manifest, put_manifest, upload_blob

__all__ = ["KINDS", "OCI_MANIFEST", "artifact_ref", "artifact_tag", "attach", "read_artifact"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
#: Tag suffix -> (media type, file name in annotations).
KINDS = {
    "sbom": ("application/vnd.cyclonedx+json", "sbom.cdx.json"),
    "att": ("application/vnd.in-toto+json", "provenance.intoto.json"),
}


def artifact_tag(digest: str, kind: str) -> str:
    """The tag of the ``kind`` document of the image ``digest`` (``sha256:H`` -> ``sha256-H.kind``)."""
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}-{hexdigest}.{kind}"


def artifact_ref(image_ref: str, digest: str, kind: str) -> str:
    """``registry/repo:sha256-<hex>.kind`` for the image ``image_ref`` (any tag or digest of it)."""
    parsed = ImageRef.parse(image_ref)
    return f"{parsed.repository}:{artifact_tag(digest, kind)}"


def attach(image_ref: str, digest: str, kind: str, payload: bytes) -> str:
    """Store ``payload`` as the ``kind`` document of the image ``image_ref`` pushed as ``digest``; return the
    artifact's manifest digest. The same payload for the same image gives the same digest."""
    media_type, title = KINDS[kind]
    subject_body, subject_type = get_manifest(f"{ImageRef.parse(image_ref).repository}@{digest}")
    config = b"{}"
    config_digest = upload_blob(image_ref, config)
    layer_digest = upload_blob(image_ref, payload)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": media_type,
        "config": {"mediaType": EMPTY_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": media_type, "digest": layer_digest, "size": len(payload),
                    "annotations": {"org.opencontainers.image.title": title}}],
        "subject": {"mediaType": subject_type, "digest": digest, "size": len(subject_body)},
    }
    return put_manifest(artifact_ref(image_ref, digest, kind), json.dumps(manifest, sort_keys=True).encode(),
                        OCI_MANIFEST)


def read_artifact(image_ref: str, kind: str) -> bytes | None:
    """The ``kind`` document attached to the image ``image_ref`` (a tag or a digest), checked against its
    digest; None when the image has none. RegistryError when the image itself is not there."""
    parsed = ImageRef.parse(image_ref)
    digest = parsed.digest or digest_of(image_ref)
    if digest is None:
        raise RegistryError(f"{image_ref} is not in its registry", "check the name and the tag")
    ref = artifact_ref(image_ref, digest, kind)
    if digest_of(ref) is None:
        return None
    body, _ = get_manifest(ref)
    layers = json.loads(body).get("layers") or []
    if len(layers) != 1:
        raise RegistryError(f"{ref} is not a document grocker attached (it has {len(layers)} layers)",
                            "push the image again with grocker")
    return get_blob(ref, layers[0]["digest"])
