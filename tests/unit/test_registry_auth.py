"""The registry client's token flow (registries that answer 401 with a Bearer challenge)."""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from setuptools_grocker import registry


class Registry(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        auth = self.headers.get("Authorization", "")
        self.seen.append(f"{self.command} {self.path} {auth.split(' ')[0]}")
        if self.path.startswith("/token"):
            expected = "Basic " + base64.b64encode(b"ci:pw").decode()
            ok = auth == expected and "scope=repository%3Ashop%3Apull" in self.path
            self._answer(200 if ok else 401, json.dumps({"token": "T0K"}).encode())
        elif auth == "Bearer T0K":
            self.send_response(200)
            self.send_header("Docker-Content-Digest", "sha256:" + "a" * 64)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            host = f"127.0.0.1:{self.server.server_address[1]}"
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://{host}/token",service="{host}"')
            self.send_header("Content-Length", "0")
            self.end_headers()

    do_HEAD = do_GET

    def _answer(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{srv.server_address[1]}"
    (tmp_path / "config.json").write_text(json.dumps(
        {"auths": {host: {"auth": base64.b64encode(b"ci:pw").decode()}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    Registry.seen = []
    registry._TOKENS.clear()
    yield host
    srv.shutdown()
    srv.server_close()


def test_bearer_challenge_is_answered_with_a_token(server: str) -> None:
    assert registry.digest_of(f"{server}/shop:1.0") == "sha256:" + "a" * 64
    first, token, retried = Registry.seen
    assert first.startswith("HEAD /v2/shop/manifests/1.0")
    assert token.startswith("GET /token?") and token.endswith("Basic")
    assert retried == "HEAD /v2/shop/manifests/1.0 Bearer"
