"""The shared build cache: root and compiler images found in a registry by key, on every machine.

``build-cache = "REGISTRY/REPOSITORY"`` names it. Before a root or compiler image is built, the
tag ``REPOSITORY:<kind>-<key>`` is looked up (``kind`` is ``root`` or ``compiler``, ``key`` the
image's key from image/recipes.py, computed from machine-independent inputs only). When it is
there, the image is fetched through the registry's HTTP API by the digest the tag names and
checked before anything reaches the engine:

- the manifest and every blob hash to their digests (client.py);
- the image config carries the label ``io.grocker.shared-key = <kind>-<key>``: a tag that points at
  another image (another key, another kind) is refused;
- its layers start with the layers of the image it is built on (the base image for a root, the
  root for a compiler), and every new layer gunzips to its diff ID.

Then only the new layers are ``docker load``ed, tagged as a local build would tag the image; the
image ID is the hash of the config, so it is the ID of the image the trusted builder pushed. A
refused entry is a :class:`~setuptools_grocker.errors.RegistryError` (one line, nothing loaded).

A registry that does not answer is not an error: one progress line, and the image is built
locally. Only a run with writing on (``--cache-write``, ``GROCKER_CACHE_WRITE=1``) pushes what it
built; a push that fails is one warning. Pushed and pulled blobs go through the blob cache
(blobcache.py), so a later push of a runtime image on that root reuses the registry's gzip bytes.
"""
from __future__ import annotations

import json
import urllib.error
from pathlib import Path
from typing import Any, Mapping

from setuptools_grocker.engine import Engine
from setuptools_grocker.engine.images import load_archive
from setuptools_grocker.errors import ConfigError, RegistryError
from setuptools_grocker.fs import write_atomic
from setuptools_grocker.progress import Progress
from setuptools_grocker.registry.blobcache import diff_id_of, image_blobs, remember_remote, sha256
from setuptools_grocker.registry.client import digest_of, get_blob, get_manifest, push_image

__all__ = ["KEY_LABEL", "SharedCache", "shared_cache"]

#: The label every root and compiler image carries: ``<kind>-<key>``, what a reader checks.
KEY_LABEL = "io.grocker.shared-key"
_LAYER_TYPES = ("application/vnd.docker.image.rootfs.diff.tar.gzip",
                "application/vnd.oci.image.layer.v1.tar+gzip")


def shared_cache(repository: str | None, environ: Mapping[str, str], *, write: bool = False,
                 cache: Path) -> SharedCache | None:
    """The shared cache of ``repository`` (the ``build-cache`` key), or None when it is not set.

    Writing is on with ``write`` (``--cache-write``) or ``GROCKER_CACHE_WRITE=1``.
    """
    if not repository:
        return None
    flag = environ.get("GROCKER_CACHE_WRITE", "").strip().lower()
    if flag not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ConfigError(f"GROCKER_CACHE_WRITE={flag!r} is not a boolean",
                          "set GROCKER_CACHE_WRITE=1 on the trusted builder that fills the shared cache, else unset it")
    return SharedCache(repository, write=write or flag in ("1", "true", "yes", "on"), cache=cache)


class SharedCache:
    """One run's view of the shared cache (after a registry did not answer, it is not asked again)."""

    def __init__(self, repository: str, *, write: bool, cache: Path) -> None:
        self.repository = repository
        self.write = write
        self.cache = cache
        self.unreachable = False

    def ref(self, kind: str, key: str) -> str:
        return f"{self.repository}:{kind}-{key}"

    # -- reading ----------------------------------------------------------------------------------
    def fetch(self, engine: Engine, *, kind: str, key: str, parent: Mapping[str, Any], tag: str,
              progress: Progress) -> bool:
        """Load the ``kind`` image of ``key`` from the shared cache as ``tag``; False when it is not there.

        ``parent`` is the engine's inspect data of the image it is built on. RegistryError when the
        registry serves something else than what the key names (nothing is loaded then).
        """
        if self.unreachable:
            return False
        ref = self.ref(kind, key)
        try:
            digest = digest_of(ref)
        except RegistryError as exc:
            if exc.message.startswith("the registry lies"):
                raise RegistryError(f"shared cache entry {ref} refused: {exc.message}", exc.hint) from exc
            self.unreachable = True
            if isinstance(exc.__cause__, (urllib.error.URLError, OSError)):
                progress.info(f"shared cache {self.repository} unreachable: building locally")
            else:  # e.g. it asks for a login this machine does not have
                progress.info(f"shared cache {self.repository} unreadable ({exc.message}): building locally")
            return False
        if digest is None:
            progress.detail(f"shared cache: no {ref}")
            return False
        with progress.stage(f"pull {kind} image {ref}"):
            try:
                self._load(engine, kind=kind, key=key, ref=f"{self.repository}@{digest}", parent=parent, tag=tag,
                           progress=progress)
            except _Refused as exc:
                raise RegistryError(f"shared cache entry {ref} ({digest[:19]}) refused: {exc}; nothing of it "
                                    "was used", "have the trusted builder push it again (--cache-write), or unset "
                                    "build-cache to build locally") from exc
            except RegistryError as exc:  # a blob that does not hash to its digest, say
                raise RegistryError(f"shared cache entry {ref}: {exc.message}", exc.hint) from exc
        return True

    def _load(self, engine: Engine, *, kind: str, key: str, ref: str, parent: Mapping[str, Any], tag: str,
              progress: Progress) -> None:
        body, _ = get_manifest(ref)
        try:
            manifest = json.loads(body)
            config_digest = manifest["config"]["digest"]
            layers = [(str(layer["digest"]), str(layer.get("mediaType", ""))) for layer in manifest["layers"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise _Refused("its manifest is not an image manifest") from exc
        config = get_blob(ref, config_digest)
        try:
            data = json.loads(config)
            label = (data.get("config", {}).get("Labels") or {}).get(KEY_LABEL)
            diff_ids = [str(d) for d in data["rootfs"]["diff_ids"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _Refused("its config is not an image config") from exc
        if label != f"{kind}-{key}":
            raise _Refused(f"it is labelled {KEY_LABEL}={label!r}, not {kind}-{key}")
        below = list(parent["RootFS"]["Layers"])
        if len(diff_ids) != len(layers) or len(diff_ids) <= len(below) or diff_ids[:len(below)] != below:
            raise _Refused(f"its layers are not those of the image it is built on ({parent['Id'][:19]}) "
                           "plus its own")
        image_id = sha256(config)
        blobs = self.cache / "blobs"
        new: list[tuple[str, bytes]] = []
        if engine.image_id(image_id) is None:
            for (digest, media_type), diff_id in list(zip(layers, diff_ids))[len(below):]:
                if media_type not in _LAYER_TYPES:
                    raise _Refused(f"its layer {digest[:19]} is a {media_type or 'layer of no type'}")
                blob = get_blob(ref, digest)
                if diff_id_of(blob) != diff_id:
                    raise _Refused(f"its layer {digest[:19]} does not unpack to {diff_id[:19]}")
                new.append((diff_id, blob))
            progress.info(f"pulled {ref}: {sum(len(b) for _, b in new)} bytes, {len(new)} layers")
            engine.load(load_archive(config, below, new), f"{kind} image")
        if engine.image_id(image_id) != image_id:
            raise _Refused(f"the engine did not load it as {image_id[:19]}")
        engine.tag(image_id, tag)
        # The registry's own gzip bytes: a later push of an image on top of this one sends the same blobs.
        blobs.mkdir(parents=True, exist_ok=True)
        for diff_id, blob in new:
            write_atomic(blobs / f"{diff_id.split(':', 1)[1]}.tar.gz", blob)
        write_atomic(blobs / f"{image_id.split(':', 1)[1]}.json", config)
        # The layers below (the base's) were not pulled: a push fetches the registry's blob rather than
        # compressing them with this machine's zlib (blobcache.py).
        remember_remote(self.cache, [(d, digest) for (digest, _), d in zip(layers, diff_ids)], self.repository)

    # -- writing ----------------------------------------------------------------------------------
    def publish(self, engine: Engine, *, kind: str, key: str, tag: str, progress: Progress) -> None:
        """Push the image ``tag`` as the shared ``kind`` image of ``key`` when writing is on; a failure warns."""
        if not self.write or self.unreachable:
            return
        ref = self.ref(kind, key)
        attrs = engine.image_attrs(tag)
        if attrs is None:
            return
        try:
            config, layers = image_blobs(self.cache, attrs["Id"], list(attrs["RootFS"]["Layers"]),
                                         lambda: engine.save_image(attrs["Id"]), progress.detail)
            digest, uploaded = push_image(ref, [], config, layers)
        except RegistryError as exc:
            progress.warn(f"shared cache: pushing {ref} failed ({exc.message}); the image is used locally")
            return
        progress.info(f"shared cache: pushed {ref}@{digest} ({uploaded} bytes uploaded)")


class _Refused(Exception):
    """What the registry served is not the entry the key names (the message says why)."""
