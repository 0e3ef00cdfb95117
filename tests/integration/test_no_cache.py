"""``--no-cache`` is a clean build: an empty pip cache, so a cached wheel cannot hide a missing build package.

A dependency with a C extension (linking libyaml) comes as an sdist from a find-links directory.
With ``system-packages.build = ["libyaml-dev"]`` it compiles, and pip keeps the built wheel in the
project's shared pip cache. Without the build package, a normal build still passes (pip reuses that
wheel: what issue 16 found), while ``--no-cache`` compiles from the sdist, as a clean CI machine
would, and fails naming the missing header, leaving the shared cache as it was.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import docker
import pytest

from tests.helpers import Run, grocker, python_project, remove_images

DEP = "grocker-nc-yaml"
MODULE = "grocker_nc_yaml"
C_SOURCE = """
#include <Python.h>
#include <yaml.h>
static PyObject *v(PyObject *s, PyObject *a) { return PyUnicode_FromString(yaml_get_version_string()); }
static PyMethodDef m[] = {{"version", v, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef d = {PyModuleDef_HEAD_INIT, "grocker_nc_yaml", NULL, -1, m};
PyMODINIT_FUNC PyInit_grocker_nc_yaml(void) { return PyModule_Create(&d); }
"""


def write_sdist(directory: Path) -> Path:
    """A real sdist of a one-extension project, as a find-links directory holds it."""
    base = f"{MODULE}-1.0"
    files = {
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {DEP}\nVersion: 1.0\n",
        "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
                          f'[project]\nname = "{DEP}"\nversion = "1.0"\n',
        "setup.py": "from setuptools import Extension, setup\n\n"
                    f"setup(ext_modules=[Extension('{MODULE}', ['{MODULE}.c'], libraries=['yaml'])])\n",
        f"{MODULE}.c": C_SOURCE,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{base}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{base}/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def shared_pip_cache(cache_home: Path, project: Path) -> Path:
    # As pipeline/caches.py names a project's (trust scope's) pip cache.
    return cache_home / "pip" / hashlib.sha256(str(project.resolve()).encode()).hexdigest()[:16]


def listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


GROCKER = """
[tool.grocker.commands]
probe = "nc-probe"

[tool.grocker.smoke-test]
command = ["probe"]

[tool.grocker.system-packages]
run = ["libyaml-0-2"]
"""


@pytest.fixture
def project(tmp_path: Path, client: docker.DockerClient, run_id: str):
    write_sdist(tmp_path / "dists")
    links = " ".join(filter(None, [os.environ.get("PIP_FIND_LINKS", ""), str(tmp_path / "dists")]))
    env = {"GROCKER_CACHE_HOME": str(tmp_path / "cache"), "PIP_FIND_LINKS": links}
    app = python_project(tmp_path / "app", "nc-app", deps=[DEP], scripts={"nc-probe": "nc_app:main"},
                         modules={"__init__.py": f"def main():\n    import {MODULE}\n    print({MODULE}.version())\n"},
                         grocker=GROCKER + 'build = ["libyaml-dev"]\n')
    tag = f"grocker-test/nc-app:{run_id}"
    yield app, env, tag
    remove_images(client, tag)


def build(app: Path, env: dict[str, str], tag: str, *extra: str) -> Run:
    return grocker("build", str(app), "--tag", tag, *extra, env=env, report=app.parent / "report.json")


def test_no_cache_compiles_with_an_empty_pip_cache(project) -> None:
    app, env, tag = project
    first = build(app, env, tag)
    assert first.code == 0, first.err[-4000:]
    cache = shared_pip_cache(Path(env["GROCKER_CACHE_HOME"]), app)
    cached_wheels = [p.name for p in cache.rglob(f"{MODULE}-1.0-*.whl")]
    assert cached_wheels, "pip kept the compiled wheel in the project's shared cache"

    # The build package is gone: a clean machine could not compile the dependency any more.
    pyproject = app / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('build = ["libyaml-dev"]\n', ""))
    before = listing(cache)
    uv = Path(env["GROCKER_CACHE_HOME"]) / "uv" / cache.name  # uv's directory of the scope (caches.uv_dir)
    assert list((uv / "cache").iterdir()), "uv kept the build environments' packages in the scope's cache"
    uv_before = listing(uv)
    assert not list(uv.glob("tmp-*")), "the run's scratch beside uv's cache is removed after it"

    clean = build(app, env, tag, "--no-cache")
    assert clean.code == 7, clean.err[-4000:]
    line = clean.err.strip().splitlines()[-1]
    assert "yaml.h" in line and "system-packages.build" in line, line
    assert "--no-cache: a clean build, with an empty pip cache and uv cache" in clean.err
    # The shared caches were neither read nor written: the compile had its own empty ones.
    assert listing(cache) == before
    assert listing(uv) == uv_before

    # What --no-cache is for: the normal build passes on the wheel cached by the first build.
    cached = build(app, env, tag)
    assert cached.code == 0, cached.err[-4000:]
    assert cached.project["status"] == "built"
