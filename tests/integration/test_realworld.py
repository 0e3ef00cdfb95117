"""The quick part of the real-world corpus (benchmarks/realworld), as CI runs it.

A Flask application served by waitress and the cowsay 6.0 sdist built with
`python setup.py docker_image`: each built cold, rebuilt with no change (cached), rebuilt after a
one-line change (built), then run as its users run it; nothing of it is left in the engine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.integration


def test_quick_corpus_builds_rebuilds_and_runs(client: docker.DockerClient, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.realworld", "--quick", "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "GROCKER_REALWORLD_WORK": str(tmp_path / "work")})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    results = {r["name"]: r for r in json.loads(out.read_text())}
    assert sorted(results) == ["cowsay", "flask-app"]
    for name, r in results.items():
        assert r["ok"] and r["result"] == "ok", (name, r["result"])
        assert set(r["seconds"]) == {"cold", "no-change", "one-line-change"}
        statuses = r["statuses"]
        assert set(statuses["cold"].values()) == {"built"}
        assert set(statuses["no-change"].values()) == {"cached"}
        assert set(statuses["one-line-change"].values()) == {"built"}
        # A cached rebuild starts no container and hashes a small tree: it is quick even on a busy machine.
        assert r["seconds"]["no-change"] < r["seconds"]["cold"]
        assert 50 < r["image_mb"] < 400
        # The harness removed its images (the final tag and the one the change superseded).
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(r["image"])
    assert results["flask-app"]["notes"][0].startswith("GET / 200, stopped in ")
    assert results["cowsay"]["notes"] == ["`cowsay -t moo from the corpus` ran"]
    # The table users read names every project with its result.
    table = proc.stdout[proc.stdout.index("project"):]
    assert "flask-app" in table and "cowsay" in table and "FAIL" not in table
