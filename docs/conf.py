"""Sphinx configuration: the Markdown pages of docs/ (MyST) plus pages generated from the code."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

from setuptools_grocker import __version__  # noqa: E402

project = "setuptools-grocker"
author = "the setuptools-grocker developers"
release = version = __version__
extensions = ["myst_parser", "grocker_docs"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
html_theme = "alabaster"
html_title = f"setuptools-grocker {__version__}"
suppress_warnings: list[str] = []
nitpicky = False
