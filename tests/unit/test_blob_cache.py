"""The blob cache shared by the threads of a workspace build and the applications of one cache root.

``image_blobs`` is what ``push_runtime_image`` calls; ``save`` stands for ``docker save`` and
hands it real layer tars made by the project's own tar writer.
"""
from __future__ import annotations

import gzip
import json
import random
import threading
from pathlib import Path
from typing import Callable, Mapping

import pytest

from setuptools_grocker.errors import ImageBuildError
from setuptools_grocker.image.assemble import Entry, deterministic_tar
from setuptools_grocker.registry.blobcache import diff_id_of, image_blobs, sha256

THREADS = 16
ROUNDS = 4


def make_layer(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    # Half random, half text: big enough that writing it takes a while, so writers overlap.
    data = rng.randbytes(size // 2) + b"pip install grocker\n" * (size // 40)
    return deterministic_tar([Entry(f"opt/app/layer{seed}.bin", data, 0o644)], epoch=315532800)


# Three images that share most of their layers, as the applications of one workspace do.
TARS = [make_layer(seed, size) for seed, size in enumerate([400_000, 200_000, 100_000, 50_000, 20_000])]
IMAGE_LAYERS = [[0, 1, 2], [0, 1, 3], [0, 2, 4]]


class Image:
    def __init__(self, layer_indexes: list[int]) -> None:
        self.tars = {sha256(TARS[i]): TARS[i] for i in layer_indexes}
        self.diff_ids = list(self.tars)
        self.config = json.dumps({"rootfs": {"type": "layers", "diff_ids": self.diff_ids}}).encode()
        self.id = sha256(self.config)
        self.saves = 0
        self._lock = threading.Lock()

    def save(self) -> tuple[bytes, Mapping[str, bytes]]:
        with self._lock:
            self.saves += 1
        return self.config, dict(self.tars)

    def blobs(self, cache: Path, info: Callable[[str], None] = lambda _: None) -> tuple[bytes, list[tuple[str, bytes]]]:
        return image_blobs(cache, self.id, self.diff_ids, self.save, info)

    def check(self, config: bytes, layers: list[tuple[str, bytes]]) -> None:
        assert config == self.config
        assert [diff_id_of(blob) for _, blob in layers] == self.diff_ids
        assert all(digest == sha256(blob) for digest, blob in layers)


def images() -> list[Image]:
    return [Image(indexes) for indexes in IMAGE_LAYERS]


def test_many_threads_filling_one_cache_get_whole_verified_blobs(tmp_path: Path) -> None:
    all_images = images()
    expected = {f"{d.split(':')[1]}.tar.gz" for d in map(sha256, TARS)}
    expected |= {f"{image.id.split(':')[1]}.json" for image in all_images}
    for round_ in range(ROUNDS):
        cache = tmp_path / f"cache{round_}"  # cold each round: the writers race on every file
        start = threading.Barrier(THREADS)
        outcomes: list[str] = []

        def push(n: int, cache: Path = cache, start: threading.Barrier = start, outcomes: list[str] = outcomes) -> None:
            image = all_images[n % len(all_images)]
            try:
                start.wait()
                image.check(*image.blobs(cache))
                outcomes.append("ok")
            except Exception as exc:  # every failure is the test's business, counted below
                outcomes.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=push, args=(n,)) for n in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes == ["ok"] * THREADS
        # What is left on disk is complete, under its final names only (no temporary file left behind).
        assert {p.name for p in (cache / "blobs").iterdir()} == expected
        for path in (cache / "blobs").glob("*.tar.gz"):
            assert diff_id_of(path.read_bytes()) == "sha256:" + path.name.split(".")[0]


def test_a_cached_blob_cut_short_is_dropped_and_made_again(tmp_path: Path) -> None:
    image = images()[0]
    image.check(*image.blobs(tmp_path))
    assert image.saves == 1
    # A warm cache does not ask the engine.
    image.check(*image.blobs(tmp_path))
    assert image.saves == 1
    # A crash or a full disk cut a blob short; another one is a valid gzip of the wrong layer.
    short = tmp_path / "blobs" / f"{image.diff_ids[0].split(':')[1]}.tar.gz"
    whole = short.read_bytes()
    short.write_bytes(whole[: len(whole) // 2])
    wrong = tmp_path / "blobs" / f"{image.diff_ids[1].split(':')[1]}.tar.gz"
    wrong.write_bytes(gzip.compress(TARS[4], mtime=0))
    said: list[str] = []
    image.check(*image.blobs(tmp_path, said.append))
    assert image.saves == 2
    assert short.read_bytes() == whole
    assert diff_id_of(wrong.read_bytes()) == image.diff_ids[1]
    assert len(said) == 2 and all("does not match its name" in line for line in said)


def test_a_damaged_cached_config_is_made_again(tmp_path: Path) -> None:
    image = images()[1]
    image.blobs(tmp_path)
    config = tmp_path / "blobs" / f"{image.id.split(':')[1]}.json"
    config.write_bytes(image.config[:-3])
    image.check(*image.blobs(tmp_path))
    assert config.read_bytes() == image.config


def test_an_engine_copy_without_the_layer_is_an_error(tmp_path: Path) -> None:
    image = images()[2]

    def save_without_a_layer() -> tuple[bytes, Mapping[str, bytes]]:
        return image.config, {d: t for d, t in image.tars.items() if d != image.diff_ids[-1]}

    with pytest.raises(ImageBuildError, match="lacks its layer"):
        image_blobs(tmp_path, image.id, image.diff_ids, save_without_a_layer)


def test_a_layer_the_registry_holds_is_fetched_not_compressed_again(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Another machine's zlib may gzip a layer to other bytes: the registry's blob (named by the shared cache's
    ``.from`` hint) is reused, so the layer keeps the digest it has in the registry."""
    from setuptools_grocker.registry import client as registry
    from setuptools_grocker.registry.blobcache import remember_remote
    from tests.unit.registry_stub import StubRegistry

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    registry._reset()
    image = Image([0, 1])
    theirs = gzip.compress(TARS[0], compresslevel=1, mtime=0)  # not what this machine's gzip_layer makes
    reg = StubRegistry()
    try:
        reg.store.blobs[sha256(theirs)] = theirs
        bogus = gzip.compress(TARS[2], mtime=0)  # a hint whose blob unpacks to another layer is not used
        reg.store.blobs[sha256(bogus)] = bogus
        remember_remote(tmp_path / "cache", [(image.diff_ids[0], sha256(theirs)),
                                             (image.diff_ids[1], sha256(bogus))], f"{reg.host}/cache")
        lines: list[str] = []
        config, layers = image.blobs(tmp_path / "cache", lines.append)
    finally:
        reg.close()
    image.check(config, layers)
    assert layers[0] == (sha256(theirs), theirs)
    assert layers[1][0] != sha256(bogus)  # compressed here instead
    assert any("the registry's blob reused" in line for line in lines), lines
    assert any("does not unpack to it: compressed here" in line for line in lines), lines
    assert image.saves == 1  # only for the layer the registry could not give
