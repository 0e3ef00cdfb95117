"""Deploy's pure parts (no engine): env file secret names, the smoke-test label."""
from __future__ import annotations

import hashlib
import json

import pytest

from setuptools_grocker.deploy.deployer import _health_source, env_secret_name
from setuptools_grocker.errors import DeployError

ENV_FILE = b"DB_PASSWORD=hunter2\n"


def test_env_file_secret_names_are_keyed_per_service() -> None:
    shop, till = env_secret_name("shop", "k" * 64, ENV_FILE), env_secret_name("till", "q" * 64, ENV_FILE)
    # The same file in two services: unrelated names, neither the plain hash of the content.
    assert shop.removeprefix("shop-env-") != till.removeprefix("till-env-")
    plain = hashlib.sha256(ENV_FILE).hexdigest()[:12]
    assert plain not in shop and plain not in till
    # Stable under the same key (an unchanged redeploy), different when the content changes.
    assert env_secret_name("shop", "k" * 64, ENV_FILE) == shop
    assert env_secret_name("shop", "k" * 64, b"DB_PASSWORD=other\n") != shop


def labels(path: str, default: str = "server") -> dict[str, str]:
    return {"io.grocker.smoke-test": json.dumps({"port": 8000, "path": path}),
            "io.grocker.default-command": default}


def test_the_smoke_test_label_gives_the_health_check() -> None:
    assert _health_source(labels("/health"), "server", "app:1") == {"port": 8000, "path": "/health"}
    assert _health_source(labels("/health"), "worker", "app:1") is None  # not the default command


@pytest.mark.parametrize("path", ["@evil.example/x", "evil.example/x", "/x y", "/x\r\nHost: evil"])
def test_a_smoke_test_label_whose_path_could_leave_the_host_is_refused(path: str) -> None:
    # http://127.0.0.1:PORT + "@evil.example/x" is a URL of evil.example.
    with pytest.raises(DeployError) as info:
        _health_source(labels(path), "server", "app:1")
    line = str(info.value)
    assert "\n" not in line and "io.grocker.smoke-test label of app:1" in line and repr(path) in line


def test_a_smoke_test_label_with_a_bad_port_is_refused() -> None:
    bad = {"io.grocker.smoke-test": json.dumps({"port": "8000@evil", "path": "/"}),
           "io.grocker.default-command": "server"}
    with pytest.raises(DeployError, match="not a port number"):
        _health_source(bad, "server", "app:1")
