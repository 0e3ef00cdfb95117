"""setuptools-grocker: ship Python applications as Docker images built from their wheels.

The package is a library first: :func:`setuptools_grocker.pipeline.build.build_project` runs the
whole pipeline for one project; the setuptools command, the ``grocker`` CLI and the
Buildbot steps are thin frontends over it.
"""
from __future__ import annotations

__version__ = "0.2.0"
