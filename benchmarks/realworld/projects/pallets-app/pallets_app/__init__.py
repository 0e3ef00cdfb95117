"""Every Pallets library at work: Flask, Werkzeug, Jinja (with MarkupSafe), ItsDangerous, Click, Blinker."""
from __future__ import annotations

import click
from flask import Flask, jsonify, render_template, request
from flask.signals import request_finished
from itsdangerous import URLSafeSerializer


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "corpus-not-secret"
    served = {"count": 0}

    def count(sender: Flask, **extra: object) -> None:
        served["count"] += 1

    request_finished.connect(count, app, weak=False)
    signer = URLSafeSerializer(app.config["SECRET_KEY"])

    @app.get("/")
    def index() -> str:
        name = request.args.get("name", "<world>")
        return render_template("index.html", name=name, token=signer.dumps({"name": name}), served=served["count"])

    @app.get("/health")
    def health():  # type: ignore[no-untyped-def]
        return jsonify(status="ok")

    @app.cli.command("greet")
    @click.option("--name", default="pallets")
    def greet(name: str) -> None:
        click.echo(f"hello {name}")

    return app
