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
from setuptools_grocker.progress import Progress

PROG = "docker_image"


class DockerImage(Command):
    """Build the Docker image of this project (see ``grocker build``)."""

    description = "build a Docker image of the project with setuptools-grocker"
    user_options = [
        ("tag=", "t", "final image reference NAME:TAG (default: IMAGE-NAME:VERSION)"),
        ("base-image=", None, "base image (overrides base-image)"),
        ("report=", None, "write the JSON build report to this file"),
        ("no-cache", None, "a clean build: rebuild even when nothing changed, with an empty pip cache"),
        ("push", None, "push the image to the configured registry"),
    ]
    boolean_options = ["no-cache", "push"]

    def initialize_options(self) -> None:
        self.tag: str | None = None
        self.base_image: str | None = None
        self.report: str | None = None
        self.no_cache = False
        self.push = False

    def finalize_options(self) -> None:
        self.no_cache = bool(self.no_cache)
        self.push = bool(self.push)

    def run(self) -> None:
        project = Path(self.distribution.src_root or os.getcwd())
        overrides = {"base-image": self.base_image}
        run = RunOptions(tag=self.tag, no_cache=self.no_cache, push=self.push, report=self.report)
        # The same handler as ``grocker``: setuptools would otherwise print a traceback for our errors,
        # or its own "interrupted" with exit code 1 for Ctrl-C.
        progress = Progress(environ=os.environ)
        code = handle_errors(PROG, lambda: run_build(project, overrides, run, environ=os.environ, progress=progress,
                                                     prog=PROG))
        if code:
            raise SystemExit(code)
