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


# -- what never counts as source: grocker's reports, .grockerignore ------------------------------------------

def _report(path: Path) -> None:
    from setuptools_grocker.report import ProjectResult, Report

    Report(projects=[ProjectResult(name="demo", status="built")]).write(path)


def test_a_report_grocker_wrote_is_not_source(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    before = Source.scan(root).digest
    _report(root / "report.json")
    _report(root / "reports" / "nightly.json")
    (root / "data.json").write_text('{"name": "demo", "generator": "setuptools-grocker 1"}\n')  # not first key
    scan = Source.scan(root)
    assert "report.json" not in scan.files and "reports/nightly.json" not in scan.files
    assert "data.json" in scan.files
    (root / "data.json").unlink()
    assert Source.scan(root).digest == before


def test_a_report_starts_with_the_generator_key(tmp_path: Path) -> None:
    import json

    from setuptools_grocker import __version__
    from setuptools_grocker.pipeline.project import is_grocker_output

    _report(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert next(iter(data)) == "generator" and data["generator"] == f"setuptools-grocker {__version__}"
    assert is_grocker_output(tmp_path / "r.json")
    (tmp_path / "other.json").write_text('{"generator": "another-tool 2"}')
    assert not is_grocker_output(tmp_path / "other.json")


def test_grockerignore_outside_git(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    (root / ".grockerignore").write_text("# scratch\n*.log\nscratch/\n!keep.log\n/top.txt\n")
    for name in ("build.log", "pkg/debug.log", "keep.log", "scratch/notes.txt", "top.txt", "pkg/top.txt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    assert source_files(root) == [".grockerignore", "keep.log", "pkg/__init__.py", "pkg/top.txt", "pyproject.toml"]


def test_grockerignore_in_git_and_not_dirty(tmp_path: Path) -> None:
    from setuptools_grocker.pipeline.project import git_revision

    repo = tmp_path / "repo"
    root = make_project(repo / "apps" / "p")  # a project below the top of its repository
    (root / ".grockerignore").write_text("*.log\nnotes/\n")
    (repo / ".gitignore").write_text("build/\ndist/\n.venv/\n*.egg-info/\n.grocker/\n__pycache__/\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    clean = git_revision(root)
    assert clean is not None and not clean.endswith("-dirty")
    (root / "run.log").write_text("log")
    (root / "notes").mkdir()
    (root / "notes" / "a.txt").write_text("n")
    _report(root / "report.json")
    _report(root / "reports" / "nightly.json")
    assert source_files(root) == [".grockerignore", "pkg/__init__.py", "pyproject.toml"]
    assert git_revision(root) == clean
    (root / "pkg" / "new.py").write_text("y = 1\n")  # a new untracked module is source, and dirty
    assert "pkg/new.py" in source_files(root)
    assert git_revision(root) == f"{clean}-dirty"


def test_unreadable_grockerignore_is_a_project_error(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    (root / ".grockerignore").write_bytes(b"\xff\xfe*.log\n")
    with pytest.raises(ProjectError, match=r"\.grockerignore"):
        source_files(root)
