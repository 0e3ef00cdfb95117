"""The smoke test: an image proves itself before it gets a tag.

1. ``check`` (imports, console scripts, configured programs);
2. the configured ``smoke-test.command``, if any;
3. with ``smoke-test.port``: the default command runs with that port published on
   127.0.0.1 and must answer ``smoke-test.path`` with a status below 400 before the timeout.

With a port, the server's container is started first and ``check`` runs inside it (docker exec)
while the server starts: one container start less. When that fails (a server that cannot start
kills the exec), ``check`` runs again in a container of its own, to say why.
"""
from __future__ import annotations

import time
import urllib.error
import urllib.request

from setuptools_grocker.config import Config
from setuptools_grocker.engine import Container, Engine
from setuptools_grocker.errors import GrockerError, SmokeTestError
from setuptools_grocker.image.recipes import APP_DIR, VENV
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
    server = start_server(engine, config, image_id) if config.smoke_test.port is not None else None
    try:
        for command in commands:
            if command == ["check"]:
                _check(engine, image_id, short, server)
                continue
            result = engine.run(image_id, list(command))
            if result.exit_code != 0:
                raise SmokeTestError(
                    f"image {short} failed its smoke-test command {' '.join(command)!r} "
                    f"(exit code {result.exit_code})",
                    progress.see("its output"),
                    details=result.tail(),
                )
        if server is not None:
            probe_http(engine, config, image_id, progress, container=server)
    finally:
        if server is not None:
            server.discard()  # killed and removed while the image is tagged; the engine's close waits for it


#: ``check`` as the image's entrypoint runs it, for ``docker exec`` (which does not use the entrypoint).
CHECK_EXEC = [f"{VENV}/bin/python", f"{APP_DIR}/grocker/entrypoint.py", "check"]


def _check(engine: Engine, image_id: str, short: str, server: Container | None = None) -> None:
    result = server.exec(CHECK_EXEC) if server is not None else None
    if result is None or result.exit_code != 0:
        # Not run, or failed inside the server's container: run it in a container of its own, whose output
        # is about the image alone (a server that exits kills the exec: exit 137, output cut short).
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


def start_server(engine: Engine, config: Config, image_id: str) -> Container:
    """The default command with ``smoke-test.port`` published on an ephemeral 127.0.0.1 port."""
    assert config.smoke_test.port is not None
    return engine.start(image_id, [config.effective_default_command], ports={config.smoke_test.port: None})


def probe_http(engine: Engine, config: Config, image_id: str, progress: Progress,
               container: Container | None = None) -> None:
    """Probe ``smoke-test.path`` in ``container`` (default: a server started here and stopped after)."""
    port = config.smoke_test.port
    assert port is not None
    own = container is None
    container = start_server(engine, config, image_id) if container is None else container
    try:
        host_port = container.host_port(port)
        url = f"http://127.0.0.1:{host_port}{config.smoke_test.path}"
        progress.detail(f"probing {url} (container port {port})")
        deadline = time.monotonic() + config.smoke_test.timeout
        last = "no answer"
        pause = 0.05  # a server that starts in a few tenths of a second is answered within 50 ms of it
        while time.monotonic() < deadline:
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
            # Asked only when the probe got no good answer: one engine round trip less when it did.
            code = container.exit_code()
            if code is not None:
                raise SmokeTestError(
                    f"the '{config.effective_default_command}' command exited with code {code} "
                    "before answering the HTTP probe",
                    progress.see("the container output"),
                    details=container.logs()[-3000:],
                )
            time.sleep(pause)
            pause = min(pause * 1.5, 0.3)
        raise SmokeTestError(
            f"the HTTP probe of {config.smoke_test.path} on port {port} got no good answer within "
            f"{config.smoke_test.timeout:.0f}s (last: {last})",
            "check smoke-test.port/path and that the server listens on 0.0.0.0",
            details=container.logs()[-3000:],
        )
    finally:
        if own:
            container.discard()
