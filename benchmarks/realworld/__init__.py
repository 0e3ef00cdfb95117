"""A corpus of real projects, built and run the way their users do.

    .venv/bin/python -m benchmarks.realworld [--only NAME,...] [--quick] [--json FILE] [--keep] [--list]

Each project (``projects.py``) is an application written as a user would write it
(``projects/``) or a release downloaded from the configured package index as an sdist, with the
grocker configuration a user would add (``overlays/``). For each one the harness makes a fresh
copy, runs a cold build, a no-change rebuild and a one-line-change rebuild with the real CLI (or
``python setup.py docker_image``), starts the image as its users run it and probes it, and prints
a table. See docs/realworld.md.
"""
