"""The pre-deploy job of ``grocker ship``: one command run once from the new image before production is touched.

What it is for: what must happen once per release and before the new code serves, such as database migrations
(``flask db upgrade``, ``manage.py migrate``). It runs after staging and the functional tests, before the canary
(or the first deploy), as one container of the release's image **pinned by digest**, on the production
service's overlay network (the database production reaches is reachable the same way), with production's
configuration: the variables of its env files, then its ``--env`` values. The env files' values are given to
the container as variables (they are not Swarm secrets here: a container run outside a service cannot mount
one); the echoed ``docker run`` line shows them as ``***``.

The command runs by ``sh -c``. In an image built by grocker it goes through the image's own entrypoint
(``entrypoint.py sh -c COMMAND``), so it sees the image's configured ``env`` as the services do; any other
image gets ``--entrypoint sh -c``, as the functional tests do. Exit code 0 passes; anything else stops the
release with nothing deployed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from setuptools_grocker.deploy.deployer import DEPLOY_LABEL, DeployOptions, env_file_values, read_env_file
from setuptools_grocker.deploy.edge import network_of
from setuptools_grocker.engine import Engine, labels_of

#: Lines of the job's output kept in the report.
TAIL_LINES = 40


@dataclass(frozen=True)
class PreDeployResult:
    command: str
    image: str
    exit_code: int
    seconds: float
    tail: str

    def to_json(self) -> dict[str, Any]:
        return {"command": self.command, "image": self.image, "exit_code": self.exit_code,
                "seconds": self.seconds, "tail": self.tail}


def run_pre_deploy(engine: Engine, deploy: DeployOptions, pinned: str, command: str,
                   timeout: float | None = None) -> PreDeployResult:
    """Run ``command`` once in a container of ``pinned`` with ``deploy``'s production configuration, on the
    overlay network of the service ``deploy.name`` (made first for a service that does not exist yet)."""
    files: dict[str, str] = {}
    for path in deploy.env_files:
        files.update(env_file_values(read_env_file(path)))
    env = {**files, **deploy.env}
    network = network_of(deploy.name)
    engine.ensure_overlay_network(network, {DEPLOY_LABEL: deploy.name})
    attrs = engine.image_attrs(pinned) or {}
    grocker_image = "io.grocker.default-command" in labels_of(attrs)
    start = time.monotonic()
    result = engine.run(pinned, ["sh", "-c", command] if grocker_image else [command],
                        entrypoint=None if grocker_image else ["sh", "-c"], env=env,
                        secret_env=[k for k in files if k not in deploy.env], network=network, timeout=timeout)
    return PreDeployResult(command, pinned, result.exit_code, round(time.monotonic() - start, 1),
                           result.tail(TAIL_LINES))


__all__ = ["PreDeployResult", "run_pre_deploy"]
