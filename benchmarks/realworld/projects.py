"""The corpus: real applications and one real family of libraries, and how each is run."""
from __future__ import annotations

from benchmarks.realworld.harness import CommandProbe, HttpProbe, Project, Sdist, WorkerProbe

__all__ = ["PROJECTS", "WorkerProbe"]

PROJECTS: tuple[Project, ...] = (
    Project(
        "flask-app", "Flask app, waitress", "grocker", change="flask_app/__init__.py", app="flask-app",
        probe=HttpProbe(8080, "/", expect="Hello from Flask"), quick=True,
    ),
    Project(
        "cowsay", "setup.py-only, console script", "setup.py", change="cowsay/main.py",
        sdists=(Sdist("cowsay", "6.0"),), overlay="cowsay",
        probe=CommandProbe(("cowsay", "-t", "moo from the corpus"), expect="moo from the corpus"), quick=True,
    ),
    Project(
        "pyfiglet", "data files, console script", "grocker", change="pyfiglet/__init__.py",
        sdists=(Sdist("pyfiglet", "1.0.4"),), overlay="pyfiglet",
        probe=CommandProbe(("pyfiglet", "-f", "banner", "ok"), expect="#"),
    ),
    Project(
        "black", "src/ layout, hatch-vcs", "grocker", change="src/black/__init__.py",
        sdists=(Sdist("black", "24.10.0"),), overlay="black",
        probe=CommandProbe(("black", "-c", "x=(1)"), expect="x = 1"),
    ),
)
