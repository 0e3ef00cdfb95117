"""A small HTTP server standing in for a *hostile* wheel index, and real wheel files for it to serve.

Only for attacks a real index would not make (links that lie, wrong hashes, redirects away);
the honest index of the tests is a real pypiserver.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None


class StubIndex:
    """Serves ``routes`` (path -> Response) on ``host``; 404 elsewhere; records every request."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Response] = {}
        self.seen: list[Seen] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                stub.seen.append(Seen(self.command, self.path, self.headers.get("Authorization")))
                response = stub.routes.get(self.path, Response(404, b"not found"))
                self.send_response(response.status)
                for k, v in response.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self) -> StubIndex:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def page(self, project: str, links: list[tuple[str, str]]) -> None:
        """``/simple/PROJECT/`` listing ``(text, href)`` links, as a PEP 503 page."""
        body = "".join(f'<a href="{href}">{text}</a><br>\n' for text, href in links)
        self.routes[f"/simple/{project}/"] = Response(200, f"<html><body>{body}</body></html>".encode())

    def file(self, path: str, data: bytes) -> None:
        self.routes[path] = Response(200, data, {"Content-Type": "application/octet-stream"})


def stub_index(host: str = "127.0.0.1") -> Iterator[StubIndex]:
    with StubIndex(host) as stub:
        yield stub


def make_wheel(name: str, version: str, *, metadata_name: str | None = None, wheel_build: str | None = None,
               corrupt_record: bool = False) -> bytes:
    """The bytes of a real, minimal pure-Python wheel (``installer`` accepts it)."""
    dist = name.replace("-", "_")
    dist_info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": b"VALUE = 1\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {metadata_name or name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": ("Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
                               + (f"Build: {wheel_build}\n" if wheel_build else "")).encode(),
    }
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([path, f"sha256={digest}", len(data)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    if corrupt_record:
        files[f"{dist}/__init__.py"] = b"VALUE = 2\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{dist_info}/RECORD", record.getvalue())
    return out.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
