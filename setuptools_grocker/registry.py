"""Reading a registry through its HTTP API (no engine needed): does it hold an image?

Pushing goes through the engine (``engine.push``), which uses the user's Docker
credentials. Reading here is anonymous (registries on 127.0.0.1 and private ones that
allow pulls); a registry that refuses answers "not there", never an error, so a plan
falls back to building.
"""
from __future__ import annotations

import urllib.error
import urllib.request

from setuptools_grocker.config import split_reference

MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])


def key_tag(key: str) -> str:
    """The extra tag that names an image by its cache key (``k`` + 16 hex digits)."""
    return "k" + key[:16]


def _scheme(host: str) -> str:
    name = host.split(":", 1)[0]
    return "http" if name in ("localhost", "127.0.0.1") or name.startswith("127.") else "https"


def manifest_digest(ref: str, timeout: float = 10) -> str | None:
    """The digest of ``registry/repo:tag`` in its registry, or None when it is not there."""
    name, tag = split_reference(ref)
    if "/" not in name:
        return None
    host, repo = name.split("/", 1)
    url = f"{_scheme(host)}://{host}/v2/{repo}/manifests/{tag or 'latest'}"
    req = urllib.request.Request(url, method="HEAD", headers={"Accept": MANIFEST_TYPES})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.headers.get("Docker-Content-Digest")
    except (urllib.error.URLError, OSError):
        return None
