"""Closure reuse: the metadata comparison of the compile driver and the host's search for an earlier closure."""
from __future__ import annotations

import importlib.util
import json
import os
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from setuptools_grocker.image.recipes import RESOURCES
from setuptools_grocker.pipeline.compile import CLOSURE_KEY_FILE, Wheelhouse, previous_closure


def driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compile_driver", RESOURCES / "compile_driver.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wheel(directory: Path, name: str, version: str = "1.0", *, requires: tuple[str, ...] = (),
          extras: tuple[str, ...] = (), code: str = "x = 1\n", body: str = "") -> Path:
    dist = name.replace("-", "_")
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    directory.mkdir(parents=True, exist_ok=True)
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
            *(f"Requires-Dist: {r}" for r in requires), *(f"Provides-Extra: {e}" for e in extras)]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{dist}/__init__.py", code)
        zf.writestr(f"{dist}-{version}.dist-info/METADATA", "\n".join(meta) + "\n\n" + body)
    return path


def test_metadata_compared_is_name_requirements_and_extras_not_version_or_description(tmp_path: Path) -> None:
    d = driver()
    a = wheel(tmp_path / "a", "My_App", requires=("flask>=2", "waitress"), extras=("dev",), body="Requires-Dist: x\n")
    b = wheel(tmp_path / "b", "my-app", "1.1", requires=("waitress", "flask>=2"), extras=("dev",), code="x = 2\n")
    assert d.closure_metadata(a) == d.closure_metadata(b)
    assert d.closure_metadata(a)["Requires-Dist"] == ["flask>=2", "waitress"]  # the body is not read
    c = wheel(tmp_path / "c", "my-app", requires=("flask>=2", "waitress", "click"), extras=("dev",))
    e = wheel(tmp_path / "e", "my-app", requires=("flask>=2", "waitress"))
    assert d.closure_metadata(a) != d.closure_metadata(c)
    assert d.closure_metadata(a) != d.closure_metadata(e)


def closure_job(tmp_path: Path, *, requires: tuple[str, ...], internal_requires: tuple[str, ...] = ("six",)
                ) -> tuple[dict[str, object], Path, Path, Path]:
    previous = tmp_path / "previous"
    old_project = wheel(previous, "app", requires=("flask", "lib"))
    closure = [old_project, wheel(previous, "flask", "3.0"), wheel(previous, "lib", "1.0", requires=("six",)),
               wheel(previous, "six", "1.16")]
    new = tmp_path / "new"
    project = wheel(new, "app", requires=requires, code="x = 2\n")
    internal = wheel(tmp_path / "internal", "lib", "1.0", requires=internal_requires, code="y = 2\n")
    out, local = tmp_path / "out", tmp_path / "local"
    out.mkdir()
    local.mkdir()
    job = {"previous": {"wheel": str(old_project), "closure": [str(p) for p in closure]},
           "internal_wheels": [str(internal)], "out": str(tmp_path)}
    return job, project, out, local


def test_unchanged_metadata_copies_the_previous_closure_with_this_runs_own_wheels(tmp_path: Path) -> None:
    job, project, out, local = closure_job(tmp_path, requires=("lib", "flask"))
    assert driver().reuse_closure(job, str(project), str(out), str(local)) is True
    assert json.loads((tmp_path / "closure.json").read_text()) == {"closure": "reused"}  # the host reads it
    assert sorted(p.name for p in out.iterdir()) == ["app-1.0-py3-none-any.whl", "flask-3.0-py3-none-any.whl",
                                                    "lib-1.0-py3-none-any.whl", "six-1.16-py3-none-any.whl"]
    # The project and the internal wheel are this run's, not the previous closure's.
    with zipfile.ZipFile(out / "app-1.0-py3-none-any.whl") as zf:
        assert zf.read("app/__init__.py") == b"x = 2\n"
    with zipfile.ZipFile(out / "lib-1.0-py3-none-any.whl") as zf:
        assert zf.read("lib/__init__.py") == b"y = 2\n"


@pytest.mark.parametrize("requires, internal_requires", [
    (("lib", "flask", "click"), ("six",)),  # the project needs one more distribution
    (("lib", "flask"), ("six", "attrs")),  # an internal wheel of this run needs one more
])
def test_changed_metadata_resolves_again(tmp_path: Path, requires: tuple[str, ...],
                                         internal_requires: tuple[str, ...]) -> None:
    job, project, out, local = closure_job(tmp_path, requires=requires, internal_requires=internal_requires)
    assert driver().reuse_closure(job, str(project), str(out), str(local)) is False
    assert list(out.iterdir()) == [] and not (tmp_path / "closure.json").exists()


def test_no_previous_closure_resolves(tmp_path: Path) -> None:
    project = wheel(tmp_path, "app")
    assert driver().reuse_closure({"previous": None}, str(project), str(tmp_path), str(tmp_path)) is False


def test_previous_closure_is_the_newest_with_the_same_identity(tmp_path: Path) -> None:
    import os

    def entry(name: str, identity: str, mtime: int) -> Path:
        path = tmp_path / name
        wheel(path / "wheels", "app")
        (path / "manifest.json").write_text(json.dumps({"name": "app", "version": "1.0",
                                                        "wheel": "app-1.0-py3-none-any.whl", "closure": []}))
        (path / CLOSURE_KEY_FILE).write_text(identity)
        os.utime(path, (mtime, mtime))
        return path

    entry("old", "k1", 1000)
    newest = entry("new", "k1", 2000)
    entry("other", "k2", 3000)
    (tmp_path / ".tmp").mkdir()
    found = previous_closure(tmp_path, "k1")
    assert isinstance(found, Wheelhouse) and found.path == newest
    assert previous_closure(tmp_path, "k3") is None
    assert previous_closure(tmp_path / "absent", "k1") is None
    (newest / "wheels" / "app-1.0-py3-none-any.whl").unlink()  # an incomplete entry is never used
    assert previous_closure(tmp_path, "k1") == Wheelhouse.load(tmp_path / "old")


def test_the_closure_key_ignores_the_source_only() -> None:
    from setuptools_grocker.config import load_config
    from setuptools_grocker.pipeline.build import cache_key, closure_key

    config = load_config(Path(__file__).parent, environ={})
    s1, s2 = (type("S", (), {"digest": d})() for d in ("d1", "d2"))

    def keys(source: object, **changes: object) -> tuple[str, str]:
        args: dict[str, object] = {"rkey": "r", "source": source, "local_sources": [], "pip_env": {}, **changes}
        return cache_key(config, **args), closure_key(config, **args)  # type: ignore[arg-type]

    (k1, c1), (k2, c2) = keys(s1), keys(s2)
    assert k1 != k2 and c1 == c2
    assert keys(s1, pip_env={"PIP_INDEX_URL": "file:///other"})[1] != c1
    assert keys(s1, rkey="another root")[1] != c1
    assert keys(s1, local_sources=[s2])[1] != c1


def test_build_requirements_of_a_project(tmp_path: Path) -> None:
    from setuptools_grocker.pipeline.compile import build_requirements

    assert build_requirements(tmp_path) is None  # not a project
    (tmp_path / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    assert build_requirements(tmp_path) == (["setuptools>=40.8.0"], "setuptools.build_meta:__legacy__")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[build-system]\nrequires = ["wheel", "setuptools>=68"]\n'
                         'build-backend = "setuptools.build_meta"\n')
    assert build_requirements(tmp_path) == (["setuptools>=68", "wheel"], "setuptools.build_meta")
    pyproject.write_text('[build-system]\nrequires = []\nbuild-backend = "b"\nbackend-path = ["."]\n')
    assert build_requirements(tmp_path) is None  # an in-tree backend: always isolated
    pyproject.write_text("[build-system\n")
    assert build_requirements(tmp_path) is None


def test_a_build_environment_is_ready_once_kept_and_fresh_on_demand(tmp_path: Path) -> None:
    from setuptools_grocker.fs import PROCESS_STARTED
    from setuptools_grocker.pipeline.compile import BuildEnv

    project = tmp_path / "p"
    project.mkdir()
    (project / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools>=68"]\n')
    root = tmp_path / "build-env"
    env = BuildEnv.find(root, "k1", project, fresh=False)
    assert env is not None and not env.ready and env.job()["path"] == "/out/build-env"
    failed = tmp_path / "failed"
    failed.mkdir()
    env.keep(failed)  # not marked ready by the driver: dropped
    assert not failed.exists() and not env.path.exists()
    prepared = tmp_path / "prepared"
    (prepared / "site").mkdir(parents=True)
    (prepared / "ready").touch()
    env.keep(prepared)
    again = BuildEnv.find(root, "k1", project, fresh=False)
    assert again is not None and again.ready and again.job() == {"path": "/build-env", "requires": ["setuptools>=68"],
                                                                  "backend": "setuptools.build_meta:__legacy__",
                                                                  "ready": True}
    # --no-cache / --upgrade: one this run prepared is as fresh; one an earlier run prepared is not.
    assert BuildEnv.find(root, "k1", project, fresh=True).ready  # type: ignore[union-attr]
    os.utime(again.path / "ready", (PROCESS_STARTED - 60, PROCESS_STARTED - 60))
    assert not BuildEnv.find(root, "k1", project, fresh=True).ready  # type: ignore[union-attr]
    assert BuildEnv.find(root, "k1", project, fresh=False).ready  # type: ignore[union-attr]
    other = BuildEnv.find(root, "k2", project, fresh=False)  # another compiler image or pip configuration
    assert other is not None and not other.ready and other.path != env.path


def test_upgrade_reaches_the_run_options_from_both_frontends() -> None:
    from setuptools import Distribution

    from setuptools_grocker.cli import make_parser, run_options
    from setuptools_grocker.command import DockerImage

    assert run_options(make_parser().parse_args(["build", ".", "--upgrade"])).upgrade is True
    assert run_options(make_parser().parse_args(["build", "."])).upgrade is False
    command = DockerImage(Distribution())
    command.initialize_options()
    command.upgrade = 1
    command.finalize_options()
    assert command.upgrade is True
