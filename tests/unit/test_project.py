from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from setuptools_grocker.errors import ProjectError
from setuptools_grocker.pipeline.project import Source, source_files, static_metadata


def make_project(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "Demo_Pkg"\nversion = "1"\ndependencies = []\n')
    (root / "pkg" / "__init__.py").write_text("x = 1\n")
    for junk in ("build/lib/pkg.py", "dist/x.whl", "pkg/__pycache__/a.pyc", ".grocker/state.json",
                 "Demo.egg-info/PKG-INFO", ".venv/bin/python"):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_text("junk")
    return root


def test_sdist_like_listing_skips_build_outputs(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert source_files(root) == ["pkg/__init__.py", "pyproject.toml"]


def test_git_listing_honours_gitignore(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    (root / ".gitignore").write_text("secret.txt\n")
    (root / "secret.txt").write_text("s")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    assert source_files(root) == [".gitignore", "pkg/__init__.py", "pyproject.toml"]


def test_hash_changes_with_content_not_with_outputs(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    first = Source.scan(root).digest
    (root / "build" / "more.py").write_text("output")
    assert Source.scan(root).digest == first
    (root / "pkg" / "__init__.py").write_text("x = 2\n")
    assert Source.scan(root).digest != first


@pytest.mark.parametrize("setup", ["missing", "file", "empty"])
def test_not_a_python_project(tmp_path: Path, setup: str) -> None:
    target = tmp_path / "t"
    if setup == "file":
        target.write_text("")
    elif setup == "empty":
        target.mkdir()
    with pytest.raises(ProjectError):
        Source.scan(target)


def test_static_metadata_only_when_static(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert static_metadata(root)["name"] == "Demo_Pkg"
    (root / "pyproject.toml").write_text('[project]\nname = "x"\ndynamic = ["version"]\n')
    assert static_metadata(root) is None


def test_unpacked_sdist_keeps_its_egg_info(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    (root / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: demo\n")
    files = source_files(root)
    assert "Demo.egg-info/PKG-INFO" in files and "PKG-INFO" in files
    assert not [f for f in files if f.startswith((".grocker/", ".venv/", "build/")) or f.endswith(".pyc")]


def test_revision_is_dirty_only_for_source_changes(tmp_path: Path) -> None:
    from setuptools_grocker.pipeline.project import git_revision

    root = tmp_path / "p"
    root.mkdir()
    (root / "a.py").write_text("x = 1\n")
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    for output in (".grocker/state.json", "pkg.egg-info/PKG-INFO", "build/lib/a.py"):
        (root / output).parent.mkdir(parents=True, exist_ok=True)
        (root / output).write_text("output")
    clean = git_revision(root)
    assert clean is not None and not clean.endswith("-dirty")
    (root / "a.py").write_text("x = 2\n")
    assert git_revision(root) == f"{clean}-dirty"


@pytest.mark.parametrize("name", ["Demo_Pkg.x", "a--b__c..d", "Zope.Interface", "-x-", "İstanbul_Lib", "my project"])
def test_names_normalise_as_pep_503_writes_it(name: str) -> None:
    # Member names, image names and cache keys were made with this regex: packaging must agree.
    assert canonicalize_name(name) == re.sub(r"[-_.]+", "-", name).lower()
