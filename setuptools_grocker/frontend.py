"""What the two build frontends share: ``grocker`` (cli.py) and ``python setup.py docker_image`` (command.py).

:func:`run_build` builds one project and reports it (summary table, ``--report``, exit code);
:func:`handle_errors` runs a frontend's action and turns every way it can end into one line on
stderr and an exit code, the same for both frontends:

- a :class:`GrockerError`: its details (a log's tail), then ``PROG: error: MESSAGE; HINT``, credentials
  redacted; the exit code of its class;
- a full disk (``ENOSPC``/``EDQUOT`` from anywhere): the same, as a :class:`DiskFullError` (16);
- Ctrl-C: ``PROG: interrupted``, exit 130. Publishing is an ``os.replace`` of a finished staging
  directory or state file, so an interrupted build leaves nothing half-published to clean up here;
- anything else is a bug: the traceback (redacted), then one line saying so, exit 1.

Neither frontend imports the other; both import this module.
"""
from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from setuptools_grocker.errors import GrockerError, from_os_error
from setuptools_grocker.progress import Progress, redact

if TYPE_CHECKING:
    from setuptools_grocker.config import RunOptions

__all__ = ["INTERRUPTED", "handle_errors", "print_error", "run_build", "emit_report"]

#: The shell's convention for a process ended by SIGINT (128 + 2).
INTERRUPTED = 130
#: An exception nobody raised on purpose: Python's own exit code for an uncaught exception.
UNEXPECTED = 1


def print_error(exc: GrockerError, prog: str = "grocker") -> int:
    """The details (e.g. a log's tail), then one line on stderr, credentials redacted; the exit code."""
    details = exc.shown_details()
    if details:
        sys.stderr.write(details.rstrip() + "\n")
    sys.stderr.write(f"{prog}: error: {exc.one_line()}\n")
    return exc.exit_code


def handle_errors(prog: str, action: Callable[[], int]) -> int:
    """Run ``action`` and return its exit code; every failure becomes one line on stderr and a code."""
    try:
        return int(action())
    except GrockerError as exc:
        return print_error(exc, prog)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return INTERRUPTED
    except Exception as exc:  # the last line of defence of a frontend
        typed = from_os_error(exc) if isinstance(exc, OSError) else None
        if typed is not None:
            return print_error(typed, prog)
        # A bug (ours or a plugin's): the traceback is what a report needs, but it may quote a URL or a token.
        sys.stderr.write(redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))
        sys.stderr.write(f"{prog}: error: internal error: {redact(f'{type(exc).__name__}: {exc}')}; "
                         "this is a bug: report it with the traceback above\n")
        return UNEXPECTED


def run_build(project: Path, overrides: Mapping[str, Any], run: RunOptions, *, environ: Mapping[str, str],
              progress: Progress, prog: str = "grocker") -> int:
    """Build one project, write its report and summary; the exit code. Raises GrockerError for bad input."""
    from setuptools_grocker.config import load_config
    from setuptools_grocker.pipeline.build import build_project
    from setuptools_grocker.pipeline.project import check_python_project
    from setuptools_grocker.report import ProjectResult, Report, summary_table

    start = time.monotonic()
    report_path = run.report
    try:
        check_python_project(project.resolve())
        config = load_config(project, environ=environ, overrides=overrides, warn=progress.warn)
        run.validate()
        # From here on, engine commands and container output go to the log (streamed as well with -v).
        log = progress.open_log(config.state_dir / "logs")
    except GrockerError as exc:
        if report_path:
            failed = ProjectResult(name=project.resolve().name, error=exc.one_line(), exit_code=exc.exit_code)
            emit_report(Report([failed], time.monotonic() - start), report_path)
        raise
    result = build_project(config, environ=environ, progress=progress, run=run)
    report = Report([result], time.monotonic() - start)
    emit_report(report, report_path)
    progress.write(summary_table(report))
    progress.info(f"full log: {log}")
    if result.status == "failed":
        sys.stderr.write(f"{prog}: error: {redact(result.error or '')}\n")
        return result.exit_code
    return 0


def emit_report(report: Any, where: str | None) -> None:
    """``--report FILE`` writes the file atomically; ``--report -`` prints it on stdout (for CI steps)."""
    import json

    if where == "-":
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
        sys.stdout.flush()
    elif where:
        report.write(Path(where).resolve())
