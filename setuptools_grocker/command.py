"""``python setup.py docker_image``: the setuptools frontend.

Maps its options to the same overrides as ``grocker build`` and calls the same engine, so
both give the same image for the same project, and end the same way on an error
(:func:`setuptools_grocker.frontend.handle_errors`).
"""
from __future__ import annotations

import os
from pathlib import Path

from setuptools import Command

from setuptools_grocker.config import RunOptions
from setuptools_grocker.frontend import handle_errors, run_build
from setuptools_grocker.progress import NORMAL, QUIET, VERBOSE, Progress

PROG = "docker_image"


def output_level(verbose: object) -> int:
    """setuptools' ``-q`` (verbose 0) and ``-v`` (verbose 2 or more) as grocker's output levels."""
    count = int(verbose) if isinstance(verbose, (int, bool)) else 1
    return QUIET if count <= 0 else VERBOSE if count >= 2 else NORMAL


class DockerImage(Command):
    """Build the Docker image of this project (see ``grocker build``)."""

    description = "build a Docker image of the project with setuptools-grocker"
    user_options = [
        ("tag=", "t", "final image reference NAME:TAG (default: IMAGE-NAME:VERSION)"),
        ("base-image=", None, "base image (overrides base-image)"),
        ("report=", None, "write the JSON build report to this file"),
        ("no-cache", None, "a clean build: rebuild even when nothing changed, with an empty pip cache"),
        ("push", None, "push the image to the configured registry"),
        ("upgrade", None, "resolve the dependencies again even when the project's metadata did not change"),
    ]
    boolean_options = ["no-cache", "push", "upgrade"]

    def initialize_options(self) -> None:
        self.tag: str | None = None
        self.base_image: str | None = None
        self.report: str | None = None
        self.no_cache = False
        self.push = False
        self.upgrade = False

    def finalize_options(self) -> None:
        self.no_cache = bool(self.no_cache)
        self.push = bool(self.push)
        self.upgrade = bool(self.upgrade)

    def _verbosity(self) -> int:
        """setuptools' verbosity for this command: ``-q``/``-v`` before it (counted) or after it."""
        given_after = self.distribution.get_option_dict("docker_image").get("verbose")
        if given_after is not None:  # after the command, -v sets 1 (the default) and -q sets 0
            return 2 if int(given_after[1]) >= 1 else 0
        return int(self.verbose)

    def run(self) -> None:
        project = Path(self.distribution.src_root or os.getcwd())
        overrides = {"base-image": self.base_image}
        run = RunOptions(tag=self.tag, no_cache=self.no_cache, push=self.push, report=self.report,
                         upgrade=self.upgrade)
        # The same handler as ``grocker``: setuptools would otherwise print a traceback for our errors,
        # or its own "interrupted" with exit code 1 for Ctrl-C.
        progress = Progress(environ=os.environ, level=output_level(self._verbosity()))
        try:
            code = handle_errors(PROG, lambda: run_build(project, overrides, run, environ=os.environ,
                                                         progress=progress, prog=PROG))
        finally:
            progress.close()
        if code:
            raise SystemExit(code)
