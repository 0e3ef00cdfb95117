"""The smoke test: an image proves itself before it gets a tag.

1. ``check`` (imports, console scripts, configured programs);
2. the configured ``smoke-test.command``, if any;
3. with ``smoke-test.port``: the default command runs with that port published on
   127.0.0.1 and must answer ``smoke-test.path`` with a status below 400 before the timeout.
"""
from __future__ import annotations

import time
import urllib.error
import urllib.request

from setuptools_grocker.config import Config
from setuptools_grocker.engine import Engine
from setuptools_grocker.errors import GrockerError, SmokeTestError
from setuptools_grocker.pipeline.programs import closest_program, image_programs, missing_programs
from setuptools_grocker.plugin import impl
from setuptools_grocker.progress import Progress


def default_commands(config: Config) -> list[list[str]]:
    return [["check"]] + ([list(config.smoke_test.command)] if config.smoke_test.command else [])


@impl(tryfirst=True)  # ``check`` (imports, scripts) before anything a plugin adds
def grocker_smoke_tests(config: Config) -> list[list[str]]:
    """The built-in smoke commands (this module is registered as a built-in plugin)."""
    return default_commands(config)


def smoke_test(engine: Engine, config: Config, image_id: str, progress: Progress,
               commands: list[list[str]] | None = None) -> None:
    """Run the smoke commands (default: ``check`` and ``smoke-test.command``), then the HTTP probe."""
    short = image_id.split(":")[-1][:12]
    commands = default_commands(config) if commands is None else commands
    for command in commands:
        if command == ["check"]:
            _check(engine, image_id, short)
            continue
        result = engine.run(image_id, list(command))
        if result.exit_code != 0:
            raise SmokeTestError(
                f"image {short} failed its smoke-test command {' '.join(command)!r} "
                f"(exit code {result.exit_code})",
                progress.see("its output"),
                details=result.tail(),
            )
    if config.smoke_test.port is not None:
        probe_http(engine, config, image_id, progress)


def _check(engine: Engine, image_id: str, short: str) -> None:
    result = engine.run(image_id, ["check"])
    if result.exit_code != 0:
        lines = [ln.strip() for ln in result.output.splitlines() if ln.strip()]
        failed = [ln for ln in lines if ln.startswith("FAIL")] or lines[-1:]
        hint = "a module does not import or a program is missing; fix the dependencies or system-packages.run"
        missing = missing_programs(result.output)
        if missing:
            command, program = missing[0]
            try:
                close = closest_program(program, image_programs(engine, image_id))
            except GrockerError:  # the suggestion is a courtesy: the failed check is what gets reported
                close = None
            hint = (f"did you mean {close!r}? fix the command '{command}' under [tool.grocker.commands]" if close
                    else f"install the program with the project's dependencies or system-packages.run, or fix "
                         f"the command '{command}'")
        raise SmokeTestError(
            f"image {short} failed `check`: {failed[0] if failed else 'exit code %d' % result.exit_code}",
            hint,
            details=result.tail(),
        )


def probe_http(engine: Engine, config: Config, image_id: str, progress: Progress) -> None:
    port = config.smoke_test.port
    assert port is not None
    container = engine.start(image_id, [config.effective_default_command], ports={port: None})
    try:
        host_port = container.host_port(port)
        url = f"http://127.0.0.1:{host_port}{config.smoke_test.path}"
        progress.detail(f"probing {url} (container port {port})")
        deadline = time.monotonic() + config.smoke_test.timeout
        last = "no answer"
        while time.monotonic() < deadline:
            code = container.exit_code()
            if code is not None:
                raise SmokeTestError(
                    f"the '{config.effective_default_command}' command exited with code {code} "
                    "before answering the HTTP probe",
                    progress.see("the container output"),
                    details=container.logs()[-3000:],
                )
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    progress.detail(f"probe answered {resp.status}")
                    return
            except urllib.error.HTTPError as exc:
                if exc.code < 400:
                    return
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            time.sleep(0.3)
        raise SmokeTestError(
            f"the HTTP probe of {config.smoke_test.path} on port {port} got no good answer within "
            f"{config.smoke_test.timeout:.0f}s (last: {last})",
            "check smoke-test.port/path and that the server listens on 0.0.0.0",
            details=container.logs()[-3000:],
        )
    finally:
        container.stop(timeout=5)
