"""Pushing an image of the engine to a registry, blob by blob, through the blob cache."""
from __future__ import annotations

from pathlib import Path

from setuptools_grocker.engine import Engine
from setuptools_grocker.errors import ImageBuildError, RegistryError
from setuptools_grocker.progress import Progress
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
    return digest, uploaded
