"""What a user sees on real builds: a short default output with the log named at the end, ``-q``/``-v``
after the command, early configuration errors, and errors that point the right way."""
from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from typing import Iterator

import docker
import pytest

from setuptools_grocker.errors import CompileError, ConfigError, SmokeTestError
from tests.helpers import EXAMPLES, Run, grocker, python_project, remove_images


def log_of(run: Run) -> Path:
    found = re.findall(r"^full log: (.+\.log)$", run.err, re.MULTILINE)
    assert len(found) == 1, run.err[-3000:]
    return Path(found[0])


def error_line(run: Run) -> str:
    lines = [ln for ln in run.err.splitlines() if ln.startswith("grocker: error: ")]
    assert len(lines) == 1, run.err[-3000:]
    return lines[0]


@pytest.fixture()
def demo(tmp_path: Path, client: docker.DockerClient) -> Iterator[tuple[Path, str]]:
    shutil.copytree(EXAMPLES / "demo-app", tmp_path / "demo-app", ignore=shutil.ignore_patterns(".grocker"))
    shutil.copytree(EXAMPLES / "demo-lib", tmp_path / "demo-lib", ignore=shutil.ignore_patterns(".grocker"))
    tag = f"grocker-test/output-demo:{uuid.uuid4().hex[:8]}"
    yield tmp_path / "demo-app", tag
    remove_images(client, tag)


def test_default_quiet_and_verbose_output_of_a_real_build(demo: tuple[Path, str]) -> None:
    project, tag = demo
    run = grocker("build", ".", "--tag", tag, cwd=project)
    assert run.code == 0, run.err[-3000:]
    lines = (run.out + run.err).splitlines()
    assert len(lines) <= 15, run.err
    assert [ln.split()[0] for ln in lines if re.search(r" ok +[0-9.]+s$", ln)][:2] == ["scan", "compile"]
    assert "+ docker run" not in run.err and "Collecting" not in run.err
    # Everything the default output leaves out is in the log named at the end, under .grocker/logs.
    log = log_of(run)
    assert log.parent == project / ".grocker" / "logs"
    text = log.read_text()
    assert "+ docker run" in text and "[compile]" in text and "==> smoke test" in text
    # With a smoke-test port, `check` and the probe run inside the server's container (one container start less),
    # which has no network.
    assert re.search(r"^.*\+ docker run -d --network none \S+ server$", text, re.MULTILINE), text[-3000:]
    assert re.search(r"^.*\+ docker exec [0-9a-f]{12} /opt/app/venv/bin/python /opt/app/grocker/entrypoint.py check "
                     r"--health 60$", text, re.MULTILINE), text[-3000:]
    assert re.search(r"^.*  healthy: GET /health on port 8000 answered 200$", text, re.MULTILINE), text[-3000:]
    assert not re.search(r"\+ docker run --rm \S+ check$", text, re.MULTILINE)

    # -q after the command: the final result only.
    quiet = grocker("build", "-q", ".", "--tag", tag, cwd=project)
    assert quiet.code == 0, quiet.err[-3000:]
    assert quiet.err.splitlines()[1].split()[2] == "cached" and len(quiet.err.splitlines()) == 3, quiet.err

    # -v streams the engine's commands and pip's output, as they come.
    verbose = grocker("build", ".", "--tag", tag, "--no-cache", "-v", cwd=project)
    assert verbose.code == 0, verbose.err[-3000:]
    assert "==> compile" in verbose.err and "+ docker run" in verbose.err
    assert re.search(r"^  .*(Processing|Collecting|Successfully|\[compile\])", verbose.err, re.MULTILINE)
    assert len(verbose.err.splitlines()) > 3 * len(lines)


def _project(tmp_path: Path, grocker_toml: str, *, deps: tuple[str, ...] = ()) -> Path:
    return python_project(tmp_path / "bad-dir", "bad-app", version="0.4.0", deps=deps,
                          scripts={"bad-app-serve": "bad_app:main"},
                          modules={"__init__.py": "def main() -> None:\n    print('ok')\n"},
                          grocker=grocker_toml)


@pytest.mark.parametrize("toml, words", [
    ('[tool.grocker.commands]\nserver = "bad-app-serve --name \'my app"\n', ["command 'server'", "quot"]),
    ('[tool.grocker.commands]\nworker = "bad-app-serve"\n\n[tool.grocker.smoke-test]\nport = 8000\n',
     ["smoke-test.port 8000", "server"]),
])
def test_a_bad_command_is_refused_before_any_container(tmp_path: Path, client: docker.DockerClient, toml: str,
                                                       words: list[str]) -> None:
    project = _project(tmp_path, toml)
    run = grocker("build", str(project), "--tag", f"grocker-test/never:{uuid.uuid4().hex[:8]}")
    assert run.code == ConfigError.exit_code, run.err[-3000:]
    line = error_line(run)
    assert all(w in line for w in words), line
    # Refused at load: this run neither started a container nor asked the engine for an image.
    logs = list((project / ".grocker" / "logs").glob("*.log"))
    assert all("docker" not in log.read_text() for log in logs)


def test_a_requirement_missing_from_the_index_says_so(tmp_path: Path) -> None:
    missing = f"grocker-no-such-dist-{uuid.uuid4().hex[:6]}"
    project = _project(tmp_path, "", deps=(missing,))
    run = grocker("build", str(project), "--tag", f"grocker-test/never:{uuid.uuid4().hex[:8]}")
    assert run.code == CompileError.exit_code, run.err[-3000:]
    line = error_line(run)
    assert "bad-app 0.4.0 (bad-dir)" in line and missing in line and "index" in line
    assert "system-packages" not in line
    # The hint names the log holding uv's output (the default installer), which this run wrote.
    log = log_of(run)
    assert f"see uv's output in {log}" in line and missing in log.read_text()


@pytest.mark.parametrize("toml", [
    '[tool.grocker.commands]\nserve = "bad-app-sreve --port 8000"\n',
    # The server itself cannot start: `check` runs in a container of its own and says why.
    '[tool.grocker.commands]\nserver = "bad-app-sreve --port 8000"\n[tool.grocker.smoke-test]\nport = 8000\n',
], ids=["command", "server-with-probe"])
def test_a_typo_in_a_command_program_gets_did_you_mean(tmp_path: Path, client: docker.DockerClient,
                                                       toml: str) -> None:
    project = _project(tmp_path, toml)
    command = "server" if "server =" in toml else "serve"
    tag = f"grocker-test/typo:{uuid.uuid4().hex[:8]}"
    run = grocker("build", str(project), "--tag", tag)
    try:
        assert run.code == SmokeTestError.exit_code, run.err[-3000:]
        line = error_line(run)
        assert "did you mean 'bad-app-serve'?" in line and f"'{command}'" in line, line
    finally:
        remove_images(client, tag)
