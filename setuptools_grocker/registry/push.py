"""Pushing an image of the engine to a registry, blob by blob, through the blob cache."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

from setuptools_grocker.engine import Engine
from setuptools_grocker.errors import ImageBuildError, RegistryError
from setuptools_grocker.image.records import find_provenance
from setuptools_grocker.image.sbom import sbom_of
from setuptools_grocker.plugin.signing import Signature, SigningRequest
from setuptools_grocker.progress import Progress
from setuptools_grocker.ref import ImageRef
from setuptools_grocker.registry.attach import artifact_tag, attach, attach_signatures
from setuptools_grocker.registry.blobcache import image_blobs
from setuptools_grocker.registry.client import push_image

#: Signs a pushed image: the plugins' ``grocker_sign`` (PluginManager.grocker_sign with the build's config).
Sign = Callable[[SigningRequest], Sequence[Signature]]


def push_runtime_image(engine: Engine, image_id: str, refs: list[str], cache: Path,
                       progress: Progress, sign: Sign | None = None) -> tuple[str, int]:
    """Push ``image_id`` as ``refs`` through the registry's HTTP API; return (digest, bytes uploaded).

    Layer blobs are gzipped deterministically once and kept in ``CACHE/blobs`` by diff ID, so
    the same layer always has the same digest and the registry is asked only for what it lacks
    (see blobcache.py: safe to share between threads and processes, checked before use). Then the SBOM
    and provenance are attached, and ``sign`` (the signing plugins) signs the image and them: the
    signatures go under ``sha256-<hex>.sig``.
    """
    attrs = engine.image_attrs(image_id)
    if attrs is None:
        raise ImageBuildError(f"image {image_id[:19]} is gone from the engine", "build again")
    config, layers = image_blobs(cache, attrs["Id"], list(attrs["RootFS"]["Layers"]),
                                 lambda: engine.save_image(attrs["Id"]), progress.info)
    progress.info("pushing " + ", ".join(refs) + " through the registry API")
    try:
        digest, uploaded = push_image(refs[0], refs[1:], config, layers)
    except RegistryError as exc:
        raise RegistryError(f"pushing {refs[0]} failed: {exc.message}", exc.hint) from exc
    progress.info(f"pushed {refs[0]}@{digest}: {uploaded} bytes uploaded, {len(layers)} layers")
    sbom, provenance = attach_documents(engine, attrs["Id"], refs[0], digest, cache, progress)
    if sign is not None:
        sign_image(refs[0], digest, sbom, provenance, sign, progress)
    return digest, uploaded


def sign_image(ref: str, digest: str, sbom: str | None, provenance: str | None, sign: Sign,
               progress: Progress) -> None:
    """Ask the signing plugins for signatures of the pushed image and its documents; store them (``.sig``)."""
    request = SigningRequest(ImageRef.parse(ref).repository, digest, sbom, provenance)
    signatures = list(sign(request))
    if not signatures:
        progress.detail(f"{ref}: not signed (no plugin implements grocker_sign)")
        return
    try:
        attach_signatures(ref, digest, request.payload, signatures)
    except RegistryError as exc:
        raise RegistryError(f"storing the signatures of {ref} failed: {exc.message}", exc.hint) from exc
    keys = ", ".join(f"{s.signer}: {s.algorithm} key {s.key_id}" for s in signatures)
    progress.info(f"signed {ref}@{digest} ({keys}), stored as {artifact_tag(digest, 'sig')}")


def attach_documents(engine: Engine, image_id: str, ref: str, digest: str, cache: Path,
                     progress: Progress) -> tuple[str | None, str | None]:
    """Attach the image's SBOM (the file in the image) and provenance (``cache``'s record, with the manifest
    digest added to its subjects) next to it in the registry (attach.py); say which are missing. Return the
    content digests (sha256 of the bytes attached) of the SBOM and the provenance, None for what is missing."""
    sbom = sbom_of(engine, image_id)
    statement = find_provenance(cache, image_id)
    attached: dict[str, str] = {}
    try:
        if sbom is not None:
            attach(ref, digest, "sbom", sbom)
            attached["sbom"] = "sha256:" + hashlib.sha256(sbom).hexdigest()
        if statement is not None:
            statement["subject"] = [*statement.get("subject", []), {
                "name": ImageRef.parse(ref).repository, "digest": {"sha256": digest.split(":")[-1]},
                "annotations": {"kind": "registry manifest"}}]
            body = (json.dumps(statement, indent=2, sort_keys=True) + "\n").encode()
            attach(ref, digest, "att", body)
            attached["att"] = "sha256:" + hashlib.sha256(body).hexdigest()
    except RegistryError as exc:
        raise RegistryError(f"attaching the SBOM and provenance of {ref} failed: {exc.message}", exc.hint) from exc
    missing = [what for what, have in (("SBOM", sbom), ("provenance", statement)) if have is None]
    if missing:
        progress.info(f"{ref}: no {' and no '.join(missing)} to attach (image built by an older grocker, "
                      "or elsewhere)")
    else:
        progress.detail(f"attached {artifact_tag(digest, 'sbom')} and {artifact_tag(digest, 'att')}")
    return attached.get("sbom"), attached.get("att")
