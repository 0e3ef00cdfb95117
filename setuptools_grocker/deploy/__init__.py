"""Running a built image on Docker Swarm mode (``grocker deploy``, ``rollback``, ``history``, ``undeploy``).

    deployer.py   health-checked rolling updates, automatic rollback, secrets from env files, history
    edge.py       the edge of ``--publish``: HAProxy in a container; its weights, counters and request log

The deployer describes a service as the engine's own :class:`~setuptools_grocker.engine.ServiceSpec`; the Swarm
calls themselves are in ``engine/swarm.py`` (the engine is the only package that talks to Docker); the edge
reaches HAProxy's runtime API through the engine (``docker exec``).
"""
