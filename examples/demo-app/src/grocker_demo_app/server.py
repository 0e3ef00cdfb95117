"""``demo-app-server``: a small HTTP server (stdlib only) that reports its configuration."""
from __future__ import annotations

import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from grocker_demo_lib import libyaml_version

from grocker_demo_app import __version__


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/health":
            body = b"ok\n"
            ctype = "text/plain"
        else:
            data = {
                "app": "grocker-demo-app",
                "version": __version__,
                "greeting": os.environ.get("GREETING"),
                "libyaml": libyaml_version(),
                "uid": os.getuid(),
            }
            body = (json.dumps(data) + "\n").encode()
            ctype = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        print(f"{self.address_string()} {fmt % args}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"demo-app-server {__version__} listening on {args.host}:{args.port}", flush=True)
    server.serve_forever()
