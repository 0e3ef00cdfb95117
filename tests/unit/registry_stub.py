"""Small hostile-or-not HTTP servers for the registry client's tests (no Docker).

``StubRegistry`` (127.0.0.1) speaks the part of the Distribution API that grocker uses, keeps
blobs and manifests in memory, asks for HTTP Basic or a Bearer token, and can redirect blob
requests and uploads to ``StubStorage`` (127.0.0.2, "another host") or lie about digests.
``StubStorage`` behaves like S3 behind presigned URLs: it refuses (403) any request that
carries ``Authorization``. ``StubTokenService`` (127.0.0.2) hands out the Bearer token for
the right Basic login. Every server records what it saw, including the ``Authorization`` header.
``credential_helper`` puts a ``docker-credential-*`` program on PATH, as ``docker login`` uses.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from setuptools_grocker.registry import client as registry

TOKEN = "T0K-registry-only"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Seen:
    method: str
    path: str
    authorization: str


@dataclass
class Blobs:
    """What the registry and its storage share."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    uploads: set[str] = field(default_factory=set)


class _Server:
    """A ThreadingHTTPServer on ``address`` with a handler that calls ``self.handle``."""

    def __init__(self, address: str) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                owner.seen.append(Seen(self.command, self.path, self.headers.get("Authorization", "")))
                owner.handle(self, body)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _any

            def log_message(self, *args: object) -> None:
                pass

        self.seen: list[Seen] = []
        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.server.daemon_threads = True
        self.host = f"{address}:{self.server.server_address[1]}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def handle(self, req: BaseHTTPRequestHandler, body: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def answer(req: BaseHTTPRequestHandler, code: int, body: bytes = b"", **headers: str) -> None:
        req.send_response(code)
        for name, value in headers.items():
            req.send_header(name.replace("_", "-"), value)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(body)


class StubStorage(_Server):
    """Blob storage behind presigned URLs: any ``Authorization`` is refused, as S3 does."""

    def __init__(self, store: Blobs, address: str = "127.0.0.2") -> None:
        super().__init__(address)
        self.store = store
        #: When set, answer every request 401 with this challenge (a storage host fishing for a login).
        self.challenge: str | None = None

    def handle(self, req: BaseHTTPRequestHandler, body: bytes) -> None:
        url = urllib.parse.urlsplit(req.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if req.headers.get("Authorization"):
            self.answer(req, 403, b"<Error><Code>InvalidArgument</Code>"
                                  b"<Message>Only one auth mechanism allowed</Message></Error>")
        elif self.challenge:
            self.answer(req, 401, WWW_Authenticate=self.challenge)
        elif query.get("X-Amz-Signature") != "s3cr3t":
            self.answer(req, 403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>")
        elif url.path.startswith("/blobs/") and req.command in ("GET", "HEAD"):
            blob = self.store.blobs.get(url.path.split("/")[-1])
            self.answer(req, 200 if blob is not None else 404, blob or b"")
        elif url.path.startswith("/upload/") and req.command == "PUT":
            upload = url.path.split("/")[-1]
            if upload not in self.store.uploads or sha256(body) != query.get("digest"):
                self.answer(req, 400, b"bad upload")
            else:
                self.store.blobs[query["digest"]] = body
                self.answer(req, 201)
        else:
            self.answer(req, 404)


class StubTokenService(_Server):
    """A token service: the Bearer token for the right Basic login (GET), or for the right OAuth refresh token
    (POST ``grant_type=refresh_token``, what an identity token from ``docker login`` is)."""

    def __init__(self, login: tuple[str, str], address: str = "127.0.0.2", refresh_token: str = "") -> None:
        super().__init__(address)
        self.login = login
        self.refresh_token = refresh_token
        self.forms: list[dict[str, str]] = []

    def handle(self, req: BaseHTTPRequestHandler, body: bytes) -> None:
        if req.command == "POST":
            form = dict(urllib.parse.parse_qsl(body.decode()))
            self.forms.append(form)
            ok = self.refresh_token and form.get("grant_type") == "refresh_token" and \
                form.get("refresh_token") == self.refresh_token
            self.answer(req, 200 if ok else 401, json.dumps({"access_token": TOKEN} if ok else {}).encode())
        elif req.headers.get("Authorization") == basic(*self.login):
            self.answer(req, 200, json.dumps({"token": TOKEN}).encode())
        else:
            self.answer(req, 401, b'{"details": "bad login"}')


class StubRegistry(_Server):
    """The registry API on 127.0.0.1, in memory.

    ``auth``: None, "basic" (``login``) or "bearer" (a token from ``token_service``).
    ``storage``: blob GET/HEAD are redirected there and uploads are sent there (``Location``).
    ``lies``: what to lie about: "manifest-header" (a GET's Docker-Content-Digest),
    "manifest-body" (a GET's body), "put-manifest", "upload", "blob".
    """

    def __init__(self, *, auth: str | None = None, login: tuple[str, str] = ("ci", "pw"),
                 storage: StubStorage | None = None, token_service: StubTokenService | None = None,
                 store: Blobs | None = None) -> None:
        super().__init__("127.0.0.1")
        self.auth = auth
        self.login = login
        self.storage = storage
        self.token_service = token_service
        self.store = store or (storage.store if storage else Blobs())
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.lies: set[str] = set()
        #: Where blob GETs are redirected instead of storage, when set (e.g. a file: URL).
        self.blob_location: str | None = None
        #: The OCI 1.1 referrers API: None answers 404 as Distribution 2.8 does; else subject digest -> the
        #: descriptors listed (``page_size`` per page, with a ``Link`` to the next).
        self.referrers: dict[str, list[dict[str, Any]]] | None = None
        self.page_size = 100
        #: When set, every referrers request gets this status and an HTML page (a proxy in front, say).
        self.referrers_refusal: int | None = None

    def _authorized(self, req: BaseHTTPRequestHandler) -> bool:
        got = req.headers.get("Authorization", "")
        if self.auth == "basic" and got != basic(*self.login):
            self.answer(req, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', WWW_Authenticate='Basic realm="stub"')
            return False
        if self.auth == "bearer" and got != f"Bearer {TOKEN}":
            assert self.token_service is not None
            self.answer(req, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                        WWW_Authenticate=f'Bearer realm="{self.token_service.url}/token",service="stub"')
            return False
        return True

    def handle(self, req: BaseHTTPRequestHandler, body: bytes) -> None:
        if not self._authorized(req):
            return
        url = urllib.parse.urlsplit(req.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        parts = url.path.split("/")
        if url.path == "/v2/":
            self.answer(req, 200, b"{}")
        elif "/blobs/uploads/" in url.path:
            self._upload(req, url.path, parts, query, body)
        elif len(parts) >= 5 and parts[-2] == "blobs":
            self._blob(req, parts[-1])
        elif len(parts) >= 5 and parts[-2] == "manifests":
            self._manifest(req, "/".join(parts[2:-2]), parts[-1], body)
        elif len(parts) >= 5 and parts[-2] == "referrers" and self.referrers_refusal is not None:
            self.answer(req, self.referrers_refusal, b"<html>no</html>", Content_Type="text/html")
        elif len(parts) >= 5 and parts[-2] == "referrers" and self.referrers is not None:
            start = int(query.get("last") or 0)
            listed = self.referrers.get(parts[-1], [])
            page = listed[start:start + self.page_size]
            more = start + self.page_size < len(listed)
            links = {"Link": f'<{url.path}?last={start + self.page_size}>; rel="next"'} if more else {}
            self.answer(req, 200, json.dumps({"schemaVersion": 2, "mediaType": registry.OCI_INDEX,
                                              "manifests": page}).encode(),
                        Content_Type=registry.OCI_INDEX, **links)
        else:
            self.answer(req, 404)

    def _blob(self, req: BaseHTTPRequestHandler, digest: str) -> None:
        blob = self.store.blobs.get(digest)
        if blob is None:
            self.answer(req, 404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
        elif self.blob_location:
            self.answer(req, 307, Location=self.blob_location)
        elif self.storage is not None:
            self.answer(req, 307, Location=f"{self.storage.url}/blobs/{digest}?X-Amz-Signature=s3cr3t")
        else:
            self.answer(req, 200, blob + (b"!" if "blob" in self.lies else b""), Docker_Content_Digest=digest)

    def _upload(self, req: BaseHTTPRequestHandler, path: str, parts: list[str], query: dict[str, str],
                body: bytes) -> None:
        repo = path.split("/v2/", 1)[1].split("/blobs/uploads/", 1)[0]
        if req.command == "POST":
            upload = uuid.uuid4().hex
            self.store.uploads.add(upload)
            if self.storage is not None:
                location = f"{self.storage.url}/upload/{upload}?X-Amz-Signature=s3cr3t"
            else:
                location = f"/v2/{repo}/blobs/uploads/{upload}"
            self.answer(req, 202, Location=location)
        elif req.command == "PUT" and parts[-1] in self.store.uploads and sha256(body) == query.get("digest"):
            self.store.blobs[query["digest"]] = body
            said = sha256(b"not " + body) if "upload" in self.lies else query["digest"]
            self.answer(req, 201, Docker_Content_Digest=said)
        else:
            self.answer(req, 400, b"bad upload")

    def _manifest(self, req: BaseHTTPRequestHandler, repo: str, ref: str, body: bytes) -> None:
        if req.command == "PUT":
            media_type = req.headers.get("Content-Type", "")
            self.manifests[(repo, ref)] = self.manifests[(repo, sha256(body))] = (body, media_type)
            said = sha256(body + b" ") if "put-manifest" in self.lies else sha256(body)
            self.answer(req, 201, Docker_Content_Digest=said)
            return
        found = self.manifests.get((repo, ref))
        if found is None:
            self.answer(req, 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
            return
        data, media_type = found
        digest = sha256(data)
        if "manifest-header" in self.lies:
            digest = sha256(data + b"\n")
        if "manifest-body" in self.lies:
            data = data.replace(b'"schemaVersion"', b'"schemaVersion" ')
        self.answer(req, 200, data, Content_Type=media_type, Docker_Content_Digest=digest)

    def put(self, repo: str, tag: str, manifest: dict[str, Any]) -> str:
        """Store a manifest directly (the test's own setup, not through the client)."""
        body = json.dumps(manifest).encode()
        self.manifests[(repo, tag)] = self.manifests[(repo, sha256(body))] = (
            body, "application/vnd.docker.distribution.manifest.v2+json")
        return sha256(body)


def credential_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str, username: str = "helper-user",
                      secret: str = "helper-pw") -> Path:
    """``docker-credential-grockertest`` on PATH: the login of ``host`` (and nothing else); logs what it is asked."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "helper.log"
    helper = bindir / "docker-credential-grockertest"
    helper.write_text(f"""#!/bin/sh
read -r server
echo "$1 $server" >> '{log}'
if [ "$1" = get ] && [ "$server" = '{host}' ]; then
  printf '{{"ServerURL": "%s", "Username": "{username}", "Secret": "{secret}"}}' "$server"
  exit 0
fi
echo "credentials not found in native keychain"
exit 1
""")
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


@pytest.fixture
def fresh_login_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An empty Docker client config (never the user's), and no login or token left from another test."""
    (tmp_path / "docker").mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    registry._reset()
    yield
    registry._reset()
