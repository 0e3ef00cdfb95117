"""Unit tests never touch the Docker Engine: any attempt fails loudly."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    import docker

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a unit test tried to reach the Docker Engine")

    monkeypatch.setattr(docker, "from_env", refuse)
    monkeypatch.setattr(docker, "DockerClient", refuse)
    monkeypatch.setattr(docker, "APIClient", refuse)
