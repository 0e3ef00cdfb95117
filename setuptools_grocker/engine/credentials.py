"""Registry credentials from the Docker client's configuration (what ``docker login`` stored).

They are read through the docker SDK (``docker.auth``), which is why this lives in the engine
package; :mod:`setuptools_grocker.registry.client` uses them for its own HTTP calls.
"""
from __future__ import annotations

import shutil

from setuptools_grocker.engine.connection import docker, short
from setuptools_grocker.errors import RegistryError

__all__ = ["registry_credentials"]


def registry_credentials(host: str) -> dict[str, str] | None:
    """What ``docker login HOST`` stored, resolved the way the docker client does; None when nothing.

    The Docker client config (``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``) keeps
    credentials in ``auths``, or behind a credential helper named by ``credHelpers[HOST]`` or
    ``credsStore`` (``docker-credential-NAME get``, the default on desktops and many CI images).
    The answer is ``{"username", "password"}`` or ``{"identitytoken"}`` (an OAuth refresh token).
    """
    try:
        config = docker.auth.load_config()
        store = config.get_credential_store(host)
        # The SDK only warns when a helper is missing, then fails with a vaguer message.
        if store and shutil.which(f"docker-credential-{store}") is None:
            raise RegistryError(f"the Docker client config names the credential helper docker-credential-{store} "
                                f"for {host}, and it is not on PATH",
                                "install it, or remove credsStore/credHelpers from config.json and `docker login` "
                                "again")
        entry = config.resolve_authconfig(host) or {}
    except docker.errors.DockerException as exc:
        raise RegistryError(f"reading the credentials of {host} from the Docker client config failed ({short(exc)})",
                            f"check its credential helper, or `docker login {host}` again") from exc
    found = {k.lower(): str(v) for k, v in entry.items() if v}
    if found.get("identitytoken"):
        return {"identitytoken": found["identitytoken"]}
    if found.get("username") and found.get("password"):
        return {"username": found["username"], "password": found["password"]}
    return None
