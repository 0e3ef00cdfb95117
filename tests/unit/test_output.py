"""What users see: output levels, the heartbeat, the log file, and errors that point the right way."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from setuptools_grocker.cli import main, make_parser
from setuptools_grocker.command import output_level
from setuptools_grocker.config import check_default_command, load_config
from setuptools_grocker.errors import ConfigError
from setuptools_grocker.pipeline.compile import compile_failure_hint
from setuptools_grocker.pipeline.programs import closest_program, missing_programs
from setuptools_grocker.progress import HEARTBEAT, KEEP_LOGS, NORMAL, QUIET, VERBOSE, Progress, add_secret

TOKEN = "glpat-Lg7hQ2w9Xc4vB8nM"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def progress_at(level: int, clock: Clock | None = None, tty: bool = False) -> tuple[Progress, io.StringIO]:
    stream = io.StringIO()
    return Progress(stream, level=level, clock=clock or Clock(), tty=tty, ticker=False), stream


def a_stage(progress: Progress, clock: Clock | None = None) -> None:
    with progress.stage("compile"):
        progress.command(["docker", "run", "--rm", "compiler"])
        progress.output("Collecting packaging")
        progress.info("an info line")
        progress.detail("3 layers above the root")
        if clock is not None:
            clock.now += 12.5
    progress.write("summary")


def test_default_level_prints_one_line_per_stage_and_logs_everything(tmp_path: Path) -> None:
    clock = Clock()
    progress, stream = progress_at(NORMAL, clock)
    log = progress.open_log(tmp_path / "logs")
    a_stage(progress, clock)
    progress.close()
    shown = stream.getvalue().splitlines()
    assert shown == ["an info line", "compile      ok   12.5s", "summary"]
    logged = log.read_text()
    for line in ("==> compile", "+ docker run --rm compiler", "  Collecting packaging", "3 layers above the root",
                 "compile      ok   12.5s", "summary"):
        assert line in logged
    assert log.parent == tmp_path / "logs" and log.name.endswith(f"-{os.getpid()}.log")
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_verbose_streams_everything_and_quiet_only_results() -> None:
    verbose, out = progress_at(VERBOSE)
    a_stage(verbose)
    lines = out.getvalue().splitlines()
    assert lines[:5] == ["==> compile", "+ docker run --rm compiler", "  Collecting packaging", "an info line",
                         "3 layers above the root"]
    assert lines[5].startswith("<== compile ") and lines[6] == "summary"
    quiet, out = progress_at(QUIET)
    a_stage(quiet)
    quiet.warn("careful")
    assert out.getvalue().splitlines() == ["summary", "warning: careful"]


def test_a_failed_stage_says_so_with_its_duration() -> None:
    clock = Clock()
    progress, out = progress_at(NORMAL, clock)
    with pytest.raises(RuntimeError), progress.stage("smoke test"):
        clock.now += 3
        raise RuntimeError("boom")
    assert out.getvalue() == "smoke test failed after 3.0s\n"
    assert progress.timings == [("smoke test", 3.0)]


def test_plain_heartbeat_every_30_seconds_of_a_long_stage() -> None:
    clock = Clock()
    progress, out = progress_at(NORMAL, clock)
    member = progress.child("[lib]")
    with progress.stage("compile"):
        clock.now += HEARTBEAT - 1
        progress.tick()
        assert out.getvalue() == ""
        for _ in range(2):
            clock.now += HEARTBEAT / 2
            progress.tick()
        with member.stage("test"):
            clock.now += HEARTBEAT
            member.tick()
    assert out.getvalue().splitlines() == ["still compiling (44 s)", "still compiling (89 s)",
                                           "[lib] still testing (30 s)", "[lib] test         ok   30.0s",
                                           "compile      ok   89.0s"]


def test_heartbeat_is_silent_when_quiet_or_verbose() -> None:
    for level in (QUIET, VERBOSE):
        clock = Clock()
        progress, out = progress_at(level, clock)
        with progress.stage("compile"):
            clock.now += 5 * HEARTBEAT
            progress.tick()
        assert "still" not in out.getvalue()


def test_terminal_status_line_is_rewritten_and_fits_the_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    clock = Clock()
    progress, out = progress_at(NORMAL, clock, tty=True)
    with progress.stage("compile"):
        clock.now += 61
        progress.output("Building wheel for pyyaml (pyproject.toml): started, this is a long line")
    text = out.getvalue()
    statuses = [part for part in text.split("\r\033[K") if part and "\n" not in part]
    assert statuses and statuses[-1].startswith("compile 61s · Building wheel")
    assert all(len(s) <= 39 for s in statuses)
    # The stage's result replaces the status line: the last thing printed is a plain line.
    assert text.endswith("\r\033[Kcompile      ok   61.0s\n")


def test_log_rotation_keeps_the_newest(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    old = [logs / f"20260101T0000{i:02d}Z-1.log" for i in range(KEEP_LOGS + 5)]
    for path in old:
        path.write_text("old\n")
    progress, _ = progress_at(NORMAL)
    current = progress.open_log(logs)
    progress.close()
    kept = sorted(p.name for p in logs.glob("*.log"))
    assert len(kept) == KEEP_LOGS and current.name in kept
    assert kept[0] == old[6].name  # the 6 oldest went, to make room for this run's log


def test_credentials_never_reach_the_log(tmp_path: Path) -> None:
    add_secret(TOKEN)
    progress, out = progress_at(VERBOSE)
    log = progress.open_log(tmp_path)
    progress.command(["pip", "install", "-i", f"https://ci:{TOKEN}@index.example/simple", "x"])
    progress.output(f"Looking in indexes: https://ci:{TOKEN}@index.example/simple")
    progress.output(f"PIP_EXTRA={TOKEN}")
    progress.close()
    for text in (log.read_text(), out.getvalue()):
        assert TOKEN not in text and "https://***@index.example/simple" in text


def test_errors_point_at_the_log_unless_the_output_was_streamed(tmp_path: Path) -> None:
    progress, _ = progress_at(NORMAL)
    assert "-v" in progress.see("pip's output")
    log = progress.open_log(tmp_path)
    assert progress.see("pip's output") == f"see pip's output in {log}"
    verbose, _ = progress_at(VERBOSE)
    assert verbose.see("pip's output") == "see pip's output above"
    progress.close()


@pytest.mark.parametrize("argv, level", [
    (["build", "-q", "."], QUIET), (["-q", "build", "."], QUIET), (["build", ".", "--verbose"], VERBOSE),
    (["-v", "workspace", "build", "."], VERBOSE), (["workspace", "plan", "-q"], QUIET), (["build"], None),
    (["deploy", "img", "--name", "x", "-v"], VERBOSE),
])
def test_quiet_and_verbose_before_or_after_the_command(argv: list[str], level: int | None) -> None:
    assert getattr(make_parser().parse_args(argv), "level", None) == level


def test_quiet_build_after_the_command_reports_only_the_error(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["build", "-q", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 4 and err.count("\n") == 1 and err.startswith("grocker: error: ")


def test_setuptools_verbosity_maps_to_levels() -> None:
    assert [output_level(v) for v in (0, 1, 2, 3, None)] == [QUIET, NORMAL, VERBOSE, VERBOSE, NORMAL]


def _config(tmp_path: Path, toml: str) -> ConfigError:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "app"\nversion = "1"\n\n' + toml)
    with pytest.raises(ConfigError) as info:
        check_default_command(load_config(tmp_path, environ={}))
    return info.value


def test_unbalanced_quote_is_refused_at_config_load(tmp_path: Path) -> None:
    error = _config(tmp_path, "[tool.grocker.commands]\nserver = \"gunicorn app:wsgi --name 'my app\"\n")
    assert error.exit_code == 3
    assert "command 'server'" in error.one_line() and "no closing quotation" in error.one_line()
    assert "close the quote" in error.one_line() and "\n" not in error.one_line()


def test_probe_without_a_server_command_is_refused_at_config_load(tmp_path: Path) -> None:
    error = _config(tmp_path, "[tool.grocker.commands]\nworker = \"app work\"\n\n"
                              "[tool.grocker.smoke-test]\nport = 8000\n")
    assert error.exit_code == 3
    assert "smoke-test.port 8000" in error.one_line() and "add a `server` command" in error.one_line()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "app"\nversion = "1"\n\n'
                                             '[tool.grocker]\ndefault-command = "worker"\n\n'
                                             '[tool.grocker.commands]\nworker = "app work"\n\n'
                                             "[tool.grocker.smoke-test]\nport = 8000\n")
    check_default_command(load_config(tmp_path, environ={}))  # an explicit default command is probed


def test_compile_hints_follow_the_cause() -> None:
    missing = ("ERROR: Could not find a version that satisfies the requirement no-such-dist==1.0 (from versions: "
               "none)\nERROR: No matching distribution found for no-such-dist==1.0\n")
    hint = compile_failure_hint(missing)
    assert hint is not None and "no-such-dist==1.0" in hint and "index" in hint
    assert "system-packages" not in hint
    header = "      src/_yaml.c:4:10: fatal error: yaml.h: No such file or directory\n"
    assert "system-packages.build" in (compile_failure_hint(header) or "")
    assert "system-packages.build" in (compile_failure_hint("/usr/bin/ld: cannot find -lpq\n") or "")
    assert compile_failure_hint("ERROR: Failed building wheel for app\nSyntaxError: invalid syntax\n") is None


def test_did_you_mean_for_a_missing_program() -> None:
    output = ("ok   import app\nFAIL command server: program 'gunicron' not found in the image\n"
              "ok   command worker\ncheck: FAILED (1)\n")
    assert missing_programs(output) == [("server", "gunicron")]
    programs = ["python", "python3", "gunicorn", "app", "ls", "sh"]
    assert closest_program("gunicron", programs) == "gunicorn"
    assert closest_program("/opt/venv/bin/Gunicorn", programs) == "gunicorn"
    assert closest_program("zzzz", programs) is None


def test_a_failed_project_is_named_by_name_and_version(tmp_path: Path) -> None:
    from setuptools_grocker.pipeline.project import describe_project, project_label

    app = tmp_path / "apps" / "shop-dir"
    app.mkdir(parents=True)
    (app / "pyproject.toml").write_text('[project]\nname = "shop"\nversion = "2.1"\n')
    assert describe_project(app, *project_label(app), base=tmp_path) == "shop 2.1 (apps/shop-dir)"
    (app / "pyproject.toml").write_text('[project]\nname = "shop"\ndynamic = ["version"]\n')
    (app / "setup.cfg").write_text("[metadata]\nname = shop\nversion = attr: shop.__version__\n")
    assert project_label(app) == ("shop", None)
    (app / "pyproject.toml").unlink()
    (app / "setup.cfg").write_text("[metadata]\nname = shop-legacy\nversion = 0.9\n")
    assert project_label(app) == ("shop-legacy", "0.9")
    (app / "setup.cfg").unlink()
    assert project_label(app) == ("shop-dir", None)


@pytest.mark.parametrize("argv, level", [
    (["docker_image"], NORMAL), (["-q", "docker_image"], QUIET), (["docker_image", "-q"], QUIET),
    (["docker_image", "-v"], VERBOSE), (["-v", "docker_image"], VERBOSE),
])
def test_setup_py_quiet_and_verbose_before_or_after_the_command(argv: list[str], level: int) -> None:
    from setuptools import Distribution

    from setuptools_grocker.command import DockerImage

    dist = Distribution({"name": "app", "script_name": "setup.py", "script_args": argv,
                         "cmdclass": {"docker_image": DockerImage}})
    dist.parse_command_line()
    command = dist.get_command_obj("docker_image")
    assert isinstance(command, DockerImage)
    assert output_level(command._verbosity()) == level
