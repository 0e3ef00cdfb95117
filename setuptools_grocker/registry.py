"""Talking to a registry through its HTTP API (no engine needed).

Everything that touches a registry happens here: reading a tag's digest, pushing an image
blob by blob (only the blobs the registry lacks are uploaded; see ``push_image``), pointing a
tag at a manifest that is already there (a retag costs one small PUT, no layer traffic, and
keeps the exact digest), and publishing the small release document of a workspace release.

Credentials: the ``auths`` entry of the Docker client config (``$DOCKER_CONFIG/config.json``
or ``~/.docker/config.json``) for the registry's host, sent as HTTP Basic (what Distribution's
htpasswd mode expects). They are never logged. Reading a registry that refuses answers
"not there" (:func:`manifest_digest`), so a plan falls back to building; writing one that
refuses raises :class:`RegistryError`.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from setuptools_grocker.config import split_reference
from setuptools_grocker.errors import RegistryError

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = ", ".join([
    MANIFEST_V2,
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])
IMAGE_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
RELEASE_LABEL = "io.grocker.release"


def key_tag(key: str) -> str:
    """The extra tag that names an image by its cache key (``k`` + 16 hex digits)."""
    return "k" + key[:16]


@dataclass(frozen=True)
class Ref:
    """``host/repo:tag`` or ``host/repo@sha256:...`` split into its parts."""

    host: str
    repo: str
    tag: str

    @classmethod
    def parse(cls, ref: str) -> Ref:
        if "@" in ref:
            name, tag = ref.split("@", 1)
        else:
            name, maybe = split_reference(ref)
            tag = maybe or "latest"
        if "/" not in name or not _looks_like_host(name.split("/", 1)[0]):
            raise RegistryError(f"'{ref}' names no registry",
                                "set the registry key (e.g. registry = \"127.0.0.1:5000\")")
        host, repo = name.split("/", 1)
        return cls(host, repo, tag)

    def url(self, kind: str, what: str) -> str:
        return f"{_scheme(self.host)}://{self.host}/v2/{self.repo}/{kind}/{what}"

    def with_tag(self, tag: str) -> str:
        return f"{self.host}/{self.repo}:{tag}"

    def __str__(self) -> str:
        sep = "@" if self.tag.startswith("sha256:") else ":"
        return f"{self.host}/{self.repo}{sep}{self.tag}"


def _looks_like_host(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost"


def _scheme(host: str) -> str:
    name = host.split(":", 1)[0]
    return "http" if name in ("localhost", "127.0.0.1") or name.startswith("127.") else "https"


def _auth_header(host: str) -> dict[str, str]:
    """Basic credentials for ``host`` from the Docker client config, if it has any."""
    where = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    try:
        auths = json.loads(where.read_text()).get("auths", {})
    except (OSError, ValueError):
        return {}
    for name in (host, f"https://{host}", f"http://{host}"):
        entry = auths.get(name) or {}
        if entry.get("auth"):
            return {"Authorization": f"Basic {entry['auth']}"}
        if entry.get("username") and entry.get("password"):
            token = base64.b64encode(f"{entry['username']}:{entry['password']}".encode()).decode()
            return {"Authorization": f"Basic {token}"}
    return {}


_TOKENS: dict[tuple[str, str], str] = {}


def _request(method: str, url: str, host: str, *, data: bytes | None = None,
             headers: Mapping[str, str] | None = None, timeout: float = 30) -> tuple[int, Mapping[str, str], bytes]:
    for attempt in (1, 2):
        auth = _auth_header(host)
        token = _TOKENS.get((host, _scope_of(url, method)))
        if token:
            auth = {"Authorization": f"Bearer {token}"}
        req = urllib.request.Request(url, data=data, method=method, headers={**auth, **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            challenge = exc.headers.get("WWW-Authenticate", "") if exc.headers else ""
            if exc.code == 401 and attempt == 1 and challenge.lower().startswith("bearer "):
                exc.close()
                _fetch_token(host, challenge, _scope_of(url, method), timeout)
                continue
            body = exc.read()[:300].decode("utf-8", "replace")
            exc.close()
            raise RegistryError(f"registry {host} answered {method} {url.split(host, 1)[-1]} with HTTP {exc.code} "
                                f"({body.strip() or exc.reason})",
                                "check that you may push there (docker login) and that the registry has room") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryError(f"registry {host} does not answer ({reason})",
                                "start it or fix the registry key, then run the command again") from exc
    raise AssertionError("unreachable")


def _scope_of(url: str, method: str) -> str:
    repo = url.split("/v2/", 1)[-1].rsplit("/", 2)[0] if "/v2/" in url else ""
    if "/blobs/uploads" in url:
        repo = url.split("/v2/", 1)[-1].split("/blobs/uploads", 1)[0]
    return f"repository:{repo}:" + ("pull" if method in ("GET", "HEAD") else "pull,push")


def _fetch_token(host: str, challenge: str, scope: str, timeout: float) -> None:
    """The token flow of registries that answer 401 with ``Bearer realm=...`` (the user's Basic credentials)."""
    import re
    import urllib.parse

    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    realm = params.pop("realm", "")
    if not realm:
        return
    query = urllib.parse.urlencode({"service": params.get("service", host), "scope": scope})
    req = urllib.request.Request(f"{realm}?{query}", headers=_auth_header(host))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RegistryError(f"registry {host}: no token from {realm} ({getattr(exc, 'reason', exc)})",
                            "log in with `docker login " + host + "`") from exc
    _TOKENS[(host, scope)] = answer.get("token") or answer.get("access_token", "")


def manifest_digest(ref: str, timeout: float = 10) -> str | None:
    """The digest of ``registry/repo:tag`` in its registry, or None when it is not there or unreadable."""
    try:
        return digest_of(ref, timeout)
    except RegistryError:
        return None


def digest_of(ref: str, timeout: float = 10) -> str | None:
    """The digest of ``ref``; None when the registry says it has no such tag; RegistryError when it fails."""
    r = Ref.parse(ref)
    try:
        _, headers, _ = _request("HEAD", r.url("manifests", r.tag), r.host, headers={"Accept": MANIFEST_TYPES},
                                 timeout=timeout)
    except RegistryError as exc:
        if "HTTP 404" in exc.message:
            return None
        raise
    return headers.get("Docker-Content-Digest")


def get_manifest(ref: str) -> tuple[bytes, str]:
    """The raw manifest of ``ref`` and its media type."""
    r = Ref.parse(ref)
    _, headers, body = _request("GET", r.url("manifests", r.tag), r.host, headers={"Accept": MANIFEST_TYPES})
    return body, headers.get("Content-Type", MANIFEST_V2)


def put_manifest(ref: str, body: bytes, media_type: str) -> str:
    """Store ``body`` under ``ref`` (a tag); return the digest the registry gives it."""
    r = Ref.parse(ref)
    _, headers, _ = _request("PUT", r.url("manifests", r.tag), r.host, data=body,
                             headers={"Content-Type": media_type})
    return headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()


def retag(source: str, tag_ref: str) -> str:
    """Point ``tag_ref`` at the manifest of ``source`` (same repository); return the digest."""
    body, media_type = get_manifest(source)
    return put_manifest(tag_ref, body, media_type)


def upload_blob(repo_ref: str, data: bytes) -> str:
    """Upload ``data`` as a blob of the repository of ``repo_ref`` unless it is there; return its digest."""
    r = Ref.parse(repo_ref)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if _blob_present(repo_ref, digest):
        return digest
    base = f"{_scheme(r.host)}://{r.host}"
    _, headers, _ = _request("POST", f"{base}/v2/{r.repo}/blobs/uploads/", r.host, data=b"")
    location = headers.get("Location", "")
    if location.startswith("/"):
        location = base + location
    location += ("&" if "?" in location else "?") + f"digest={digest}"
    _request("PUT", location, r.host, data=data, headers={"Content-Type": "application/octet-stream"})
    return digest


def push_document(ref: str, name: str, document: Mapping[str, Any]) -> str:
    """Publish ``document`` as a tiny image (one file, ``/NAME``; the JSON also in a label); return its digest.

    A real image, so ``docker pull`` and ``docker image inspect`` read it with no extra tool,
    and byte-for-byte deterministic: the same document always gives the same digest.
    """
    payload = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(payload), 0o644, 0
        tar.addfile(info, io.BytesIO(payload))
    layer_raw = tar_bytes.getvalue()
    layer = gzip.compress(layer_raw, mtime=0)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {RELEASE_LABEL: json.dumps(document, sort_keys=True)}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_raw).hexdigest()]},
        "history": [{"created_by": "setuptools-grocker release document"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = upload_blob(ref, config_bytes)
    layer_digest = upload_blob(ref, layer)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": IMAGE_CONFIG, "size": len(config_bytes), "digest": config_digest},
        "layers": [{"mediaType": LAYER_GZIP, "size": len(layer), "digest": layer_digest}],
    }
    return put_manifest(ref, json.dumps(manifest, sort_keys=True).encode(), MANIFEST_V2)


def read_document(ref: str) -> dict[str, Any]:
    """The document published by :func:`push_document` under ``ref``."""
    r = Ref.parse(ref)
    body, _ = get_manifest(ref)
    config_digest = json.loads(body)["config"]["digest"]
    _, _, config = _request("GET", r.url("blobs", config_digest), r.host)
    labels = json.loads(config).get("config", {}).get("Labels") or {}
    if RELEASE_LABEL not in labels:
        raise RegistryError(f"{ref} is not a release document", "name the release image of a workspace")
    return json.loads(labels[RELEASE_LABEL])


def push_image(ref: str, refs: list[str], config_blob: bytes, layers: list[tuple[str, bytes]]) -> tuple[str, int]:
    """Push an image blob by blob, uploading only what the registry lacks; tag it ``refs``.

    ``layers`` are ``(digest, gzip bytes)``. Returns the manifest digest and the bytes uploaded.
    Every reference must be in the repository of ``ref``.
    """
    uploaded = 0
    for digest, blob in [(None, config_blob), *layers]:
        before = _blob_present(ref, digest or "sha256:" + hashlib.sha256(blob).hexdigest())
        if not before:
            upload_blob(ref, blob)
            uploaded += len(blob)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": IMAGE_CONFIG, "size": len(config_blob),
                   "digest": "sha256:" + hashlib.sha256(config_blob).hexdigest()},
        "layers": [{"mediaType": LAYER_GZIP, "size": len(blob), "digest": digest} for digest, blob in layers],
    }
    body = json.dumps(manifest, indent=3).encode()
    digest = ""
    for target in dict.fromkeys([ref, *refs]):
        digest = put_manifest(target, body, MANIFEST_V2)
    return digest, uploaded


def _blob_present(ref: str, digest: str) -> bool:
    r = Ref.parse(ref)
    try:
        _request("HEAD", r.url("blobs", digest), r.host)
        return True
    except RegistryError as exc:
        if "HTTP 404" in exc.message:
            return False
        raise
