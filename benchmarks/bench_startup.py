"""Start-up of a Django project in its image: grocker with bytecode, without, and a hand-written image.

    python benchmarks/bench_startup.py [--runs 15] [--json out.json]

Workload: a small Django project (the settings ``django-admin startproject`` writes: admin,
auth, contenttypes, sessions, messages, staticfiles), Django and its dependencies from the
configured index, packaged as a wheel with a ``python -m benchsite.manage`` entry.

Images, all FROM the same root image (grocker's ``grocker/root:...``, so the same Python):

* ``grocker``: ``grocker build`` (bytecode compiled at build time, unchecked-hash pycs);
* ``grocker, no bytecode``: the same build with ``GROCKER_NO_BYTECODE=1`` (what images were before);
* ``hand-written``: a multi-stage Dockerfile, the builder stage (the root image plus
  ``python3-venv`` from apt) makes a venv and runs ``pip install --no-index`` of the same
  wheels (pip compiles the pycs, timestamp-based), the final stage copies the venv and runs as
  the root image's non-root user.

What is timed: ``python -m benchsite.manage check`` (Django's ``manage.py check``), started
``--runs`` times inside one running container of each image (``docker exec`` of a timer that
starts the check twice, the first a warm-up that is dropped; container start-up is not
counted), the three images in turn, round after round, so that the load of the machine falls
on all three alike; the medians of wall time and of CPU time (user + system of the check's
process, less sensitive to a busy machine) are reported, with the image sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
NAME = "benchsite"

SETTINGS = """
SECRET_KEY = "benchmark-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "benchsite.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/db.sqlite3"}}
STATIC_URL = "static/"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
"""

URLS = """
from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
"""

MANAGE = """
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line([sys.argv[0], *sys.argv[1:]])


if __name__ == "__main__":
    main()
"""

# Run inside each image by its venv's python: the check, started N times, each timed.
# Wall time, and CPU time (user + system of the child), which the load of the machine changes less.
TIMER = """
import json, resource, subprocess, sys, time
times = []
for _ in range(int(sys.argv[1]) + 1):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchsite.manage", "check"], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    times.append([wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime])
print(json.dumps(times[1:]))
"""


def sh(*argv: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, env={**os.environ, **(env or {})}, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:5])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def write_project(root: Path) -> Path:
    project = root / NAME
    package = project / "src" / NAME
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name, text in (("settings.py", SETTINGS), ("urls.py", URLS), ("manage.py", MANAGE)):
        (package / name).write_text(textwrap.dedent(text).lstrip())
    (project / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{NAME}"
        version = "1.0.0"
        dependencies = ["django"]

        [tool.grocker.commands]
        check-django = "python -m {NAME}.manage check"
    """).lstrip())
    return project


def grocker_build(project: Path, tag: str, report: Path, env: dict[str, str]) -> dict[str, Any]:
    sh(sys.executable, "-m", "setuptools_grocker", "-q", "build", str(project), "--tag", tag,
       "--report", str(report), env=env)
    return dict(json.loads(report.read_text())["projects"][0])


def hand_written(tmp: Path, project: Path, distributions: list[str], root_image: str, tag: str) -> None:
    """The hand-written image: the same wheels, installed by pip in a builder stage."""
    ctx = tmp / "hand-written"
    wheels = ctx / "wheels"
    wheels.mkdir(parents=True)
    others = [d for d in distributions if not d.lower().startswith(f"{NAME}==")]
    sh(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
       "--python-version", "3.11", "--dest", str(wheels), *others)
    sh(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(project))
    (ctx / "Dockerfile").write_text(textwrap.dedent(f"""
        FROM {root_image} AS builder
        COPY wheels /tmp/wheels
        RUN apt-get update -q && apt-get install -y -q --no-install-recommends python3-venv
        RUN python3 -m venv /opt/venv \\
            && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels {NAME} \\
            && /opt/venv/bin/pip uninstall -y pip setuptools

        FROM {root_image}
        COPY --from=builder /opt/venv /opt/venv
        USER app
        ENTRYPOINT ["/opt/venv/bin/python", "-m", "{NAME}.manage"]
        CMD ["check"]
    """).lstrip())
    sh("docker", "build", "-q", "-t", tag, str(ctx), env={"DOCKER_BUILDKIT": "0"})


class Started:
    """A container of an image kept running, to time starts of the check inside it with ``docker exec``."""

    def __init__(self, image: str, python: str, via_entrypoint: bool) -> None:
        self.python = python
        argv = (["docker", "run", "-d", image, "run", "sleep", "3600"] if via_entrypoint
                else ["docker", "run", "-d", "--entrypoint", "sleep", image, "3600"])
        self.id = sh(*argv).stdout.strip()

    def times(self, count: int) -> list[list[float]]:
        """``count`` starts: [wall, cpu] seconds of each."""
        out = sh("docker", "exec", self.id, self.python, "-c", TIMER, str(count)).stdout
        return list(json.loads(out.strip().splitlines()[-1]))

    def stop(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.id], capture_output=True)


def count_pycs(image: str, venv: str, via_entrypoint: bool) -> int:
    find = ["find", venv, "-name", "*.pyc"]
    argv = (["docker", "run", "--rm", image, "run", *find] if via_entrypoint
            else ["docker", "run", "--rm", "--entrypoint", "find", image, *find[1:]])
    return len(sh(*argv).stdout.split())


def size(ref: str) -> int:
    return int(sh("docker", "image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    suffix = f"{os.getpid()}-{int(time.time())}"
    tags = {"grocker": f"grocker-bench/startup:{suffix}",
            "grocker, no bytecode": f"grocker-bench/startup:{suffix}-nobc",
            "hand-written": f"grocker-bench/startup-hand:{suffix}"}
    out: dict[str, Any] = {"runs": args.runs, "images": {}}
    with tempfile.TemporaryDirectory(prefix="grocker-bench-") as tmp_name:
        tmp = Path(tmp_name)
        project = write_project(tmp)
        cache = tmp / "cache"  # a cold bytecode cache: the build below compiles everything
        try:
            builds = {}
            for label, extra in (("grocker", {}), ("grocker, no bytecode", {"GROCKER_NO_BYTECODE": "1"})):
                start = time.monotonic()
                builds[label] = grocker_build(project, tags[label], tmp / "report.json",
                                              {"GROCKER_CACHE_HOME": str(cache), **extra})
                builds[label]["wall"] = time.monotonic() - start
                shutil.rmtree(project / ".grocker", ignore_errors=True)
            # The root the grocker image was built on: its first layers are the root's.
            root_image = pick_root(builds["grocker"]["image_id"])
            hand_written(tmp, project, builds["grocker"]["distributions"], root_image, tags["hand-written"])
            venvs = {label: "/opt/venv" if label == "hand-written" else "/opt/app/venv" for label in tags}
            started = {label: Started(ref, f"{venvs[label]}/bin/python", label != "hand-written")
                       for label, ref in tags.items()}
            times: dict[str, list[list[float]]] = {label: [] for label in tags}
            try:
                # Round robin, one start of each image per round: the machine's load (other
                # builds) falls on the three alike.
                for _ in range(args.runs):
                    for label, container in started.items():
                        times[label] += container.times(1)
            finally:
                for container in started.values():
                    container.stop()
            for label, ref in tags.items():
                grocker_made = label != "hand-written"
                venv = venvs[label]
                out["images"][label] = {
                    "median_s": statistics.median(t[0] for t in times[label]),
                    "median_cpu_s": statistics.median(t[1] for t in times[label]),
                    "all_s": times[label], "bytes": size(ref),
                    "pycs": count_pycs(ref, venv, grocker_made),
                    "build_s": builds.get(label, {}).get("wall"),
                    # grocker's image stage (bytecode compiled with a cold bytecode cache, or none).
                    "image_stage_s": builds.get(label, {}).get("stages", {}).get("image"),
                }
            out["root_image"] = root_image
            out["root_bytes"] = size(root_image)
        finally:
            subprocess.run(["docker", "rmi", "-f", *tags.values()], capture_output=True)
    out["machine"] = {"cpus": os.cpu_count(), "docker": sh("docker", "version", "--format",
                                                           "{{.Server.Version}}").stdout.strip()}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    base = out["images"]["grocker"]
    print(f"\n`manage.py check`, median of {args.runs} starts in one container\n")
    print("| image | median s (wall) | median s (CPU) | CPU vs grocker | image MB | above root MB | .pyc files "
          "| image stage s |\n|---|---|---|---|---|---|---|---|")
    for label, data in out["images"].items():
        stage = f"{data['image_stage_s']:.1f}" if data.get("image_stage_s") is not None else "-"
        print(f"| {label} | {data['median_s']:.3f} | {data['median_cpu_s']:.3f} "
              f"| {data['median_cpu_s'] / base['median_cpu_s']:.2f}x "
              f"| {data['bytes'] / 1e6:.1f} | {(data['bytes'] - out['root_bytes']) / 1e6:.1f} | {data['pycs']} "
              f"| {stage} |")
    return 0


def pick_root(image_id: str) -> str:
    """The grocker root image under ``image_id``: the one whose layers start the image's."""
    layers = json.loads(sh("docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", image_id).stdout)
    for ref in sh("docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "grocker/root").stdout.split():
        theirs = json.loads(sh("docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", ref).stdout)
        if layers[:len(theirs)] == theirs:
            return ref
    raise SystemExit("no grocker/root image under the built image")


if __name__ == "__main__":
    raise SystemExit(main())
