"""The connection to the Docker Engine, and the conversion of the SDK's errors into grocker's.

:class:`Connection` is the base of every part of :class:`~setuptools_grocker.engine.Engine`:
it owns the docker SDK client and :meth:`Connection._call`, through which every SDK call goes
so that a lost engine becomes :class:`~setuptools_grocker.errors.EngineUnavailable` (exit code
and hint) instead of a traceback. The docker SDK is imported here; the other modules of this
package take it from here, and no module outside the package imports it.
"""
from __future__ import annotations

import datetime
import re
import time
from typing import Any, Mapping, TypeVar

from setuptools_grocker.errors import EngineUnavailable
from setuptools_grocker.progress import Progress

try:  # imported here only: the rest of the package never imports docker.
    import docker
    import docker.auth
    import docker.errors
    import docker.types
except ImportError:  # pragma: no cover
    docker = None  # type: ignore[assignment,unused-ignore]  # needed once docker ships type hints

__all__ = ["Connection", "docker", "engine_time", "labels_of", "new_client", "short"]

_Self = TypeVar("_Self", bound="Connection")


class Connection:
    """A connection to the Docker Engine; use it as a context manager."""

    def __init__(self, progress: Progress | None = None, base_url: str | None = None) -> None:
        self.progress = progress or Progress(quiet=True)
        self._base_url = base_url
        self._client: Any = None

    def __enter__(self: _Self) -> _Self:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        if docker is None:  # pragma: no cover
            raise EngineUnavailable("the 'docker' Python package is not installed", "pip install docker")
        try:
            # version="auto" asks the engine its API version: the answer proves it answers (no ping).
            self._client = new_client(self._base_url)
        except (docker.errors.DockerException, OSError) as exc:
            where = self._base_url or "the DOCKER_HOST or unix:///var/run/docker.sock"
            raise EngineUnavailable(
                f"no Docker Engine answers at {where} ({short(exc)})",
                "start one (`dockerd &`, or `systemctl start docker`) or set DOCKER_HOST",
            ) from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self.connect()
        return self._client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an SDK call, converting connection loss into EngineUnavailable."""
        try:
            return fn(*args, **kwargs)
        except docker.errors.APIError:
            raise
        except (docker.errors.DockerException, OSError) as exc:
            raise EngineUnavailable(
                f"the Docker Engine stopped answering while trying to {what} ({short(exc)})",
                "check that dockerd is running, then run the build again",
            ) from exc
        except Exception as exc:  # requests' ConnectionError and friends
            if type(exc).__module__.startswith(("requests", "urllib3")):
                raise EngineUnavailable(
                    f"the Docker Engine stopped answering while trying to {what} ({short(exc)})",
                    "check that dockerd is running, then run the build again",
                ) from exc
            raise


def new_client(base_url: str | None, timeout: int = 120) -> Any:
    if base_url:
        return docker.DockerClient(base_url=base_url, version="auto", timeout=timeout)
    return docker.from_env(version="auto", timeout=timeout)


_ENGINE_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)$")


def engine_time(client: Any) -> float:
    """The engine's clock (``docker info``'s SystemTime), in seconds since the epoch.

    Leases are written and judged in the engine's clock, so that the clocks of the machines
    sharing an engine need not agree.
    """
    seconds = parse_engine_time(str(client.info().get("SystemTime", "")))
    return time.time() if seconds is None else seconds


def parse_engine_time(text: str) -> float | None:
    """Seconds since the epoch of an engine timestamp (``2026-12-07T16:40:24.123456789Z``: nanoseconds,
    which ``fromisoformat`` refuses); None when it is not one."""
    found = _ENGINE_TIME.match(text)
    if not found:
        return None
    zone = "+00:00" if found.group(2) == "Z" else found.group(2)
    return datetime.datetime.fromisoformat(found.group(1) + zone).timestamp()


def short(exc: BaseException) -> str:
    """An SDK error's message on one line, at most 300 characters (for a GrockerError's message)."""
    text = getattr(exc, "explanation", None) or str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text).split())[:300]


def labels_of(attrs: Mapping[str, Any]) -> dict[str, str]:
    """The labels in ``docker inspect`` data of an image or a container."""
    return dict((attrs.get("Config") or {}).get("Labels") or {})
