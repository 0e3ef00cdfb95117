"""SBOM and provenance next to an image in its registry, the way cosign attaches them.

Distribution 2.8 (the registry here) has no referrers API, and its garbage collection removes
untagged manifests: each document is therefore stored as a small OCI artifact (an OCI image manifest
whose only layer is the JSON, ``artifactType`` its media type, the empty config) under a *tag* derived
from the image's manifest digest, in the image's repository:

- ``sha256-<hex>.sbom``: the CycloneDX JSON (``application/vnd.cyclonedx+json``), the same bytes as the
  file in the image;
- ``sha256-<hex>.att``: the in-toto statement (``application/vnd.in-toto+json``), its subjects the image
  ID and the manifest digest. Stored as is, not in a DSSE envelope: what signs it is the ``.sig``;
- ``sha256-<hex>.sig``: the signatures the signing plugins made (``grocker_sign``), as cosign stores them:
  one layer per signature, each layer the signed payload (``application/vnd.dev.cosign.simplesigning.v1+json``,
  plugin/signing.py) with the signature, base64, in the annotation ``dev.cosignproject.cosign/signature``.

The manifest also names the image in its ``subject`` field: a registry that implements the OCI 1.1
referrers API indexes it there too (Distribution 2.8 ignores the field; the tag is what finds it).

Reading (:func:`read_artifact_manifest`) asks the referrers API first where the registry has it
(registry/client.py ``referrers``; a registry without it is asked once per process) and takes the
document of the kind's ``artifactType`` it lists: the tagged one when the tag names one of them (the last
push), else the only one (a document an OCI 1.1 tool attached without a tag); several and none tagged is an
error rather than a guess. Without the API, or when it lists none of that type, the tag decides.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Sequence

from setuptools_grocker.errors import RegistryError
from setuptools_grocker.plugin.signing import Signature
from setuptools_grocker.ref import ImageRef
from setuptools_grocker.registry.client import digest_of, get_blob, get_manifest, put_manifest, referrers, upload_blob

__all__ = ["KINDS", "OCI_MANIFEST", "SIGNATURE", "artifact_ref", "artifact_tag", "artifact_type", "attach",
           "attach_signatures", "find_artifact", "read_artifact", "read_artifact_manifest", "read_signatures"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
#: Tag suffix -> (media type, file name in annotations).
KINDS = {
    "sbom": ("application/vnd.cyclonedx+json", "sbom.cdx.json"),
    "att": ("application/vnd.in-toto+json", "provenance.intoto.json"),
}
SIGNATURE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIG_ANNOTATION = "dev.cosignproject.cosign/signature"
KEY_ID, ALGORITHM, SIGNER = "io.grocker.key-id", "io.grocker.algorithm", "io.grocker.signer"


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
    layer_digest = upload_blob(image_ref, payload)
    return _put_artifact(image_ref, digest, kind, media_type, [
        {"mediaType": media_type, "digest": layer_digest, "size": len(payload),
         "annotations": {"org.opencontainers.image.title": title}}])


def _put_artifact(image_ref: str, digest: str, kind: str, media_type: str, layers: list[dict[str, Any]]) -> str:
    subject_body, subject_type = get_manifest(f"{ImageRef.parse(image_ref).repository}@{digest}")
    config = b"{}"
    config_digest = upload_blob(image_ref, config)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": media_type,
        "config": {"mediaType": EMPTY_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": layers,
        "subject": {"mediaType": subject_type, "digest": digest, "size": len(subject_body)},
    }
    return put_manifest(artifact_ref(image_ref, digest, kind), json.dumps(manifest, sort_keys=True).encode(),
                        OCI_MANIFEST)


def attach_signatures(image_ref: str, digest: str, payload: bytes, signatures: Sequence[Signature]) -> str:
    """Store ``signatures`` of ``payload`` as the ``.sig`` of the image pushed as ``digest`` (replacing what
    was there: a push signs again); return the artifact's manifest digest."""
    payload_digest = upload_blob(image_ref, payload)
    layers = [{"mediaType": SIGNATURE, "digest": payload_digest, "size": len(payload),
               "annotations": {**{str(k): str(v) for k, v in s.annotations.items()},
                               SIG_ANNOTATION: base64.b64encode(s.signature).decode(),
                               KEY_ID: s.key_id, ALGORITHM: s.algorithm, SIGNER: s.signer}}
              for s in signatures]
    return _put_artifact(image_ref, digest, "sig", SIGNATURE, layers)


def artifact_type(kind: str) -> str:
    """The ``artifactType`` of the ``kind`` document (``sbom``, ``att``, ``sig``)."""
    return SIGNATURE if kind == "sig" else KINDS[kind][0]


def find_artifact(image_ref: str, digest: str, kind: str) -> str | None:
    """The reference (by digest) of the ``kind`` document of the image pushed as ``digest``; None when it has none.

    The referrers API where the registry has it, else (or when it lists none of that type) the tag; see the
    module's docstring."""
    repository = ImageRef.parse(image_ref).repository
    tagged = digest_of(artifact_ref(image_ref, digest, kind))
    listed = referrers(repository, digest)
    candidates = [str(d["digest"]) for d in listed or () if d.get("artifactType") == artifact_type(kind)]
    if tagged is not None and (tagged in candidates or not candidates):
        chosen: str | None = tagged
    elif len(candidates) == 1:
        chosen = candidates[0]
    elif candidates:
        raise RegistryError(f"{len(candidates)} {kind} documents refer to {repository}@{digest} and none is under "
                            f"the tag {artifact_tag(digest, kind)}",
                            "push the image again with grocker (it tags the one that counts)")
    else:
        chosen = None
    return f"{repository}@{chosen}" if chosen else None


def read_artifact_manifest(image_ref: str, digest: str, kind: str) -> dict[str, Any] | None:
    """The manifest of the ``kind`` document of the image pushed as ``digest`` (:func:`find_artifact`); None when
    there is none."""
    ref = find_artifact(image_ref, digest, kind)
    if ref is None:
        return None
    body, _ = get_manifest(ref)
    try:
        manifest = json.loads(body)
    except ValueError as exc:
        raise RegistryError(f"{ref} is not a manifest (not JSON)", "push the image again with grocker") from exc
    if not isinstance(manifest, dict):
        raise RegistryError(f"{ref} is not a manifest", "push the image again with grocker")
    return manifest


def read_signatures(image_ref: str, digest: str) -> list[tuple[bytes, Signature]] | None:
    """Every ``(payload, signature)`` stored as the ``.sig`` of the image pushed as ``digest``; None when it
    has none. Each payload is read by its digest (and checked against it)."""
    manifest = read_artifact_manifest(image_ref, digest, "sig")
    if manifest is None:
        return None
    found: list[tuple[bytes, Signature]] = []
    payloads: dict[str, bytes] = {}
    for layer in manifest.get("layers") or []:
        annotations = dict(layer.get("annotations") or {})
        try:
            signature = base64.b64decode(annotations.pop(SIG_ANNOTATION), validate=True)
        except (KeyError, binascii.Error, ValueError):
            continue  # not a signature layer: nothing to check it with
        key_id, algorithm, signer = (str(annotations.pop(k, "")) for k in (KEY_ID, ALGORITHM, SIGNER))
        if layer["digest"] not in payloads:
            payloads[layer["digest"]] = get_blob(artifact_ref(image_ref, digest, "sig"), layer["digest"])
        found.append((payloads[layer["digest"]], Signature(signature, key_id, algorithm, signer, annotations)))
    return found


def read_artifact(image_ref: str, kind: str) -> bytes | None:
    """The ``kind`` document attached to the image ``image_ref`` (a tag or a digest), checked against its
    digest; None when the image has none. RegistryError when the image itself is not there."""
    parsed = ImageRef.parse(image_ref)
    digest = parsed.digest or digest_of(image_ref)
    if digest is None:
        raise RegistryError(f"{image_ref} is not in its registry", "check the name and the tag")
    ref = artifact_ref(image_ref, digest, kind)
    manifest = read_artifact_manifest(image_ref, digest, kind)
    if manifest is None:
        return None
    layers = manifest.get("layers") or []
    if len(layers) != 1:
        raise RegistryError(f"{ref} is not a document grocker attached (it has {len(layers)} layers)",
                            "push the image again with grocker")
    return get_blob(ref, layers[0]["digest"])
