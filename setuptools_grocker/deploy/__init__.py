"""Running a built image on Docker Swarm mode (``grocker deploy``, ``rollback``, ``history``, ``undeploy``).

    deployer.py   health-checked rolling updates, automatic rollback, secrets from env files, history, the edge

The deployer describes a service as the engine's own :class:`~setuptools_grocker.engine.ServiceSpec`; the Swarm
calls themselves are in ``engine/swarm.py`` (the engine is the only package that talks to Docker), and the edge's
relay script, which runs inside a container, is package data in ``setuptools_grocker/resources/edge.py``.
"""
