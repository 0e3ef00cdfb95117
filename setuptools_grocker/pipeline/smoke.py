"""The smoke test: an image proves itself before it gets a tag.

1. ``check`` (imports, console scripts, configured programs);
2. the configured ``smoke-test.command``, if any;
3. with ``smoke-test.port``: the default command runs and must answer ``smoke-test.path`` on that port with a
   status below 400 before the timeout, and listen on every interface (a server bound to 127.0.0.1 answers
   inside its container only).

With a port, the server's container is started first, with no network (``smoke-test.network``, default
``none``: nothing to set up or tear down, nothing reachable), and one ``docker exec`` runs ``check --health``
inside it while the server starts: ``check``, then the probe from inside the container (the image's own
entrypoint: the same GET as its HEALTHCHECK) and the listening addresses read from ``/proc/net/tcp``. When
that fails (a server that cannot start kills the exec), ``check`` runs again in a container of its own, to
say why.
"""
from __future__ import annotations

import time

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
    probed = False
    try:
        for command in commands:
            if command == ["check"]:
                probed = _check(engine, config, progress, image_id, short, server)
                continue
            result = engine.run(image_id, list(command))
            if result.exit_code != 0:
                raise SmokeTestError(
                    f"image {short} failed its smoke-test command {' '.join(command)!r} "
                    f"(exit code {result.exit_code})",
                    progress.see("its output"),
                    details=result.tail(),
                )
        if server is not None and not probed:
            probe_http(config, progress, server)
    finally:
        if server is not None:
            server.discard()  # killed and removed while the image is tagged; the engine's close waits for it


#: The image's entrypoint as ``docker exec`` runs it (it does not use the entrypoint).
ENTRYPOINT_EXEC = [f"{VENV}/bin/python", f"{APP_DIR}/grocker/entrypoint.py"]
CHECK_EXEC = [*ENTRYPOINT_EXEC, "check"]
#: Exit codes of ``check --health`` (resources/entrypoint.py): no good answer in time; loopback alone.
UNHEALTHY, LOOPBACK_ONLY = 3, 4


def _check(engine: Engine, config: Config, progress: Progress, image_id: str, short: str,
           server: Container | None = None) -> bool:
    """``check``; in the server's container, with the HTTP probe after it. Whether the probe was made."""
    command = CHECK_EXEC + (["--health", f"{config.smoke_test.timeout:g}"] if server is not None else [])
    result = server.exec(command) if server is not None else None
    if server is not None and result is not None and result.exit_code in (0, UNHEALTHY, LOOPBACK_ONLY):
        said = [ln for ln in result.output.splitlines() if ln.startswith(("healthy:", "unhealthy:"))]
        if result.exit_code == 0:
            # An entrypoint that predates ``check --health`` (an image rebased under an older application
            # layer) checks and says nothing of the server: the probe is still to make.
            if said:
                progress.detail(f"probe {said[-1]}")
            return bool(said)
        last = said[-1] if said else f"exit code {result.exit_code}"
        if result.exit_code == UNHEALTHY:  # "unhealthy: GET /x on port 8000 got no good answer ... (last: HTTP 404)"
            last = last.rpartition("(last: ")[2].rstrip(")") or last
        raise _probe_failed(config, progress, server, last, loopback=result.exit_code == LOOPBACK_ONLY)
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
            command_name, program = missing[0]
            try:
                close = closest_program(program, image_programs(engine, image_id))
            except GrockerError:  # the suggestion is a courtesy: the failed check is what gets reported
                close = None
            hint = (f"did you mean {close!r}? fix the command '{command_name}' under [tool.grocker.commands]"
                    if close else f"install the program with the project's dependencies or system-packages.run, "
                                  f"or fix the command '{command_name}'")
        raise SmokeTestError(
            f"image {short} failed `check`: {failed[0] if failed else 'exit code %d' % result.exit_code}",
            hint,
            details=result.tail(),
        )
    return False


def start_server(engine: Engine, config: Config, image_id: str) -> Container:
    """The default command, in a container of the network ``smoke-test.network`` (nothing published: the probe
    runs inside it)."""
    assert config.smoke_test.port is not None
    network = config.smoke_test.network
    return engine.start(image_id, [config.effective_default_command], network=network)


def probe_http(config: Config, progress: Progress, container: Container) -> None:
    """Probe ``smoke-test.path`` from inside ``container`` with the image's ``health`` command until it answers
    (when ``check --health`` did not: a plugin's smoke commands without ``check``, an older entrypoint)."""
    port = config.smoke_test.port
    assert port is not None
    progress.detail(f"probing GET {config.smoke_test.path} on port {port} inside the container")
    deadline = time.monotonic() + config.smoke_test.timeout
    last = "no answer"
    pause = 0.05
    while time.monotonic() < deadline:
        result = container.exec([*ENTRYPOINT_EXEC, "health"])
        if result is not None and result.exit_code == 0:
            progress.detail(f"probe {(result.output.strip().splitlines() or ['healthy'])[-1]}")
            return
        if result is not None:
            last = (result.output.strip().splitlines() or [last])[-1]
        if result is None or container.exit_code() is not None:
            raise _probe_failed(config, progress, container, last)
        time.sleep(pause)
        pause = min(pause * 1.5, 0.3)
    raise _probe_failed(config, progress, container, last)


def _probe_failed(config: Config, progress: Progress, container: Container, last: str, *,
                  loopback: bool = False) -> SmokeTestError:
    """The error of a failed probe: the server exited, answered from loopback alone, or not in time."""
    logs = container.logs()[-3000:]
    code = container.exit_code()
    if code is not None:
        return SmokeTestError(f"the '{config.effective_default_command}' command exited with code {code} "
                              "before answering the HTTP probe", progress.see("the container output"), details=logs)
    if loopback:
        return SmokeTestError(f"the '{config.effective_default_command}' command answered the probe but "
                              f"{last.removeprefix('unhealthy: ')}",
                              f"make it listen on 0.0.0.0:{config.smoke_test.port} (all interfaces)", details=logs)
    return SmokeTestError(
        f"the HTTP probe of {config.smoke_test.path} on port {config.smoke_test.port} got no good answer within "
        f"{config.smoke_test.timeout:g}s (last: {last.removeprefix('unhealthy: ')})",
        "check smoke-test.port/path and that the server starts (its output is below)", details=logs)
