"""Buildbot steps for setuptools-grocker (filled in by the Buildbot issue)."""
