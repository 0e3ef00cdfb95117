"""The registry client against a real registry that requires a login (Debian's docker-registry, htpasswd).

The login comes from a Docker credential helper only (``credsStore``), as on desktops and
many CI images: nothing in ``auths``.
"""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from setuptools_grocker.errors import RegistryError
from setuptools_grocker.registry import client as registry
from tests.helpers import free_port, wait_http
from tests.unit.registry_stub import (
    basic,
    credential_helper,
    fresh_login_state,  # noqa: F401 (a fixture, used by name)
    sha256,
)

PASSWORD = "grocker-test-pw"
#: bcrypt (cost 4) of PASSWORD: Distribution's htpasswd mode reads only bcrypt.
HTPASSWD = "ci:$2b$04$EVDpzvETB9Jyk4gKo93j1uDWtezFzhxyWe7hvF0tn3cC/jep96V/.\n"


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed; scripts/setup.sh installs it")
    root = tmp_path_factory.mktemp("auth-registry")
    (root / "htpasswd").write_text(HTPASSWD)
    port = free_port()
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n"
                      f"auth:\n  htpasswd:\n    realm: grocker-test\n    path: {root}/htpasswd\n")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/v2/", proc, "docker-registry with htpasswd")
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=20)


pytestmark = pytest.mark.usefixtures("fresh_login_state")


def test_the_registry_requires_a_login(auth_registry: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"http://{auth_registry}/v2/", timeout=10)
    assert caught.value.code == 401
    caught.value.close()


def test_push_retag_and_read_back_with_a_login_from_a_credential_helper(
        auth_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = credential_helper(tmp_path, monkeypatch, auth_registry, username="ci", secret=PASSWORD)
    (tmp_path / "docker" / "config.json").write_text(json.dumps({"credsStore": "grockertest"}))
    ref = f"{auth_registry}/shop/till:1.0"
    layer = gzip.compress(b"a layer" * 1000, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [sha256(gzip.decompress(layer))]}}).encode()
    digest, uploaded = registry.push_image(ref, [], config, [(sha256(layer), layer)])
    assert uploaded == len(config) + len(layer)
    assert registry.digest_of(ref) == digest
    assert registry.retag(f"{auth_registry}/shop/till@{digest}", f"{auth_registry}/shop/till:latest") == digest
    assert registry.digest_of(f"{auth_registry}/shop/till:latest") == digest
    assert registry.get_blob(ref, sha256(layer)) == layer
    document = registry.push_document(f"{auth_registry}/shop/release:r1", "release.json", {"release": "r1"})
    assert registry.read_document(f"{auth_registry}/shop/release:r1") == {"release": "r1"}
    assert registry.manifest_digest(f"{auth_registry}/shop/release:r1") == document
    assert log.read_text().splitlines() == [f"get {auth_registry}"]


def test_a_wrong_login_is_refused_with_a_hint(auth_registry: str, tmp_path: Path) -> None:
    (tmp_path / "docker" / "config.json").write_text(json.dumps(
        {"auths": {auth_registry: {"auth": basic("ci", "wrong").split(" ", 1)[1]}}}))
    with pytest.raises(RegistryError) as caught:
        registry.upload_blob(f"{auth_registry}/shop/till:1.0", b"data")
    assert "HTTP 401" in caught.value.message
    assert f"docker login {auth_registry}" in (caught.value.hint or "")
