"""``grocker bootstrap-base`` is reproducible: the same package set gives the same image, on any engine.

The default package set (minbase + python3 + tini) is bootstrapped twice: once on the main engine and
once on a second engine (tests/second_engine.py, standing for a second machine, with its own data
root, so nothing is shared but the inputs). Both bootstraps run the whole code path (mmdebstrap,
maintainer scripts, normalisation, layer, config, ``docker load``); to keep CI short they share one
apt cache directory (``--apt-cache``), so the .deb files are downloaded once, and apt checks them
against the mirror's lists both times. What this proves: same mirror state and options give the
same layer, config and image ID on two engines, and the same registry digest when each engine
pushes it. What it does not: a later mirror state (the mirror
moves; docs/reliability.md says to push the base once and pull it by digest).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import docker
import pytest

from setuptools_grocker.image.assemble import iso
from setuptools_grocker.image.bootstrap import EPOCH_LABEL, PACKAGES_LABEL, host_mirror
from tests.helpers import grocker, remove_images
from tests.second_engine import SecondEngine


@pytest.fixture(scope="module")
def apt_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("apt-cache")


def push(client: docker.DockerClient, image: str, repository: str, tag: str) -> str:
    """``docker push`` through ``client``'s engine; the manifest digest the registry answered."""
    client.images.get(image).tag(repository, tag)
    digest = ""
    for line in client.api.push(repository, tag, stream=True, decode=True):
        assert "error" not in line, line
        digest = line.get("aux", {}).get("Digest", digest)
    client.images.remove(f"{repository}:{tag}")
    assert digest.startswith("sha256:")
    return str(digest)


def test_two_bootstraps_on_two_engines_give_one_image_id(client: docker.DockerClient, engine_b: SecondEngine,
                                                          apt_cache: Path, registry: str, run_id: str) -> None:
    tag = f"grocker-test/base-repro:{run_id}"
    client_b = docker.DockerClient(base_url=engine_b.url, timeout=300)
    try:
        started = time.monotonic()
        on_a = grocker("bootstrap-base", "--tag", tag, "--apt-cache", str(apt_cache))
        assert on_a.code == 0, on_a.err[-3000:]
        middle = time.monotonic()
        on_b = grocker("bootstrap-base", "--tag", tag, "--apt-cache", str(apt_cache), env=engine_b.env())
        assert on_b.code == 0, on_b.err[-3000:]
        print(f"bootstrap on engine A: {middle - started:.0f}s, on engine B: {time.monotonic() - middle:.0f}s")

        image_a, image_b = client.images.get(tag), client_b.images.get(tag)
        assert image_a.id == image_b.id
        assert image_a.attrs["RootFS"]["Layers"] == image_b.attrs["RootFS"]["Layers"]
        assert len(image_a.attrs["RootFS"]["Layers"]) == 1

        labels = image_a.labels
        epoch = int(labels[EPOCH_LABEL])
        assert image_a.attrs["Created"] == iso(epoch)
        packages = dict(p.split("=", 1) for p in json.loads(labels[PACKAGES_LABEL]))
        assert {"python3", "tini", "dpkg", "usr-is-merged"} <= set(packages)
        assert "perl" not in packages  # merged /usr by the hook, not by usrmerge

        # The image works, and holds no per-run state.
        script = ("import os, sys; print(sys.version_info[:2]); print(open('/etc/shadow').read().split(':')[2]); "
                  "print(sorted(os.listdir('/var/lib/apt/lists'))); "
                  "print(sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk('/var/log') for f in fs))")
        out = client.containers.run(tag, ["python3", "-c", script], remove=True).decode().splitlines()
        assert out[1:] == [str(epoch // 86400), "['lock', 'partial']", "0"], out

        # Pushed from each engine, the same registry digest.
        digests = [push(c, tag, f"{registry}/base-repro", f"{run_id}-{name}") for c, name in ((client, "a"),
                                                                                          (client_b, "b"))]
        assert digests[0] == digests[1]

        # The second engine's containers reach the outside through its own bridge and NAT rules.
        mirror = host_mirror()
        assert mirror
        fetch = f"import urllib.request; print(urllib.request.urlopen('{mirror}/dists/bookworm/Release').status)"
        assert client_b.containers.run(tag, ["python3", "-c", fetch], remove=True).decode().strip() == "200"

        # An existing base is kept (scripts/setup.sh relies on it).
        again = grocker("bootstrap-base", "--tag", tag)
        assert again.code == 0 and "already in the engine" in again.err, again.err
    finally:
        remove_images(client, tag)
        client_b.close()
