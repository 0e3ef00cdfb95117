from __future__ import annotations

import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import psycopg2.extensions


def status() -> dict[str, object]:
    info: dict[str, object] = {"psycopg2": psycopg2.__version__, "libpq": psycopg2.extensions.libpq_version()}
    try:
        with psycopg2.connect(os.environ["DATABASE_URL"], connect_timeout=2) as conn:
            info["database"] = conn.server_version
    except (KeyError, psycopg2.OperationalError) as exc:
        info["database"] = f"unreachable: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'no URL'}"
    return info


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"status": "ok"} if self.path == "/health" else status()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    ThreadingHTTPServer(("0.0.0.0", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
