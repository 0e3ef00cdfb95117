"""The local cache of registry blobs, ``CACHE/blobs``: what a push uploads.

One gzip blob per layer, named by the layer's diff ID (``<hex>.tar.gz``), gzipped once and
deterministically so that the same layer always has the same registry digest, and one image
config per image, named by the image ID (``<hex>.json``).

Contract: the threads of a workspace build (``--jobs N --push``) and the applications of one
cache root read and write the same files at once, and a machine can stop at any point.

- A file appears under its final name complete or not at all: it is written to a temporary
  file of its own (``mkstemp``, never a name shared by two writers), fsynced, then renamed
  (``fs.write_atomic``).
- A blob is checked against its name before it is used, on the very bytes that are then
  uploaded: a layer must gunzip to its diff ID, a config must hash to its image ID. One that
  does not (cut short by a crash or a full disk, damaged on disk, written by an older tool)
  is dropped and made again from the engine; it is never uploaded.

A layer the registry already holds is not compressed again: the shared build cache
(sharedcache.py) records, for every layer of a root or compiler image it pulls, where the registry
keeps its gzip blob (``<hex>.from``: ``REPOSITORY@DIGEST``, written by :func:`remember_remote`).
When such a layer is missing here, its blob is fetched from there (and checked against the diff
ID) instead of being gzipped by this machine's zlib, whose output may differ from the machine that
pushed it first: the same layer keeps one digest across the farm.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import zlib
from pathlib import Path
from typing import Callable, Mapping, Sequence

from setuptools_grocker.errors import ImageBuildError
from setuptools_grocker.fs import write_atomic

#: ``() -> (image config bytes, {diff ID: layer tar})``: the engine's copy of the image (``docker save``).
Save = Callable[[], tuple[bytes, Mapping[str, bytes]]]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def diff_id_of(blob: bytes) -> str | None:
    """The diff ID of a gzip layer blob (sha256 of the tar inside), or None when it does not gunzip."""
    digest = hashlib.sha256()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(blob)) as tar:
            for chunk in iter(lambda: tar.read(1 << 20), b""):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error):  # not gzip, cut short, or a CRC mismatch
        return None
    return "sha256:" + digest.hexdigest()


def remember_remote(cache: Path, layers: Sequence[tuple[str, str]], repository: str) -> None:
    """Record that ``repository`` holds the gzip blob ``digest`` of each ``(diff ID, digest)`` of ``layers``."""
    blobs = cache / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    for diff_id, digest in layers:
        if not _is_sha256(digest) or not _is_sha256(diff_id):
            continue
        hint = blobs / f"{_hex(diff_id)}.from"
        text = f"{repository}@{digest}\n"
        if not (blobs / f"{_hex(diff_id)}.tar.gz").exists() and not (hint.exists() and hint.read_text() == text):
            write_atomic(hint, text.encode())


def _from_registry(path: Path, diff_id: str, info: Callable[[str], None]) -> bytes | None:
    """The registry's blob of ``diff_id`` when a ``.from`` hint names one that unpacks to it, else None."""
    from setuptools_grocker.errors import RegistryError
    from setuptools_grocker.registry.client import get_blob

    hint = path.with_name(path.name[:-len(".tar.gz")] + ".from")
    try:
        ref = hint.read_text().strip()
    except OSError:
        return None
    repository, _, digest = ref.rpartition("@")
    try:
        blob = get_blob(ref, digest)
    except (RegistryError, OSError) as exc:
        info(f"layer {diff_id[:19]}: the registry's blob {ref} is not available ({exc}): compressed here")
        return None
    if diff_id_of(blob) != diff_id:
        info(f"layer {diff_id[:19]}: the registry's blob {ref} does not unpack to it: compressed here")
        return None
    info(f"layer {diff_id[:19]}: the registry's blob reused ({repository}@{digest[:19]}), not compressed again")
    return blob


def image_blobs(cache: Path, image_id: str, diff_ids: Sequence[str], save: Save,
                info: Callable[[str], None] = lambda _: None) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The image config and the ``(digest, gzip blob)`` of every layer of ``image_id``, from the cache.

    What the cache lacks, or holds damaged, is made from ``save()`` (called at most once) and
    written back. Every returned blob has been checked against its diff ID.
    """
    from setuptools_grocker.image.assemble import gzip_layer

    blobs = cache / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    config_path = blobs / f"{_hex(image_id)}.json"
    paths = {d: blobs / f"{_hex(d)}.tar.gz" for d in diff_ids}
    config = _read_checked(config_path, lambda data: sha256(data) == image_id, info)
    layers = {d: _read_checked(path, _gunzips_to(d), info) for d, path in paths.items()}
    for diff_id, path in paths.items():
        if layers[diff_id] is None:
            layers[diff_id] = blob = _from_registry(path, diff_id, info)
            if blob is not None:
                write_atomic(path, blob)
    if config is None or any(blob is None for blob in layers.values()):
        saved_config, tars = save()
        if config is None:
            if sha256(saved_config) != image_id:
                raise ImageBuildError(f"the engine's copy of image {image_id[:19]} has another config "
                                      f"({sha256(saved_config)[:19]})", "build the image again")
            write_atomic(config_path, saved_config)
            config = saved_config
        for diff_id, blob in layers.items():
            if blob is None:
                tar = tars.get(diff_id)
                if tar is None:
                    raise ImageBuildError(f"the engine's copy of image {image_id[:19]} lacks its layer {diff_id[:19]}",
                                          "build the image again")
                layers[diff_id] = blob = gzip_layer(tar)
                write_atomic(paths[diff_id], blob)
    out = []
    for diff_id in diff_ids:
        blob = layers[diff_id]
        assert blob is not None, "every layer was read or made above"
        out.append((sha256(blob), blob))
    return config, out


def _gunzips_to(diff_id: str) -> Callable[[bytes], bool]:
    return lambda blob: diff_id_of(blob) == diff_id


def _is_sha256(digest: str) -> bool:
    algorithm, _, hexdigest = digest.partition(":")
    return algorithm == "sha256" and len(hexdigest) == 64 and all(c in "0123456789abcdef" for c in hexdigest)


def _hex(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
        raise ImageBuildError(f"'{digest}' is not a sha256 digest", "report this: the engine answered an odd ID")
    return hexdigest


def _read_checked(path: Path, ok: Callable[[bytes], bool], info: Callable[[str], None]) -> bytes | None:
    """The bytes of ``path`` when they pass ``ok``; None when missing; dropped when they do not pass."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
            inode = os.fstat(fh.fileno()).st_ino
    except FileNotFoundError:
        return None
    if ok(data):
        return data
    info(f"the cached blob {path.name} does not match its name (cut short or damaged): dropped, made again")
    try:
        # Only the damaged file: another writer may have put a good one there meanwhile.
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass
    return None
