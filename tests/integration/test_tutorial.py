"""Every command of docs/tutorial.md, run in order, as written: the tutorial cannot rot."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import docker

from tests.helpers import remove_images

REPO = Path(__file__).resolve().parents[2]
TUTORIAL = REPO / "docs" / "tutorial.md"


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", text, flags=re.S | re.M)


def test_the_tutorial_runs_as_written(client: docker.DockerClient, tmp_path: Path) -> None:
    blocks = shell_blocks(TUTORIAL.read_text())
    assert len(blocks) >= 8
    script = "set -euo pipefail\nset -x\n" + "\n".join(blocks)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROCKER_")}
    env["TMPDIR"] = str(tmp_path)
    try:
        proc = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=1500,
                              env=env)
        out = proc.stdout
        (tmp_path / "tutorial.log").write_text(proc.stdout + proc.stderr)
        assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
        assert '"greeting": "Hello"' in out and '"uid": 10001' in out
        assert "Bonjour" in out and "Hallo" in out and "worker: item 2" in out
        assert "check: passed" in out
        # Part 3: first release, second release, then the rollback's answer.
        assert re.search(r'\{"total": 70\}.*\{"total": 42\}.*\{"total": 40\}', out, flags=re.S), out[-2000:]
        assert "rolled back" in out  # grocker history
    finally:
        subprocess.run(["docker", "rm", "-f", "tutorial-demo"], capture_output=True)
        subprocess.run([str(REPO / ".venv" / "bin" / "grocker"), "stop", "tutorial-till"], capture_output=True)
        remove_images(client, "till:1.0.0")
