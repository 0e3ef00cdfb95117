"""The build hook that waits with its backend imported (resources/build_hook.py --serve), run on this machine: the
driver's side (``build_with_served``) hands it the working directory, the environment and its standard output
and error; it builds once, answers the exit status, and exits."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from setuptools_grocker.image.recipes import RESOURCES

BACKEND = '''
import os, sys
def build_wheel(out):
    print("built in", os.getcwd(), "with", os.environ.get("GROCKER_HOOK_TEST"))
    sys.stdout.flush()
    with open(os.path.join(out, "demo-1.0-py3-none-any.whl"), "w") as fh:
        fh.write("wheel")
    if os.environ.get("GROCKER_HOOK_TEST") == "fail":
        raise SystemExit(3)
'''


@pytest.fixture()
def hook(tmp_path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("grocker_build_hook", RESOURCES / "build_hook.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve(tmp_path: Path, backend: str = "demo_backend") -> subprocess.Popen[bytes]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "demo_backend.py").write_text(BACKEND)
    proc = subprocess.Popen([sys.executable, str(RESOURCES / "build_hook.py"), "--serve", backend],
                            env={**os.environ, "PYTHONPATH": str(site)}, cwd="/",
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{proc.pid}/comm").read_text().strip() != "grocker-idle":
        assert proc.poll() is None and time.monotonic() < deadline, "the hook did not start"
        time.sleep(0.01)
    return proc


def test_the_waiting_hook_builds_once_in_the_drivers_directory_environment_and_output(
        hook: ModuleType, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    proc = serve(tmp_path)
    try:
        (tmp_path / "src").mkdir()
        (tmp_path / "out").mkdir()
        code = hook.build_with_served("demo_backend", str(tmp_path / "site"), str(tmp_path / "src"),
                                      str(tmp_path / "out"), {**os.environ, "GROCKER_HOOK_TEST": "yes",
                                                              "PYTHONPATH": str(tmp_path / "site")})
        assert code == 0
        assert (tmp_path / "out" / "demo-1.0-py3-none-any.whl").read_text() == "wheel"
        assert f"built in {tmp_path / 'src'} with yes" in capfd.readouterr().out  # on the driver's own stdout
        assert proc.wait(timeout=10) == 0  # one build, then it exits
        # Nobody waits any more: the driver builds itself.
        assert hook.build_with_served("demo_backend", str(tmp_path / "site"), str(tmp_path / "src"),
                                      str(tmp_path / "out"), dict(os.environ)) is None
    finally:
        proc.kill()
        proc.wait()


def test_a_hook_of_another_backend_or_environment_is_not_used_and_a_failure_is_its_exit_status(
        hook: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    proc = serve(tmp_path)
    try:
        assert hook.build_with_served("other_backend", str(tmp_path / "site"), "/", str(tmp_path / "out"),
                                      dict(os.environ)) is None
        assert proc.wait(timeout=10) == 0
        assert not list((tmp_path / "out").iterdir())
    finally:
        proc.kill()
        proc.wait()
    proc = serve(tmp_path)
    try:
        elsewhere = hook.build_with_served("demo_backend", "/elsewhere", "/", str(tmp_path / "out"), dict(os.environ))
        assert elsewhere is None
    finally:
        proc.kill()
        proc.wait()
    proc = serve(tmp_path)
    try:
        env = {**os.environ, "GROCKER_HOOK_TEST": "fail"}
        assert hook.build_with_served("demo_backend", str(tmp_path / "site"), "/", str(tmp_path / "out"), env) == 3
    finally:
        proc.kill()
        proc.wait()
