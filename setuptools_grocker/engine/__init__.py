"""The only package that talks to the Docker Engine.

Everything else asks :class:`Engine` for images, containers, tags and Swarm services, and gets
typed errors back. Every engine operation is echoed as the equivalent ``docker`` command line,
so a user can replay it by hand. It is also the only package that imports the docker SDK:
:func:`registry_credentials` reads the Docker client's login configuration through it.

One module per concern; :class:`Engine` is their sum, as the SDK's own ``APIClient`` is::

    connection.py   the client, ``_call`` (SDK errors -> EngineUnavailable), the engine's clock
    images.py       inspect, pull, build, tag, import, load, save
    containers.py   run, start, Mount, RunResult, Container, and the reaper of dead runs' containers
    ownership.py    the rules: run IDs, owner labels, leases, when a run's containers are orphaned (pure)
    lease.py        this run's lease in the engine (the rules are in ownership.py)
    swarm.py        services (ServiceSpec, HealthCheck), overlay networks, secrets
    credentials.py  what ``docker login`` stored, for the registry client

The engine knows nothing of the modules above it: the deploy module describes a service as a
:class:`ServiceSpec`, the engine's own type.
"""
from __future__ import annotations

from setuptools_grocker.engine.connection import engine_time, labels_of, parse_engine_time
from setuptools_grocker.engine.containers import Container, Containers, DaemonFile, Mount, RunResult
from setuptools_grocker.engine.credentials import registry_credentials
from setuptools_grocker.engine.images import Images
from setuptools_grocker.engine.ownership import OWNER_LABEL, PID_LABEL
from setuptools_grocker.engine.swarm import HealthCheck, ServiceSpec, Swarm

__all__ = [
    "Engine", "Container", "DaemonFile", "Mount", "RunResult", "HealthCheck", "ServiceSpec", "OWNER_LABEL", "PID_LABEL",
    "engine_time", "labels_of", "parse_engine_time", "registry_credentials",
]


class Engine(Images, Containers, Swarm):
    """A connection to the Docker Engine; use it as a context manager (``with Engine(progress) as engine``)."""
