"""The one error handler of both build frontends, ``grocker`` and ``python setup.py docker_image``."""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from setuptools import Distribution

from setuptools_grocker.cli import main
from setuptools_grocker.command import DockerImage
from setuptools_grocker.errors import CompileError, ConfigError, DiskFullError
from setuptools_grocker.frontend import INTERRUPTED, handle_errors

TOKEN = "glpat-Zq9vX3c8Ww1tK7mN"
BAD_CONFIG = '[tool.grocker]\ncomands = {}\n'


def raising(exc: BaseException) -> int:
    raise exc


def test_grocker_error_is_its_details_then_one_redacted_line(capsys: pytest.CaptureFixture[str]) -> None:
    exc = CompileError(f"pip failed on https://ci:{TOKEN}@h/simple/", "read the log", details=f"log\nBearer {TOKEN}")
    assert handle_errors("prog", lambda: raising(exc)) == CompileError.exit_code
    err = capsys.readouterr().err
    assert err == "log\nBearer ***\nprog: error: pip failed on https://***@h/simple/; read the log\n"


def test_full_disk_from_anywhere_is_disk_full(capsys: pytest.CaptureFixture[str]) -> None:
    exc = OSError(errno.ENOSPC, "No space left on device", "/var/cache/x")
    assert handle_errors("prog", lambda: raising(exc)) == DiskFullError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prog: error: no space left on device writing /var/cache/x")


def test_ctrl_c_is_one_line_and_130(capsys: pytest.CaptureFixture[str]) -> None:
    assert handle_errors("prog", lambda: raising(KeyboardInterrupt())) == INTERRUPTED == 130
    assert capsys.readouterr().err == "prog: interrupted\n"


def test_unexpected_exception_is_a_redacted_traceback_and_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert handle_errors("prog", lambda: raising(RuntimeError(f"boom at https://u:{TOKEN}@h/"))) == 1
    err = capsys.readouterr().err
    assert TOKEN not in err
    assert err.startswith("Traceback (most recent call last):")
    assert err.splitlines()[-1] == ("prog: error: internal error: RuntimeError: boom at https://***@h/; "
                                    "this is a bug: report it with the traceback above")


def test_other_os_errors_are_unexpected_not_disk_full(capsys: pytest.CaptureFixture[str]) -> None:
    assert handle_errors("prog", lambda: raising(PermissionError(errno.EACCES, "denied", "/x"))) == 1
    assert "internal error: PermissionError" in capsys.readouterr().err


def test_cli_bad_config_is_one_line_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pyproject.toml").write_text(BAD_CONFIG)
    assert main(["build", str(tmp_path)]) == ConfigError.exit_code
    assert capsys.readouterr().err.startswith("grocker: error: unknown key 'comands'")


def test_setuptools_command_uses_the_same_handler(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The Command class itself, in process: the error ends as SystemExit(3) after one line on stderr."""
    (tmp_path / "pyproject.toml").write_text(BAD_CONFIG)
    dist = Distribution({"name": "tiny", "version": "1.0", "src_root": str(tmp_path)})
    cmd = DockerImage(dist)
    cmd.initialize_options()
    cmd.finalize_options()
    with pytest.raises(SystemExit) as info:
        cmd.run()
    assert info.value.code == ConfigError.exit_code
    captured = capsys.readouterr()
    assert captured.err == ("docker_image: error: unknown key 'comands' in " + str(tmp_path / "pyproject.toml")
                            + "; did you mean 'commands'?\n")
    assert "error" not in captured.out


def test_setup_py_docker_image_bad_config_exit_3_one_line(tmp_path: Path) -> None:
    """``python setup.py docker_image`` for real (an error before any engine is needed)."""
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "tiny"\nversion = "1.0"\n\n' + BAD_CONFIG)
    (tmp_path / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    proc = subprocess.run([sys.executable, "setup.py", "-q", "docker_image"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == ConfigError.exit_code, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert errors == ["docker_image: error: unknown key 'comands' in " + str(tmp_path / "pyproject.toml")
                      + "; did you mean 'commands'?"], proc.stderr


@pytest.mark.parametrize("frontend", ["grocker", "setup.py"])
def test_ctrl_c_in_either_frontend_is_130_one_line_and_publishes_nothing(tmp_path: Path, frontend: str) -> None:
    """A real SIGINT to a real build process, while it waits for an engine that never answers.

    The "engine" is a socket of this test that accepts and stays silent: the process is then
    certainly inside the build (connecting), before any image, report or state exists.
    """
    project = tmp_path / "tiny"
    project.mkdir()
    (project / "setup.py").write_text("from setuptools import setup\nsetup(name='tiny', version='1.0')\n")
    report = tmp_path / "report.json"
    argv = ([sys.executable, "-m", "setuptools_grocker", "build", str(project), "--report", str(report)]
            if frontend == "grocker" else
            [sys.executable, "setup.py", "-q", "docker_image", "--report", str(report)])
    held: list[socket.socket] = []
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent.settimeout(60)
        env = {**os.environ, "DOCKER_HOST": f"tcp://127.0.0.1:{silent.getsockname()[1]}"}
        # SIGINT as a terminal leaves it: a suite started in the background (`cmd &` in a script) runs with
        # SIGINT ignored, and a Python started so keeps ignoring it (its handler is installed only over the
        # default disposition).
        proc = subprocess.Popen(argv, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            held.append(silent.accept()[0])
            # Every later connection is taken and left silent too: the build's background work (the reaper of
            # other runs' leftovers, its lease) waits on the engine beside the main thread, and must not hold
            # the interrupt.
            silent.settimeout(1.0)
            with contextlib.suppress(TimeoutError):
                while True:
                    held.append(silent.accept()[0])
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            proc.communicate()  # reads and closes its pipes (a timed-out run's would be unclosed files later)
            for conn in held:
                conn.close()
    assert proc.returncode == INTERRUPTED, out + err
    prog = "grocker" if frontend == "grocker" else "docker_image"
    assert err.splitlines() == [f"{prog}: interrupted"], err
    assert "Traceback" not in err
    assert not report.exists() and not (project / ".grocker" / "state.json").exists()
