"""Pushing an image of the engine to a registry, blob by blob, through the blob cache."""
from __future__ import annotations

import json
from pathlib import Path

from setuptools_grocker.engine import Engine
from setuptools_grocker.errors import ImageBuildError, RegistryError
from setuptools_grocker.image.records import find_provenance
from setuptools_grocker.image.sbom import sbom_of
from setuptools_grocker.progress import Progress
from setuptools_grocker.ref import ImageRef
from setuptools_grocker.registry.attach import artifact_tag, attach
from setuptools_grocker.registry.blobcache import image_blobs
from setuptools_grocker.registry.client import push_image


def push_runtime_image(engine: Engine, image_id: str, refs: list[str], cache: Path,
                       progress: Progress) -> tuple[str, int]:
    """Push ``image_id`` as ``refs`` through the registry's HTTP API; return (digest, bytes uploaded).

    Layer blobs are gzipped deterministically once and kept in ``CACHE/blobs`` by diff ID, so
    the same layer always has the same digest and the registry is asked only for what it lacks
    (see blobcache.py: safe to share between threads and processes, checked before use).
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
    attach_documents(engine, attrs["Id"], refs[0], digest, cache, progress)
    return digest, uploaded


def attach_documents(engine: Engine, image_id: str, ref: str, digest: str, cache: Path, progress: Progress) -> None:
    """Attach the image's SBOM (the file in the image) and provenance (``cache``'s record, with the manifest
    digest added to its subjects) next to it in the registry (attach.py); say which are missing."""
    sbom = sbom_of(engine, image_id)
    statement = find_provenance(cache, image_id)
    try:
        if sbom is not None:
            attach(ref, digest, "sbom", sbom)
        if statement is not None:
            statement["subject"] = [*statement.get("subject", []), {
                "name": ImageRef.parse(ref).repository, "digest": {"sha256": digest.split(":")[-1]},
                "annotations": {"kind": "registry manifest"}}]
            attach(ref, digest, "att", (json.dumps(statement, indent=2, sort_keys=True) + "\n").encode())
    except RegistryError as exc:
        raise RegistryError(f"attaching the SBOM and provenance of {ref} failed: {exc.message}", exc.hint) from exc
    missing = [what for what, have in (("SBOM", sbom), ("provenance", statement)) if have is None]
    if missing:
        progress.info(f"{ref}: no {' and no '.join(missing)} to attach (image built by an older grocker, "
                      "or elsewhere)")
    else:
        progress.detail(f"attached {artifact_tag(digest, 'sbom')} and {artifact_tag(digest, 'att')}")
