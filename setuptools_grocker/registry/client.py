"""Talking to a registry through its HTTP API (no engine needed).

Everything that touches a registry happens here: reading a tag's digest, pushing an image
blob by blob (only the blobs the registry lacks are uploaded; see ``push_image``), pointing a
tag at a manifest that is already there (a retag costs one small PUT, no layer traffic, and
keeps the exact digest), and publishing the small release document of a workspace release.

Credentials: nothing is sent until the registry asks (401). Then what ``docker login`` stored
for the registry's host, resolved like the docker client does (``auths``, ``credHelpers``,
``credsStore``: :func:`setuptools_grocker.engine.registry_credentials`), goes as HTTP Basic
(what Distribution's htpasswd mode expects) or to the token service its Bearer challenge
names. Every credential is bound to one origin (scheme, host, port): the registry's for Basic
and Bearer, the token realm's for the login sent there. Redirects are followed here, hop by
hop, and a hop to another origin (blob storage, an S3-style presigned URL, an upload
``Location`` elsewhere, https to http) carries none: :func:`_authorization_for` decides.
Credentials are never logged, nor are URL queries (a presigned URL's query is a secret).

Digests are checked, not believed: a manifest read must hash to the digest asked for and to
the ``Docker-Content-Digest`` answered, a manifest or blob written must come back under the
digest of what was sent, a blob read must hash to its digest; otherwise the registry lies and
:class:`RegistryError` names the reference.

Reading a registry that refuses answers "not there" (:func:`manifest_digest`), so a plan
falls back to building; writing one that refuses raises :class:`RegistryError`.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import tarfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from typing import Any, Mapping

from setuptools_grocker.errors import RegistryError
from setuptools_grocker.ref import ImageRef

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


def _registry_ref(ref: str) -> tuple[ImageRef, str]:
    """``ref`` split, and the registry host it names; RegistryError when it names none."""
    parsed = ImageRef.parse(ref)
    if parsed.host is None:
        raise RegistryError(f"'{ref}' names no registry",
                            "set the registry key (e.g. registry = \"127.0.0.1:5000\")")
    return parsed, parsed.host


def _url(host: str, parsed: ImageRef, kind: str, what: str) -> str:
    return f"{_scheme(host)}://{host}/v2/{parsed.path}/{kind}/{what}"


def _scheme(host: str) -> str:
    name = host.split(":", 1)[0]
    return "http" if name in ("localhost", "127.0.0.1") or name.startswith("127.") else "https"


# -- who may receive a credential -----------------------------------------------------------------

#: (scheme, host, port): a credential is bound to one, the way a browser binds a cookie.
Origin = tuple[str, str, int]


def _origin(url: str) -> Origin | None:
    try:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)
    except ValueError:  # a malformed port: it matches no origin
        return None


def _registry_origin(host: str) -> Origin | None:
    return _origin(f"{_scheme(host)}://{host}/")


@dataclass(frozen=True)
class _Credential:
    """An ``Authorization`` value and the only origin that may receive it."""

    header: str
    origin: Origin | None

    def __repr__(self) -> str:  # never print the secret
        return f"_Credential(<hidden>, {self.origin})"


def _authorization_for(url: str, credential: _Credential | None) -> dict[str, str]:
    """The one place that decides whether a request to ``url`` carries ``credential``.

    Only when ``url`` is on the origin the credential is bound to: the registry's own scheme,
    host and port for what the registry asked for, the token realm's for the login sent there.
    A redirect to blob storage on another host (S3-style presigned URLs refuse a request that
    carries ``Authorization``), an upload ``Location`` elsewhere, or a downgrade from https to
    http therefore gets no credential.
    """
    if credential is None or credential.origin is None or _origin(url) != credential.origin:
        return {}
    return {"Authorization": credential.header}


_LOCK = threading.Lock()
#: host -> what `docker login` stored for it (None: nothing); resolved once, a helper is a subprocess.
_LOGINS: dict[str, dict[str, str] | None] = {}
#: hosts that asked for HTTP Basic: later requests to them send it without waiting for a 401.
_BASIC: set[str] = set()
_TOKENS: dict[tuple[str, str], str] = {}
#: hosts whose answer showed they have no referrers API (read once per process).
_NO_REFERRERS: set[str] = set()


def _reset() -> None:
    """Forget the logins, Basic hosts and tokens of this process (a new ``docker login``, tests)."""
    with _LOCK:
        _LOGINS.clear()
        _BASIC.clear()
        _TOKENS.clear()
        _NO_REFERRERS.clear()


def _login(host: str) -> dict[str, str] | None:
    from setuptools_grocker.engine import registry_credentials

    with _LOCK:
        if host not in _LOGINS:
            _LOGINS[host] = registry_credentials(host)
        return _LOGINS[host]


def _basic(login: dict[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{login['username']}:{login['password']}".encode()).decode()


def _credential_for(host: str, scope: str) -> _Credential | None:
    """What a request to the registry ``host`` carries before any challenge: a token, Basic, or nothing."""
    token = _TOKENS.get((host, scope))
    if token:
        return _Credential(f"Bearer {token}", _registry_origin(host))
    login = _LOGINS.get(host) if host in _BASIC else None
    if login and "username" in login:
        return _Credential(_basic(login), _registry_origin(host))
    return None


# -- HTTP ---------------------------------------------------------------------------------------

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Let a 30x through as an answer: :func:`_send` follows it, deciding the credential per hop."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_HOPS = 10


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Message
    body: bytes
    #: The URL that answered, after redirects.
    url: str


def _send(method: str, url: str, *, data: bytes | None, headers: Mapping[str, str],
          credential: _Credential | None, timeout: float, follow: bool = True) -> _Answer:
    """One request, redirects followed here so that every hop gets :func:`_authorization_for` its own URL."""
    for _ in range(_MAX_HOPS):
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):  # e.g. a redirect to file: would read a local file
            raise RegistryError(f"the registry sent {method} {_path(url)} to a '{scheme}:' URL; "
                                "only HTTP(S) is followed",
                                "check the registry (and what stands in front of it)")
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={**headers, **_authorization_for(url, credential)})
        try:
            with _OPENER.open(req, timeout=timeout) as resp:
                return _Answer(resp.status, resp.headers, resp.read(), url)
        except urllib.error.HTTPError as exc:
            with exc:
                status, answer_headers, body = exc.code, exc.headers, exc.read()
        location = answer_headers.get("Location") if answer_headers is not None else None
        # Only what keeps the method's meaning: GET/HEAD follow every 30x, a write only 307/308 (same method, body).
        if follow and location and status in _REDIRECTS and (method in ("GET", "HEAD") or status in (307, 308)):
            url = urllib.parse.urljoin(url, location)
            continue
        return _Answer(status, answer_headers, body, url)
    raise RegistryError(f"more than {_MAX_HOPS} redirects for {method} {_path(url)}", "check the registry")


def _path(url: str) -> str:
    """The path of ``url``, for messages: no host, no query (a presigned URL's query is a secret)."""
    return urllib.parse.urlsplit(url).path


def _request(method: str, url: str, host: str, *, data: bytes | None = None,
             headers: Mapping[str, str] | None = None, timeout: float = 30, allow: tuple[int, ...] = ()) -> _Answer:
    """``method url`` on the registry ``host``, answering its 401 challenge once; a status >= 300 not in ``allow``
    raises :class:`RegistryError`."""
    scope = _scope_of(url, method)
    for attempt in (1, 2):
        credential = _credential_for(host, scope)
        try:
            answer = _send(method, url, data=data, headers=dict(headers or {}), credential=credential, timeout=timeout)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryError(f"registry {host} does not answer ({reason})",
                                "start it or fix the registry key, then run the command again") from exc
        # Only the registry itself may ask for the registry's credentials (not a storage host it redirects to).
        if (answer.status == 401 and attempt == 1 and _origin(answer.url) == _registry_origin(host)
                and _authenticate(host, answer.headers.get("WWW-Authenticate", ""), scope, credential, timeout)):
            continue
        if answer.status < 300 or answer.status in allow:
            return answer
        where = "" if _origin(answer.url) == _origin(url) else f", redirected to {_origin_text(answer.url)}"
        reason = answer.body[:300].decode("utf-8", "replace").strip() or _phrase(answer.status)
        raise RegistryError(f"registry {host} answered {method} {_path(url)} with HTTP {answer.status}{where} "
                            f"({reason})",
                            f"check that you may push there (docker login {host}) and that the registry has room")
    raise AssertionError("unreachable")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "no reason given"


def _origin_text(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


def _authenticate(host: str, challenge: str, scope: str, sent: _Credential | None, timeout: float) -> bool:
    """Get what the registry's 401 ``challenge`` asks for; False when there is nothing better to send."""
    kind, _, rest = challenge.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    if kind.lower() == "bearer":
        token = _fetch_token(host, params, scope, timeout)
        if sent is not None and sent.header == f"Bearer {token}":
            return False
        _TOKENS[(host, scope)] = token
        return True
    if kind.lower() == "basic":
        if host in _BASIC:
            return False  # the stored login was sent and refused
        login = _login(host)
        if not login or "username" not in login:
            raise RegistryError(f"registry {host} asks for a login and the Docker client config has none for it",
                                f"run `docker login {host}` (or set DOCKER_CONFIG to a config that has one)")
        with _LOCK:
            _BASIC.add(host)
        return True
    return False


def _scope_of(url: str, method: str) -> str:
    repo = url.split("/v2/", 1)[-1].rsplit("/", 2)[0] if "/v2/" in url else ""
    if "/blobs/uploads" in url:
        repo = url.split("/v2/", 1)[-1].split("/blobs/uploads", 1)[0]
    return f"repository:{repo}:" + ("pull" if method in ("GET", "HEAD") else "pull,push")


def _fetch_token(host: str, params: Mapping[str, str], scope: str, timeout: float) -> str:
    """The token flow of registries that answer 401 with ``Bearer realm=...``.

    The user's login goes to the realm the registry's challenge names (on hosted registries it
    is often another host), bound to that realm's origin; the token it answers goes back to the
    registry's origin only. No login: an anonymous token (public repositories).
    """
    realm = params.get("realm", "")
    realm_origin = _origin(realm)
    registry_origin = _registry_origin(host)
    if realm_origin is None or realm_origin[0] not in ("http", "https") or not realm_origin[1]:
        raise RegistryError(f"registry {host} names no usable token service ({realm!r})", "check the registry")
    query = {"service": params.get("service", host), "scope": scope}
    login = _login(host)
    if login and realm_origin[0] == "http" and registry_origin is not None and registry_origin[0] == "https":
        raise RegistryError(f"registry {host} sends its logins to a plain-HTTP token service "
                            f"({_origin_text(realm)}); refusing to send credentials there", "check the registry")
    if login and "identitytoken" in login:
        # An OAuth refresh token (what some `docker login` flows store): POSTed to the realm, never redirected.
        form = urllib.parse.urlencode({**query, "grant_type": "refresh_token", "client_id": "setuptools-grocker",
                                       "refresh_token": login["identitytoken"]}).encode()
        answer = _token_answer(host, "POST", realm, data=form, credential=None, timeout=timeout, follow=False,
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    else:
        credential = _Credential(_basic(login), realm_origin) if login else None
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        answer = _token_answer(host, "GET", url, data=None, credential=credential, timeout=timeout, headers={})
    try:
        data = json.loads(answer.body)
        token = str(data.get("token") or data.get("access_token") or "")
    except (ValueError, AttributeError):
        token = ""
    if not token:
        raise RegistryError(f"registry {host}: the token service {_origin_text(realm)} answered no token",
                            f"log in with `docker login {host}`")
    return token


def _token_answer(host: str, method: str, url: str, **kwargs: Any) -> _Answer:
    try:
        answer = _send(method, url, **kwargs)
    except (urllib.error.URLError, OSError) as exc:
        raise RegistryError(f"registry {host}: no token from {_origin_text(url)} ({getattr(exc, 'reason', exc)})",
                            f"log in with `docker login {host}`") from exc
    if answer.status >= 300:
        raise RegistryError(f"registry {host}: no token from {_origin_text(url)} (HTTP {answer.status})",
                            f"log in with `docker login {host}`")
    return answer


# -- digests --------------------------------------------------------------------------------------

def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _matches(digest: str, data: bytes) -> bool:
    """Whether ``data`` hashes to ``digest`` (an algorithm we cannot compute never matches)."""
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm not in ("sha256", "sha384", "sha512"):
        return False
    return hashlib.new(algorithm, data).hexdigest() == hexdigest.lower()


def _lying(ref: object, what: str) -> RegistryError:
    return RegistryError(f"the registry lies about {ref}: {what}",
                         "do not use what it serves; check the registry and what stands between it and you")


def _verified_manifest(ref: str, r: ImageRef, answer: _Answer) -> str:
    """The digest of a manifest read from the registry, after checking it against the bytes."""
    actual = _sha256(answer.body)
    if r.digest is not None and not _matches(r.digest, answer.body):
        raise _lying(ref, f"the manifest it sent hashes to {actual}, not to the digest asked for")
    claimed = answer.headers.get("Docker-Content-Digest")
    if claimed and not _matches(claimed, answer.body):
        raise _lying(ref, f"it says {claimed}, the manifest it sent hashes to {actual}")
    return r.digest if r.digest is not None else actual


def manifest_digest(ref: str, timeout: float = 10) -> str | None:
    """The digest of ``registry/repo:tag`` in its registry, or None when it is not there or unreadable."""
    try:
        return digest_of(ref, timeout)
    except RegistryError:
        return None


def digest_of(ref: str, timeout: float = 10) -> str | None:
    """The digest of ``ref``; None when the registry says it has no such tag; RegistryError when it fails.

    The manifest is read (a few kB) and hashed rather than believed from a HEAD's header: the
    answer pins deploys and verifies releases.
    """
    r, host = _registry_ref(ref)
    answer = _request("GET", _url(host, r, "manifests", r.reference), host, headers={"Accept": MANIFEST_TYPES},
                      timeout=timeout, allow=(404,))
    if answer.status == 404:
        return None
    return _verified_manifest(ref, r, answer)


def list_tags(repository: str) -> list[str]:
    """The tags of ``registry/repo`` (every page); RegistryError when the registry refuses."""
    r, host = _registry_ref(repository)
    url: str | None = _url(host, r, "tags", "list")
    tags: list[str] = []
    while url:
        answer = _request("GET", url, host, allow=(404,))
        if answer.status == 404:
            return []
        tags += json.loads(answer.body).get("tags") or []
        link = answer.headers.get("Link", "")
        match = re.match(r'\s*<([^>]+)>\s*;\s*rel="next"', link)
        url = urllib.parse.urljoin(answer.url, match.group(1)) if match else None
    return sorted(set(tags))


OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def referrers(repository: str, digest: str, timeout: float = 10) -> list[dict[str, Any]] | None:
    """The descriptors the OCI 1.1 referrers API (``GET /v2/<name>/referrers/<digest>``) lists for the manifest
    ``digest`` of ``registry/repo``, every page; None when the registry has no such API.

    A registry that has it answers an OCI image index, also when nothing refers to the digest (the
    distribution spec forbids a 404 there). Anything else (Distribution 2.8's 404, a 405, a proxy's 403 or 502,
    a page that is not an index) means "no referrers API", remembered for the host for the rest of the process:
    callers then use the cosign-style tags (registry/attach.py).
    """
    r, host = _registry_ref(repository)
    if host in _NO_REFERRERS:
        return None
    url: str | None = _url(host, r, "referrers", digest)
    found: list[dict[str, Any]] = []
    while url:
        # Any refusal (404 from Distribution 2.8, 405, a proxy's 403 or 502) falls back to the tags rather than
        # failing a read the tags can answer.
        answer = _request("GET", url, host, headers={"Accept": OCI_INDEX}, timeout=timeout,
                          allow=tuple(range(400, 600)))
        media_type = answer.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            index = json.loads(answer.body) if answer.status == 200 and media_type == OCI_INDEX else None
        except ValueError:
            index = None
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list):
            with _LOCK:
                _NO_REFERRERS.add(host)
            return None
        found += [m for m in manifests if isinstance(m, dict) and isinstance(m.get("digest"), str)]
        link = answer.headers.get("Link", "")
        match = re.match(r'\s*<([^>]+)>\s*;\s*rel="next"', link)
        url = urllib.parse.urljoin(answer.url, match.group(1)) if match else None
    return found


def get_manifest(ref: str) -> tuple[bytes, str]:
    """The raw manifest of ``ref`` and its media type, checked against its digest."""
    r, host = _registry_ref(ref)
    answer = _request("GET", _url(host, r, "manifests", r.reference), host, headers={"Accept": MANIFEST_TYPES})
    _verified_manifest(ref, r, answer)
    return answer.body, answer.headers.get("Content-Type", MANIFEST_V2)


def put_manifest(ref: str, body: bytes, media_type: str) -> str:
    """Store ``body`` under ``ref`` (a tag); return its digest (the registry must agree with it)."""
    r, host = _registry_ref(ref)
    answer = _request("PUT", _url(host, r, "manifests", r.reference), host, data=body,
                      headers={"Content-Type": media_type})
    digest = _sha256(body)
    claimed = answer.headers.get("Docker-Content-Digest")
    if claimed and claimed != digest:
        raise _lying(ref, f"it stored the manifest as {claimed}, what was sent hashes to {digest}")
    return digest


def retag(source: str, tag_ref: str) -> str:
    """Point ``tag_ref`` at the manifest of ``source`` (same repository); return the digest."""
    body, media_type = get_manifest(source)
    return put_manifest(tag_ref, body, media_type)


def upload_blob(repo_ref: str, data: bytes) -> str:
    """Upload ``data`` as a blob of the repository of ``repo_ref`` unless it is there; return its digest."""
    digest = _sha256(data)
    if not _blob_present(repo_ref, digest):
        _upload(repo_ref, data, digest)
    return digest


def _upload(repo_ref: str, data: bytes, digest: str) -> None:
    r, host = _registry_ref(repo_ref)
    started = _request("POST", _url(host, r, "blobs", "uploads/"), host, data=b"")
    location = started.headers.get("Location", "")
    if not location:
        raise RegistryError(f"registry {host} started an upload to {r.path} and said nowhere to send it",
                            "check the registry")
    # Relative to the URL that answered; on another host it receives no credential (see _authorization_for).
    location = urllib.parse.urljoin(started.url, location)
    location += ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})
    answer = _request("PUT", location, host, data=data, headers={"Content-Type": "application/octet-stream"})
    claimed = answer.headers.get("Docker-Content-Digest")
    if claimed and claimed != digest:
        raise _lying(repo_ref, f"it stored a blob as {claimed}, what was sent hashes to {digest}")


def get_blob(ref: str, digest: str) -> bytes:
    """The blob ``digest`` of the repository of ``ref``, checked against its digest."""
    r, host = _registry_ref(ref)
    answer = _request("GET", _url(host, r, "blobs", digest), host)
    if not _matches(digest, answer.body):
        raise _lying(f"{r.repository}@{digest}", f"the blob it sent hashes to {_sha256(answer.body)}")
    return answer.body


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
        "rootfs": {"type": "layers", "diff_ids": [_sha256(layer_raw)]},
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
    body, _ = get_manifest(ref)
    config = get_blob(ref, json.loads(body)["config"]["digest"])
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
    for digest, blob in [(_sha256(config_blob), config_blob), *layers]:
        if not _blob_present(ref, digest):
            _upload(ref, blob, digest)
            uploaded += len(blob)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": IMAGE_CONFIG, "size": len(config_blob), "digest": _sha256(config_blob)},
        "layers": [{"mediaType": LAYER_GZIP, "size": len(blob), "digest": digest} for digest, blob in layers],
    }
    body = json.dumps(manifest, indent=3).encode()
    digest = ""
    for target in dict.fromkeys([ref, *refs]):
        digest = put_manifest(target, body, MANIFEST_V2)
    return digest, uploaded


def _blob_present(ref: str, digest: str) -> bool:
    r, host = _registry_ref(ref)
    return _request("HEAD", _url(host, r, "blobs", digest), host, allow=(404,)).status != 404
