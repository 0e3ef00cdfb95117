"""Every command of docs/tutorial.md, run in order, as written: the tutorial cannot rot.

It runs under names and ports of its own (TUTORIAL_PREFIX, TUTORIAL_PORT), as a second user of a
shared engine would, and checks the statuses the tutorial says the builds end with.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import uuid
from pathlib import Path

import docker

from tests.helpers import free_port, remove_images

REPO = Path(__file__).resolve().parents[2]
TUTORIAL = REPO / "docs" / "tutorial.md"


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", text, flags=re.S | re.M)


def two_free_ports() -> int:
    """A port P such that P and P + 1 are both free on 127.0.0.1 (the tutorial uses both)."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


def statuses(out: str, name: str, version: str) -> list[str]:
    """The status column of the summary rows of ``name`` in ``out``, in order."""
    row = rf"^{re.escape(name)}\s+{re.escape(version)}\s+(built|cached(?: \([^)]*\))?|failed|skipped)\s+\d"
    return re.findall(row, out, flags=re.M)


def test_the_tutorial_runs_as_written(client: docker.DockerClient, tmp_path: Path) -> None:
    blocks = shell_blocks(TUTORIAL.read_text())
    assert len(blocks) >= 8
    script = "set -euo pipefail\nset -x\n" + "\n".join(blocks)
    prefix = f"tutorial-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROCKER_")}
    env.update(TMPDIR=str(tmp_path), TUTORIAL_PREFIX=prefix, TUTORIAL_PORT=str(two_free_ports()))
    try:
        proc = subprocess.run(["bash", "-c", script], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=1500, env=env)
        out = proc.stdout
        (tmp_path / "tutorial.log").write_text(out)
        assert proc.returncode == 0, out[-6000:]
        assert '"greeting": "Hello"' in out and '"uid": 10001' in out
        assert "Bonjour" in out and "Hallo" in out and "worker: item 2" in out
        assert "check: passed" in out
        # Part 1: built; cached (report in the project); cached (setup.py); a stray log: compiled, same
        # wheels; .grockerignore added: the same; the ignored log changed: plain cache hit.
        assert statuses(out, "grocker-demo-app", "0.3.0") == [
            "built", "cached", "cached", "cached (wheels unchanged)", "cached (wheels unchanged)", "cached"]
        # Part 2: the first build, the rebuild after one line of prices, the build with nothing to do;
        # part 3: the second release's change of prices; part 4: the bad line of till, then the fix (till's
        # line and a price).
        for member in ("prices", "basket"):
            assert statuses(out, member, "1.0.0") == ["built", "built", "cached", "built", "cached", "built"], member
        assert statuses(out, "till", "1.0.0") == ["built", "built", "cached", "built", "built", "built"]
        # Part 3: first release, second release, then the rollback's answer.
        assert re.search(r'\{"total": 70\}.*\{"total": 42\}.*\{"total": 40\}', out, flags=re.S), out[-2000:]
        assert "rolled back" in out  # grocker history
        # Part 4: the bad release is rolled back at its canary step (exit code 15), the good one promoted;
        # production answers the plum with the stable release, then with the fix's price.
        assert "grocker ship: exit code 15" in out, out[-4000:]
        assert re.search(r"was rolled back at 50%: canary errors", out), out[-4000:]
        assert re.search(r"rolled-back\s+50%:fail", out) and re.search(r"promoted\s+50%:pass", out), out[-4000:]
        assert "# Incident: " in out and "## What changed" in out
        assert re.search(r'\{"total": 100\}.*\{"total": 25\}', out, flags=re.S), out[-4000:]
        assert not re.search(r"^\s*\d+ failed$", out, flags=re.M), out[-4000:]  # the load: none failed outright
        # Nothing of the tutorial under names another user of the engine may have.
        assert "grocker-demo-app:0.3.0" not in out.replace(f"{prefix}-demo-app:0.3.0", "")
        assert not re.search(r"(?<![\w-])till:1\.0\.0", out.replace(f"{prefix}-till:1.0.0", ""))
    finally:
        subprocess.run(["docker", "rm", "-f", f"{prefix}-demo"], capture_output=True)
        for service in (f"{prefix}-till-canary", f"{prefix}-till"):  # part 4's canary, if it stopped half-way
            subprocess.run([str(REPO / ".venv" / "bin" / "grocker"), "stop", service], capture_output=True)
        for repo in (f"{prefix}-demo-app", f"{prefix}-till"):  # the edge's image is grocker/edge:KEY, shared
            remove_images(client, *[t for image in client.images.list(name=repo) for t in image.tags])
