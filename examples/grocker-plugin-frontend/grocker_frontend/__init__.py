"""A setuptools-grocker plugin for the "front" half of an application.

For any project with a ``frontend/build.sh``:

* stage ``frontend`` (after ``compile``): runs ``sh frontend/build.sh /out`` in the compiler
  container, in a copy of the source (build tools stay there); the script writes the static
  site into ``/out``;
* the runtime image gets the site under ``/opt/frontend/site``, Debian's ``nginx-light``, an
  nginx configuration for the non-root user, and a ``frontend`` command serving the site on
  port 8080;
* the smoke test also checks that the site has an ``index.html``.

Projects without ``frontend/build.sh`` are left alone.
"""
from __future__ import annotations

from pathlib import Path

from setuptools_grocker.plugin import ImageContribution, Stage, impl

HERE = Path(__file__).parent
SITE = "/opt/frontend/site"


def _wanted(config) -> bool:
    return (config.project_dir / "frontend" / "build.sh").is_file()


def _build(ctx) -> None:
    out = ctx.work_dir / "frontend-site"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    result = ctx.run_in_compiler("sh frontend/build.sh /out", output=out)
    if result.exit_code != 0:
        raise RuntimeError(f"frontend/build.sh failed with exit code {result.exit_code}: {result.tail(5)}")
    if not (out / "index.html").is_file():
        raise RuntimeError("frontend/build.sh wrote no index.html into its output directory")
    ctx.state.files[SITE] = out


@impl
def grocker_stages(config):
    return [Stage("frontend", "after-compile", _build)] if _wanted(config) else None


@impl
def grocker_runtime_image(config):
    if not _wanted(config):
        return None
    return ImageContribution(
        files={"/opt/frontend/nginx.conf": HERE / "nginx.conf"},
        system_packages=("nginx-light",),
        labels={"io.grocker.frontend": "nginx"},
        commands={"frontend": "nginx -c /opt/frontend/nginx.conf -g 'daemon off;'"},
    )


@impl
def grocker_smoke_tests(config):
    return [["run", "test", "-f", f"{SITE}/index.html"]] if _wanted(config) else None
