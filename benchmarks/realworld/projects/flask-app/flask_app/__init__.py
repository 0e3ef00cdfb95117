"""A notes service: the shape of many small Flask applications."""
from __future__ import annotations

import os

from flask import Flask, jsonify, request


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["GREETING"] = os.environ.get("GREETING", "Hello from Flask")
    notes: list[str] = []

    @app.get("/")
    def index() -> str:
        return f"{app.config['GREETING']}: {len(notes)} notes\n"

    @app.get("/health")
    def health():  # type: ignore[no-untyped-def]
        return jsonify(status="ok")

    @app.post("/notes")
    def add_note():  # type: ignore[no-untyped-def]
        notes.append(request.get_data(as_text=True))
        return jsonify(count=len(notes)), 201

    return app
