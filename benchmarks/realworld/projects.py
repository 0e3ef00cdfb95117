"""The corpus: real applications and one real family of libraries, and how each is run."""
from __future__ import annotations

from benchmarks.realworld.harness import CommandProbe, HttpProbe, Mistake, Project, Sdist, WorkerProbe

__all__ = ["PROJECTS"]

DJANGO_ENV = """\
# /config/django.env, as a deployment mounts it
DJANGO_SECRET_KEY=corpus-0b6f1c2e9a7d4e5f8a3b
DJANGO_ALLOWED_HOSTS=127.0.0.1,localhost
SITE_NAME=Corpus site
"""

PALLETS = ("MarkupSafe", "3.0.2"), ("ItsDangerous", "2.2.0"), ("Blinker", "1.9.0"), ("Click", "8.1.8"), \
    ("Jinja2", "3.1.5"), ("Werkzeug", "3.1.3"), ("Flask", "3.1.0")

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
    Project(
        "django-site", "Django, gunicorn, env file", "grocker", change="notes/views.py", app="django-site",
        probe=HttpProbe(8000, "/", expect="Corpus site: welcome", config={"django.env": DJANGO_ENV}, data="/data",
                        before=(("migrate",),),
                        also_if_key={"build-commands": ("/static/notes/site.css", "font-family")}),
        optional_keys={"build-commands": 'build-commands = ["python manage.py collectstatic --noinput"]'},
    ),
    Project(
        "fastapi-app", "FastAPI, uvicorn, src/ layout", "grocker", change="src/fastapi_app/main.py",
        app="fastapi-app", probe=HttpProbe(8000, "/items/2", expect='"name":"nut"'),
    ),
    Project(
        "huey-worker", "huey consumer as worker", "grocker", change="huey_worker/tasks.py", app="huey-worker",
        probe=WorkerProbe(("huey-worker-enqueue",), expect="invoice total 500", data="/data"),
    ),
    Project(
        "pg-app", "psycopg2 from sdist, libpq", "grocker", change="pg_app/server.py", app="pg-app",
        probe=HttpProbe(8000, "/", expect='"libpq": 15'),
    ),
    Project(
        "pallets", "workspace: 7 sdists + tests, app", "workspace", change="app/pallets_app/__init__.py",
        sdists=tuple(Sdist(name, version, f"libs/{name.lower()}") for name, version in PALLETS),
        app="pallets-app", app_dest="app", overlay="pallets", app_member="corpus-pallets-app",
        probe=HttpProbe(8000, "/?name=%3Ccorpus%3E", expect="Hello &lt;corpus&gt;"),
    ),
    # Mistakes users make: the build must fail, early, and say what to do.
    Project(
        "pg-app-no-dev", "mistake: no libpq-dev", "grocker", change="", app="pg-app",
        probe=CommandProbe((), ""),
        mistake=Mistake("pyproject.toml", 'build = ["libpq-dev"]', "build = []",
                        expect=("pg_config", "system-packages.build")),
    ),
    Project(
        "flask-app-typo", "mistake: program typo", "grocker", change="", app="flask-app",
        probe=CommandProbe((), ""),
        mistake=Mistake("pyproject.toml", 'server = "waitress-serve', 'server = "waitres-serve',
                        expect=("waitres-serve",)),
    ),
)
